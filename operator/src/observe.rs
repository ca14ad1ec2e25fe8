//! Facts for the rollout engine, read from the objects and pods of a MineruDeployment and keyed
//! by revision, so that no fact is ever attributed to the wrong revision.

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Pod,
};
use kube::ResourceExt;

use crate::{labels, rollout::Observed};

/// Readiness per revision, pods that cannot be scheduled for lack of `gpu_resource`, and vLLM
/// container restarts. Warm-up is probed over HTTP and added by the caller.
pub fn observe(
    statefulsets: &[StatefulSet],
    deployments: &[Deployment],
    model_pods: &[Pod],
    gpu_resource: &str,
) -> Observed {
    let mut observed = Observed::default();
    for statefulset in statefulsets {
        if let Some(revision) = statefulset.labels().get(labels::REVISION) {
            let ready = statefulset
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            observed.model_ready.insert(revision.clone(), ready);
        }
    }
    for deployment in deployments {
        if let Some(revision) = deployment.labels().get(labels::REVISION) {
            let ready = deployment
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            observed.worker_ready.insert(revision.clone(), ready);
        }
    }
    let insufficient = format!("Insufficient {gpu_resource}");
    for pod in model_pods {
        let Some(revision) = pod.labels().get(labels::REVISION) else {
            continue;
        };
        let Some(status) = &pod.status else {
            continue;
        };
        let restarts: i32 = status
            .container_statuses
            .iter()
            .flatten()
            .map(|container| container.restart_count)
            .sum();
        *observed.vllm_restarts.entry(revision.clone()).or_default() += restarts;
        let lacks_gpus = status.conditions.iter().flatten().any(|condition| {
            condition.type_ == "PodScheduled"
                && condition.status == "False"
                && condition.reason.as_deref() == Some("Unschedulable")
                && condition
                    .message
                    .as_deref()
                    .is_some_and(|message| message.contains(&insufficient))
        });
        if lacks_gpus {
            observed.unschedulable.insert(revision.clone());
        }
    }
    observed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn statefulset(revision: &str, ready: i32) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("docs-vllm-{revision}"), "labels": {labels::REVISION: revision}},
            "status": {"replicas": 1, "readyReplicas": ready}
        }))
        .unwrap()
    }

    fn deployment(revision: &str, ready: Option<i32>) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": format!("docs-worker-{revision}"), "labels": {labels::REVISION: revision}},
            "status": {"readyReplicas": ready}
        }))
        .unwrap()
    }

    fn pod(revision: &str, restarts: &[i32], scheduled: Option<(&str, &str)>) -> Pod {
        let conditions: Vec<_> = scheduled
            .map(|(reason, message)| json!({"type": "PodScheduled", "status": "False", "reason": reason, "message": message}))
            .into_iter()
            .collect();
        let containers: Vec<_> = restarts
            .iter()
            .enumerate()
            .map(|(i, count)| json!({"name": format!("c{i}"), "ready": true, "restartCount": count, "image": "x", "imageID": ""}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {labels::REVISION: revision}},
            "status": {"conditions": conditions, "containerStatuses": containers}
        }))
        .unwrap()
    }

    #[test]
    fn readiness_is_keyed_by_revision() {
        let observed = observe(
            &[statefulset("m-a", 2), statefulset("m-b", 0)],
            &[deployment("w-a", Some(3)), deployment("w-b", None)],
            &[],
            "nvidia.com/gpu",
        );
        assert_eq!(observed.model_ready["m-a"], 2);
        assert_eq!(observed.model_ready["m-b"], 0);
        assert_eq!(observed.worker_ready["w-a"], 3);
        assert_eq!(observed.worker_ready["w-b"], 0);
    }

    #[test]
    fn restarts_add_up_per_revision() {
        let observed = observe(
            &[],
            &[],
            &[
                pod("m-a", &[1, 2], None),
                pod("m-a", &[3], None),
                pod("m-b", &[0], None),
            ],
            "nvidia.com/gpu",
        );
        assert_eq!(observed.vllm_restarts["m-a"], 6);
        assert_eq!(observed.vllm_restarts["m-b"], 0);
    }

    #[test]
    fn only_a_lack_of_gpus_counts_as_unschedulable() {
        let observed = observe(
            &[],
            &[],
            &[
                pod(
                    "m-gpu",
                    &[],
                    Some((
                        "Unschedulable",
                        "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node affinity.",
                    )),
                ),
                pod(
                    "m-taint",
                    &[],
                    Some((
                        "Unschedulable",
                        "0/4 nodes are available: 4 node(s) had untolerated taint.",
                    )),
                ),
            ],
            "nvidia.com/gpu",
        );
        assert!(observed.unschedulable.contains("m-gpu"));
        assert!(!observed.unschedulable.contains("m-taint"));
    }
}
