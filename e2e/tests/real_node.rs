//! The operator's own pods as real containers: a real node (kubelet, containerd, runc, the CNI
//! bridge, kube-proxy, CoreDNS) joins the control plane, the operator turns the minimal example
//! into its vLLM StatefulSet and worker Deployment, both start on the node from images built here
//! (our mineru-worker; our vLLM simulator installed as `vllm`), pass the probes the operator
//! generated, and a document sent from the host to the entry Service's ClusterIP comes back parsed
//! by a worker that reached its vLLM by the Service name the operator gave it.
//!
//! Needs root (bridge, nftables, mounts); one real node per host. No kwok nodes: every pod has to
//! run on the real node.

use std::{path::PathBuf, process::Command, time::Duration};

use mineru_e2e::{
    controlplane::{ControlPlane, Nodes, REAL_NODE},
    node::RealNode,
    oci::{self, Contents, Image},
    operator::{self, get_json, minimal_example},
    repo_path, wait_until, workspace_binary,
};
use serde_json::Value;

const NAMESPACE: &str = "parsing";
/// The minimal example's workers, and the CPU the operator requests for each by default.
const WORKERS: u64 = 2;
const WORKER_CPU_MILLIS: u64 = 1000;

/// A CPU quantity (`4`, `3500m`) in millicores.
fn millicores(quantity: &str) -> u64 {
    match quantity.strip_suffix('m') {
        Some(millis) => millis.parse().unwrap(),
        None => (quantity.parse::<f64>().unwrap() * 1000.0) as u64,
    }
}

/// The directory of the libpdfium.so the tests load (installed by worker/scripts/install-pdfium.sh).
fn pdfium_dir() -> PathBuf {
    let output = Command::new("bash")
        .arg(repo_path("worker/scripts/install-pdfium.sh"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "install-pdfium.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn images(plane: &ControlPlane) -> (Image, Image, Image) {
    let pause = oci::build(
        "pause",
        &Contents::default()
            .binary("/pause", &plane.bin().join("pause"))
            .unwrap()
            .entrypoint(&["/pause"])
            .user("65535"),
    )
    .unwrap();
    // The worker finds libpdfium.so beside its executable.
    let worker = oci::build(
        "mineru-worker",
        &Contents::default()
            .binary(
                "/usr/local/bin/mineru-worker",
                &workspace_binary("mineru-worker").unwrap(),
            )
            .unwrap()
            .binary(
                "/usr/local/bin/libpdfium.so",
                &pdfium_dir().join("libpdfium.so"),
            )
            .unwrap()
            .dir("/tmp")
            .entrypoint(&["mineru-worker"]),
    )
    .unwrap();
    // Named `vllm`, the simulator takes vLLM's command line (`vllm serve MODEL ...`).
    let vllm = oci::build(
        "mineru-vllm-sim",
        &Contents::default()
            .binary(
                "/usr/local/bin/vllm",
                &workspace_binary("vllm-sim").unwrap(),
            )
            .unwrap()
            .dir("/cache")
            .dir("/tmp")
            .entrypoint(&["vllm"]),
    )
    .unwrap();
    (pause, worker, vllm)
}

fn pods(plane: &ControlPlane, tier: &str) -> Vec<Value> {
    get_json(
        plane,
        &[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            &format!("mineru.dev/tier={tier}"),
        ],
    )
    .unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_operators_pods_run_as_real_containers_and_parse_a_document() {
    let started = std::time::Instant::now();
    let no_kwok_nodes = Nodes {
        gpu_nodes: 0,
        gpus_per_node: 0,
        cpu_nodes: 0,
    };
    let plane = ControlPlane::start("real_node", &no_kwok_nodes).unwrap();
    let (pause, worker_image, vllm_image) = images(&plane);
    let mut node = RealNode::start(&plane, &pause, &[&worker_image, &vllm_image], 1).unwrap();
    // The minimal example's two workers each request the operator's default of one CPU; a
    // smaller host leaves one Pending and the test waiting for Healthy in vain.
    let allocatable =
        get_json(&plane, &["get", "node", REAL_NODE]).unwrap()["status"]["allocatable"]["cpu"]
            .as_str()
            .unwrap()
            .to_owned();
    let needed = WORKERS * WORKER_CPU_MILLIS;
    assert!(
        millicores(&allocatable) >= needed,
        "the real node has {allocatable} CPU allocatable, less than the {needed}m its {WORKERS} \
         workers request: run the test on a host with more CPUs"
    );
    eprintln!(
        "control plane, images and real node up in {:?}",
        started.elapsed()
    );

    // The node registered itself at the version we built, and kwok leaves it alone.
    let registered = get_json(&plane, &["get", "node", REAL_NODE]).unwrap();
    assert_eq!(
        registered["status"]["nodeInfo"]["kubeletVersion"],
        format!("v{}", mineru_e2e::controlplane::KUBERNETES_VERSION)
    );
    assert_eq!(registered["status"]["allocatable"]["nvidia.com/gpu"], "1");
    assert!(registered["metadata"]["labels"]["type"].is_null());

    operator::install(&plane).unwrap();
    plane.kubectl(&["create", "namespace", NAMESPACE]).unwrap();
    let mut operator = operator::start(&plane, "e2e-operator-0", None, &[]).unwrap();
    let example = minimal_example(NAMESPACE)
        .unwrap()
        .replace(
            "ghcr.io/mineru-dev/mineru-vllm:v0.11.0-mineru-vl-utils1.2.1",
            &vllm_image.name,
        )
        .replace("ghcr.io/mineru-dev/mineru-worker:0.1.0", &worker_image.name);
    assert!(example.contains(&vllm_image.name) && example.contains(&worker_image.name));
    plane.apply(&example).unwrap();

    let status = wait_until("status Healthy", Duration::from_secs(240), || {
        operator.ensure_running()?;
        node.ensure_running()?;
        let object = get_json(&plane, &["get", "mdep", "docs", "-n", NAMESPACE])?;
        Ok((object["status"]["phase"] == "Healthy").then(|| object["status"].clone()))
    })
    .unwrap();
    eprintln!("Healthy after {:?}: {status}", started.elapsed());
    let model_revision = status["stable"]["modelRevision"].as_str().unwrap();

    // Every pod of both tiers runs on the real node, each container started once and Ready:
    // the startup, readiness and liveness probes the operator wrote passed against the real
    // processes.
    for (tier, replicas) in [("model", 1), ("worker", WORKERS as usize)] {
        let pods = pods(&plane, tier);
        assert_eq!(pods.len(), replicas, "{tier} pods");
        for pod in &pods {
            assert_eq!(pod["spec"]["nodeName"], REAL_NODE, "{pod}");
            assert_eq!(pod["status"]["phase"], "Running", "{pod}");
            let container = &pod["status"]["containerStatuses"][0];
            assert_eq!(container["ready"], true, "{pod}");
            assert_eq!(container["started"], true, "{pod}");
            assert_eq!(container["restartCount"], 0, "{pod}");
            let ip = pod["status"]["podIP"].as_str().unwrap();
            assert!(ip.starts_with("198.18.1."), "pod IP {ip}");
        }
    }
    let vllm_pod = &pods(&plane, "model")[0];
    let args: Vec<&str> = vllm_pod["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--logits-processors"), "{args:?}");

    // From the host through kube-proxy: the entry Service's ClusterIP.
    let entry = get_json(&plane, &["get", "service", "docs", "-n", NAMESPACE]).unwrap();
    let url = format!(
        "http://{}:{}",
        entry["spec"]["clusterIP"].as_str().unwrap(),
        entry["spec"]["ports"][0]["port"]
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let pdf = std::fs::read(repo_path("examples/documents/sample.pdf")).unwrap();
    // kube-proxy may not have programmed the new Service's rules yet: connection errors are
    // retried for a while, any other outcome is the answer.
    let response = wait_until(
        "the entry ClusterIP to accept connections",
        Duration::from_secs(30),
        || {
            let form = reqwest::blocking::multipart::Form::new()
                .part(
                    "files",
                    reqwest::blocking::multipart::Part::bytes(pdf.clone()).file_name("sample.pdf"),
                )
                .text("return_md", "true");
            match client
                .post(format!("{url}/file_parse"))
                .multipart(form)
                .send()
            {
                Err(error) if error.is_connect() => Err(error.into()),
                outcome => Ok(Some(outcome)),
            }
        },
    )
    .unwrap()
    .unwrap();
    let code = response.status();
    let answer: Value = response.json().unwrap();
    assert!(code.is_success(), "{code}: {answer}");
    let markdown = answer["results"]["sample"]["md_content"]
        .as_str()
        .unwrap_or_default();
    eprintln!(
        "{url}/file_parse answered {code}, backend {}:\n{markdown}",
        answer["backend"]
    );
    assert_eq!(answer["backend"], "vlm");
    assert!(!markdown.trim().is_empty(), "{answer}");

    // The pages went to the vLLM pod (by its Service's name, resolved by CoreDNS in the
    // worker's pod): its simulator counted the MinerU2.5 steps.
    let vllm_service = get_json(
        &plane,
        &[
            "get",
            "service",
            &format!("docs-vllm-{model_revision}"),
            "-n",
            NAMESPACE,
        ],
    )
    .unwrap();
    let stats: Value = client
        .get(format!(
            "http://{}:8000/admin/stats",
            vllm_service["spec"]["clusterIP"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    eprintln!("vLLM simulator stats: {stats}");
    assert!(stats["requests"].as_u64().unwrap_or(0) > 0, "{stats}");
    eprintln!("test body done after {:?}", started.elapsed());
    drop(operator);
    drop(node);
}
