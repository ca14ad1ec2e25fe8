//! A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok (fake nodes and pods), built from source by `controlplane/build.sh`.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::process::{Supervised, free_port, tail};

/// The namespace and name of the identity the operator runs as; the chart's ClusterRoleBinding
/// binds its ClusterRole to this ServiceAccount.
pub const OPERATOR_NAMESPACE: &str = "mineru-system";
pub const OPERATOR_SERVICE_ACCOUNT: &str = "mineru-operator";

const ADMIN_TOKEN: &str = "e2e-admin-token";
const OPERATOR_TOKEN: &str = "e2e-operator-token";
const NODE_TOKEN: &str = "e2e-node-token";
const KUBE_PROXY_TOKEN: &str = "e2e-kube-proxy-token";

/// The name of the one real node (e2e/src/node.rs) a plane can have; its kubelet authenticates as
/// `system:node:<name>`, which the Node authorizer confines to its own node and pods.
pub const REAL_NODE: &str = "real-node";

/// Where Services get their ClusterIPs: outside any address of this host's networks, so that the
/// real node's kube-proxy routes them, and wide enough for the 3 ClusterIP Services each of 500
/// objects takes (operator-scale).
pub const SERVICE_CIDR: &str = "198.19.0.0/16";

/// Fake nodes the cluster gets.
#[derive(Clone, Debug)]
pub struct Nodes {
    /// Nodes advertising GPUs (label `mineru.dev/e2e-gpu: "true"`).
    pub gpu_nodes: usize,
    /// GPUs per GPU node, as `nvidia.com/gpu` capacity.
    pub gpus_per_node: u32,
    /// Nodes without GPUs.
    pub cpu_nodes: usize,
}

impl Default for Nodes {
    fn default() -> Self {
        Nodes {
            gpu_nodes: 2,
            gpus_per_node: 2,
            cpu_nodes: 2,
        }
    }
}

/// The Kubernetes version e2e/controlplane/build.sh builds (`K8S_VERSION`), for what must name
/// it, such as `helm template --kube-version` (the built API server calls itself v0.0.0).
pub const KUBERNETES_VERSION: &str = "1.37.2";

/// The built binaries, and the Gateway API CRDs and kwok stages next to them.
pub struct Toolchain {
    pub bin: PathBuf,
    /// The CNI plugins the real node's containerd runs.
    pub cni_bin: PathBuf,
    pub gateway_api_crds: PathBuf,
    pub kwok_stages: PathBuf,
}

/// Builds (once per version, cached outside the repo) or finds the control plane binaries.
pub fn toolchain() -> Result<&'static Toolchain> {
    static TOOLCHAIN: OnceLock<Toolchain> = OnceLock::new();
    if let Some(toolchain) = TOOLCHAIN.get() {
        return Ok(toolchain);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bin = PathBuf::from(String::from_utf8(output.stdout)?.trim());
    Ok(TOOLCHAIN.get_or_init(|| Toolchain {
        gateway_api_crds: bin.with_file_name("gateway-api-crds"),
        cni_bin: bin.with_file_name("cni-bin"),
        kwok_stages: bin.with_file_name("kwok-stages.yaml"),
        bin,
    }))
}

/// Where a test's component logs and state live: `<target>/e2e/<test>`. Kept when the test fails.
pub fn work_dir(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("e2e").join(test)
}

/// A running control plane. Dropping it stops every component in reverse start order.
pub struct ControlPlane {
    dir: PathBuf,
    toolchain: &'static Toolchain,
    api_url: String,
    components: Vec<Supervised>,
}

impl ControlPlane {
    /// Starts etcd, the apiserver, the controller-manager, the scheduler and kwok, creates the
    /// fake nodes, and waits until pods can be scheduled.
    pub fn start(test: &str, nodes: &Nodes) -> Result<Self> {
        let toolchain = toolchain()?;
        let dir = work_dir(test);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.join("logs"))?;
        let api_port = free_port()?;
        let mut plane = ControlPlane {
            api_url: format!("https://127.0.0.1:{api_port}"),
            dir,
            toolchain,
            components: Vec::new(),
        };
        plane.write_credentials()?;
        plane.start_etcd()?;
        plane.start_apiserver(api_port)?;
        plane.wait_ready(Duration::from_secs(90))?;
        plane.start_controller_manager()?;
        plane.start_scheduler()?;
        plane.start_kwok()?;
        plane.create_nodes(nodes)?;
        plane.wait_for_default_service_account(Duration::from_secs(60))?;
        Ok(plane)
    }

    /// The test's working directory (component logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kubeconfig of a cluster administrator.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// Kubeconfig of the real node's kubelet (`system:node:real-node`).
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.dir.join("node.kubeconfig")
    }

    /// Kubeconfig of kube-proxy (`system:kube-proxy`, bound to `system:node-proxier`).
    pub fn kube_proxy_kubeconfig(&self) -> PathBuf {
        self.dir.join("kube-proxy.kubeconfig")
    }

    /// Kubeconfig of the operator's ServiceAccount identity (RBAC applies to it).
    pub fn operator_kubeconfig(&self) -> PathBuf {
        self.dir.join("operator.kubeconfig")
    }

    /// The apiserver's audit log (one JSON event per line).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs/audit.log")
    }

    /// Directory of the built binaries (kubectl, helm, ...).
    pub fn bin(&self) -> &Path {
        &self.toolchain.bin
    }

    /// Directory of the Gateway API CRD manifests.
    pub fn gateway_api_crds(&self) -> &Path {
        &self.toolchain.gateway_api_crds
    }

    /// Installs the Gateway API CRDs and waits until HTTPRoutes are served.
    pub fn install_gateway_api(&self) -> Result<()> {
        let crds = self.gateway_api_crds().to_string_lossy().into_owned();
        self.kubectl(&["apply", "--server-side", "-f", &crds])?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/httproutes.gateway.networking.k8s.io",
            "--timeout=60s",
        ])?;
        Ok(())
    }

    /// Runs kubectl as the administrator and returns its output, successful or not.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<Output> {
        Command::new(self.toolchain.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args)
            .output()
            .context("running kubectl")
    }

    /// Runs kubectl as the administrator and returns stdout; fails with stderr otherwise.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let output = self.kubectl_output(args)?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// Applies a manifest given as text.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        let path = self
            .dir
            .join(format!("manifest-{}.yaml", self.components.len()));
        std::fs::write(&path, manifest)?;
        self.kubectl(&["apply", "--server-side", "-f", path.to_str().unwrap()])
    }

    /// A client authenticated as the administrator.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        client_from(&self.admin_kubeconfig()).await
    }

    /// Fails with the tail of its log when a component has died.
    pub fn ensure_running(&mut self) -> Result<()> {
        for component in &mut self.components {
            component.ensure_running()?;
        }
        Ok(())
    }

    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn write_credentials(&self) -> Result<()> {
        let key = rcgen::KeyPair::generate()?;
        std::fs::write(self.dir.join("sa.key"), key.serialize_pem())?;
        std::fs::write(self.dir.join("sa.pub"), key.public_key_pem())?;
        let operator_user =
            format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}");
        let tokens = format!(
            "{ADMIN_TOKEN},e2e-admin,e2e-admin,\"system:masters\"\n\
             {OPERATOR_TOKEN},{operator_user},e2e-operator,\"system:serviceaccounts,system:serviceaccounts:{OPERATOR_NAMESPACE},system:authenticated\"\n\
             {NODE_TOKEN},system:node:{REAL_NODE},e2e-node,\"system:nodes\"\n\
             {KUBE_PROXY_TOKEN},system:kube-proxy,e2e-kube-proxy\n"
        );
        std::fs::write(self.dir.join("tokens.csv"), tokens)?;
        std::fs::write(self.dir.join("audit-policy.yaml"), AUDIT_POLICY)?;
        for (file, token) in [
            ("admin.kubeconfig", ADMIN_TOKEN),
            ("operator.kubeconfig", OPERATOR_TOKEN),
            ("node.kubeconfig", NODE_TOKEN),
            ("kube-proxy.kubeconfig", KUBE_PROXY_TOKEN),
        ] {
            std::fs::write(self.dir.join(file), kubeconfig(&self.api_url, token))?;
        }
        Ok(())
    }

    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(self.toolchain.bin.join(binary));
        command.current_dir(&self.dir);
        command
    }

    fn spawn(&mut self, name: &str, command: Command) -> Result<()> {
        let component = Supervised::spawn(name, command, &self.logs())?;
        self.components.push(component);
        Ok(())
    }

    fn start_etcd(&mut self) -> Result<()> {
        let client = free_port()?;
        let peer = free_port()?;
        let mut etcd = self.command("etcd");
        etcd.args([
            "--data-dir",
            "etcd-data",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ])
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"));
        self.spawn("etcd", etcd)?;
        std::fs::write(
            self.dir.join("etcd.url"),
            format!("http://127.0.0.1:{client}"),
        )?;
        Ok(())
    }

    fn start_apiserver(&mut self, port: u16) -> Result<()> {
        let etcd = std::fs::read_to_string(self.dir.join("etcd.url"))?;
        let mut apiserver = self.command("kube-apiserver");
        apiserver
            .arg(format!("--etcd-servers={etcd}"))
            .arg(format!("--secure-port={port}"))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .args([
                "--bind-address=127.0.0.1",
                "--cert-dir=certs",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--token-auth-file=tokens.csv",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file=sa.pub",
                "--service-account-signing-key-file=sa.key",
                "--audit-policy-file=audit-policy.yaml",
                "--audit-log-path=logs/audit.log",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
            ]);
        self.spawn("kube-apiserver", apiserver)
    }

    fn wait_ready(&mut self, budget: Duration) -> Result<()> {
        let deadline = Instant::now() + budget;
        loop {
            self.ensure_running()?;
            let ready = self.kubectl_output(&["get", "--raw", "/readyz"])?;
            if ready.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {budget:?}:\n{}",
                    tail(&self.logs().join("kube-apiserver.log"), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn start_controller_manager(&mut self) -> Result<()> {
        let mut manager = self.command("kube-controller-manager");
        manager
            .arg(format!("--secure-port={}", free_port()?))
            .args([
                "--bind-address=127.0.0.1",
                "--kubeconfig=admin.kubeconfig",
                "--leader-elect=false",
                "--service-account-private-key-file=sa.key",
                "--root-ca-file=certs/apiserver.crt",
                "--controllers=*,-node-ipam-controller",
                // Pods of kwok nodes are never evicted for a missed heartbeat in a slow test.
                "--node-monitor-grace-period=5m",
            ]);
        self.spawn("kube-controller-manager", manager)
    }

    fn start_scheduler(&mut self) -> Result<()> {
        let mut scheduler = self.command("kube-scheduler");
        scheduler
            .arg(format!("--secure-port={}", free_port()?))
            .args([
                "--bind-address=127.0.0.1",
                "--kubeconfig=admin.kubeconfig",
                "--leader-elect=false",
            ]);
        self.spawn("kube-scheduler", scheduler)
    }

    fn start_kwok(&mut self) -> Result<()> {
        let mut kwok = self.command("kwok");
        kwok.arg(format!("--server-address=127.0.0.1:{}", free_port()?))
            .arg("--config")
            .arg(&self.toolchain.kwok_stages)
            .args([
                "--kubeconfig=admin.kubeconfig",
                "--manage-nodes-with-label-selector=type=kwok",
            ]);
        self.spawn("kwok", kwok)
    }

    fn create_nodes(&self, nodes: &Nodes) -> Result<()> {
        if nodes.gpu_nodes + nodes.cpu_nodes == 0 {
            return Ok(());
        }
        let mut manifest = String::new();
        for index in 0..nodes.gpu_nodes {
            let gpus = nodes.gpus_per_node;
            write!(
                manifest,
                "{}",
                node(&format!("gpu-node-{index}"), Some(gpus))
            )?;
        }
        for index in 0..nodes.cpu_nodes {
            write!(manifest, "{}", node(&format!("cpu-node-{index}"), None))?;
        }
        let path = self.dir.join("nodes.yaml");
        std::fs::write(&path, manifest)?;
        self.kubectl(&["create", "-f", path.to_str().unwrap()])?;
        Ok(())
    }

    fn wait_for_default_service_account(&mut self, budget: Duration) -> Result<()> {
        let deadline = Instant::now() + budget;
        loop {
            self.ensure_running()?;
            if self
                .kubectl_output(&["get", "serviceaccount", "default", "-n", "default"])?
                .status
                .success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the default ServiceAccount did not appear within {budget:?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some(mut component) = self.components.pop() {
            component.stop(Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!("control plane logs kept in {}", self.logs().display());
            // CI keeps only the test's output, and the next run of the test deletes the logs.
            print_log_tails(&self.logs(), 40);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last `lines` lines of every component log under `dir`, to stderr, each line cut short:
/// enough to tell what happened without flooding the test output.
fn print_log_tails(dir: &Path, lines: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let mut stderr = std::io::stderr().lock();
    // The audit log is JSON bodies, read by the tests themselves.
    for path in paths
        .iter()
        .filter(|p| p.is_file() && p.file_name().is_some_and(|name| name != "audit.log"))
    {
        let _ = writeln!(stderr, "--- {} (last {lines} lines)", path.display());
        for line in crate::process::tail(path, lines).lines() {
            let cut: String = line.chars().take(300).collect();
            let _ = writeln!(stderr, "{cut}");
        }
    }
}

/// Builds a client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

fn kubeconfig(server: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    insecure-skip-tls-verify: true
users:
- name: e2e
  user:
    token: {token}
contexts:
- name: e2e
  context: {{cluster: e2e, user: e2e}}
current-context: e2e
"
    )
}

fn node(name: &str, gpus: Option<u32>) -> String {
    let gpu_capacity = gpus
        .map(|count| format!("    nvidia.com/gpu: \"{count}\"\n"))
        .unwrap_or_default();
    let gpu_label = if gpus.is_some() { "true" } else { "false" };
    format!(
        "---
apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations:
    node.alpha.kubernetes.io/ttl: \"0\"
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: {name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    mineru.dev/e2e-gpu: \"{gpu_label}\"
status:
  allocatable: &resources
    cpu: \"32\"
    memory: 128Gi
    pods: \"110\"
{gpu_capacity}  capacity: *resources
  nodeInfo:
    kubeletVersion: fake
"
    )
}

/// Records every request of the operator's identity (and nothing else) so tests can count writes.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
# The bodies of the operator's route and status writes, for the crash test's traffic audit.
- level: Request
  users: [\"system:serviceaccount:mineru-system:mineru-operator\"]
  verbs: [update, patch]
  resources:
  - {group: gateway.networking.k8s.io, resources: [httproutes]}
  - {group: mineru.dev, resources: [minerudeployments/status]}
- level: Metadata
  users: [\"system:serviceaccount:mineru-system:mineru-operator\"]
- level: None
";

#[cfg(test)]
mod tests {
    #[test]
    fn the_kubernetes_version_is_the_one_the_build_script_builds() {
        let script =
            std::fs::read_to_string(crate::repo_path("e2e/controlplane/build.sh")).unwrap();
        let pinned = format!(
            "K8S_VERSION=\"${{K8S_VERSION:-v{}}}\"",
            super::KUBERNETES_VERSION
        );
        assert!(script.contains(&pinned), "{pinned} not in build.sh");
    }
}
