//! Scenario 1: the CRD is accepted by a real apiserver, defaults apply, and invalid
//! MineruDeployments are rejected with the CEL and schema messages.

use mineru_e2e::{
    controlplane::{ControlPlane, Nodes},
    repo_path,
};

const NAMESPACE: &str = "parsing";

fn with_spec_patch(patch: &str) -> String {
    format!(
        "apiVersion: mineru.dev/v1alpha1
kind: MineruDeployment
metadata: {{name: invalid, namespace: {NAMESPACE}}}
spec:
  model: {{image: vllm/vllm-openai:v0.11.0, model: opendatalab/MinerU2.5-2509-1.2B}}
  worker: {{image: registry.example/mineru-worker:0.1.0}}
{patch}"
    )
}

fn rejection(plane: &ControlPlane, manifest: &str) -> String {
    let path = plane.dir().join("candidate.yaml");
    std::fs::write(&path, manifest).unwrap();
    let output = plane
        .kubectl_output(&["create", "--dry-run=server", "-f", path.to_str().unwrap()])
        .unwrap();
    assert!(!output.status.success(), "accepted:\n{manifest}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn crd_is_served_with_defaults_and_validation() {
    let plane = ControlPlane::start(
        "crd",
        &Nodes {
            gpu_nodes: 0,
            gpus_per_node: 0,
            cpu_nodes: 1,
        },
    )
    .unwrap();
    let crds = repo_path("crds/minerudeployments.yaml");
    plane
        .kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()])
        .unwrap();
    plane
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/minerudeployments.mineru.dev",
            "--timeout=60s",
        ])
        .unwrap();
    plane.kubectl(&["create", "namespace", NAMESPACE]).unwrap();

    // The examples are accepted, and the apiserver fills in the documented defaults.
    for example in ["examples/minimal.yaml", "examples/production.yaml"] {
        let path = repo_path(example);
        plane
            .kubectl(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()])
            .unwrap();
    }
    let minimal = repo_path("examples/minimal.yaml");
    plane
        .kubectl(&["apply", "-f", minimal.to_str().unwrap()])
        .unwrap();
    let stored = plane
        .kubectl(&["get", "mdep", "docs", "-n", NAMESPACE, "-o", "jsonpath={.spec.rollout.steps[*].weight} {.spec.worker.replicas} {.spec.rollout.analysis.interval}"])
        .unwrap();
    assert_eq!(stored, "10 50 100 2 1m");
    let columns = plane.kubectl(&["get", "mdep", "-n", NAMESPACE]).unwrap();
    assert!(columns.starts_with("NAME"), "{columns}");
    for column in [
        "PHASE",
        "WEIGHT",
        "STEP",
        "MODEL",
        "WORKER",
        "CANARY-MODEL",
        "CANARY-WORKER",
        "AGE",
    ] {
        assert!(
            columns.contains(column),
            "missing column {column}: {columns}"
        );
    }

    let cases = [
        (
            "  rollout:\n    steps: [{weight: 10}, {weight: 50}]\n    analysis: {defaultCriteria: false}\n",
            "the last rollout step must have weight 100",
        ),
        (
            "  rollout:\n    steps: [{weight: 50}, {weight: 10}, {weight: 100}]\n    analysis: {defaultCriteria: false}\n",
            "rollout step weights must be strictly increasing",
        ),
        (
            "  rollout:\n    steps: [{weight: 0}, {weight: 100}]\n    analysis: {defaultCriteria: false}\n",
            "should be greater than or equal to 1",
        ),
        (
            "  rollout:\n    steps: [{weight: 10, pause: 5m, requireApproval: true}, {weight: 100}]\n    analysis: {defaultCriteria: false}\n",
            "a step either pauses for a duration or waits for approval, not both",
        ),
        (
            "  rollout:\n    steps: [{weight: 10, pause: 5 minutes}, {weight: 100}]\n    analysis: {defaultCriteria: false}\n",
            "should match",
        ),
        (
            "  rollout:\n    trafficRouting: {replicas: {}, gatewayAPI: {httpRoute: {name: r}}}\n    analysis: {defaultCriteria: false}\n",
            "trafficRouting takes one mode: replicas or gatewayAPI",
        ),
        (
            "  rollout:\n    analysis:\n      prometheus: {address: http://p:9090}\n      promotionCriteria: [{name: a, query: up}]\n",
            "a check needs at least one threshold",
        ),
        (
            "  rollout:\n    analysis: {}\n",
            "analysis.prometheus is required",
        ),
        (
            "  rollout:\n    analysis:\n      prometheus: {address: http://p:9090}\n      promotionCriteria: [{name: a, query: up, proportion: {bad: b, total: t}, max: 0.1}]\n",
            "a check reads exactly one of query, proportion or quantile",
        ),
        (
            "  rollout:\n    analysis:\n      prometheus: {address: http://p:9090}\n      promotionCriteria: [{name: a, query: up, max: 1, afterSteps: [3]}]\n",
            "promotionCriteria afterSteps must be indexes (0-based) of the rollout steps",
        ),
        (
            "  rollout:\n    steps: [{weight: 10, pause: 2h, maxDuration: 1h}, {weight: 100}]\n    analysis: {defaultCriteria: false}\n",
            "a step's maxDuration must not be shorter than its pause",
        ),
        (
            "  rollout:\n    analysis: {prometheus: {address: p:9090}}\n",
            "prometheus.address must be an http:// or https:// URL",
        ),
    ];
    for (patch, message) in cases {
        let stderr = rejection(&plane, &with_spec_patch(patch));
        assert!(
            stderr.contains(message),
            "expected {message:?} for\n{patch}\ngot: {stderr}"
        );
    }

    // Flags that run the model repository's code or put the key in the pod spec.
    let model_line =
        "  model: {image: vllm/vllm-openai:v0.11.0, model: opendatalab/MinerU2.5-2509-1.2B}";
    let analysis_off = "  rollout:\n    analysis: {defaultCriteria: false}\n";
    for (extra, message) in [
        (
            "extraArgs: [--trust-remote-code]",
            "extraArgs may pass --trust-remote-code only with allowRemoteCode: true",
        ),
        (
            "extraArgs: [--api-key=s3cret], allowRemoteCode: true",
            "the API key goes in apiKeySecretRef, never in extraArgs",
        ),
    ] {
        let manifest = with_spec_patch(analysis_off).replace(
            model_line,
            &model_line.replace("1.2B}", &format!("1.2B, {extra}}}")),
        );
        let stderr = rejection(&plane, &manifest);
        assert!(
            stderr.contains(message),
            "expected {message:?}, got: {stderr}"
        );
    }

    // The job store: its Secret named as Kubernetes names Secrets, its database reachable only
    // where the policy says, and its env never set by hand.
    let worker_line = "  worker: {image: registry.example/mineru-worker:0.1.0}";
    let store = |secret: &str, egress: &str| {
        format!("jobStore: {{urlSecretRef: {{{secret}}}, egress: {egress}}}")
    };
    let with_worker = |extra: &str| {
        with_spec_patch(analysis_off).replace(
            worker_line,
            &worker_line.replace("0.1.0}", &format!("0.1.0, {extra}}}")),
        )
    };
    for (extra, message) in [
        (
            store("name: Jobs_DB, key: url", "[{podSelector: {}}]"),
            "a Secret name is lowercase letters",
        ),
        (
            store("name: jobs, key: 'u r l'", "[{podSelector: {}}]"),
            "a Secret key is letters, digits",
        ),
        (
            store("name: jobs, key: url", "[]"),
            "should have at least 1 items",
        ),
        (
            store(
                "name: jobs, key: url",
                "[{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]",
            ),
            "each jobStore.egress peer is either an ipBlock",
        ),
        (
            "env: [{name: MINERU_JOB_STORE, value: 'postgres://x'}]".to_owned(),
            "MINERU_JOB_STORE is set from jobStore.urlSecretRef",
        ),
    ] {
        let stderr = rejection(&plane, &with_worker(&extra));
        assert!(
            stderr.contains(message),
            "expected {message:?} for {extra}, got: {stderr}"
        );
    }
    let accepted = with_worker(&store(
        "name: jobs, key: url",
        "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: databases}}}]",
    ));
    let path = plane.dir().join("job-store.yaml");
    std::fs::write(&path, &accepted).unwrap();
    let output = plane
        .kubectl_output(&[
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            path.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        created["spec"]["worker"]["jobStore"]["port"], 5432,
        "{created}"
    );

    // A name too long for the names derived from it is refused at apply time.
    let valid = with_spec_patch("  rollout:\n    analysis: {defaultCriteria: false}\n");
    let long_name = valid.replace("name: invalid", &format!("name: {}", "d".repeat(37)));
    let stderr = rejection(&plane, &long_name);
    assert!(
        stderr.contains("metadata.name must be at most 36 characters"),
        "{stderr}"
    );

    let negative_replicas = with_spec_patch("  rollout:\n    analysis: {defaultCriteria: false}\n")
        .replace("replicas: 2", "")
        .replace(
            "worker: {image: registry.example/mineru-worker:0.1.0}",
            "worker: {image: registry.example/mineru-worker:0.1.0, replicas: -1}",
        );
    assert!(rejection(&plane, &negative_replicas).contains("spec.worker.replicas"));

    let missing_rollout = with_spec_patch("");
    assert!(rejection(&plane, &missing_rollout).contains("spec.rollout: Required value"));
}
