//! Harness of the end-to-end suite: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok) on loopback, built from the Go module proxy, and
//! optionally one real node (kubelet, containerd, kube-proxy) running the operator's pods.

pub mod audit;
pub mod controlplane;
pub mod mineru_api;
pub mod mineru_reference;
pub mod netpol;
pub mod node;
pub mod oci;
pub mod operator;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod round_robin;
pub mod rules;
pub mod scenario;
pub mod stack;

/// Path of a file in the repository, from the e2e crate.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A workspace binary built by `cargo build --workspace --bins` (make test and make demo do),
/// found beside the running executable or, for a test executable, one directory up.
pub fn workspace_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let executable = std::env::current_exe()?;
    let candidates: Vec<std::path::PathBuf> = executable
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    candidates
        .iter()
        .find(|binary| binary.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} is not built (looked at {candidates:?}): run `cargo build --workspace --bins`"
            )
        })
}

/// A program on `PATH`.
pub fn which(binary: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|path| path.is_file())
    })
}

/// The files under `dir`, at any depth, whose path `wanted` keeps, sorted.
pub fn files_under(
    dir: &std::path::Path,
    wanted: &dyn Fn(&std::path::Path) -> bool,
) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path, wanted));
        } else if wanted(&path) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Copies the tree `from` to `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
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
