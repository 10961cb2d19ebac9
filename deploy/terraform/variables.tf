variable "castai_api_token" {
  description = "Cast AI API key: usage records and heartbeats go to Cast AI, and callers' Cast AI keys are verified with it (the chart's castai.apiKey)."
  type        = string
  sensitive   = true
}

variable "cluster_id" {
  description = "The Cast AI cluster ID (castai.clusterID), e.g. the cluster_id output of Cast AI's cluster modules."
  type        = string
}

variable "api_url" {
  description = "The Cast AI API (castai.apiURL)."
  type        = string
  default     = "https://api.cast.ai"
}

variable "api_key_fallback" {
  description = "The caller key used for requests that carry none (API_KEY_FALLBACK); null for none."
  type        = string
  default     = null
  sensitive   = true
}

variable "namespace" {
  description = "Namespace of the release. castai-agent, as Cast AI installs castai-ai-optimizer-proxy, keeps the address apps use: castai-ai-optimizer-proxy.castai-agent:443."
  type        = string
  default     = "castai-agent"
}

variable "create_namespace" {
  description = "Create the release namespace when it does not exist (helm --create-namespace)."
  type        = bool
  default     = true
}

variable "replicas" {
  description = "Gateway pods. More than one needs redis_url, so that limits, budgets and registrations are shared."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 1 && floor(var.replicas) == var.replicas
    error_message = "replicas is a whole number, 1 or more."
  }
}

variable "redis_url" {
  description = "STORE_URL: redis://, rediss://, redis+sentinel:// or redis+cluster:// (it may carry a password); null keeps state in each pod."
  type        = string
  default     = null
  sensitive   = true
}

variable "values" {
  description = "More chart values as YAML documents (e.g. yamlencode({...})), applied after the module's own."
  type        = list(string)
  default     = []
}

variable "chart_version" {
  description = "Chart version to install from chart_repository. With the chart in this repository (the default) the checked-out chart is installed and this is not used."
  type        = string
  default     = null
}

variable "chart_repository" {
  description = "A Helm repository serving the ai-enabler-proxy chart; null installs the chart from this repository's deploy/helm."
  type        = string
  default     = null
}

variable "release_name" {
  description = "Helm release name. The Service is named castai-ai-optimizer-proxy whatever it is, unless values set fullnameOverride."
  type        = string
  default     = "castai-ai-optimizer-proxy"
}
