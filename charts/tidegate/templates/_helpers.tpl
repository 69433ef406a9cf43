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
Only verbs the operator sends: tests/integration/test_rbac.py runs it as this account and
checks the API server's audit log for every (verb, resource) pair granted here, bar the
few its UNEXERCISED list explains. No wildcards, no Secret writes, no `update` but on the
owners' finalizers (every write is a patch), no `create` on Pods, but `create` on
ReplicaSets: the ReplicaSet controller creates their pods, so whoever holds this role can
run pods (any image, any pod spec) in every namespace it covers.
*/}}
{{- define "tidegate.namespacedRules" -}}
# Rollouts: kopf lists and watches them and patches its annotations and finalizer onto
# them; a pass reads its Rollout by name (get) after a conflict or before the cache has it.
- apiGroups: ["tidegate.io"]
  resources: ["rollouts"]
  verbs: ["get", "list", "watch", "patch"]
# The status report and the runtime intents it consumes (one merge patch per pass).
- apiGroups: ["tidegate.io"]
  resources: ["rollouts/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion on the ReplicaSets and AnalysisRuns it creates:
# the OwnerReferencesPermissionEnforcement admission plugin (e.g. OpenShift) requires
# `update` on the owner's finalizers. No request uses it.
- apiGroups: ["tidegate.io"]
  resources: ["rollouts/finalizers"]
  verbs: ["update"]
# ... and on the Jobs of job metrics, owned by their AnalysisRun.
- apiGroups: ["tidegate.io"]
  resources: ["analysisruns/finalizers"]
  verbs: ["update"]
# AnalysisRuns: created per analysis (read by name when the create conflicts), watched,
# patched (kopf's annotations, terminate), deleted beyond the run history limits.
- apiGroups: ["tidegate.io"]
  resources: ["analysisruns"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Measurements and the run's verdict.
- apiGroups: ["tidegate.io"]
  resources: ["analysisruns/status"]
  verbs: ["patch"]
# Templates: watched by kopf, read by name when a run is created from them.
- apiGroups: ["tidegate.io"]
  resources: ["analysistemplates"]
  verbs: ["get", "list", "watch"]
# Job metrics (provider.job): one Job per measurement in the run's namespace, read until it
# finishes, deleted when the run stops it. Read by name only (no list or watch: the run looks
# at its Job at the measurement's resumeAt). The Job controller, not Tidegate, creates the
# pods, from the Job's template, which the template's author writes.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "delete"]
# The stable and canary ReplicaSets of each Rollout: a watch-fed cache (list, watch),
# created per revision, scaled and relabelled (patch), deleted beyond revisionHistoryLimit.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# A workloadRef's Deployment: its pod template is read from the cache; scaleDown scales it.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# Stable/canary/active/preview Services: cached (list, watch); their selectors point at a
# pod-template hash (patch).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "patch"]
# Their EndpointSlices: weight goes to a Service only once its endpoints are ready.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# Pods, listed by label selector per pass (readiness, restartAt); ephemeral metadata
# (canaryMetadata, stableMetadata) is patched onto running pods; restartAt evicts them
# (honouring PodDisruptionBudgets), never creates or deletes one.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
# Kubernetes Events about Rollouts (kopf posts them to core/v1; it never patches one).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Traffic routing: cached VirtualServices (and DestinationRule subsets), weights patched;
# read by name (get) only when a patch planned from the cache met a newer object (routers/
# _objects.py, tests/integration/test_router_conflicts.py), to write again on the fresh one.
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices", "destinationrules"]
  verbs: ["get", "list", "watch", "patch"]
# ... and the backendRef weights and header rules of Gateway API HTTPRoutes / GRPCRoutes.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes", "grpcroutes"]
  verbs: ["get", "list", "watch", "patch"]
{{- if .Values.analysis.secretAccess }}
# analysis.secretAccess: credentials of Prometheus/web metric providers, read by name.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/* RBAC rules for the cluster-scoped kinds, needed in both modes (read only). */}}
{{- define "tidegate.clusterRules" -}}
# Watched by kopf, read by name when a run is created from one.
- apiGroups: ["tidegate.io"]
  resources: ["clusteranalysistemplates"]
  verbs: ["get", "list", "watch"]
# kopf discovers the resources it serves (and notices CRDs appearing) by listing and
# watching them; it never reads one by name.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

