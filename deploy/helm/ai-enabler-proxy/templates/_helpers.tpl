{{/* Names and labels. The templates use a small part of Helm's template language on purpose:
     tests/deploy/gotemplate.py renders them where the helm binary is not installed. */}}

{{- define "aiep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* castai-ai-optimizer-proxy unless overridden: the name Cast AI's chart gives its Service, which
     apps and Cast AI's documentation call (castai-ai-optimizer-proxy.castai-agent:443). */}}
{{- define "aiep.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if .Values.nameOverride -}}
{{- printf "%s-%s" .Release.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
castai-ai-optimizer-proxy
{{- end -}}
{{- end -}}

{{- define "aiep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aiep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aiep.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "aiep.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "aiep.metadata" -}}
name: {{ include "aiep.fullname" . }}
namespace: {{ .Release.Namespace }}
labels:
  {{- include "aiep.labels" . | nindent 2 }}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "aiep.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aiep.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The chart Secret's data; the Deployment carries its hash, so a changed key restarts the pods. */}}
{{- define "aiep.secretData" -}}
{{- if and .Values.castai.enabled .Values.castai.apiKey }}
API_KEY: {{ .Values.castai.apiKey | b64enc | quote }}
{{- end }}
{{- if .Values.castai.apiKeyFallback }}
API_KEY_FALLBACK: {{ .Values.castai.apiKeyFallback | b64enc | quote }}
{{- end }}
{{- if .Values.proxy.adminApiKey }}
ADMIN_API_KEY: {{ .Values.proxy.adminApiKey | b64enc | quote }}
{{- end }}
{{- if .Values.proxy.secretKey }}
PROXY_SECRET_KEY: {{ .Values.proxy.secretKey | b64enc | quote }}
{{- end }}
{{- if .Values.proxy.storeUrl }}
STORE_URL: {{ .Values.proxy.storeUrl | b64enc | quote }}
{{- end }}
{{- if .Values.proxy.cacheUrl }}
CACHE_URL: {{ .Values.proxy.cacheUrl | b64enc | quote }}
{{- end }}
{{- range $name, $value := .Values.additionalSecretEnv }}
{{ $name }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end -}}

{{- define "aiep.castaiSecretRef" -}}
{{- if .Values.castai.enabled -}}
{{- .Values.castai.apiKeySecretRef -}}
{{- end -}}
{{- end -}}

{{- define "aiep.hasSecret" -}}
{{- if include "aiep.secretData" . -}}
true
{{- end -}}
{{- end -}}

{{/* More than one pod can run: state must then be shared (Redis) to stay exact. */}}
{{- define "aiep.scalesOut" -}}
{{- if .Values.autoscaling.enabled -}}
{{- if gt (int .Values.autoscaling.maxReplicas) 1 }}true{{ end -}}
{{- else if gt (int .Values.replicaCount) 1 -}}
true
{{- end -}}
{{- end -}}

{{/* Combinations the schema cannot express; each would start pods that cannot work. */}}
{{- define "aiep.checks" -}}
{{- if and (hasPrefix "redis" .Values.proxy.storeUrl) (not .Values.proxy.secretKey) (not .Values.proxy.existingSecret) }}
{{- fail "proxy.storeUrl (Redis) needs proxy.secretKey, or proxy.existingSecret with PROXY_SECRET_KEY: every replica must open the provider keys the others stored" }}
{{- end }}
{{- if not .Values.castai.enabled }}
{{- if dig "auth" "castaiVerification" false .Values.proxy.config }}
{{- fail "castai.enabled: false cannot verify callers' keys with Cast AI: set proxy.config.auth.castaiVerification: false" }}
{{- end }}
{{- if not (dig "auth" "keys" "" .Values.proxy.config) }}
{{- fail "castai.enabled: false needs the callers' keys in proxy.config.auth.keys (see `ai-enabler-proxy hash-key`)" }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The config file; `listen` and `dataDir` belong to the chart (ports, probes, volume). */}}
{{- define "aiep.config" -}}
listen:
  host: 0.0.0.0
  port: {{ .Values.service.targetPort }}
  healthPort: {{ .Values.healthPort }}
  workers: {{ .Values.proxy.workers }}
dataDir: /var/lib/ai-enabler-proxy
{{- with .Values.proxy.config }}
{{ toYaml . }}
{{- end }}
{{- if or .Values.egress.caBundle.configMap .Values.egress.caBundle.secret }}
{{- if dig "egress" "" .Values.proxy.config }}
{{- fail "egress.caBundle and proxy.config.egress are both set: give the CA file in one of them" }}
{{- end }}
egress:
  caFile: /etc/ai-enabler-proxy-egress/{{ .Values.egress.caBundle.key | default "ca.crt" }}
{{- end }}
{{- end -}}
