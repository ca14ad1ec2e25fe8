//! One real Kubernetes node joined to a [`ControlPlane`]: containerd running pods through runc, the
//! CNI bridge plugin on the host bridge `mineru0` (pods in 198.18.1.0/24, no uplink, no
//! masquerade), the kubelet, kube-proxy (nftables) and CoreDNS as the cluster DNS, all host
//! processes under the plane's directory. The node advertises GPUs as `nvidia.com/gpu` capacity
//! (accounting only: no device is given to the pods).
//!
//! Only one can run per host: the bridge, the node's address, kube-proxy's nftables tables, the
//! kubepods cgroups and the kernel settings the kubelet changes are host-wide. A [`RealNode`] holds
//! an exclusive lock for its lifetime and, on drop, stops everything and undoes what it changed.
//! It needs root.

use std::{
    collections::BTreeMap,
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    controlplane::{ControlPlane, REAL_NODE, SERVICE_CIDR, toolchain},
    oci::Image,
    process::{Supervised, free_port, run, tail},
    wait_until,
};

/// The host bridge the pods attach to; its address is the node's and the cluster DNS's.
const BRIDGE: &str = "mineru0";
const GATEWAY: &str = "198.18.1.1";
const POD_SUBNET: &str = "198.18.1.0/24";
/// What kube-proxy counts as pod traffic (it masquerades the rest, e.g. the host's requests).
const CLUSTER_CIDR: &str = "198.18.0.0/16";
/// Held while a real node runs: one per host. Its directory is created first.
const LOCK_DIR: &str = "/run/lock";
const LOCK: &str = "/run/lock/mineru-e2e-real-node.lock";
/// What the kubelet (its setupKernelTunables) and the node's routing change; restored on drop.
const SYSCTLS: [&str; 8] = [
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
];
/// The kubelet's device manager socket: hard-coded, not under its --root-dir.
const DEVICE_PLUGIN_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";
/// The chains the kubelet itself creates with iptables(-nft), kube-proxy's mode notwithstanding.
const KUBELET_CHAINS: [(&str, &str); 5] = [
    ("filter", "KUBE-FIREWALL"),
    ("filter", "KUBE-KUBELET-CANARY"),
    ("nat", "KUBE-KUBELET-CANARY"),
    ("mangle", "KUBE-KUBELET-CANARY"),
    ("mangle", "KUBE-IPTABLES-HINT"),
];

/// A running real node. Drop it before its control plane.
pub struct RealNode {
    dir: PathBuf,
    kubectl: Kubectl,
    toolchain_bin: PathBuf,
    /// In start order; stopped in reverse.
    components: Vec<Supervised>,
    sysctls: BTreeMap<String, String>,
    nft_tables: Vec<String>,
    _lock: File,
}

impl RealNode {
    /// Starts the node against `plane` with `pause` as the pods' sandbox image, imports `images`
    /// into its containerd, waits until it is Ready and gives it `gpus` GPUs.
    pub fn start(
        plane: &ControlPlane,
        pause: &Image,
        images: &[&Image],
        gpus: u32,
    ) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "the real node needs root (bridge, routes, nftables, mounts, cgroups, sysctls); \
                 run the test as root"
            );
        }
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let lock = File::create(LOCK).with_context(|| format!("creating {LOCK}"))?;
        // Blocking: another real node (e.g. a second test of the same binary) is waited for.
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error).with_context(|| format!("locking {LOCK}"));
            }
        }
        let dir = plane.dir().join("node");
        std::fs::create_dir_all(dir.join("logs"))?;
        enable_bridge_netfilter()?;
        let mut sysctls = BTreeMap::new();
        for key in SYSCTLS {
            sysctls.insert(key.to_owned(), sysctl_read(key)?);
        }
        // A node that crashed without cleaning up left these; we hold the lock, so they are stale.
        let _ = host(&["ip", "link", "del", BRIDGE]);
        delete_kube_proxy_tables();
        let nft_tables = nft_tables();
        let mut node = RealNode {
            kubectl: Kubectl {
                binary: plane.bin().join("kubectl"),
                kubeconfig: plane.admin_kubeconfig(),
            },
            toolchain_bin: plane.bin().to_owned(),
            dir,
            components: Vec::new(),
            sysctls,
            nft_tables,
            _lock: lock,
        };
        node.create_bridge()?;
        node.start_containerd(&toolchain()?.cni_bin, &pause.name)?;
        for image in std::iter::once(pause).chain(images.iter().copied()) {
            node.import(image)?;
        }
        node.start_coredns(plane)?;
        node.start_kubelet(plane)?;
        node.advertise_gpus(gpus)?;
        node.start_kube_proxy(plane)?;
        Ok(node)
    }

    /// The logs of every container the kubelet ran (`<namespace>_<pod>_<uid>/<container>/N.log`),
    /// readable without the apiserver → kubelet connection.
    fn pod_logs(&self) -> PathBuf {
        self.dir.join("pod-logs")
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

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    fn spawn(&mut self, name: &str, command: Command) -> Result<()> {
        let component = Supervised::spawn(name, command, &self.logs())?;
        self.components.push(component);
        Ok(())
    }

    fn create_bridge(&self) -> Result<()> {
        // Up front, so the kubelet has its node address before the first pod; the CNI bridge
        // plugin adopts it. Packets to a ClusterIP are routed back out of it: forwarding on.
        host(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        host(&["ip", "addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE])?;
        host(&["ip", "link", "set", BRIDGE, "up"])?;
        // The host's requests to a ClusterIP go to the bridge (kube-proxy DNATs them to a pod
        // there), not to a default route, and never out of the uplink; the route goes with the
        // bridge.
        host(&["ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE])?;
        sysctl_write("net.ipv4.ip_forward", "1")?;
        // Pod → ClusterIP → pod on the same bridge: the bridged packets have to pass netfilter
        // for kube-proxy's DNAT (and its reverse) to apply.
        sysctl_write("net.bridge.bridge-nf-call-iptables", "1")
    }

    fn start_containerd(&mut self, cni_bin: &Path, pause: &str) -> Result<()> {
        let dir = self.dir.display().to_string();
        let net_d = self.dir.join("cni/net.d");
        std::fs::create_dir_all(&net_d)?;
        std::fs::write(
            net_d.join("10-mineru.conflist"),
            serde_json::to_vec_pretty(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "mineru",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": true,
                        "ipMasq": false,
                        // A pod calling its own Service's ClusterIP: the bridge sends the packet
                        // back out of the port it came in on.
                        "hairpinMode": true,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": format!("{dir}/cni/ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                ],
            }))?,
        )?;
        let socket = self.socket().display().to_string();
        let runc_root = self.runc_root().display().to_string();
        let config = format!(
            r#"version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pods' network namespaces under our state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  # Root here may lack CAP_SYS_RESOURCE: runc then cannot set the sandbox's oom_score_adj -998
  # ("nsexec: failed to update /proc/self/oom_score_adj: Permission denied").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # Our own runc state, so cleanup finds exactly our containers.
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{net_d}"
    max_conf_num = 1
"#,
            cni_bin = cni_bin.display(),
            net_d = net_d.display(),
        );
        let config_path = self.dir.join("containerd.toml");
        std::fs::write(&config_path, config)?;
        let mut containerd = Command::new("containerd");
        containerd.arg("--config").arg(&config_path);
        self.spawn("containerd", containerd)?;
        wait_until("containerd to answer", Duration::from_secs(30), || {
            self.ensure_running()?;
            Ok(self.ctr(&["version"])?.status.success().then_some(()))
        })
    }

    fn import(&self, image: &Image) -> Result<()> {
        let tar = image.tar.to_string_lossy();
        let output = self.ctr(&["images", "import", "--snapshotter", "overlayfs", &*tar])?;
        if !output.status.success() {
            bail!(
                "ctr images import {tar}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let listed = self.ctr(&["images", "ls", "-q"])?;
        if !String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|line| line == image.name)
        {
            bail!("ctr imported {tar} but lists no {}", image.name);
        }
        Ok(())
    }

    fn ctr(&self, args: &[&str]) -> Result<Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .context("running ctr")
    }

    /// CoreDNS on the bridge address, answering the cluster's Service and pod names from the
    /// apiserver (it watches as the administrator); nothing else, there being no uplink.
    fn start_coredns(&mut self, plane: &ControlPlane) -> Result<()> {
        let ready = free_port()?;
        let corefile = self.dir.join("Corefile");
        std::fs::write(
            &corefile,
            format!(
                ".:53 {{
    bind {GATEWAY}
    errors
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {} e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
",
                plane.admin_kubeconfig().display()
            ),
        )?;
        let mut coredns = Command::new(self.toolchain_bin.join("coredns"));
        coredns.arg("-conf").arg(&corefile);
        self.spawn("coredns", coredns)?;
        // Ready once the kubernetes plugin has synced its caches.
        let url = format!("http://127.0.0.1:{ready}/ready");
        wait_until("CoreDNS ready", Duration::from_secs(30), || {
            self.ensure_running()?;
            Ok(reqwest::blocking::get(&url)
                .is_ok_and(|response| response.status().is_success())
                .then_some(()))
        })
    }

    fn start_kubelet(&mut self, plane: &ControlPlane) -> Result<()> {
        let dir = self.dir.display().to_string();
        let socket = self.socket().display().to_string();
        std::fs::create_dir_all(self.dir.join("kubelet/manifests"))?;
        std::fs::create_dir_all(self.pod_logs())?;
        // Pods with dnsPolicy Default get this; ClusterFirst ones get CoreDNS and the search path.
        std::fs::write(
            self.dir.join("resolv.conf"),
            format!("nameserver {GATEWAY}\n"),
        )?;
        let healthz = free_port()?;
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://{socket}
imageServiceEndpoint: unix://{socket}
cgroupDriver: cgroupfs
# Hosts still on cgroup v1 (this one, a firecracker VM): the kubelet refuses them by default.
failCgroupV1: false
failSwapOn: false
address: {GATEWAY}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
authorization: {{mode: Webhook}}
staticPodPath: {dir}/kubelet/manifests
podLogsDir: {dir}/pod-logs
resolvConf: {dir}/resolv.conf
clusterDomain: cluster.local
clusterDNS: [{GATEWAY}]
evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}}
# The images exist only as imported: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 5s
protectKernelDefaults: false
",
            port = free_port()?,
        );
        let config_path = self.dir.join("kubelet-config.yaml");
        std::fs::write(&config_path, config)?;
        let mut kubelet = Command::new(self.toolchain_bin.join("kubelet"));
        kubelet
            .arg("--config")
            .arg(&config_path)
            .arg("--kubeconfig")
            .arg(plane.node_kubeconfig())
            .arg(format!("--hostname-override={REAL_NODE}"))
            .arg(format!("--node-ip={GATEWAY}"))
            .arg(format!("--root-dir={dir}/kubelet"))
            .arg(format!("--cert-dir={dir}/kubelet/pki"))
            .arg("-v=1");
        self.spawn("kubelet", kubelet)?;
        wait_until("the real node Ready", Duration::from_secs(90), || {
            self.ensure_running()?;
            let ready = self.kubectl.run(&[
                "get",
                "node",
                REAL_NODE,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            Ok(ready.is_ok_and(|status| status == "True").then_some(()))
        })
        .map_err(|error| error.context(tail(&self.logs().join("kubelet.log"), 40)))
    }

    /// GPUs as node capacity, which the kubelet copies into allocatable: no device plugin has
    /// registered the resource, so its device manager admits pods asking for it.
    fn advertise_gpus(&mut self, gpus: u32) -> Result<()> {
        if gpus == 0 {
            return Ok(());
        }
        let patch = format!(
            r#"[{{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"{gpus}"}}]"#
        );
        self.kubectl.run(&[
            "patch",
            "node",
            REAL_NODE,
            "--subresource=status",
            "--type=json",
            "-p",
            &patch,
        ])?;
        wait_until(
            "nvidia.com/gpu allocatable on the real node",
            Duration::from_secs(30),
            || {
                self.ensure_running()?;
                let allocatable = self.kubectl.run(&[
                    "get",
                    "node",
                    REAL_NODE,
                    "-o",
                    "jsonpath={.status.allocatable.nvidia\\.com/gpu}",
                ])?;
                Ok((allocatable == gpus.to_string()).then_some(()))
            },
        )
    }

    fn start_kube_proxy(&mut self, plane: &ControlPlane) -> Result<()> {
        let healthz = free_port()?;
        let config = format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {REAL_NODE}
clientConnection: {{kubeconfig: {kubeconfig}}}
metricsBindAddress: 127.0.0.1:{metrics}
healthzBindAddress: 127.0.0.1:{healthz}
nodePortAddresses: [\"{GATEWAY}/32\"]
# Zeroes leave the host's conntrack settings alone.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
",
            kubeconfig = plane.kube_proxy_kubeconfig().display(),
            metrics = free_port()?,
        );
        let config_path = self.dir.join("kube-proxy-config.yaml");
        std::fs::write(&config_path, config)?;
        let mut proxy = Command::new(self.toolchain_bin.join("kube-proxy"));
        proxy.arg("--config").arg(&config_path).arg("-v=1");
        self.spawn("kube-proxy", proxy)?;
        let url = format!("http://127.0.0.1:{healthz}/healthz");
        wait_until("kube-proxy healthy", Duration::from_secs(30), || {
            self.ensure_running()?;
            Ok(reqwest::blocking::get(&url)
                .is_ok_and(|response| response.status().is_success())
                .then_some(()))
        })
    }

    /// Each step runs even when an earlier one failed, so a half-started node is undone too.
    fn clean_up(&mut self) {
        // Pods away while the kubelet and containerd still run, so CNI DEL removes their
        // interfaces; cordoned, so their controllers' replacements stay Pending.
        if self.components.iter().any(|c| c.name() == "kubelet") {
            let _ = self.kubectl.run(&["cordon", REAL_NODE]);
            let _ = self.kubectl.run(&[
                "delete",
                "pods",
                "--all-namespaces",
                "--field-selector",
                &format!("spec.nodeName={REAL_NODE}"),
                "--grace-period=1",
                "--timeout=40s",
            ]);
        }
        let containerd_at = self
            .components
            .iter()
            .position(|c| c.name() == "containerd");
        while self.components.len() > containerd_at.map_or(0, |at| at + 1) {
            let mut component = self.components.pop().expect("len checked");
            component.stop(Duration::from_secs(10));
        }
        // Containers the kubelet left: our runc root holds exactly ours.
        let runc = self.runc_root().join("k8s.io").display().to_string();
        if let Ok(listed) = host(&["runc", "--root", &runc, "list", "-q"]) {
            for container in listed.lines() {
                let _ = host(&["runc", "--root", &runc, "kill", container, "KILL"]);
                let _ = host(&["runc", "--root", &runc, "delete", "-f", container]);
            }
        }
        if let Some(mut containerd) = self.components.pop() {
            containerd.stop(Duration::from_secs(10));
        }
        // The shims outlive containerd (they run detached); ours name our socket.
        for pid in shims_of(&self.socket()) {
            // SAFETY: signalling a process we identified by its command line.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        unmount_under(&self.dir);
        let _ = std::fs::remove_file(DEVICE_PLUGIN_SOCKET);
        let _ = host(&["ip", "link", "del", BRIDGE]);
        // kube-proxy's own cleanup removes its rules, also those in tables it did not create.
        let kube_proxy = self.toolchain_bin.join("kube-proxy");
        let _ = host(&[&*kube_proxy.to_string_lossy(), "--cleanup"]);
        delete_kube_proxy_tables();
        for iptables in ["iptables", "ip6tables"] {
            for chain in ["INPUT", "OUTPUT"] {
                let _ = host(&[
                    iptables,
                    "-w",
                    "-t",
                    "filter",
                    "-D",
                    chain,
                    "-j",
                    "KUBE-FIREWALL",
                ]);
            }
            for (table, chain) in KUBELET_CHAINS {
                let _ = host(&[iptables, "-w", "-t", table, "-F", chain]);
                let _ = host(&[iptables, "-w", "-t", table, "-X", chain]);
            }
        }
        for table in nft_tables() {
            if !self.nft_tables.contains(&table) {
                let mut delete = vec!["nft", "delete"];
                delete.extend(table.split_whitespace());
                let _ = host(&delete);
            }
        }
        remove_kubepods_cgroups();
        remove_container_log_links(&self.dir);
        for (key, value) in &self.sysctls {
            if let Err(error) = sysctl_write(key, value) {
                eprintln!("real node: cannot restore {key}={value}: {error:#}");
            }
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.clean_up();
        if std::thread::panicking() {
            eprintln!("real node logs kept in {}", self.logs().display());
            for name in ["kubelet", "containerd", "kube-proxy", "coredns"] {
                let log = self.logs().join(format!("{name}.log"));
                eprintln!("--- {} (last 30 lines)", log.display());
                for line in tail(&log, 30).lines() {
                    eprintln!("{}", line.chars().take(300).collect::<String>());
                }
            }
            for log in crate::files_under(&self.pod_logs(), &|p| {
                p.extension().is_some_and(|e| e == "log")
            }) {
                eprintln!("--- {} (last 20 lines)", log.display());
                eprintln!("{}", tail(&log, 20));
            }
        }
    }
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()?;
        if !output.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// Runs a host tool; its stdout, or its stderr as the error.
fn host(argv: &[&str]) -> Result<String> {
    let mut command = Command::new(argv[0]);
    command.args(&argv[1..]);
    run(&mut command)
}

/// Loads br_netfilter (it may be built into the kernel instead) and checks that bridged traffic
/// can pass netfilter.
fn enable_bridge_netfilter() -> Result<()> {
    let _ = host(&["modprobe", "br_netfilter"]);
    let key = "net.bridge.bridge-nf-call-iptables";
    if !sysctl_path(key).exists() {
        bail!(
            "{} is missing: the kernel has no br_netfilter (modprobe br_netfilter failed and it is \
             not built in); without it a pod cannot reach a Service backed by a pod on the same \
             bridge",
            sysctl_path(key).display()
        );
    }
    Ok(())
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn sysctl_read(key: &str) -> Result<String> {
    Ok(std::fs::read_to_string(sysctl_path(key))
        .with_context(|| format!("reading {key}"))?
        .trim()
        .to_owned())
}

fn sysctl_write(key: &str, value: &str) -> Result<()> {
    std::fs::write(sysctl_path(key), value).with_context(|| format!("setting {key}={value}"))
}

/// `table <family> <name>` lines of `nft list tables`.
fn nft_tables() -> Vec<String> {
    host(&["nft", "list", "tables"])
        .map(|listed| listed.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn delete_kube_proxy_tables() {
    for family in ["ip", "ip6"] {
        let _ = host(&["nft", "delete", "table", family, "kube-proxy"]);
    }
}

/// The pids of containerd-shim-runc-v2 processes serving the containerd at `socket`.
fn shims_of(socket: &Path) -> Vec<i32> {
    let socket = socket.to_string_lossy();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let is_shim = argv
            .first()
            .is_some_and(|arg0| arg0.ends_with("containerd-shim-runc-v2"));
        if is_shim
            && argv
                .windows(2)
                .any(|w| w[0] == "-address" && w[1] == socket)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Detaches every mount under `dir` (container rootfs, pod volumes, network namespaces),
/// deepest first.
fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        // /proc/mounts escapes spaces and the like as octal; our paths have none.
        .filter(|point| point.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    mounts.sort_by(|a, b| b.cmp(a));
    for point in mounts {
        let Ok(path) = std::ffi::CString::new(point) else {
            continue;
        };
        // SAFETY: a NUL-terminated path.
        unsafe {
            libc::umount2(path.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// The kubelet's pod cgroups in every cgroup v1 hierarchy (and v2), deepest first.
fn remove_kubepods_cgroups() {
    let roots = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
    let mut hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    hierarchies.extend(roots.iter().map(PathBuf::from));
    for hierarchy in hierarchies {
        let kubepods = hierarchy.join("kubepods");
        if kubepods.is_dir() {
            remove_cgroup_tree(&kubepods);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The kubelet links each container's log into /var/log/containers; those into `dir` go.
fn remove_container_log_links(dir: &Path) {
    for entry in std::fs::read_dir("/var/log/containers")
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(dir)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
