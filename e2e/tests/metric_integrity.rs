//! The chart's PodMonitor keeps only pods the operator owns: a real Prometheus applies the
//! PodMonitor's selector and relabelings, as the Prometheus Operator renders them into a scrape
//! job, to the pods of a real API server. The operator's pods become targets labelled with their
//! namespace and revision; impostors that copy a canary's labels — a bare pod, a Deployment not
//! named after them — are dropped, so nothing they export can reach the gates.
//!
//! Debian's Prometheus is built without Kubernetes discovery, so the pods reach it through file
//! discovery, carrying the `__meta_kubernetes_pod_*` labels Kubernetes discovery would give them
//! (from the pod's labels, ports and controlling owner reference); the relabeling is Prometheus'.

use std::time::Duration;

use mineru_e2e::{
    controlplane::{ControlPlane, Nodes},
    operator::{self, get_json},
    prometheus::Prometheus,
    wait_until,
};
use serde_json::{Map, Value, json};

const NAMESPACE: &str = "parsing";

/// The PodMonitor's endpoint as the Prometheus Operator's scrape job: keep the selected pods
/// and the named port, then the endpoint's own relabelings, keys in Prometheus' spelling.
fn scrape_job(monitor: &Value, discovered: &str) -> Value {
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let mut relabel = Vec::new();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        let name: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        relabel.push(json!({
            "action": "keep",
            "source_labels": [format!("__meta_kubernetes_pod_label_{name}")],
            "regex": value,
        }));
    }
    relabel.push(json!({
        "action": "keep",
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": endpoint["port"],
    }));
    for rule in endpoint["relabelings"].as_array().unwrap() {
        let converted: Map<String, Value> = rule
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, value)| {
                let key = match key.as_str() {
                    "sourceLabels" => "source_labels",
                    "targetLabel" => "target_label",
                    other => other,
                };
                (key.to_owned(), value.clone())
            })
            .collect();
        relabel.push(Value::Object(converted));
    }
    json!({
        "job_name": "podMonitor/mineru-workloads/0",
        "honor_labels": endpoint["honorLabels"],
        "scrape_interval": "1s",
        "file_sd_configs": [{"files": [discovered], "refresh_interval": "1s"}],
        "relabel_configs": relabel,
    })
}

/// A label name as Prometheus' discovery spells it: anything but `[a-zA-Z0-9_]` becomes `_`.
fn sanitized(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The file-discovery target groups of `pods` (a `kubectl get pods -o json` list): one per
/// container port, with the labels Kubernetes pod discovery sets.
fn discovered(pods: &Value) -> Value {
    let mut groups = Vec::new();
    for pod in pods["items"].as_array().unwrap() {
        let meta = &pod["metadata"];
        let mut labels = Map::new();
        labels.insert(
            "__meta_kubernetes_namespace".into(),
            meta["namespace"].clone(),
        );
        labels.insert("__meta_kubernetes_pod_name".into(), meta["name"].clone());
        for (key, value) in meta["labels"].as_object().into_iter().flatten() {
            let key = sanitized(key);
            labels.insert(format!("__meta_kubernetes_pod_label_{key}"), value.clone());
            labels.insert(
                format!("__meta_kubernetes_pod_labelpresent_{key}"),
                json!("true"),
            );
        }
        let controller = meta["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|owner| owner["controller"] == true);
        if let Some(owner) = controller {
            labels.insert(
                "__meta_kubernetes_pod_controller_kind".into(),
                owner["kind"].clone(),
            );
            labels.insert(
                "__meta_kubernetes_pod_controller_name".into(),
                owner["name"].clone(),
            );
        }
        let ip = pod["status"]["podIP"].as_str().unwrap_or("192.0.2.1");
        for container in pod["spec"]["containers"].as_array().unwrap() {
            for port in container["ports"].as_array().into_iter().flatten() {
                let mut labels = labels.clone();
                labels.insert(
                    "__meta_kubernetes_pod_container_name".into(),
                    container["name"].clone(),
                );
                labels.insert(
                    "__meta_kubernetes_pod_container_port_name".into(),
                    port["name"].clone(),
                );
                groups.push(json!({
                    "targets": [format!("{ip}:{}", port["containerPort"])],
                    "labels": labels,
                }));
            }
        }
    }
    Value::Array(groups)
}

fn pod_monitor() -> Value {
    let rendered = operator::render_chart(&[
        "--set",
        "podMonitor.enabled=true",
        "--show-only",
        "templates/podmonitor.yaml",
    ])
    .unwrap();
    serde_yaml::from_str(&rendered).unwrap()
}

/// A workload `kind` named `name` whose pods carry exactly `labels` and the worker's port name.
fn impostor(kind: &str, name: &str, labels: &Value) -> String {
    let container = json!({"name": "w", "image": "registry.example/impostor:1", "ports": [{"name": "http", "containerPort": 8000}]});
    let object = match kind {
        "Pod" => json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": {"containers": [container]},
        }),
        _ => json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"impostor": name}},
                "template": {
                    "metadata": {"labels": {
                        "impostor": name,
                        "app.kubernetes.io/managed-by": labels["app.kubernetes.io/managed-by"],
                        "app.kubernetes.io/instance": labels["app.kubernetes.io/instance"],
                        "app.kubernetes.io/component": labels["app.kubernetes.io/component"],
                        "mineru.dev/revision": labels["mineru.dev/revision"],
                    }},
                    "spec": {"containers": [container]},
                },
            },
        }),
    };
    serde_json::to_string(&object).unwrap()
}

#[test]
fn only_pods_the_operator_owns_become_targets_of_the_gates() {
    let plane = ControlPlane::start("metric-integrity", &Nodes::default()).unwrap();
    operator::install(&plane).unwrap();
    plane.kubectl(&["create", "namespace", NAMESPACE]).unwrap();
    let (_operator, status) = operator::run_minimal_example(&plane, NAMESPACE, &[]).unwrap();
    let worker_revision = status["stable"]["workerRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    let model_revision = status["stable"]["modelRevision"]
        .as_str()
        .unwrap()
        .to_owned();

    let workers = get_json(
        &plane,
        &[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/component=worker",
        ],
    )
    .unwrap();
    let mut worker_labels = workers["items"][0]["metadata"]["labels"].clone();
    // With it, the ReplicaSet would adopt the bare pod and scale it away (docs/security.md).
    worker_labels
        .as_object_mut()
        .unwrap()
        .remove("pod-template-hash");
    plane
        .apply(&impostor("Pod", "impostor-pod", &worker_labels))
        .unwrap();
    plane
        .apply(&impostor("Deployment", "impostor", &worker_labels))
        .unwrap();
    wait_until("the impostors' pods", Duration::from_secs(60), || {
        let pods = get_json(
            &plane,
            &["get", "pods", "-n", NAMESPACE, "-l", "impostor=impostor"],
        )?;
        Ok(pods["items"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            .then_some(()))
    })
    .unwrap();

    let pods = get_json(&plane, &["get", "pods", "-n", NAMESPACE]).unwrap();
    let targets = plane.dir().join("discovered-pods.json");
    std::fs::write(&targets, serde_json::to_string(&discovered(&pods)).unwrap()).unwrap();
    let job = scrape_job(&pod_monitor(), targets.to_str().unwrap());
    let config = serde_yaml::to_string(&json!({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [job],
    }))
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let prometheus = runtime
        .block_on(Prometheus::start_configured(
            &plane.dir().join("prometheus"),
            &config,
        ))
        .unwrap();
    let targets_url = format!("{}/api/v1/targets", prometheus.url());

    // Every pod of the namespace was discovered; which became targets, with which labels.
    let (active, dropped) = wait_until("the pods discovered", Duration::from_secs(60), || {
        let body: Value = reqwest::blocking::get(&targets_url)?.json()?;
        let pods_of = |list: &str, labels: &str| -> Vec<(String, Value)> {
            body["data"][list]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    (
                        t["discoveredLabels"]["__meta_kubernetes_pod_name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        t[labels].clone(),
                    )
                })
                .collect()
        };
        let active = pods_of("activeTargets", "labels");
        let dropped = pods_of("droppedTargets", "discoveredLabels");
        let seen = |prefix: &str| {
            active
                .iter()
                .chain(&dropped)
                .any(|(pod, _)| pod.starts_with(prefix))
        };
        Ok((seen("docs-worker-")
            && seen("docs-vllm-")
            && seen("impostor-pod")
            && seen("impostor-"))
        .then_some((active, dropped)))
    })
    .unwrap();

    let revision_of = |prefix: &str| {
        active
            .iter()
            .find(|(pod, _)| pod.starts_with(prefix))
            .map(|(_, labels)| (labels["namespace"].clone(), labels["revision"].clone()))
    };
    assert_eq!(
        revision_of(&format!("docs-worker-{worker_revision}-")),
        Some((json!(NAMESPACE), json!(worker_revision))),
        "{active:#?}"
    );
    assert_eq!(
        revision_of(&format!("docs-vllm-{model_revision}-")),
        Some((json!(NAMESPACE), json!(model_revision))),
        "{active:#?}"
    );
    let impostors: Vec<_> = active
        .iter()
        .filter(|(pod, _)| pod.starts_with("impostor"))
        .collect();
    assert!(
        impostors.is_empty(),
        "impostors became targets: {impostors:#?}"
    );
    assert!(
        dropped.iter().any(|(pod, _)| pod == "impostor-pod"),
        "{dropped:#?}"
    );
}
