{{/* Names and labels. The templates use a small part of Helm's template language on purpose:
     tests/deploy/gotemplate.py renders them where the helm binary is not installed. */}}

{{- define "aiep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aiep.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "aiep.name" .) | trunc 63 | trimSuffix "-" -}}
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

{{- define "aiep.hasSecret" -}}
{{- if or .Values.castai.apiKey .Values.castai.apiKeyFallback .Values.proxy.adminApiKey .Values.proxy.secretKey .Values.proxy.storeUrl .Values.proxy.cacheUrl .Values.additionalSecretEnv -}}
true
{{- end -}}
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
{{- end -}}
