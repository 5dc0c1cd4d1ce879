output "node_public_ips" {
  description = "Elastic IP of each node, by region (the glue addresses)."
  value       = zipmap(var.regions, local.node_ips)
}

output "asg_names" {
  description = "Auto Scaling group of each node, by region."
  value = zipmap(var.regions, [
    module.node_r1.asg_name, module.node_r2.asg_name, module.node_r3.asg_name,
  ])
}

output "log_group_names" {
  description = "CloudWatch log group of each node, by region."
  value = zipmap(var.regions, [
    module.node_r1.log_group_name, module.node_r2.log_group_name, module.node_r3.log_group_name,
  ])
}

output "route53_policy_arn" {
  description = "ARN of the least-privilege Route 53 policy attached to the nodes' role."
  value       = module.route53_access.policy_arn
}

output "role_name" {
  description = "IAM role the nodes run as."
  value       = module.route53_access.role_name
}

output "ns_records" {
  description = "The delegation written in the parent zone: NS names and their glue addresses."
  value       = zipmap(local.ns_names, local.node_ips)
}
