//! Scenarios 2 and 8 on the real control plane: the operator runs as its own process with the
//! chart's RBAC (the ServiceAccount identity, nothing more), turns a MineruDeployment into both
//! tiers' objects, kwok makes the pods Ready (GPU pods only on GPU nodes), status reaches
//! Healthy, and in steady state the operator writes nothing.

use std::{process::Command, time::Duration};

use mineru_e2e::{
    audit,
    controlplane::{ControlPlane, Nodes},
    operator::{self, get_json},
    wait_until, workspace_binary,
};

const NAMESPACE: &str = "parsing";

/// Writes by the operator's identity, leader election excluded.
fn operator_writes(plane: &ControlPlane) -> Vec<String> {
    let events = audit::events(plane);
    audit::writes(events.iter().filter(|event| !audit::about_leases(event)))
}

#[test]
fn a_mineru_deployment_becomes_both_tiers_and_settles_without_writes() {
    let plane = ControlPlane::start("operator", &Nodes::default()).unwrap();
    operator::install(&plane).unwrap();
    plane.kubectl(&["create", "namespace", NAMESPACE]).unwrap();
    let (mut operator, status) = operator::run_minimal_example(&plane, NAMESPACE, &[]).unwrap();
    assert_eq!(status["observedGeneration"], 1);
    let model_revision = status["stable"]["modelRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    let worker_revision = status["stable"]["workerRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        model_revision.starts_with("m-") && worker_revision.starts_with("w-"),
        "{status}"
    );

    // Both tiers' objects, named by revision and owned by the MineruDeployment.
    let statefulset = get_json(
        &plane,
        &[
            "get",
            "statefulset",
            &format!("docs-vllm-{model_revision}"),
            "-n",
            NAMESPACE,
        ],
    )
    .unwrap();
    assert_eq!(
        statefulset["metadata"]["ownerReferences"][0]["kind"],
        "MineruDeployment"
    );
    assert_eq!(statefulset["status"]["readyReplicas"], 1);
    let deployment = get_json(
        &plane,
        &[
            "get",
            "deployment",
            &format!("docs-worker-{worker_revision}"),
            "-n",
            NAMESPACE,
        ],
    )
    .unwrap();
    assert_eq!(deployment["status"]["readyReplicas"], 2);
    for kind in ["service", "networkpolicy", "poddisruptionbudget"] {
        let items = get_json(
            &plane,
            &[
                "get",
                kind,
                "-n",
                NAMESPACE,
                "-l",
                "app.kubernetes.io/instance=docs",
            ],
        )
        .unwrap();
        assert!(!items["items"].as_array().unwrap().is_empty(), "no {kind}");
    }

    // vLLM pods land only on GPU nodes.
    let pods = get_json(
        &plane,
        &[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "mineru.dev/tier=model",
        ],
    )
    .unwrap();
    for pod in pods["items"].as_array().unwrap() {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        assert!(node.starts_with("gpu-node-"), "vLLM pod on {node:?}");
    }

    // `kubectl mineru status`, found by kubectl as a plugin on PATH.
    let plugin_dir = workspace_binary("kubectl-mineru")
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(plane.bin().join("kubectl"))
        .env("PATH", path)
        .env("KUBECONFIG", plane.admin_kubeconfig())
        .args(["mineru", "status", "docs", "-n", NAMESPACE])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(shown.starts_with("docs: Healthy"), "{shown}");
    assert!(
        shown.contains(&format!("stable:  {model_revision}/{worker_revision}")),
        "{shown}"
    );

    // Steady state: nothing changes, so the operator writes nothing (leader election aside).
    std::thread::sleep(Duration::from_secs(3));
    let settled = operator_writes(&plane).len();
    std::thread::sleep(Duration::from_secs(20));
    let writes = operator_writes(&plane);
    assert_eq!(
        writes.len(),
        settled,
        "steady-state writes: {:?}",
        &writes[settled..]
    );
    let refused = audit::forbidden(&audit::events(&plane));
    assert!(refused.is_empty(), "calls RBAC refused: {refused:?}");

    // Drift: a replica count someone else set is taken back.
    let worker = format!("docs-worker-{worker_revision}");
    plane
        .kubectl(&[
            "scale",
            "deployment",
            &worker,
            "--replicas=5",
            "-n",
            NAMESPACE,
        ])
        .unwrap();
    wait_until(
        "the operator to restore the worker replicas",
        Duration::from_secs(30),
        || {
            let replicas = plane.kubectl(&[
                "get",
                "deployment",
                &worker,
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.spec.replicas}",
            ])?;
            Ok((replicas == "2").then_some(()))
        },
    )
    .unwrap();
    operator.ensure_running().unwrap();
}

#[test]
fn a_namespaced_operator_acts_only_in_its_namespaces_through_roles_there() {
    let plane = ControlPlane::start("operator-namespaced", &Nodes::default()).unwrap();
    for namespace in [NAMESPACE, "elsewhere"] {
        plane.kubectl(&["create", "namespace", namespace]).unwrap();
    }
    operator::install_with(&plane, &[&format!("watchNamespaces={{{NAMESPACE}}}")]).unwrap();

    // The identity the operator runs as may act in its namespace, read Nodes, and nothing else.
    let identity = format!(
        "system:serviceaccount:{}:mineru-operator",
        mineru_e2e::controlplane::OPERATOR_NAMESPACE
    );
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend(args);
        full.extend(["--as", &identity]);
        let output = plane.kubectl_output(&full).unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    for (args, expected) in [
        (&["get", "secrets", "-n", NAMESPACE][..], "yes"),
        (&["patch", "deployments", "-n", NAMESPACE], "yes"),
        (&["list", "nodes"], "yes"),
        (&["get", "secrets", "-n", "elsewhere"], "no"),
        (&["patch", "deployments", "-n", "elsewhere"], "no"),
        (&["list", "pods", "--all-namespaces"], "no"),
        (&["get", "secrets", "-n", "kube-system"], "no"),
    ] {
        assert_eq!(can(args), expected, "can-i {args:?}");
    }

    let (mut operator, _) =
        operator::run_minimal_example(&plane, NAMESPACE, &["--watch-namespaces=parsing"]).unwrap();

    // A MineruDeployment elsewhere is not the operator's: it never gets a status or objects.
    plane
        .apply(&operator::minimal_example("elsewhere").unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    operator.ensure_running().unwrap();
    let elsewhere = get_json(&plane, &["get", "mdep", "docs", "-n", "elsewhere"]).unwrap();
    assert!(elsewhere["status"].is_null(), "{}", elsewhere["status"]);
    let workloads = get_json(
        &plane,
        &["get", "statefulsets,deployments", "-n", "elsewhere"],
    )
    .unwrap();
    assert_eq!(workloads["items"], serde_json::json!([]));
}
