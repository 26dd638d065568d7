{{- define "optischema.name" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "optischema.labels" -}}
app.kubernetes.io/name: optischema
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "optischema.selector" -}}
app.kubernetes.io/name: optischema
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "optischema.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "optischema.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of both the Validating- and the MutatingWebhookConfiguration the chart owns (the operator may patch
these two only: RBAC resourceNames). */}}
{{- define "optischema.webhookConfiguration" -}}
{{- include "optischema.name" . -}}.optischema.io
{{- end -}}

{{/* Secret in the release namespace holding the shared webhook CA and certificate (written by the operator). */}}
{{- define "optischema.webhookSecret" -}}
{{- include "optischema.name" . -}}-webhook-ca
{{- end -}}

{{/* In each watched namespace: the identity the operator impersonates to create sandbox pods, their Secrets and
NetworkPolicies, and analysis Jobs (the operator itself may create none of these). */}}
{{- define "optischema.runnerServiceAccount" -}}
{{- include "optischema.name" . -}}-runner
{{- end -}}

{{/* In each watched namespace: what sandbox pods run as (no rights, no token mounted). */}}
{{- define "optischema.sandboxServiceAccount" -}}
{{- include "optischema.name" . -}}-sandbox
{{- end -}}

{{/* In each watched namespace: what analysis Jobs run as (role: the analysis rules). */}}
{{- define "optischema.analysisServiceAccount" -}}
{{- include "optischema.name" . -}}-analysis
{{- end -}}

{{- define "optischema.webhookHost" -}}
{{- default (printf "%s-webhook.%s.svc" (include "optischema.name" .) .Release.Namespace) .Values.webhook.host -}}
{{- end -}}

{{/* What the operator does in a watched namespace (Role or ClusterRole rules). */}}
{{- define "optischema.namespacedRules" -}}
- apiGroups: [optischema.io]
  resources: [postgrestargets, tuningrecommendations, indexchanges]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [optischema.io]
  resources: [postgrestargets/status, tuningrecommendations/status, indexchanges/status]
  verbs: [get, patch, update]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, delete]           # target credentials; sandbox passwords (owned by their pod)
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]   # sandbox pods
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, create, update, delete]   # LLM cache and token counts; statement history (deleted after its retention); reports
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, create]                   # analysis Jobs (spec.analysis.runner: job)
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, delete]                # each sandbox admits the operator only
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end -}}
