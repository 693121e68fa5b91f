# Secrets as SSM SecureStrings under /<project>/<environment>/{app,monitoring}/, encrypted
# with the deployment's key. User data reads them at boot into root-only env files; nothing
# secret is in user data or in an image. Generated values live in the Terraform state too:
# keep the state encrypted (backend.tf.example sets encrypt = true).

locals {
  app_secrets        = toset(["postgres_password", "airflow_db_password", "mlflow_db_password", "events_db_password", "airflow_admin_password", "airflow_jwt_secret", "chatops_token"])
  monitoring_secrets = toset(["grafana_admin_password", "grafana_db_reader_password"])
}

resource "random_password" "app" {
  for_each = local.app_secrets
  length   = 32
  # Letters and digits only: these end up in URLs (postgresql://user:pass@...) and env files.
  special = false
}

resource "random_password" "monitoring" {
  for_each = local.monitoring_secrets
  length   = 32
  special  = false
}

# Fernet wants 32 random bytes in padded URL-safe base64 (44 characters).
resource "random_id" "airflow_fernet_key" {
  byte_length = 32
}

resource "aws_ssm_parameter" "app" {
  for_each    = local.app_secrets
  name        = "${local.ssm_app_path}/${each.key}"
  description = "SmartCloudOps application secret: ${each.key}"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = random_password.app[each.key].result
}

resource "aws_ssm_parameter" "airflow_fernet_key" {
  name        = "${local.ssm_app_path}/airflow_fernet_key"
  description = "Airflow's Fernet key (encrypts connections and variables)"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = "${random_id.airflow_fernet_key.b64_url}="
}

resource "aws_ssm_parameter" "llm_api_key" {
  count       = var.llm_api_key == "" ? 0 : 1
  name        = "${local.ssm_app_path}/llm_api_key"
  description = "API key of the LLM provider used by ChatOps"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = var.llm_api_key
}

resource "aws_ssm_parameter" "monitoring" {
  for_each    = local.monitoring_secrets
  name        = "${local.ssm_monitoring_path}/${each.key}"
  description = "SmartCloudOps monitoring secret: ${each.key}"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = random_password.monitoring[each.key].result
}
