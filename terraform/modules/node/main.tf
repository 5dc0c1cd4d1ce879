# One dnsfailover node in one region: a one-instance Auto Scaling group (self-healing) that
# claims a fixed Elastic IP at boot, so the address can be used as NS glue.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_ssm_parameter" "al2023" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

locals {
  region    = data.aws_region.current.name
  arn       = "arn:${data.aws_partition.current.partition}"
  account   = data.aws_caller_identity.current.account_id
  ami_id    = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.al2023[0].value)
  log_group = "/dnsfailover/${var.name}"
}

resource "aws_eip" "this" {
  #checkov:skip=CKV2_AWS_19:The instance associates this address itself at boot (user data), so the Auto Scaling group can replace it.
  domain = "vpc"
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_cloudwatch_log_group" "this" {
  # kms_key_id is optional: without it CloudWatch Logs encrypts at rest with its own keys.
  name              = local.log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-"
  description = "dnsfailover node ${var.name}: DNS in, admin API from admin CIDRs only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = var.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "dns_udp" {
  for_each = toset(var.dns_cidr_blocks)

  security_group_id = aws_security_group.this.id
  description       = "DNS queries (UDP)"
  ip_protocol       = "udp"
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "dns_tcp" {
  for_each = toset(var.dns_cidr_blocks)

  security_group_id = aws_security_group.this.id
  description       = "DNS queries (TCP)"
  ip_protocol       = "tcp"
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "api" {
  for_each = var.api_port == null ? toset([]) : toset(var.admin_cidr_blocks)

  security_group_id = aws_security_group.this.id
  description       = "Admin API"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "out" {
  # All ports: health checks probe whatever endpoints and ports the dnsfailover config names;
  # narrow egress_cidr_blocks to them.
  for_each = toset(var.egress_cidr_blocks)

  security_group_id = aws_security_group.this.id
  description       = "Health checks, package install, AWS APIs"
  ip_protocol       = "-1"
  cidr_ipv4         = each.value
}

data "aws_iam_policy_document" "node" {
  statement {
    sid       = "ReadOwnConfig"
    effect    = "Allow"
    actions   = ["ssm:GetParameter"]
    resources = ["${local.arn}:ssm:${local.region}:${local.account}:parameter${var.config_parameter_name}"]
  }

  dynamic "statement" {
    for_each = var.config_kms_key_arn == null ? [] : [var.config_kms_key_arn]
    content {
      sid       = "DecryptOwnConfig"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${local.region}.amazonaws.com"]
      }
    }
  }

  statement {
    sid     = "ClaimOwnAddress"
    effect  = "Allow"
    actions = ["ec2:AssociateAddress"]
    resources = [
      "${local.arn}:ec2:${local.region}:${local.account}:elastic-ip/${aws_eip.this.allocation_id}",
      "${local.arn}:ec2:${local.region}:${local.account}:instance/*",
      "${local.arn}:ec2:${local.region}:${local.account}:network-interface/*",
    ]
  }

  statement {
    sid       = "WriteOwnLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }
}

resource "aws_iam_role_policy" "node" {
  name_prefix = "${var.name}-"
  role        = var.instance_role_name
  policy      = data.aws_iam_policy_document.node.json
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${var.name}-"
  role        = var.instance_role_name
  tags        = var.tags
}

resource "aws_launch_template" "this" {
  #checkov:skip=CKV_AWS_88:An authoritative DNS server must be reachable from the internet; the boot address is replaced by the node's Elastic IP.
  name_prefix   = "${var.name}-"
  image_id      = local.ami_id
  instance_type = var.instance_type
  ebs_optimized = true
  user_data = base64encode(templatefile("${path.module}/user_data.sh.tftpl", {
    region           = local.region
    node_region      = coalesce(var.dnsfailover_region, local.region)
    api_listen       = var.api_port == null ? "127.0.0.1:8053" : "0.0.0.0:${var.api_port}"
    allocation_id    = aws_eip.this.allocation_id
    package          = var.dnsfailover_package
    config_parameter = var.config_parameter_name
    log_group        = local.log_group
    environment      = var.environment
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  network_interfaces {
    associate_public_ip_address = true
    delete_on_termination       = true
    security_groups             = [aws_security_group.this.id]
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.ebs_kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = var.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = var.name })
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "this" {
  name_prefix         = "${var.name}-"
  min_size            = 1
  max_size            = 1
  desired_capacity    = 1
  vpc_zone_identifier = var.subnet_ids
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 0
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = var.name })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
