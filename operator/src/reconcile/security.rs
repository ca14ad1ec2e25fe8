//! The security contexts of every pod the operator creates: the Kubernetes "restricted" Pod
//! Security Standard — not root, no privilege escalation, no capabilities, the runtime's default
//! seccomp profile — and no ServiceAccount token, since neither tier calls the Kubernetes API.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// The user and group both tiers run as (distroless' `nonroot`).
pub const NONROOT_UID: i64 = 65532;

/// The pod-level context: non-root, and the volumes (the API key Secret, caches) group-owned by
/// the group the containers run in so they can read them.
pub fn pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT_UID),
        run_as_group: Some(NONROOT_UID),
        fs_group: Some(NONROOT_UID),
        // A model cache of tens of GB is not re-chowned on every start.
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The container-level context. `read_only_root` is off only for vLLM, whose compilers (Triton,
/// torch inductor, FlashInfer JIT) write to paths under the image that no volume can list.
pub fn container(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}
