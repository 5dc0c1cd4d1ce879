variable "regions" {
  description = "The three regions to run a node in, e.g. [\"eu-west-1\", \"us-east-1\", \"ap-southeast-1\"]."
  type        = list(string)

  validation {
    condition     = length(var.regions) == 3
    error_message = "Give exactly three regions."
  }
}

variable "networks" {
  description = "Per region (same order as regions): the VPC and public subnets for that node."
  type = list(object({
    vpc_id     = string
    subnet_ids = list(string)
  }))

  validation {
    condition     = length(var.networks) == 3
    error_message = "Give one network per region (three)."
  }
}

variable "name" {
  description = "Name prefix for every resource."
  type        = string
  default     = "dnsfailover"
}

variable "failover_zone" {
  description = "The zone the nodes serve with the embedded server, e.g. failover.example.com (no trailing dot)."
  type        = string
}

variable "parent_zone_id" {
  description = "Route 53 hosted zone ID of the failover zone's parent (e.g. example.com), where the NS delegation and glue are written."
  type        = string
}

variable "route53_zone_ids" {
  description = "Hosted zones the nodes also manage with the route53 provider (may include the parent)."
  type        = list(string)
  default     = []
}

variable "config_parameter_name" {
  description = "Name of the SSM SecureString parameter with the dnsfailover config, created beforehand in each of the three regions."
  type        = string
  default     = "/dnsfailover/config"
}

variable "admin_cidr_blocks" {
  description = "CIDRs allowed to reach the nodes' admin API port (api_port)."
  type        = list(string)
  default     = []
}

variable "api_port" {
  description = "Admin API port on the nodes; null opens none."
  type        = number
  default     = null
}

variable "instance_type" {
  description = "EC2 instance type of every node."
  type        = string
  default     = "t3.small"
}

variable "ns_ttl" {
  description = "TTL of the delegation NS and glue A records."
  type        = number
  default     = 3600
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "dnsfailover_package" {
  description = "pip requirements each node installs, with dnsfailover-server pinned (a version, a git tag or a wheel URL; see the node module), e.g. \"dnsfailover-server==0.1.0 dnsfailover-route53==0.1.0\"."
  type        = string
}
