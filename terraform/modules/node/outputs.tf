output "public_ip" {
  description = "The node's Elastic IP: the address to use as NS glue."
  value       = aws_eip.this.public_ip
}

output "allocation_id" {
  description = "Allocation ID of the node's Elastic IP."
  value       = aws_eip.this.allocation_id
}

output "asg_name" {
  description = "Name of the Auto Scaling group running the node."
  value       = aws_autoscaling_group.this.name
}

output "security_group_id" {
  description = "Security group of the node."
  value       = aws_security_group.this.id
}

output "log_group_name" {
  description = "CloudWatch log group receiving the service's logs."
  value       = aws_cloudwatch_log_group.this.name
}

output "instance_profile_name" {
  description = "Instance profile used by the launch template."
  value       = aws_iam_instance_profile.this.name
}
