# Instance roles, least privilege:
#   application: its bucket prefixes, its SSM branch, and exactly what remediation's actions
#                declare (remediation/actions.py: Auto Scaling for scale_up/scale_down,
#                SSM Run Command for restart_service/health_check), limited by tag;
#   monitoring:  its SSM branch only.
# Both: the few calls the SSM agent needs (Run Command targets, Session Manager), instead
# of AmazonSSMManagedInstanceCore, which would also let them read every SSM parameter.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "ssm_agent" {
  statement {
    sid       = "SsmAgentRegistersItsOwnInstance"
    actions   = ["ssm:UpdateInstanceInformation", "ssm:ListInstanceAssociations"]
    resources = ["arn:${local.partition}:ec2:${var.region}:${local.account_id}:instance/*"]
  }

  statement {
    # These message channels have no resource-level permissions in IAM.
    sid = "SsmAgentMessageChannels"
    actions = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
      "ec2messages:AcknowledgeMessage",
      "ec2messages:DeleteMessage",
      "ec2messages:FailMessage",
      "ec2messages:GetEndpoint",
      "ec2messages:GetMessages",
      "ec2messages:SendReply",
    ]
    resources = ["*"]
  }
}

# -- application ----------------------------------------------------------------------------

data "aws_iam_policy_document" "application" {
  statement {
    sid       = "ListOnlyOurPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.metrics_prefix}/*", local.metrics_prefix, "${local.mlflow_prefix}/*", local.mlflow_prefix]
    }
  }

  statement {
    # Metric partitions are replaced by one put_object; they are never deleted by the app.
    sid       = "MetricPartitions"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.data.arn}/${local.metrics_prefix}/*"]
  }

  statement {
    sid       = "MlflowArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.data.arn}/${local.mlflow_prefix}/*"]
  }

  statement {
    sid     = "ReadOwnSecrets"
    actions = ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"]
    resources = [
      "${local.ssm_parameter_arn}${local.ssm_app_path}",
      "${local.ssm_parameter_arn}${local.ssm_app_path}/*",
      # The app creates the read-only database role that Grafana logs in with.
      aws_ssm_parameter.monitoring["grafana_db_reader_password"].arn,
    ]
  }

  statement {
    sid       = "UseTheKeyOnlyThroughS3AndSsm"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "ssm.${var.region}.amazonaws.com"]
    }
  }

  statement {
    # Describe* calls have no resource-level permissions in IAM.
    sid       = "RemediationDescribe"
    actions   = ["autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstanceStatus", "ssm:GetCommandInvocation"]
    resources = ["*"]
  }

  statement {
    sid       = "RemediationScaleTaggedGroupsOnly"
    actions   = ["autoscaling:SetDesiredCapacity"]
    resources = ["arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.remediation_asg_prefix}*"]

    condition {
      test     = "StringEquals"
      variable = "autoscaling:ResourceTag/${local.remediation_tag_key}"
      values   = [local.remediation_tag_value]
    }
  }

  statement {
    sid       = "RemediationRunTheShellDocument"
    actions   = ["ssm:SendCommand"]
    resources = ["arn:${local.partition}:ssm:${var.region}::document/AWS-RunShellScript"]
  }

  statement {
    sid       = "RemediationOnTaggedInstancesOnly"
    actions   = ["ssm:SendCommand"]
    resources = ["arn:${local.partition}:ec2:${var.region}:${local.account_id}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/${local.remediation_tag_key}"
      values   = [local.remediation_tag_value]
    }
  }
}

resource "aws_iam_role" "application" {
  name               = "${local.name}-application"
  description        = "SmartCloudOps application host"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "application" {
  name   = "application"
  role   = aws_iam_role.application.id
  policy = data.aws_iam_policy_document.application.json
}

resource "aws_iam_role_policy" "application_ssm_agent" {
  name   = "ssm-agent"
  role   = aws_iam_role.application.id
  policy = data.aws_iam_policy_document.ssm_agent.json
}

resource "aws_iam_instance_profile" "application" {
  name = "${local.name}-application"
  role = aws_iam_role.application.name
}

# -- monitoring -----------------------------------------------------------------------------

data "aws_iam_policy_document" "monitoring" {
  statement {
    sid     = "ReadOwnSecrets"
    actions = ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"]
    resources = [
      "${local.ssm_parameter_arn}${local.ssm_monitoring_path}",
      "${local.ssm_parameter_arn}${local.ssm_monitoring_path}/*",
    ]
  }

  statement {
    sid       = "DecryptOwnSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${local.name}-monitoring"
  description        = "SmartCloudOps monitoring host"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "monitoring" {
  name   = "monitoring"
  role   = aws_iam_role.monitoring.id
  policy = data.aws_iam_policy_document.monitoring.json
}

resource "aws_iam_role_policy" "monitoring_ssm_agent" {
  name   = "ssm-agent"
  role   = aws_iam_role.monitoring.id
  policy = data.aws_iam_policy_document.ssm_agent.json
}

resource "aws_iam_instance_profile" "monitoring" {
  name = "${local.name}-monitoring"
  role = aws_iam_role.monitoring.name
}

# -- VPC flow logs --------------------------------------------------------------------------

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${local.name}-flow-logs"
  description        = "Lets VPC flow logs write to their log group"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}
