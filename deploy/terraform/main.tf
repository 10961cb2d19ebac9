# Installs the gateway's Helm chart, as Cast AI's cluster modules install castai-ai-optimizer-proxy
# (`install_ai_optimizer = true`): same release name, namespace and Service address.

locals {
  # The chart in this repository; a released chart when chart_repository is set.
  chart = var.chart_repository == null ? "${path.module}/../helm/ai-enabler-proxy" : "ai-enabler-proxy"

  settings = {
    castai = {
      apiURL    = var.api_url
      clusterID = var.cluster_id
    }
    replicaCount = var.replicas
  }

  # Kept apart so only this document is sensitive in plans. A null removes the key (Helm's rule
  # for values), leaving the chart's default: no fallback key, no Redis.
  secret_settings = {
    castai = {
      apiKey         = var.castai_api_token
      apiKeyFallback = var.api_key_fallback
    }
    proxy = {
      storeUrl  = var.redis_url
      secretKey = random_password.proxy_secret_key.result
    }
  }
}

# PROXY_SECRET_KEY seals the provider keys the gateway stores. Every replica needs the same one,
# and it must outlive upgrades (a new key could not open the keys already stored): generated once
# and kept in the Terraform state.
resource "random_password" "proxy_secret_key" {
  length  = 48
  special = false
}

resource "helm_release" "ai_enabler_proxy" {
  name             = var.release_name
  chart            = local.chart
  repository       = var.chart_repository
  version          = var.chart_version
  namespace        = var.namespace
  create_namespace = var.create_namespace
  cleanup_on_fail  = true
  wait             = true

  values = concat([yamlencode(local.settings), yamlencode(local.secret_settings)], var.values)

  lifecycle {
    precondition {
      # Without Redis each pod keeps its own limits, budgets and registered providers.
      condition     = var.replicas == 1 || var.redis_url != null
      error_message = "replicas > 1 needs redis_url: without a shared store each pod enforces limits and budgets alone."
    }
  }
}
