//! Scenario 7: the GPU pool is full. The canary vLLM cannot be scheduled beside stable, so the
//! engine replaces stable vLLM replicas in place instead of deadlocking, says so, and the
//! rollout completes.

use std::time::Duration;

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{NAMESPACE, Scenario, pair},
    wait_until,
};

#[test]
fn a_full_gpu_pool_replaces_stable_in_place_and_still_promotes() {
    let nodes = Nodes {
        gpu_nodes: 1,
        gpus_per_node: 1,
        cpu_nodes: 1,
    };
    let mut scenario = Scenario::start("rollout-gpu-pool", &nodes);
    scenario.settle_on_stable();
    let canary = scenario.canary.clone();
    scenario.apply_canary();

    // The canary's pod waits for a GPU, and the engine makes room by stopping stable vLLM.
    let events = wait_until(
        "an InPlaceReplacement event",
        Duration::from_secs(120),
        || {
            scenario.ensure_operator_running();
            let reasons = scenario.plane.kubectl(&[
                "get",
                "events.events.k8s.io",
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
            ])?;
            Ok(reasons
                .lines()
                .any(|r| r == "InPlaceReplacement")
                .then_some(reasons))
        },
    )
    .unwrap();
    assert!(events.contains("RolloutStarted"), "{events}");

    let promoted = scenario.wait_for("promotion", Duration::from_secs(240), |s| {
        s["phase"] == "Healthy"
            && pair(s, "stable")
                == Some((
                    canary.model_revision.clone(),
                    canary.worker_revision.clone(),
                ))
    });
    assert!(
        promoted["inPlaceModelReplicas"].is_null(),
        "in-place bookkeeping cleared: {promoted}"
    );
    let ready = scenario
        .plane
        .kubectl(&[
            "get",
            "statefulset",
            &format!("docs-vllm-{}", canary.model_revision),
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .unwrap();
    assert_eq!(ready, "1", "the promoted vLLM runs on the only GPU");
}
