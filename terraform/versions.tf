# Provider and Terraform versions. State is local by default; for a team, copy
# backend.tf.example to backend.tf and run `terraform init -backend-config=backend.hcl`
# (docs/deployment.md). A backend block cannot be made conditional, hence the copy.
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

provider "aws" {
  region = var.region

  # Every resource carries these, so cost reports and the remediation IAM conditions can
  # find what belongs to this deployment.
  default_tags {
    tags = local.common_tags
  }
}
