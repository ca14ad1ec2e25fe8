//! Harness of the end-to-end suite: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok) on loopback, built from the Go module proxy.

pub mod controlplane;
pub mod process;
pub mod prometheus;

/// Path of a file in the repository, from the e2e crate.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}
