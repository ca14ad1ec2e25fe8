//! The harness itself: fake GPU nodes schedule GPU pods (and only them), pods become Ready under
//! kwok, and a request beyond the pool's GPUs stays unschedulable — what the GPU-aware rollout
//! scenarios rely on.

use std::time::{Duration, Instant};

use mineru_e2e::controlplane::{ControlPlane, Nodes};

fn gpu_pod(name: &str, gpus: u32) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  containers:
  - name: vllm
    image: vllm/vllm-openai:v0.11.0
    resources:
      limits: {{nvidia.com/gpu: \"{gpus}\"}}
"
    )
}

fn wait_for(plane: &ControlPlane, what: &str, args: &[&str], expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = plane.kubectl(args).unwrap();
        if seen.trim() == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: expected {expected:?}, last saw {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_for_nodes_ready(plane: &ControlPlane, nodes: usize) {
    wait_for(
        plane,
        "nodes ready",
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ],
        &vec!["True"; nodes].join(" "),
    );
}

#[test]
fn gpu_pods_land_on_gpu_nodes_and_excess_stays_pending() {
    let plane = ControlPlane::start(
        "cluster",
        &Nodes {
            gpu_nodes: 1,
            gpus_per_node: 2,
            cpu_nodes: 1,
        },
    )
    .unwrap();
    wait_for_nodes_ready(&plane, 2);

    plane.apply(&gpu_pod("fits", 2)).unwrap();
    wait_for(
        &plane,
        "GPU pod ready",
        &[
            "get",
            "pod",
            "fits",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
    );
    assert_eq!(
        plane
            .kubectl(&["get", "pod", "fits", "-o", "jsonpath={.spec.nodeName}"])
            .unwrap(),
        "gpu-node-0"
    );

    plane.apply(&gpu_pod("excess", 1)).unwrap();
    wait_for(
        &plane,
        "excess GPU pod unschedulable",
        &[
            "get",
            "pod",
            "excess",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        ],
        "Unschedulable",
    );
}

/// The GPU capacity count reads Pods (and Nodes) a page at a time and gets the same answer as
/// one list would: more pods than fit in a page are all counted.
#[test]
fn the_gpu_capacity_count_pages_through_pods() {
    let plane = ControlPlane::start(
        "cluster-pages",
        &Nodes {
            gpu_nodes: 2,
            gpus_per_node: 4,
            cpu_nodes: 1,
        },
    )
    .unwrap();
    wait_for_nodes_ready(&plane, 3);
    for index in 0..5 {
        plane.apply(&gpu_pod(&format!("gpu-{index}"), 1)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let placed = plane
            .kubectl(&[
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
            ])
            .unwrap();
        if placed
            .lines()
            .filter(|n| n.starts_with("gpu-node-"))
            .count()
            == 5
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every GPU pod placed: {placed}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let model: mineru_crds::ModelSpec = serde_json::from_value(serde_json::json!({
        "image": "vllm/vllm-openai:v0.11.0",
        "model": "opendatalab/MinerU2.5-2509-1.2B",
        "gpusPerReplica": 1
    }))
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (paged, whole) = runtime.block_on(async {
        let client = plane.admin_client().await.unwrap();
        let read = |page| {
            let (client, model) = (client.clone(), model.clone());
            async move {
                mineru_operator::capacity::read(&client, &Default::default(), &model, true, page)
                    .await
                    .unwrap()
            }
        };
        (read(2).await, read(500).await)
    });
    assert_eq!(paged, whole);
    assert_eq!(paged.free, Some(3), "8 GPUs, 5 held by pods");
    assert_eq!(paged.largest_node, 4);
}
