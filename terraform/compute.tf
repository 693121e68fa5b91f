# Two hosts in two availability zones, each with a fixed private address (each one's user
# data names the other's, which would otherwise be a dependency cycle) and an Elastic IP.

locals {
  monitoring_private_ip  = cidrhost(var.public_subnet_cidrs[0], 10)
  application_private_ip = cidrhost(var.public_subnet_cidrs[1], 10)

  monitoring_user_data = templatefile("${path.module}/templates/monitoring.sh.tftpl", {
    region                 = var.region
    repo_url               = var.repo_url
    repo_ref               = var.repo_ref
    ssm_path               = local.ssm_monitoring_path
    application_private_ip = local.application_private_ip
    environment            = var.environment
  })

  application_user_data = templatefile("${path.module}/templates/application.sh.tftpl", {
    region                = var.region
    repo_url              = var.repo_url
    repo_ref              = var.repo_ref
    ssm_path              = local.ssm_app_path
    ssm_monitoring_path   = local.ssm_monitoring_path
    app_image             = var.app_image
    bucket                = aws_s3_bucket.data.bucket
    metrics_prefix        = local.metrics_prefix
    mlflow_prefix         = local.mlflow_prefix
    monitoring_private_ip = local.monitoring_private_ip
    llm_model             = var.llm_model
    llm_enabled           = var.llm_api_key != ""
    llm_api_key_env       = var.llm_api_key_env
  })
}

resource "aws_key_pair" "admin" {
  count      = var.ssh_public_key == "" ? 0 : 1
  key_name   = "${local.name}-admin"
  public_key = var.ssh_public_key
}

resource "aws_instance" "monitoring" {
  ami                         = data.aws_ssm_parameter.ubuntu_ami.insecure_value
  instance_type               = var.monitoring_instance_type
  subnet_id                   = aws_subnet.public[0].id
  private_ip                  = local.monitoring_private_ip
  vpc_security_group_ids      = [aws_security_group.monitoring.id]
  iam_instance_profile        = aws_iam_instance_profile.monitoring.name
  key_name                    = var.ssh_public_key == "" ? null : aws_key_pair.admin[0].key_name
  associate_public_ip_address = false
  monitoring                  = true
  ebs_optimized               = true
  user_data                   = local.monitoring_user_data
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_gb
    encrypted             = true
    kms_key_id            = aws_kms_key.main.arn
    delete_on_termination = true
  }

  tags = { Name = "${local.name}-monitoring", Role = "monitoring" }

  lifecycle {
    # A newer Ubuntu image must not replace a running host by surprise.
    ignore_changes = [ami]
  }
}

resource "aws_instance" "application" {
  ami                         = data.aws_ssm_parameter.ubuntu_ami.insecure_value
  instance_type               = var.application_instance_type
  subnet_id                   = aws_subnet.public[1].id
  private_ip                  = local.application_private_ip
  vpc_security_group_ids      = [aws_security_group.application.id]
  iam_instance_profile        = aws_iam_instance_profile.application.name
  key_name                    = var.ssh_public_key == "" ? null : aws_key_pair.admin[0].key_name
  associate_public_ip_address = false
  monitoring                  = true
  ebs_optimized               = true
  user_data                   = local.application_user_data
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 2, not 1: the containers (MLflow writing to S3, remediation calling AWS) reach the
    # instance role's credentials through the Docker bridge, one hop further.
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_gb
    encrypted             = true
    kms_key_id            = aws_kms_key.main.arn
    delete_on_termination = true
  }

  # The remediation tag lets the app restart its own services through SSM Run Command.
  tags = {
    Name                        = "${local.name}-application"
    Role                        = "application"
    (local.remediation_tag_key) = local.remediation_tag_value
  }

  lifecycle {
    ignore_changes = [ami]
  }
}

resource "aws_eip" "monitoring" {
  domain   = "vpc"
  instance = aws_instance.monitoring.id

  tags = { Name = "${local.name}-monitoring" }

  depends_on = [aws_internet_gateway.main]
}

resource "aws_eip" "application" {
  domain   = "vpc"
  instance = aws_instance.application.id

  tags = { Name = "${local.name}-application" }

  depends_on = [aws_internet_gateway.main]
}
