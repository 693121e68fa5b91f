variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "project" {
  description = "Name prefix for every resource (lower case letters, digits and dashes)."
  type        = string
  default     = "smartcloudops"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.project))
    error_message = "project must be 3-21 characters: lower case letters, digits, dashes; starting with a letter."
  }
}

variable "environment" {
  description = "Deployment environment; part of names, tags and the SSM parameter path."
  type        = string
  default     = "prod"

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 24
    error_message = "vpc_cidr must be an IPv4 CIDR block of /24 or larger."
  }
}

variable "public_subnet_cidrs" {
  description = "CIDR blocks of the two public subnets, one per availability zone, inside vpc_cidr."
  type        = list(string)
  default     = ["10.0.1.0/24", "10.0.2.0/24"]

  validation {
    condition     = length(var.public_subnet_cidrs) == 2 && alltrue([for c in var.public_subnet_cidrs : can(cidrhost(c, 0))])
    error_message = "public_subnet_cidrs must hold exactly two IPv4 CIDR blocks."
  }
}

variable "availability_zones" {
  description = "The two availability zones of the public subnets; empty means <region>a and <region>b."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || (length(var.availability_zones) == 2 && alltrue([for z in var.availability_zones : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$", z))]))
    error_message = "availability_zones must be empty or hold two zone names such as us-east-1a."
  }
}

variable "admin_cidr" {
  description = "The only network allowed to SSH (22) to the instances and to reach the Prometheus UI (9090), e.g. your office's /32."
  type        = string

  validation {
    condition     = can(cidrhost(var.admin_cidr, 0)) && !startswith(var.admin_cidr, "0.0.0.0/")
    error_message = "admin_cidr must be an IPv4 CIDR block narrower than the whole internet (not 0.0.0.0/0)."
  }
}

variable "web_ingress_cidrs" {
  description = "Networks allowed to the Grafana UI (3000) and the ChatOps API behind port 80. Defaults to admin_cidr only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.web_ingress_cidrs : can(cidrhost(c, 0))])
    error_message = "web_ingress_cidrs must be IPv4 CIDR blocks."
  }
}

variable "monitoring_instance_type" {
  description = "EC2 instance type of the monitoring host (Prometheus, Grafana, node_exporter)."
  type        = string
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*\\.[a-z0-9]+$", var.monitoring_instance_type))
    error_message = "monitoring_instance_type must look like t3.small."
  }
}

variable "application_instance_type" {
  description = "EC2 instance type of the application host (Airflow, MLflow, scoring, ChatOps). Training needs a few GiB of memory."
  type        = string
  default     = "t3.xlarge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*\\.[a-z0-9]+$", var.application_instance_type))
    error_message = "application_instance_type must look like t3.xlarge."
  }
}

variable "root_volume_gb" {
  description = "Size of each instance's encrypted root volume in GiB."
  type        = number
  default     = 40

  validation {
    condition     = var.root_volume_gb >= 20 && var.root_volume_gb <= 1000
    error_message = "root_volume_gb must be between 20 and 1000."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key for the ubuntu user; empty means no key pair (use SSM Session Manager instead)."
  type        = string
  default     = ""

  validation {
    condition     = var.ssh_public_key == "" || can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp[0-9]+) ", var.ssh_public_key))
    error_message = "ssh_public_key must be an OpenSSH public key (ssh-ed25519 ..., ssh-rsa ..., ecdsa-sha2-...)."
  }
}

variable "app_image" {
  description = "Container image of the application (built and pushed by .github/workflows/ci-app.yml)."
  type        = string
  default     = "ghcr.io/smartcloudops/smartcloudops:main"

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$", var.app_image))
    error_message = "app_image must be a full image reference with a tag or digest, e.g. ghcr.io/org/smartcloudops:1.2.3."
  }
}

variable "repo_url" {
  description = "HTTPS URL of this repository; user data checks it out for docker-compose.yaml and deploy/."
  type        = string
  default     = "https://github.com/smartcloudops/smartcloudops-ai.git"

  validation {
    condition     = can(regex("^https://", var.repo_url))
    error_message = "repo_url must be an https:// URL."
  }
}

variable "repo_ref" {
  description = "Git branch or tag of repo_url to deploy."
  type        = string
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.repo_ref))
    error_message = "repo_ref must be a branch or tag name."
  }
}

variable "remediation_asg_prefix" {
  description = "Name prefix of the Auto Scaling groups remediation may scale (they must also carry the tag smartcloudops:remediation = enabled)."
  type        = string
  default     = "smartcloudops-"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{3,64}$", var.remediation_asg_prefix))
    error_message = "remediation_asg_prefix must be 3-64 characters of letters, digits, dot, dash, underscore."
  }
}

variable "log_retention_days" {
  description = "Retention of the VPC flow log group in days (a value CloudWatch Logs accepts)."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention of at least one year (365, 400, 545, 731, ...)."
  }
}

variable "metrics_retention_days" {
  description = "Days after which metric partitions in the bucket expire (MLflow artifacts are kept)."
  type        = number
  default     = 400

  validation {
    condition     = var.metrics_retention_days >= 30
    error_message = "metrics_retention_days must be at least 30."
  }
}

variable "llm_api_key" {
  description = "Optional API key of the LLM provider for ChatOps, stored as an SSM SecureString; empty means no LLM."
  type        = string
  default     = ""
  sensitive   = true
}

variable "llm_api_key_env" {
  description = "Environment variable LiteLLM reads the llm_api_key from (the provider's own name)."
  type        = string
  default     = "OPENAI_API_KEY"

  validation {
    condition     = contains(["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"], var.llm_api_key_env)
    error_message = "llm_api_key_env must be one of the variables docker-compose.yaml passes to ChatOps: OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, MISTRAL_API_KEY."
  }
}

variable "llm_model" {
  description = "Optional LiteLLM model name for ChatOps (e.g. gpt-4o-mini); empty means deterministic answers only."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9._/:-]*$", var.llm_model))
    error_message = "llm_model may hold letters, digits and . _ / : - only."
  }
}
