//! GPU capacity for a canary vLLM, read from Nodes and Pods before a model rollout starts.
//!
//! A canary replica needs `gpusPerReplica` GPUs on one node that its nodeSelector and
//! tolerations allow, so capacity is counted per node in whole replicas. What is free decides
//! whether the canary can be added beside stable (`maxSurgeGPUs` permitting) or must replace
//! stable replicas in place; a cluster where no allowed node could ever host a replica is a
//! preflight failure rather than a rollout left to hit its progress deadline.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::{Api, Client, api::ListParams};
use mineru_crds::ModelSpec;

use crate::scope::WatchScope;

/// GPUs the canary can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuCapacity {
    /// Free GPUs on allowed nodes, counted in whole canary replicas; unknown when the pods
    /// holding GPUs were not read.
    pub free: Option<i32>,
    /// Allocatable GPUs of the largest allowed node; below `gpusPerReplica` nothing ever fits.
    pub largest_node: i32,
}

impl GpuCapacity {
    /// Why no canary replica can ever be scheduled, if that is so.
    pub fn problem(&self, model: &ModelSpec) -> Option<String> {
        (self.largest_node < model.gpus_per_replica).then(|| {
            format!(
                "no node allowed by the model's nodeSelector and tolerations has {} allocatable {} (largest: {})",
                model.gpus_per_replica, model.gpu_resource_name, self.largest_node
            )
        })
    }
}

/// Counts the capacity from a snapshot of the cluster; without `pods`, only the largest node.
pub fn gpu_capacity(nodes: &[Node], pods: Option<&[Pod]>, model: &ModelSpec) -> GpuCapacity {
    let used = pods.map(|pods| {
        let mut used = GpusInUse::default();
        used.add(pods, &model.gpu_resource_name);
        used
    });
    capacity_of(nodes, used.as_ref(), model)
}

/// GPUs held by unfinished pods, per node: all a capacity count keeps of the pods it reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpusInUse(BTreeMap<String, i64>);

impl GpusInUse {
    /// Adds what `pods` hold of `resource`.
    pub fn add(&mut self, pods: &[Pod], resource: &str) {
        for pod in pods {
            let Some(spec) = &pod.spec else {
                continue;
            };
            let Some(node) = spec.node_name.as_deref() else {
                continue;
            };
            let finished = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
            if finished {
                continue;
            }
            let gpus: i64 = spec
                .containers
                .iter()
                .filter_map(|container| {
                    let resources = container.resources.as_ref()?;
                    // Extended resources are requested as limits; requests default to them.
                    let requests = resources.requests.as_ref().and_then(|r| r.get(resource));
                    let limits = resources.limits.as_ref().and_then(|l| l.get(resource));
                    requests.or(limits).and_then(|q| whole(&q.0))
                })
                .sum();
            if gpus > 0 {
                *self.0.entry(node.to_owned()).or_default() += gpus;
            }
        }
    }
}

fn capacity_of(nodes: &[Node], used: Option<&GpusInUse>, model: &ModelSpec) -> GpuCapacity {
    let resource = &model.gpu_resource_name;
    let per_replica = i64::from(model.gpus_per_replica.max(1));
    let (mut free, mut largest_node) = (0, 0);
    for node in nodes.iter().filter(|node| allowed(node, model)) {
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(resource))
            .and_then(|q| whole(&q.0))
            .unwrap_or(0);
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let in_use = used.and_then(|u| u.0.get(name)).copied().unwrap_or(0);
        let free_here = (allocatable - in_use).max(0);
        free += to_i32(free_here / per_replica * per_replica);
        largest_node = largest_node.max(to_i32(allocatable));
    }
    GpuCapacity {
        free: used.map(|_| free),
        largest_node,
    }
}

/// Objects read per list call: a cluster of thousands of pods is read a page at a time, and of
/// each page only the GPUs held are kept, so the count stays within the operator's memory.
pub const PAGE: u32 = 500;

/// Reads the cluster's Nodes, and the GPUs its running Pods hold when the `free` GPUs are
/// wanted, `page` objects per call. Pods are read where the operator may read them: in every
/// namespace, or only the watched ones (GPUs held elsewhere are then unseen, and a canary that
/// finds no room is noticed by its unschedulable pods instead).
pub async fn read(
    client: &Client,
    scope: &WatchScope,
    model: &ModelSpec,
    free: bool,
    page: u32,
) -> Result<GpuCapacity, kube::Error> {
    let mut nodes = Vec::new();
    for_each_page(
        &Api::<Node>::all(client.clone()),
        ListParams::default(),
        page,
        |items| nodes.extend(items),
    )
    .await?;
    let used = if free {
        let mut used = GpusInUse::default();
        let running = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        for api in scope.apis::<Pod>(client) {
            for_each_page(&api, running.clone(), page, |pods| {
                used.add(&pods, &model.gpu_resource_name)
            })
            .await?;
        }
        Some(used)
    } else {
        None
    };
    Ok(capacity_of(&nodes, used.as_ref(), model))
}

/// Lists `api` a page at a time, handing each page to `each`.
async fn for_each_page<K>(
    api: &Api<K>,
    params: ListParams,
    page: u32,
    mut each: impl FnMut(Vec<K>),
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let mut params = params.limit(page.max(1));
    loop {
        let list = api.list(&params).await?;
        each(list.items);
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

fn to_i32(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// A whole-number quantity (`"8"`); GPUs are never fractional.
fn whole(quantity: &str) -> Option<i64> {
    quantity.parse().ok()
}

/// Whether the canary vLLM could be placed on the node: schedulable, Ready, matching the
/// nodeSelector, every NoSchedule/NoExecute taint tolerated.
fn allowed(node: &Node, model: &ModelSpec) -> bool {
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return false;
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selected = model
        .node_selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    let taints = spec.and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let tolerated = taints
        .iter()
        .filter(|taint| taint.effect == "NoSchedule" || taint.effect == "NoExecute")
        .all(|taint| model.tolerations.iter().any(|t| tolerates(t, taint)));
    ready && selected && tolerated
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration
        .effect
        .as_deref()
        .is_none_or(|effect| effect.is_empty() || effect == taint.effect);
    let key = toleration.key.as_deref().unwrap_or_default();
    let matches = match toleration.operator.as_deref() {
        Some("Exists") => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    };
    effect && matches
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(extra: serde_json::Value) -> ModelSpec {
        let mut spec =
            json!({"image": "vllm/vllm-openai:v0.11.0", "model": "m", "gpusPerReplica": 2});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(spec).unwrap()
    }

    fn node(name: &str, gpus: &str, extra: serde_json::Value) -> Node {
        let mut node = json!({
            "metadata": {"name": name, "labels": {"pool": "l4"}},
            "spec": {},
            "status": {
                "allocatable": {"nvidia.com/gpu": gpus},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        let object = node.as_object_mut().unwrap();
        for (key, value) in extra.as_object().unwrap() {
            object.insert(key.clone(), value.clone());
        }
        serde_json::from_value(node).unwrap()
    }

    fn pod(node: &str, gpus: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "spec": {"nodeName": node, "containers": [
                {"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": gpus}}},
                {"name": "sidecar"}
            ]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn free_gpus_count_whole_replicas_per_node() {
        let nodes = [
            node("a", "4", json!({})),
            node("b", "4", json!({})),
            node("c", "1", json!({})),
        ];
        let pods = [
            pod("a", "1", "Running"),
            pod("b", "4", "Running"),
            pod("b", "4", "Succeeded"),
        ];
        let capacity = gpu_capacity(&nodes, Some(&pods), &model(json!({})));
        // a: 3 free -> one 2-GPU replica; b: full; c: 1 GPU fits no replica.
        assert_eq!(
            capacity,
            GpuCapacity {
                free: Some(2),
                largest_node: 4
            }
        );
        assert_eq!(capacity.problem(&model(json!({}))), None);
    }

    #[test]
    fn only_nodes_the_canary_may_use_count() {
        let nodes = [
            node("cordoned", "8", json!({"spec": {"unschedulable": true}})),
            node(
                "other-pool",
                "8",
                json!({"metadata": {"name": "other-pool", "labels": {"pool": "a100"}}}),
            ),
            node(
                "tainted",
                "8",
                json!({"spec": {"taints": [{"key": "gpu", "value": "l4", "effect": "NoSchedule"}]}}),
            ),
            node(
                "not-ready",
                "8",
                json!({"status": {
                    "allocatable": {"nvidia.com/gpu": "8"},
                    "conditions": [{"type": "Ready", "status": "False"}]
                }}),
            ),
            node(
                "prefer",
                "2",
                json!({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}),
            ),
        ];
        let selective = model(json!({"nodeSelector": {"pool": "l4"}}));
        assert_eq!(
            gpu_capacity(&nodes, Some(&[]), &selective),
            GpuCapacity {
                free: Some(2),
                largest_node: 2
            }
        );
        let tolerant = model(json!({
            "nodeSelector": {"pool": "l4"},
            "tolerations": [{"key": "gpu", "operator": "Equal", "value": "l4", "effect": "NoSchedule"}]
        }));
        assert_eq!(gpu_capacity(&nodes, Some(&[]), &tolerant).free, Some(10));
        let wrong_value = model(json!({
            "tolerations": [{"key": "gpu", "operator": "Equal", "value": "a100"}]
        }));
        assert_eq!(
            gpu_capacity(&nodes, Some(&[]), &wrong_value).free,
            Some(10),
            "other-pool and prefer"
        );
        let exists = model(json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(gpu_capacity(&nodes, Some(&[]), &exists).free, Some(18));
    }

    #[test]
    fn a_cluster_without_a_node_big_enough_is_a_preflight_problem() {
        let nodes = [node("small", "1", json!({}))];
        let spec = model(json!({}));
        // Whether anything could ever fit needs no pod list.
        let capacity = gpu_capacity(&nodes, None, &spec);
        assert_eq!(capacity.free, None);
        let problem = capacity.problem(&spec).unwrap();
        assert!(
            problem.contains("has 2 allocatable nvidia.com/gpu (largest: 1)"),
            "{problem}"
        );
    }
}
