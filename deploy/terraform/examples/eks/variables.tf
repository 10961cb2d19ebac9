variable "castai_api_token" {
  description = "Cast AI API key."
  type        = string
  sensitive   = true
}

variable "cluster_name" {
  description = "Name of the EKS cluster to create."
  type        = string
  default     = "llm-gateway"
}

variable "cluster_region" {
  description = "AWS region of the cluster."
  type        = string
  default     = "eu-central-1"
}

variable "redis_url" {
  description = "STORE_URL for more than one gateway pod, e.g. an ElastiCache endpoint: rediss://:TOKEN@primary.xxxx.cache.amazonaws.com:6379/0."
  type        = string
  default     = null
  sensitive   = true
}

variable "image_repository" {
  description = "Where deploy/Dockerfile's image was pushed, e.g. an ECR repository URL."
  type        = string
}
