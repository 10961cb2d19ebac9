output "release_name" {
  description = "The Helm release."
  value       = helm_release.ai_enabler_proxy.name
}

output "namespace" {
  description = "Namespace of the release."
  value       = helm_release.ai_enabler_proxy.namespace
}

output "openai_base_url" {
  description = "The in-cluster OpenAI base URL apps use (plain HTTP on the Service's port 443, as with Cast AI's proxy), unless values set fullnameOverride or nameOverride."
  value       = "http://castai-ai-optimizer-proxy.${helm_release.ai_enabler_proxy.namespace}.svc.cluster.local:443/openai/v1"
}
