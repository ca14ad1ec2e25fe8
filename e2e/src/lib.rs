//! Harness of the end-to-end suite: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok) on loopback, built from the Go module proxy.

pub mod controlplane;
pub mod operator;
pub mod process;
pub mod prometheus;
pub mod scenario;
pub mod stack;

/// Path of a file in the repository, from the e2e crate.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A workspace binary built by `cargo test --workspace --all-targets` (or `cargo build`), found
/// next to the test executable's directory.
pub fn workspace_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let test_executable = std::env::current_exe()?;
    let profile_dir = test_executable
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test executable path {test_executable:?}"))?;
    let binary = profile_dir.join(name);
    anyhow::ensure!(
        binary.is_file(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        binary.display()
    );
    Ok(binary)
}

/// Polls `check` until it returns `Some`, or fails with `what` and the last error after `budget`.
pub fn wait_until<T>(
    what: &str,
    budget: std::time::Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + budget;
    let mut last = String::new();
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last = format!("{error:#}"),
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {budget:?} waiting for {what} {last}");
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
