# Three dnsfailover nodes (one per region) serving failover_zone with the embedded server,
# delegated from the parent zone as ns1..ns3.<failover_zone> with glue.
#
# Before applying: store the dnsfailover config as a SecureString parameter named
# config_parameter_name in each region. Its failover_zone must list ns1..ns3.<failover_zone>
# under nameservers and serve their A records (the outputs' glue addresses).
#
# etcd is not created here: run your own cluster and list its client URLs in the config's
# cluster.etcd.endpoints; each node runs with --region set to its AWS region name.

locals {
  ns_names = [for i in range(3) : "ns${i + 1}.${var.failover_zone}"]
  node_ips = [module.node_r1.public_ip, module.node_r2.public_ip, module.node_r3.public_ip]
}

module "route53_access" {
  source = "../../modules/route53-access"
  providers = {
    aws = aws.r1
  }

  name             = "${var.name}-route53"
  hosted_zone_ids  = length(var.route53_zone_ids) > 0 ? var.route53_zone_ids : [var.parent_zone_id]
  create_role      = true
  trust_principals = ["ec2.amazonaws.com"]
  tags             = var.tags
}

module "node_r1" {
  source = "../../modules/node"
  providers = {
    aws = aws.r1
  }

  name                  = "${var.name}-${var.regions[0]}"
  vpc_id                = var.networks[0].vpc_id
  subnet_ids            = var.networks[0].subnet_ids
  instance_type         = var.instance_type
  config_parameter_name = var.config_parameter_name
  dnsfailover_package   = var.dnsfailover_package
  instance_role_name    = module.route53_access.role_name
  api_port              = var.api_port
  admin_cidr_blocks     = var.admin_cidr_blocks
  tags                  = var.tags
}

module "node_r2" {
  source = "../../modules/node"
  providers = {
    aws = aws.r2
  }

  name                  = "${var.name}-${var.regions[1]}"
  vpc_id                = var.networks[1].vpc_id
  subnet_ids            = var.networks[1].subnet_ids
  instance_type         = var.instance_type
  config_parameter_name = var.config_parameter_name
  dnsfailover_package   = var.dnsfailover_package
  instance_role_name    = module.route53_access.role_name
  api_port              = var.api_port
  admin_cidr_blocks     = var.admin_cidr_blocks
  tags                  = var.tags
}

module "node_r3" {
  source = "../../modules/node"
  providers = {
    aws = aws.r3
  }

  name                  = "${var.name}-${var.regions[2]}"
  vpc_id                = var.networks[2].vpc_id
  subnet_ids            = var.networks[2].subnet_ids
  instance_type         = var.instance_type
  config_parameter_name = var.config_parameter_name
  dnsfailover_package   = var.dnsfailover_package
  instance_role_name    = module.route53_access.role_name
  api_port              = var.api_port
  admin_cidr_blocks     = var.admin_cidr_blocks
  tags                  = var.tags
}

# Delegation: the parent zone says the failover zone is served by the three nodes...
resource "aws_route53_record" "delegation" {
  provider = aws.r1

  zone_id = var.parent_zone_id
  name    = var.failover_zone
  type    = "NS"
  ttl     = var.ns_ttl
  records = [for n in local.ns_names : "${n}."]
}

# ...and, since their names are inside the delegated zone, gives their addresses (glue).
resource "aws_route53_record" "glue" {
  provider = aws.r1
  count    = 3

  zone_id = var.parent_zone_id
  name    = local.ns_names[count.index]
  type    = "A"
  ttl     = var.ns_ttl
  records = [local.node_ips[count.index]]
}
