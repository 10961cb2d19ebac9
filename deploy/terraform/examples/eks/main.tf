# An EKS cluster (terraform-aws-modules), connected to Cast AI, with the gateway installed by this
# repository's module where Cast AI's cluster module would install castai-ai-optimizer-proxy.
# Apps in the cluster call http://castai-ai-optimizer-proxy.castai-agent:443/openai/v1.
#
#   terraform init && terraform apply -var castai_api_token=$CASTAI_API_KEY \
#     -var image_repository=123456789012.dkr.ecr.eu-central-1.amazonaws.com/ai-enabler-proxy
#
# With Cast AI's own cluster module (castai/eks-cluster/castai), leave its install_ai_optimizer
# false, and pass its cluster_id output to this module instead of the data source below.

provider "aws" {
  region = var.cluster_region
}

provider "castai" {
  api_token = var.castai_api_token
}

provider "helm" {
  kubernetes = {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)
    token                  = data.aws_eks_cluster_auth.this.token
  }
}

data "aws_availability_zones" "available" {}

data "aws_caller_identity" "current" {}

data "aws_eks_cluster_auth" "this" {
  name = module.eks.cluster_name
}

module "vpc" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.0"

  name               = var.cluster_name
  cidr               = "10.0.0.0/16"
  azs                = slice(data.aws_availability_zones.available.names, 0, 3)
  private_subnets    = ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
  public_subnets     = ["10.0.101.0/24", "10.0.102.0/24", "10.0.103.0/24"]
  enable_nat_gateway = true
  single_nat_gateway = true
}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.0"

  cluster_name                             = var.cluster_name
  cluster_version                          = "1.31"
  cluster_endpoint_public_access           = true
  enable_cluster_creator_admin_permissions = true
  vpc_id                                   = module.vpc.vpc_id
  subnet_ids                               = module.vpc.private_subnets

  eks_managed_node_groups = {
    default = {
      instance_types = ["m6i.large"]
      min_size       = 2
      max_size       = 4
      desired_size   = 2
    }
  }
}

# The cluster's ID at Cast AI, which registers it on first sight.
data "castai_eks_clusterid" "this" {
  account_id   = data.aws_caller_identity.current.account_id
  region       = var.cluster_region
  cluster_name = module.eks.cluster_name
}

module "ai_enabler_proxy" {
  source = "../.."

  castai_api_token = var.castai_api_token
  cluster_id       = data.castai_eks_clusterid.this.id
  api_url          = "https://api.cast.ai"
  namespace        = "castai-agent"
  create_namespace = true
  replicas         = var.redis_url == null ? 1 : 3
  redis_url        = var.redis_url

  values = [yamlencode({
    image               = { repository = var.image_repository }
    podDisruptionBudget = { enabled = var.redis_url != null, maxUnavailable = 1 }
  })]

  depends_on = [module.eks]
}

output "openai_base_url" {
  value = module.ai_enabler_proxy.openai_base_url
}
