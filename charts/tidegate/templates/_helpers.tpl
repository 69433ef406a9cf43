{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "tidegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: the release name when it already contains the
chart name, else "<release>-<chart>".
*/}}
{{- define "tidegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tidegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "tidegate.labels" -}}
helm.sh/chart: {{ include "tidegate.chart" . }}
{{ include "tidegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tidegate
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "tidegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tidegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tidegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: a digest pins it, else the tag (default: appVersion). */}}
{{- define "tidegate.image" -}}
{{- if eq (toString .Values.image.tag) "latest" }}
{{- fail "image.tag=latest is refused: it names no version, so a restart may run another one; set a version (e.g. --set image.tag=0.1.0) or image.digest" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced kinds the operator manages. The same list goes into the
ClusterRole (cluster mode) or into one Role per watched namespace (namespaced mode).
Least privilege: no wildcards, no create/delete of Secrets, no Pod creation.
*/}}
{{- define "tidegate.namespacedRules" -}}
# Rollouts: watch them, keep kopf's bookkeeping (annotations, finalizers) on them.
- apiGroups: ["tidegate.io"]
  resources: ["rollouts"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["tidegate.io"]
  resources: ["rollouts/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion on the ReplicaSets and AnalysisRuns it creates.
- apiGroups: ["tidegate.io"]
  resources: ["rollouts/finalizers"]
  verbs: ["update"]
# ... and on the Jobs of job metrics, owned by their AnalysisRun.
- apiGroups: ["tidegate.io"]
  resources: ["analysisruns/finalizers"]
  verbs: ["update"]
- apiGroups: ["tidegate.io"]
  resources: ["analysisruns"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["tidegate.io"]
  resources: ["analysisruns/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["tidegate.io"]
  resources: ["analysistemplates"]
  verbs: ["get", "list", "watch"]
# Job metrics (provider.job): one Job per measurement in the run's namespace, read until it
# finishes, deleted when the run stops it. Read by name only (no list or watch: the run looks
# at its Job at the measurement's resumeAt). The Job controller, not Tidegate, creates the pods.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "delete"]
# The stable and canary ReplicaSets of each Rollout.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# A workloadRef's Deployment: its pod template is read; scaleDown scales it.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# Stable/canary/active/preview Services: their selectors point at a pod-template hash.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "patch", "update"]
# Their EndpointSlices: weight goes to a Service only once its endpoints are ready.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# Pod readiness; restartAt evicts (honouring PodDisruptionBudgets), never creates;
# ephemeral metadata (canaryMetadata...) is patched onto running pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
# Kubernetes events about Rollouts (posted through kopf, to core/v1).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Traffic routing: the weights in users' VirtualServices (and DestinationRule subsets).
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices", "destinationrules"]
  verbs: ["get", "list", "watch", "patch", "update"]
# ... and the backendRef weights and header rules of Gateway API HTTPRoutes / GRPCRoutes.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes", "grpcroutes"]
  verbs: ["get", "list", "watch", "patch", "update"]
{{- if .Values.analysis.secretAccess }}
# analysis.secretAccess: credentials of Prometheus/web metric providers, read by name.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/* RBAC rules for the cluster-scoped kinds, needed in both modes (read only). */}}
{{- define "tidegate.clusterRules" -}}
- apiGroups: ["tidegate.io"]
  resources: ["clusteranalysistemplates"]
  verbs: ["get", "list", "watch"]
# kopf discovers the resources it serves (and notices CRDs appearing) through them.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}

