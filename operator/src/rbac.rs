//! Every Kubernetes API permission the operator uses, in one table: the chart's ClusterRole must
//! grant exactly these (`operator/tests/rbac.rs` holds the two together).

/// One API permission the operator uses; the ClusterRole must grant exactly these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiAccess {
    /// API group, `""` for core.
    pub group: &'static str,
    /// Resource, with `/subresource` where one is used.
    pub resource: &'static str,
    /// Verbs, sorted.
    pub verbs: &'static [&'static str],
}

/// Owned kinds are listed (reconcile and watches), applied (server-side apply is a patch that
/// may create) and deleted (orphans).
const OWNED_VERBS: &[&str] = &["create", "delete", "list", "patch", "watch"];

/// Every API call the operator makes, by resource.
pub const API_ACCESS: &[ApiAccess] = &[
    // Watched and reconciled; patched to consume manual-control annotations.
    ApiAccess {
        group: "mineru.dev",
        resource: "minerudeployments",
        verbs: &["list", "patch", "watch"],
    },
    ApiAccess {
        group: "mineru.dev",
        resource: "minerudeployments/status",
        verbs: &["patch"],
    },
    ApiAccess {
        group: "apps",
        resource: "statefulsets",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        group: "apps",
        resource: "deployments",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        group: "",
        resource: "services",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: OWNED_VERBS,
    },
    // vLLM pods: restarts and GPU scheduling, for the rollout engine.
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["list"],
    },
    // GPU capacity for a canary vLLM: allocatable GPUs per node, and the pods using them.
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["list"],
    },
    // Migration preflight: the legacy Service must exist before the rollout relies on it.
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["get"],
    },
    // The API key (warm-up), Prometheus credentials and the webhook token.
    ApiAccess {
        group: "",
        resource: "secrets",
        verbs: &["get"],
    },
    // Golden documents of the quality gate: one ConfigMap by name, or several by label.
    ApiAccess {
        group: "",
        resource: "configmaps",
        verbs: &["get", "list"],
    },
    // Gateway API mode: the user's HTTPRoute, whose backendRef weights follow the rollout.
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "httproutes",
        verbs: &["get", "update"],
    },
    // The Recorder creates an Event, then patches it when the same Event repeats.
    ApiAccess {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
    ApiAccess {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create", "get", "update"],
    },
];
