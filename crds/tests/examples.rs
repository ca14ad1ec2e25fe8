//! The example manifests deserialize into the API types, defaults fill what they leave out, and
//! serializing keeps what was written.

use std::time::Duration;

use mineru_crds::{Backend, MineruDeployment, Policy, ServiceType, Tier};
use serde_json::Value;

fn example(name: &str) -> (Value, MineruDeployment) {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let raw: Value = serde_yaml::from_str(&text).unwrap();
    let typed: MineruDeployment =
        serde_yaml::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"));
    (raw, typed)
}

#[test]
fn minimal_example_gets_the_documented_defaults() {
    let (_, mdep) = example("minimal.yaml");
    let spec = &mdep.spec;

    assert_eq!(
        spec.model.served_model_name(),
        "opendatalab/MinerU2.5-2509-1.2B"
    );
    assert_eq!(spec.model.replicas, 1);
    assert_eq!(spec.model.gpus_per_replica, 1);
    assert_eq!(spec.model.gpu_resource_name, "nvidia.com/gpu");
    assert_eq!(spec.model.gpu_memory_utilization, 0.5);
    assert!(spec.model.logits_processor);
    assert_eq!(
        spec.model.startup_timeout.get(),
        Duration::from_secs(20 * 60)
    );

    assert_eq!(spec.worker.replicas, 2);
    assert_eq!(spec.worker.backend, Backend::Vlm);
    assert_eq!(spec.worker.max_concurrent_documents, 4);
    assert_eq!(spec.worker.max_file_bytes.0, "100Mi");
    assert_eq!(spec.worker.max_pages, 1000);

    assert_eq!(spec.service.port, 8000);
    assert_eq!(spec.service.service_type, ServiceType::ClusterIP);

    let rollout = &spec.rollout;
    let steps: Vec<_> = rollout
        .steps
        .iter()
        .map(|s| (s.weight, s.pause.as_ref().map(|p| p.get().as_secs())))
        .collect();
    assert_eq!(steps, [(10, Some(300)), (50, Some(600)), (100, None)]);
    assert!(
        rollout.traffic_routing.replicas.is_none() && rollout.traffic_routing.gateway_api.is_none()
    );
    assert_eq!(rollout.canary_model_replicas, 1);
    assert_eq!(rollout.max_surge_gpus, None);
    assert_eq!(
        rollout.progress_deadline.get(),
        Duration::from_secs(30 * 60)
    );
    assert_eq!(rollout.scale_down_delay.get(), Duration::from_secs(30));
    assert_eq!(
        rollout.post_promotion_window.get(),
        Duration::from_secs(10 * 60)
    );

    let analysis = &rollout.analysis;
    assert_eq!(
        analysis.prometheus.as_ref().unwrap().address,
        "http://prometheus.monitoring:9090"
    );
    assert_eq!(
        analysis.prometheus.as_ref().unwrap().timeout.get(),
        Duration::from_secs(10)
    );
    assert_eq!(analysis.interval.get(), Duration::from_secs(60));
    assert_eq!(analysis.failure_limit, 0);
    assert_eq!(analysis.consecutive_error_limit, 4);
    assert_eq!(
        (
            analysis.evidence.confidence,
            analysis.evidence.power,
            analysis.evidence.regression
        ),
        (0.995, 0.95, 3.0)
    );
    let max_durations: Vec<_> = rollout
        .steps
        .iter()
        .map(|s| s.max_duration.get().as_secs() / 3600)
        .collect();
    assert_eq!(max_durations, [96, 168, 168], "hours");
    assert_eq!(
        (analysis.on_error, analysis.on_inconclusive),
        (Policy::Hold, Policy::Hold)
    );
    assert!(analysis.default_criteria);
    assert!(analysis.quality.is_none());
}

#[test]
fn production_example_keeps_every_field() {
    let (raw, mdep) = example("production.yaml");
    let rollout = &mdep.spec.rollout;
    assert_eq!(rollout.steps.len(), 4);
    assert!(rollout.steps[2].require_approval);
    let gateway = rollout.traffic_routing.gateway_api.as_ref().unwrap();
    assert_eq!(gateway.http_route.name, "mineru");
    assert_eq!(gateway.legacy_backend.as_ref().unwrap().port, 8000);
    let criterion = &rollout.analysis.promotion_criteria[0];
    assert_eq!(criterion.tier, Tier::Model);
    assert_eq!(criterion.after_steps, [0, 1]);
    assert_eq!(
        rollout.analysis.rollback_triggers[0].sustained_for.get(),
        Duration::from_secs(600)
    );
    assert_eq!(
        rollout
            .analysis
            .quality
            .as_ref()
            .unwrap()
            .golden_documents
            .config_map_labels,
        Some([("mineru.dev/golden-documents".to_owned(), "docs".to_owned())].into())
    );

    // Every field written in the example survives a round trip unchanged.
    let round_trip = serde_json::to_value(&mdep).unwrap();
    assert_subset(&raw, &round_trip, "");
}

/// Asserts that everything in `written` is present and equal in `serialized`.
fn assert_subset(written: &Value, serialized: &Value, path: &str) {
    match (written, serialized) {
        (Value::Object(w), Value::Object(s)) => {
            for (key, value) in w {
                let child = s
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key} lost in round trip"));
                assert_subset(value, child, &format!("{path}.{key}"));
            }
        }
        (Value::Array(w), Value::Array(s)) => {
            assert_eq!(w.len(), s.len(), "{path}: list length changed");
            for (index, (a, b)) in w.iter().zip(s).enumerate() {
                assert_subset(a, b, &format!("{path}[{index}]"));
            }
        }
        (Value::Number(w), Value::Number(s)) => {
            assert_eq!(w.as_f64(), s.as_f64(), "{path}");
        }
        _ => assert_eq!(written, serialized, "{path}"),
    }
}
