output "policy_arn" {
  description = "ARN of the least-privilege Route 53 policy (attach it to any principal running dnsfailover)."
  value       = aws_iam_policy.route53.arn
}

output "policy_json" {
  description = "The policy document, for review."
  value       = data.aws_iam_policy_document.route53.json
}

output "role_name" {
  description = "Name of the created role, or null when create_role is false."
  value       = one(aws_iam_role.this[*].name)
}

output "role_arn" {
  description = "ARN of the created role, or null when create_role is false."
  value       = one(aws_iam_role.this[*].arn)
}

output "hosted_zone_ids" {
  description = "Every hosted zone the policy covers (given and created)."
  value       = local.zone_ids
}

output "created_zone_id" {
  description = "ID of the created hosted zone, or null."
  value       = one(aws_route53_zone.this[*].zone_id)
}

output "created_zone_name_servers" {
  description = "Route 53 name servers of the created hosted zone (delegate to them at the parent), or an empty list."
  value       = flatten(aws_route53_zone.this[*].name_servers)
}
