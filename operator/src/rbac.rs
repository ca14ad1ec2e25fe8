//! Every Kubernetes API permission the operator uses, in one table: the chart's roles must grant
//! exactly these, in either mode (`e2e/tests/chart.rs` renders the chart with helm and holds the
//! two together).

/// Where a permission is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// In every namespace the operator watches: a ClusterRole in cluster-wide mode, a Role in
    /// each listed namespace with `--watch-namespaces`.
    Watched,
    /// In the operator's own namespace (the leader-election Lease).
    Own,
    /// Cluster-scoped objects: a ClusterRole in either mode.
    Cluster,
}

/// One API permission the operator uses; the chart must grant exactly these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiAccess {
    /// Where it is needed.
    pub scope: Scope,
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
    // Watched and reconciled; read afresh when the watch lags behind the operator's own
    // writes; patched to consume manual-control annotations.
    ApiAccess {
        scope: Scope::Watched,
        group: "mineru.dev",
        resource: "minerudeployments",
        verbs: &["get", "list", "patch", "watch"],
    },
    ApiAccess {
        scope: Scope::Watched,
        group: "mineru.dev",
        resource: "minerudeployments/status",
        verbs: &["patch"],
    },
    ApiAccess {
        scope: Scope::Watched,
        group: "apps",
        resource: "statefulsets",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        scope: Scope::Watched,
        group: "apps",
        resource: "deployments",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        scope: Scope::Watched,
        group: "",
        resource: "services",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        scope: Scope::Watched,
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        scope: Scope::Watched,
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: OWNED_VERBS,
    },
    // vLLM pods: restarts and GPU scheduling, for the rollout engine; the pods holding GPUs,
    // where the operator may read them, for a model canary's capacity.
    ApiAccess {
        scope: Scope::Watched,
        group: "",
        resource: "pods",
        verbs: &["list"],
    },
    // GPU capacity for a canary vLLM: allocatable GPUs per node.
    ApiAccess {
        scope: Scope::Cluster,
        group: "",
        resource: "nodes",
        verbs: &["list"],
    },
    // Migration preflight: the legacy Service must exist before the rollout relies on it.
    ApiAccess {
        scope: Scope::Watched,
        group: "",
        resource: "services",
        verbs: &["get"],
    },
    // The API key (warm-up), Prometheus credentials and the webhook token.
    ApiAccess {
        scope: Scope::Watched,
        group: "",
        resource: "secrets",
        verbs: &["get"],
    },
    // Golden documents of the quality gate: one ConfigMap by name, or several by label.
    ApiAccess {
        scope: Scope::Watched,
        group: "",
        resource: "configmaps",
        verbs: &["get", "list"],
    },
    // Gateway API mode: the user's HTTPRoute, whose backendRef weights follow the rollout.
    ApiAccess {
        scope: Scope::Watched,
        group: "gateway.networking.k8s.io",
        resource: "httproutes",
        verbs: &["get", "update"],
    },
    // The Recorder creates an Event, then patches it when the same Event repeats.
    ApiAccess {
        scope: Scope::Watched,
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
    // Leader election, in the operator's namespace.
    ApiAccess {
        scope: Scope::Own,
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create", "get", "update"],
    },
];
