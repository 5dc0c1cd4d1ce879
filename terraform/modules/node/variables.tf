variable "name" {
  description = "Name of this node (used for resource names and tags), e.g. dnsfailover-eu-west-1."
  type        = string
}

variable "vpc_id" {
  description = "VPC to run the node in."
  type        = string
}

variable "subnet_ids" {
  description = "Public subnets for the Auto Scaling group (one node at a time runs in one of them)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "Give at least one subnet."
  }
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "t3.small"
}

variable "ami_id" {
  description = "AMI to boot (Amazon Linux 2023 expected); null picks the latest AL2023 x86_64 from SSM."
  type        = string
  default     = null
}

variable "root_volume_size" {
  description = "Root volume size in GiB (always encrypted)."
  type        = number
  default     = 16
}

variable "ebs_kms_key_arn" {
  description = "KMS key for the root volume; null uses the account's default EBS key."
  type        = string
  default     = null
}

variable "dnsfailover_package" {
  description = "pip requirements installed on the node, space-separated, with dnsfailover-server pinned: a version (\"dnsfailover-server==0.1.0 dnsfailover-route53==0.1.0\"), a tag of a git repository (\"dnsfailover-server@git+https://git.example.com/dnsfailover.git@v0.1.0 dnsfailover-route53@git+https://git.example.com/dnsfailover.git@v0.1.0#subdirectory=providers/route53\") or a wheel URL. No default: `dnsfailover` on PyPI is an unrelated project and nothing is published under these names yet (docs/packaging.md)."
  type        = string

  validation {
    condition     = can(regex("(^|\\s)dnsfailover-server(\\[[a-z0-9,]+\\])?(==[0-9][^\\s]*|@git\\+https://[^\\s@]+@[^\\s#]+|@https://[^\\s?]+\\.whl(\\?[^\\s]*)?)(\\s|$)", var.dnsfailover_package))
    error_message = "Pin dnsfailover-server: dnsfailover-server==VERSION, dnsfailover-server@git+https://HOST/REPO.git@TAG or dnsfailover-server@https://HOST/PATH.whl (no spaces around @)."
  }

  validation {
    condition     = !can(regex("(^|\\s)dnsfailover(\\[[^\\]]*\\])?([=<>~!@\\s]|$)", var.dnsfailover_package))
    error_message = "`dnsfailover` on PyPI is an unrelated project: install dnsfailover-server."
  }
}

variable "config_parameter_name" {
  description = "Name of an existing SSM SecureString parameter holding the dnsfailover YAML config (e.g. /dnsfailover/config). The node may read only this parameter."
  type        = string

  validation {
    condition     = startswith(var.config_parameter_name, "/")
    error_message = "Use a fully qualified parameter name starting with /."
  }
}

variable "config_kms_key_arn" {
  description = "Customer managed KMS key that encrypts the parameter; null when it uses the AWS managed aws/ssm key."
  type        = string
  default     = null
}

variable "dns_cidr_blocks" {
  description = "CIDRs allowed to query the node on 53/udp and 53/tcp."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "api_port" {
  description = "TCP port of the node's HTTP API (status, overrides, /metrics), reachable only from admin_cidr_blocks; null keeps the API on 127.0.0.1:8053."
  type        = number
  default     = null
}

variable "admin_cidr_blocks" {
  description = "CIDRs allowed to reach api_port."
  type        = list(string)
  default     = []
}

variable "egress_cidr_blocks" {
  description = "Where the node may connect: package mirrors, AWS APIs, and every endpoint its health checks probe."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "instance_role_name" {
  description = "IAM role for the instance (e.g. route53-access's role_name); this module adds an inline policy for its own parameter, Elastic IP and log group."
  type        = string
}

variable "environment" {
  description = "Extra environment variables for the dnsfailover service (written to /etc/dnsfailover/env)."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group, in days."
  type        = number
  default     = 365
}

variable "log_kms_key_arn" {
  description = "KMS key ARN that encrypts the log group; null uses CloudWatch's default encryption."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource this module creates (and its instances)."
  type        = map(string)
  default     = {}
}

variable "dnsfailover_region" {
  description = "The node's region as the config's `regions:` names it (serve --region); null uses the AWS region name."
  type        = string
  default     = null
}
