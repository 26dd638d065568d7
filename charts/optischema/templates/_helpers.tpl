{{/* The prefix of every object's name: fullnameOverride; else the release's name, followed by nameOverride when
that is set and the release's name does not already hold it (as a subchart, where the release is the parent's). At
most 50 characters: the longest suffix the chart adds (-runner-networkpolicies.optischema.io is a policy's; names of
cluster-scoped objects must stay under 253, label values and Service names under 63) still fits. */}}
{{- define "optischema.name" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if and .Values.nameOverride (not (contains .Values.nameOverride .Release.Name)) -}}
{{- printf "%s-%s" .Release.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* app.kubernetes.io/name: nameOverride, else optischema. */}}
{{- define "optischema.appName" -}}
{{- default "optischema" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The registry images without one of their own are pulled from: global.imageRegistry (a parent chart's, e.g. a
cluster-wide mirror), else the given default. */}}
{{- define "optischema.registry" -}}
{{- $global := (.root.Values.global | default dict).imageRegistry | default "" -}}
{{- default .default $global | trimSuffix "/" -}}
{{- end -}}

{{/* An image reference behind a registry, unless it names one of its own: as Docker reads a reference, its first
path component is a registry when it holds a "." or a ":" or is "localhost" (registry.example/x, host:5000/x). An
empty registry leaves the reference as it is. Called with (list registry reference). */}}
{{- define "optischema.behind" -}}
{{- $registry := index . 0 -}}
{{- $image := index . 1 -}}
{{- $first := first (splitList "/" $image) -}}
{{- $own := and (contains "/" $image) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- if and $registry (not $own) -}}
{{- printf "%s/%s" $registry $image -}}
{{- else -}}
{{- $image -}}
{{- end -}}
{{- end -}}

{{/* The operator's image (also the analysis Jobs' and the helm test pod's): image.repository behind
global.imageRegistry or else image.registry (unless the repository names its own registry), then @digest when
image.digest is set (it wins over the tag), else :tag (the chart's appVersion when tag is empty). */}}
{{- define "optischema.image" -}}
{{- $registry := include "optischema.registry" (dict "root" . "default" (.Values.image.registry | default "")) -}}
{{- $repository := include "optischema.behind" (list $registry .Values.image.repository) -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The sandbox image template (OPTISCHEMA_SANDBOX_IMAGE, and what the runner's pod policy allows): sandbox.image,
behind sandbox.imageRegistry when that is set (a mirror for the sandboxes alone), else behind global.imageRegistry
unless sandbox.image names a registry of its own. */}}
{{- define "optischema.sandboxImage" -}}
{{- if .Values.sandbox.imageRegistry -}}
{{- printf "%s/%s" (.Values.sandbox.imageRegistry | trimSuffix "/") .Values.sandbox.image -}}
{{- else -}}
{{- include "optischema.behind" (list (include "optischema.registry" (dict "root" . "default" "")) .Values.sandbox.image) -}}
{{- end -}}
{{- end -}}

{{/* The per-major pins (sandbox.images) as JSON: full references, used as they are, except that a pin naming no
registry (postgres@sha256:...) is pulled through global.imageRegistry as the other images are. */}}
{{- define "optischema.sandboxImages" -}}
{{- $registry := include "optischema.registry" (dict "root" . "default" "") -}}
{{- $pins := dict -}}
{{- range $major, $image := .Values.sandbox.images -}}
{{- $_ := set $pins $major (include "optischema.behind" (list $registry $image)) -}}
{{- end -}}
{{- $pins | toJson -}}
{{- end -}}

{{/* imagePullSecrets and global.imagePullSecrets (a parent chart's), as a list of {name: ...}; strings are accepted
as names, as many charts accept them. */}}
{{- define "optischema.imagePullSecrets" -}}
{{- $found := list -}}
{{- $global := list -}}
{{- if .Values.global -}}{{- $global = default list .Values.global.imagePullSecrets -}}{{- end -}}
{{- range concat $global .Values.imagePullSecrets -}}
{{- $found = append $found (ternary (dict "name" .) . (kindIs "string" .)) -}}
{{- end -}}
{{- $found | uniq | toJson -}}
{{- end -}}

{{- define "optischema.labels" -}}
app.kubernetes.io/name: {{ include "optischema.appName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "optischema.selector" -}}
app.kubernetes.io/name: {{ include "optischema.appName" . }}
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

{{/* The namespaces the operator watches, as JSON: watchNamespaces, else the release's own; [] when it watches the
whole cluster (watchAllNamespaces). */}}
{{- define "optischema.watchNamespaces" -}}
{{- if .Values.watchAllNamespaces -}}
{{- if .Values.watchNamespaces -}}
{{- fail "watchNamespaces and watchAllNamespaces: set one of them, not both" -}}
{{- end -}}
[]
{{- else -}}
{{- if .Values.analysisJobNamespaces -}}
{{- fail "analysisJobNamespaces is for watchAllNamespaces: every watched namespace has the analysis ServiceAccount already" -}}
{{- end -}}
{{- default (list .Release.Namespace) .Values.watchNamespaces | toJson -}}
{{- end -}}
{{- end -}}

{{/* The user name the operator impersonates to create sandboxes and analysis Jobs (OPTISCHEMA_RUNNER_SERVICE_ACCOUNT):
the runner's bare name (the runner of the object's own namespace), or, watching the whole cluster, the one runner in
the release's namespace. */}}
{{- define "optischema.runnerSetting" -}}
{{- if .Values.watchAllNamespaces -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "optischema.runnerServiceAccount" . }}
{{- else -}}
{{- include "optischema.runnerServiceAccount" . -}}
{{- end -}}
{{- end -}}

{{/* What the operator does in a watched namespace (Role, or ClusterRole when it watches the whole cluster). It
creates no pod, Job, NetworkPolicy or Secret itself: the runner does, impersonated (optischema.runnerRules). */}}
{{- define "optischema.namespacedRules" -}}
- apiGroups: [optischema.io]
  resources: [postgrestargets, tuningrecommendations, indexchanges]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [optischema.io]
  resources: [postgrestargets/status, tuningrecommendations/status, indexchanges/status]
  verbs: [get, patch, update]
# Statement history (one StatementHistory per target and day, deleted after its retention) and scheduled reports:
# kinds of their own, so that people may read them without reading ConfigMaps.
- apiGroups: [optischema.io]
  resources: [statementhistories, tuningreports]
  verbs: [get, list, create, update, patch, delete]
# Database credentials, CA certificates, LLM keys and notification URLs that specs name. RBAC cannot grant by
# label: the operator reads a Secret only when it is labelled optischema.io/allow: "true", asking for it as a list
# filtered by that label and its name (so a Secret without the label never leaves the API server), or when it is
# listed in allowedSecrets (a get). No watch.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list]
# The LLM advisor's cache and token counts (ConfigMap <target>-llm): no list, no delete.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# A target naming a CloudNativePG Cluster (spec.connection.cluster): the Cluster read for its read-write Service and
# instances, their Pods listed for the instances' addresses, and an approved setting applied as a merge patch of
# the Cluster's spec.postgresql.parameters (CloudNativePG turns ALTER SYSTEM off).
- apiGroups: [postgresql.cnpg.io]
  resources: [clusters]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
{{- if gt (int .Values.replicaCount) 1 }}
# kopf peering between replicas (one active).
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}

{{/* What the runner does in a namespace: the operator's hands for sandboxes and analysis Jobs. The admission policy
(runner-policy.yaml) further limits what it may create (the sandbox or analysis ServiceAccount, no token, the
operator's image for Jobs, Opaque Secrets) and delete (objects labelled as sandboxes). */}}
{{- define "optischema.runnerRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, create, delete]           # sandbox pods (get: waiting until ready)
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, delete]                # each sandbox's password; never read back
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, delete]                # each sandbox admits the operator only
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, create]                   # analysis Jobs (spec.analysis.runner: job); get: whether one failed
# Owner references with blockOwnerDeletion (sandbox pod -> recommendation, Secret and NetworkPolicy -> pod, Job ->
# target) need this where the OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift).
- apiGroups: [optischema.io]
  resources: [tuningrecommendations/finalizers, postgrestargets/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods/finalizers]
  verbs: [update]
{{- end -}}

{{/* What an analysis Job (spec.analysis.runner: job) does in its target's namespace, as the analysis ServiceAccount:
read its target and the Secrets it names, record the result, write recommendations and the statement history, keep
the LLM advisor's cache. */}}
{{- define "optischema.analysisRules" -}}
- apiGroups: [optischema.io]
  resources: [postgrestargets]
  verbs: [get]
- apiGroups: [optischema.io]
  resources: [postgrestargets/status, tuningrecommendations/status]
  verbs: [patch]
- apiGroups: [optischema.io]
  resources: [tuningrecommendations]
  verbs: [get, list, create, patch]
- apiGroups: [optischema.io]
  resources: [statementhistories]
  verbs: [get, list, create, update, delete]   # a point per analysis; days past retention deleted
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list]                           # read as the operator does: labelled optischema.io/allow only
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update]                 # the LLM advisor's cache and token counts (<target>-llm)
- apiGroups: [postgresql.cnpg.io]
  resources: [clusters]
  verbs: [get]                                 # a CloudNativePG target's read-write Service and instances
- apiGroups: [""]
  resources: [pods]
  verbs: [list]                                # those instances' addresses
{{- end -}}
