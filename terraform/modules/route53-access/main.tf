# Least-privilege access for the dnsfailover route53 provider
# (providers/route53/dnsfailover_route53/provider.py). The actions below are exactly the API
# calls it makes; tests/test_terraform.py records them against moto and fails on any drift.

data "aws_partition" "current" {}

resource "aws_route53_zone" "this" {
  #checkov:skip=CKV2_AWS_38:DNSSEC signing needs an asymmetric KMS key in us-east-1 and a DS record at the parent registrar; enable it outside this module once the zone is delegated.
  #checkov:skip=CKV2_AWS_39:Query logging needs a us-east-1 log group with a Route 53 resource policy; opt in outside this module if you need it.
  count = var.create_hosted_zone ? 1 : 0

  name    = var.zone_name
  comment = "Managed by dnsfailover (route53 provider)"
  tags    = var.tags

  lifecycle {
    precondition {
      condition     = var.zone_name != null
      error_message = "zone_name is required when create_hosted_zone is true."
    }
  }
}

locals {
  zone_ids  = concat(var.hosted_zone_ids, aws_route53_zone.this[*].zone_id)
  zone_arns = [for id in local.zone_ids : "arn:${data.aws_partition.current.partition}:route53:::hostedzone/${id}"]
}

data "aws_iam_policy_document" "route53" {
  # Finding a zone by name (a zone without the hosted_zone_id option).
  # route53:ListHostedZonesByName does not support resource-level permissions, so its
  # resource must be "*"; it only reads zone names and IDs.
  statement {
    sid       = "FindHostedZoneByName"
    effect    = "Allow"
    actions   = ["route53:ListHostedZonesByName"]
    resources = ["*"]
  }

  # Checking a given zone, listing its record sets, and writing the change batches:
  # only on the managed hosted zones.
  statement {
    sid    = "ManageRecordSets"
    effect = "Allow"
    actions = [
      "route53:GetHostedZone",
      "route53:ListResourceRecordSets",
      "route53:ChangeResourceRecordSets",
    ]
    resources = local.zone_arns
  }

  # Waiting for INSYNC. Change IDs are not known in advance, so change/* (changes only).
  statement {
    sid       = "ConfirmChanges"
    effect    = "Allow"
    actions   = ["route53:GetChange"]
    resources = ["arn:${data.aws_partition.current.partition}:route53:::change/*"]
  }
}

resource "aws_iam_policy" "route53" {
  name_prefix = "${var.name}-"
  description = "dnsfailover route53 provider: manage record sets of the listed hosted zones"
  policy      = data.aws_iam_policy_document.route53.json
  tags        = var.tags

  lifecycle {
    precondition {
      condition     = length(local.zone_ids) > 0
      error_message = "Give at least one hosted_zone_ids entry or set create_hosted_zone."
    }
  }
}

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "TrustedServices"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = var.trust_principals
    }
  }
}

resource "aws_iam_role" "this" {
  count = var.create_role ? 1 : 0

  name_prefix        = "${substr(var.name, 0, 32)}-"
  description        = "Runs dnsfailover with the route53 provider"
  assume_role_policy = data.aws_iam_policy_document.trust.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "this" {
  count = var.create_role ? 1 : 0

  role       = aws_iam_role.this[0].name
  policy_arn = aws_iam_policy.route53.arn
}
