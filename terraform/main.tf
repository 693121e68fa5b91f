locals {
  name       = "${var.project}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # SSM parameter tree: /<project>/<environment>/{app,monitoring}/<name>. Each role may read
  # only its own branch.
  ssm_prefix            = "/${var.project}/${var.environment}"
  ssm_app_path          = "${local.ssm_prefix}/app"
  ssm_monitoring_path   = "${local.ssm_prefix}/monitoring"
  ssm_parameter_arn     = "arn:${local.partition}:ssm:${var.region}:${local.account_id}:parameter"
  web_ingress_cidrs     = length(var.web_ingress_cidrs) > 0 ? var.web_ingress_cidrs : [var.admin_cidr]
  remediation_tag_key   = "smartcloudops:remediation"
  remediation_tag_value = "enabled"

  # The two prefixes the application writes in the bucket (smartcloudops/store.py and MLflow).
  availability_zones = length(var.availability_zones) == 2 ? var.availability_zones : ["${var.region}a", "${var.region}b"]

  metrics_prefix = "metrics"
  mlflow_prefix  = "mlflow"

  common_tags = {
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# Two named zones, not "whatever the region offers": the set must not change under us
# when AWS adds a zone (that would move a subnet and replace its instance).
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = local.availability_zones
  }
}

# Ubuntu 24.04 LTS: its archive has prometheus, prometheus-node-exporter, docker.io and
# docker-compose-v2, and the SSM agent comes preinstalled (remediation restarts via SSM).
data "aws_ssm_parameter" "ubuntu_ami" {
  name = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
}
