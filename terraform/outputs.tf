output "grafana_url" {
  description = "Grafana (admin password: SSM parameter in grafana_admin_password_parameter)."
  value       = "http://${aws_eip.monitoring.public_ip}:3000"
}

output "prometheus_url" {
  description = "Prometheus UI and API (reachable from admin_cidr only)."
  value       = "http://${aws_eip.monitoring.public_ip}:9090"
}

output "chatops_url" {
  description = "ChatOps API through nginx on port 80 (POST /query, GET /status, GET /logs; bearer token in SSM)."
  value       = "http://${aws_eip.application.public_ip}"
}

output "airflow_tunnel" {
  description = "The Airflow and MLflow UIs are not exposed; reach them through an SSH tunnel."
  value       = "ssh -N -L 8081:127.0.0.1:8081 -L 5000:127.0.0.1:5000 ubuntu@${aws_eip.application.public_ip}  # then http://127.0.0.1:8081 (Airflow), http://127.0.0.1:5000 (MLflow)"
}

output "monitoring_public_ip" {
  description = "Elastic IP of the monitoring host."
  value       = aws_eip.monitoring.public_ip
}

output "application_public_ip" {
  description = "Elastic IP of the application host."
  value       = aws_eip.application.public_ip
}

output "data_bucket" {
  description = "S3 bucket of metric partitions (metrics/) and MLflow artifacts (mlflow/)."
  value       = aws_s3_bucket.data.bucket
}

output "ssm_parameter_path" {
  description = "Root of this deployment's SecureString parameters."
  value       = local.ssm_prefix
}

output "grafana_admin_password_parameter" {
  description = "SSM parameter holding Grafana's admin password (aws ssm get-parameter --with-decryption --name ...)."
  value       = aws_ssm_parameter.monitoring["grafana_admin_password"].name
}

output "chatops_token_parameter" {
  description = "SSM parameter holding the ChatOps bearer token."
  value       = aws_ssm_parameter.app["chatops_token"].name
}

output "remediation_tag" {
  description = "Tag an Auto Scaling group or instance must carry for remediation to act on it."
  value       = "${local.remediation_tag_key}=${local.remediation_tag_value}"
}
