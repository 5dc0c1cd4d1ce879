variable "name" {
  description = "Name (and name prefix) of the IAM policy and, when created, the role."
  type        = string
  default     = "dnsfailover-route53"
}

variable "hosted_zone_ids" {
  description = "IDs (Z..., without /hostedzone/) of existing hosted zones dnsfailover manages with the route53 provider."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.hosted_zone_ids : can(regex("^Z[A-Z0-9]+$", id))])
    error_message = "Each hosted zone ID must look like Z0123456789ABCDEFGHIJ (no /hostedzone/ prefix)."
  }
}

variable "create_hosted_zone" {
  description = "Also create a public hosted zone named zone_name and include it in the policy."
  type        = bool
  default     = false
}

variable "zone_name" {
  description = "Name of the hosted zone to create when create_hosted_zone is true (e.g. example.com)."
  type        = string
  default     = null
}

variable "create_role" {
  description = "Create an IAM role with the policy attached, assumable by trust_principals."
  type        = bool
  default     = false
}

variable "trust_principals" {
  description = "Service principals allowed to assume the role, e.g. [\"ec2.amazonaws.com\"] or [\"ecs-tasks.amazonaws.com\"]."
  type        = list(string)
  default     = ["ec2.amazonaws.com"]
}

variable "tags" {
  description = "Tags for every resource this module creates."
  type        = map(string)
  default     = {}
}
