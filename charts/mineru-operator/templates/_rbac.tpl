{{- /*
Exactly the API access mineru-operator uses, by where it is needed; e2e/tests/chart.rs renders
the chart in both modes and checks it against `rbac::API_ACCESS` in the code, so the two change
together.
*/ -}}

{{- /* In every watched namespace. */ -}}
{{- define "mineru-operator.watchedRules" -}}
# Watched and reconciled (listed once at start-up to check the CRD is installed); read afresh
# when the watch lags behind the operator's own writes; patched to consume the mineru.dev/*
# manual-control annotations.
- apiGroups: [mineru.dev]
  resources: [minerudeployments]
  verbs: [get, list, patch, watch]
- apiGroups: [mineru.dev]
  resources: [minerudeployments/status]
  verbs: [patch]
# Owned objects: watched, server-side applied (a patch that may create), orphans deleted.
- apiGroups: [apps]
  resources: [statefulsets, deployments]
  verbs: [create, delete, list, patch, watch]
- apiGroups: [""]
  resources: [services]
  verbs: [create, delete, get, list, patch, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, delete, list, patch, watch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, delete, list, patch, watch]
# vLLM pods: restarts and GPU scheduling, for the rollout engine; the pods holding GPUs when a
# model canary's capacity is counted.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# The vLLM API key (warm-up gate), Prometheus credentials and the webhook token; only the
# Secrets listed in secretNames when it is set.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
  {{- with .Values.secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
# Golden documents of the quality gate: one ConfigMap by name, or several by label.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
# Gateway API mode: the user's HTTPRoute, whose backendRef weights follow the rollout.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, update]
# Events about MineruDeployments; a repeated Event is patched.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{- /* In the operator's own namespace. */ -}}
{{- define "mineru-operator.ownRules" -}}
# Leader election.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, get, update]
{{- end }}

{{- /* Cluster-scoped. */ -}}
{{- define "mineru-operator.clusterRules" -}}
# GPU capacity for a canary vLLM: allocatable GPUs per node.
- apiGroups: [""]
  resources: [nodes]
  verbs: [list]
{{- end }}
