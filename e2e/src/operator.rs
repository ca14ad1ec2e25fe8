//! The operator as users install it: the CRD with kubectl, the chart's RBAC, and the binary
//! running as its own process under the ServiceAccount identity the chart binds.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::{
    controlplane::{ControlPlane, OPERATOR_NAMESPACE},
    process::{Supervised, free_port},
    repo_path, workspace_binary,
};

/// Applies the CRD (and waits until it is served) and the chart's ServiceAccount and RBAC in
/// cluster-wide mode.
pub fn install(plane: &ControlPlane) -> Result<()> {
    install_with(plane, &[])
}

/// The same with chart values `sets` (`--set` arguments), e.g. `watchNamespaces={parsing}` for
/// the namespaced mode's Roles; the namespaces they name must exist.
pub fn install_with(plane: &ControlPlane, sets: &[&str]) -> Result<()> {
    let crds = repo_path("crds/minerudeployments.yaml");
    plane.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()])?;
    // `kubectl wait` fails at once, rather than waiting, while a just-created CRD has no
    // conditions yet: poll the condition instead.
    crate::wait_until(
        "the MineruDeployment CRD to be Established",
        std::time::Duration::from_secs(60),
        || {
            let established = plane.kubectl(&[
                "get",
                "crd/minerudeployments.mineru.dev",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ])?;
            Ok((established.trim() == "True").then_some(()))
        },
    )?;
    plane.kubectl(&["create", "namespace", OPERATOR_NAMESPACE])?;
    let mut args = Vec::new();
    for set in sets {
        args.extend(["--set", set]);
    }
    let rbac: Vec<String> = render_chart(&args)?
        .split("\n---")
        .filter(|document| {
            serde_yaml::from_str::<Value>(document).is_ok_and(|object| {
                matches!(
                    object["kind"].as_str(),
                    Some(
                        "ServiceAccount"
                            | "ClusterRole"
                            | "ClusterRoleBinding"
                            | "Role"
                            | "RoleBinding"
                    )
                )
            })
        })
        .map(str::to_owned)
        .collect();
    let rbac = rbac.join("\n---\n");
    plane.apply(&rbac)?;
    Ok(())
}

/// Starts the operator with the ServiceAccount's credentials and `extra` flags; `service_map`
/// maps in-cluster Services to the local data-plane processes.
pub fn start(
    plane: &ControlPlane,
    name: &str,
    service_map: Option<&Path>,
    extra: &[&str],
) -> Result<Supervised> {
    start_logged(plane, name, name, service_map, extra)
}

/// The same, logging to `logs/<log>.log` rather than under the identity's name (a replica
/// restarted under the same identity keeps its predecessor's log).
pub fn start_logged(
    plane: &ControlPlane,
    identity: &str,
    log: &str,
    service_map: Option<&Path>,
    extra: &[&str],
) -> Result<Supervised> {
    let mut operator = Command::new(workspace_binary("mineru-operator")?);
    operator
        .env("KUBECONFIG", plane.operator_kubeconfig())
        .env("RUST_LOG", "info,mineru_operator=debug")
        .args(["--identity", identity, "--namespace", OPERATOR_NAMESPACE])
        // Short, so a killed leader's successor takes over quickly; long enough that renewals
        // (each with a third of the 4 s renew deadline) survive a busy 2-core machine.
        .args(["--lease-duration-seconds", "6"])
        // Prometheus and the webhook receivers of the tests all listen on the loopback.
        .arg("--allowed-hosts=127.0.0.1");
    if let Some(path) = service_map {
        operator.arg("--service-map").arg(path);
    }
    // A caller that reads the operator's metrics names the address itself.
    if !extra.iter().any(|arg| arg.starts_with("--listen")) {
        operator.arg(format!("--listen=127.0.0.1:{}", free_port()?));
    }
    operator.args(extra);
    Supervised::spawn(log, operator, &plane.dir().join("logs"))
}

/// `helm template` of the chart (release `mineru-operator` in the operator's namespace, at the
/// control plane's Kubernetes version) with `args` such as `--set` and `--show-only`; `Err`
/// carries helm's message.
pub fn render_chart(args: &[&str]) -> Result<String> {
    template(&repo_path("charts/mineru-operator"), args)
}

/// `helm template` of the chart at `chart`, as [`render_chart`] describes.
fn template(chart: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(crate::controlplane::toolchain()?.bin.join("helm"))
        .args(["template", "mineru-operator", chart.to_str().unwrap()])
        .args([
            "--namespace",
            OPERATOR_NAMESPACE,
            "--kube-version",
            crate::controlplane::KUBERNETES_VERSION,
        ])
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The chart's NOTES.txt as `helm install` would print it with `args`. Helm renders NOTES only
/// on install, which needs a cluster it can check `kubeVersion` against; so a copy of the chart
/// renders the same text as a plain template, offline, at the control plane's version.
pub fn render_notes(args: &[&str]) -> Result<String> {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let copy = std::env::temp_dir().join(format!(
        "mineru-chart-notes-{}-{}",
        std::process::id(),
        COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    crate::copy_dir(&repo_path("charts/mineru-operator"), &copy)?;
    let templates = copy.join("templates");
    let notes = std::fs::read_to_string(templates.join("NOTES.txt"))?;
    std::fs::write(
        templates.join("_notes.tpl"),
        format!("{{{{- define \"e2e.notes\" }}}}{notes}{{{{ end }}}}"),
    )?;
    std::fs::write(
        templates.join("notes.yaml"),
        "notes: {{ include \"e2e.notes\" . | toJson }}\n",
    )?;
    let mut with_notes = vec!["--show-only", "templates/notes.yaml"];
    with_notes.extend_from_slice(args);
    let output = template(&copy, &with_notes);
    std::fs::remove_dir_all(&copy)?;
    let rendered: Value = serde_yaml::from_str(&output?)?;
    Ok(rendered["notes"].as_str().unwrap_or_default().to_owned())
}

/// Starts the operator (identity `e2e-operator-0`, flags `extra`), applies the minimal example
/// in `namespace` (which must exist) and waits until it is Healthy; the operator and the status.
pub fn run_minimal_example(
    plane: &ControlPlane,
    namespace: &str,
    extra: &[&str],
) -> Result<(Supervised, Value)> {
    let mut operator = start(plane, "e2e-operator-0", None, extra)?;
    plane.apply(&minimal_example(namespace)?)?;
    let status = crate::wait_until(
        "status Healthy",
        std::time::Duration::from_secs(120),
        || {
            operator.ensure_running()?;
            let object = get_json(plane, &["get", "mdep", "docs", "-n", namespace])?;
            Ok((object["status"]["phase"] == "Healthy").then(|| object["status"].clone()))
        },
    )?;
    Ok((operator, status))
}

/// examples/minimal.yaml, in `namespace`.
pub fn minimal_example(namespace: &str) -> Result<String> {
    let example = std::fs::read_to_string(repo_path("examples/minimal.yaml"))?;
    Ok(example.replace("namespace: parsing", &format!("namespace: {namespace}")))
}

/// `kubectl get ... -o json`, parsed.
pub fn get_json(plane: &ControlPlane, args: &[&str]) -> Result<Value> {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    Ok(serde_json::from_str(&plane.kubectl(&full)?)?)
}

/// The Prometheus Operator's CRD manifests (`monitoring.coreos.com_*.yaml`), collected once per
/// version by `e2e/scripts/install-deps.sh`.
pub fn prometheus_operator_crds() -> Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir);
    }
    let script = repo_path("e2e/scripts/install-deps.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("prometheus-operator-crds")
        .output()?;
    if !output.status.success() {
        bail!(
            "{} prometheus-operator-crds: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir = PathBuf::from(String::from_utf8(output.stdout)?.trim());
    Ok(DIR.get_or_init(|| dir))
}

/// Installs the PodMonitor and PrometheusRule CRDs and waits until both are served.
pub fn install_monitoring_crds(plane: &ControlPlane) -> Result<()> {
    let dir = prometheus_operator_crds()?;
    for plural in ["podmonitors", "prometheusrules"] {
        let manifest = dir.join(format!("monitoring.coreos.com_{plural}.yaml"));
        plane.kubectl(&["apply", "--server-side", "-f", manifest.to_str().unwrap()])?;
        wait_established(plane, &format!("{plural}.monitoring.coreos.com"))?;
    }
    Ok(())
}

/// Waits until the CRD `name` is Established. (`kubectl wait` fails at once, rather than
/// waiting, while a just-created CRD has no conditions yet.)
pub fn wait_established(plane: &ControlPlane, name: &str) -> Result<()> {
    crate::wait_until(
        &format!("the CRD {name} to be Established"),
        std::time::Duration::from_secs(60),
        || {
            let established = plane.kubectl(&[
                "get",
                &format!("crd/{name}"),
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ])?;
            Ok((established.trim() == "True").then_some(()))
        },
    )
}
