# Security groups: each port is opened only to whoever needs it.
#   monitoring  22 <- admin_cidr | 3000 <- web_ingress_cidrs | 9090 <- admin_cidr, application
#   application 22 <- admin_cidr | 80   <- web_ingress_cidrs | 9100, 8080, 8090, 5432 <- monitoring
# Egress: 80/443 to the internet (OS packages, container images, AWS APIs) plus the few
# host-to-host ports above. Nothing else.

resource "aws_security_group" "monitoring" {
  name        = "${local.name}-monitoring"
  description = "Monitoring host: Prometheus, Grafana, node_exporter"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-monitoring" }
}

resource "aws_security_group" "application" {
  name        = "${local.name}-application"
  description = "Application host: Airflow, MLflow, scoring, ChatOps, node_exporter"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-application" }
}

# -- monitoring ingress ---------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "monitoring_ssh" {
  security_group_id = aws_security_group.monitoring.id
  description       = "SSH from the admin network only"
  cidr_ipv4         = var.admin_cidr
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
}

resource "aws_vpc_security_group_ingress_rule" "monitoring_grafana" {
  for_each          = toset(local.web_ingress_cidrs)
  security_group_id = aws_security_group.monitoring.id
  description       = "Grafana UI"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 3000
  to_port           = 3000
}

resource "aws_vpc_security_group_ingress_rule" "monitoring_prometheus_admin" {
  security_group_id = aws_security_group.monitoring.id
  description       = "Prometheus UI and API for the admin network"
  cidr_ipv4         = var.admin_cidr
  ip_protocol       = "tcp"
  from_port         = 9090
  to_port           = 9090
}

resource "aws_vpc_security_group_ingress_rule" "monitoring_prometheus_app" {
  security_group_id            = aws_security_group.monitoring.id
  description                  = "Prometheus API for the application (metrics_extract, anomaly_sensor, ChatOps)"
  referenced_security_group_id = aws_security_group.application.id
  ip_protocol                  = "tcp"
  from_port                    = 9090
  to_port                      = 9090
}

# -- monitoring egress ----------------------------------------------------------------------

resource "aws_vpc_security_group_egress_rule" "monitoring_https" {
  security_group_id = aws_security_group.monitoring.id
  description       = "HTTPS: AWS APIs (SSM), container images, the repository"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "monitoring_http" {
  security_group_id = aws_security_group.monitoring.id
  description       = "HTTP: the Ubuntu package archive"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_egress_rule" "monitoring_to_app" {
  for_each = {
    node_exporter = 9100
    scoring       = 8080
    chatops       = 8090
    events_db     = 5432
  }
  security_group_id            = aws_security_group.monitoring.id
  description                  = "Scrape and read the application host: ${each.key}"
  referenced_security_group_id = aws_security_group.application.id
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
}

# -- application ingress --------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "application_ssh" {
  security_group_id = aws_security_group.application.id
  description       = "SSH from the admin network only"
  cidr_ipv4         = var.admin_cidr
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
}

resource "aws_vpc_security_group_ingress_rule" "application_http" {
  for_each          = toset(local.web_ingress_cidrs)
  security_group_id = aws_security_group.application.id
  description       = "ChatOps API behind nginx"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_ingress_rule" "application_from_monitoring" {
  for_each = {
    node_exporter = 9100
    scoring       = 8080
    chatops       = 8090
    events_db     = 5432
  }
  security_group_id            = aws_security_group.application.id
  description                  = "From the monitoring host: ${each.key}"
  referenced_security_group_id = aws_security_group.monitoring.id
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
}

# -- application egress ---------------------------------------------------------------------

resource "aws_vpc_security_group_egress_rule" "application_https" {
  security_group_id = aws_security_group.application.id
  description       = "HTTPS: AWS APIs (S3, SSM, Auto Scaling), container images, LLM provider"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "application_http" {
  security_group_id = aws_security_group.application.id
  description       = "HTTP: the Ubuntu package archive"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_egress_rule" "application_to_prometheus" {
  security_group_id            = aws_security_group.application.id
  description                  = "Prometheus API on the monitoring host"
  referenced_security_group_id = aws_security_group.monitoring.id
  ip_protocol                  = "tcp"
  from_port                    = 9090
  to_port                      = 9090
}
