terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

# One provider per region. IAM and Route 53 are global; they use the first one.
provider "aws" {
  alias  = "r1"
  region = var.regions[0]
}

provider "aws" {
  alias  = "r2"
  region = var.regions[1]
}

provider "aws" {
  alias  = "r3"
  region = var.regions[2]
}
