//! The chart's Prometheus rules and the runbooks their alerts link to, as the tests read them.

use serde_json::Value;

/// The one rules file: the chart's PrometheusRule embeds it, plain Prometheus loads it.
pub const RULES_FILE: &str = "charts/mineru-operator/files/prometheus-rules.yaml";

/// The sections of docs/runbooks.md the alerts link to.
pub const RUNBOOK_ANCHORS: [&str; 11] = [
    "rollback-by-hand",
    "stuck-rollout",
    "prometheus-outage",
    "gpu-shortage",
    "vllm-crash-loop",
    "worker-overload",
    "key-rotation",
    "slo-burn",
    "operator-not-reconciling",
    "latency",
    "errors",
];

/// The rule groups of the rules file.
pub fn groups() -> Vec<Value> {
    let text = std::fs::read_to_string(crate::repo_path(RULES_FILE)).expect(RULES_FILE);
    let file: Value = serde_yaml::from_str(&text).expect("a YAML rules file");
    file["groups"]
        .as_array()
        .cloned()
        .expect("a Prometheus rules file: `groups:` at the top")
}

/// Every rule of every group, in order.
pub fn rules() -> Vec<Value> {
    groups()
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}
