//! Reading the API server's audit log: who wrote what.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::controlplane::ControlPlane;

/// Every audit event logged so far, in order.
pub fn events(plane: &ControlPlane) -> Vec<Value> {
    std::fs::read_to_string(plane.audit_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The completed writes (anything but get, list and watch) among `events`, as
/// `verb resource name`.
pub fn writes<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    events
        .into_iter()
        .filter(|event| event["stage"] == "ResponseComplete")
        .filter(|event| !matches!(event["verb"].as_str(), Some("get" | "list" | "watch")))
        .map(|event| {
            format!(
                "{} {} {}",
                event["verb"], event["objectRef"]["resource"], event["objectRef"]["name"]
            )
        })
        .collect()
}

/// The calls among `events` that RBAC refused, as `verb resource namespace`: the chart grants
/// less than the code uses. (Admission may answer 403 too; only the authorizer's refusals
/// count.)
pub fn forbidden<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    events
        .into_iter()
        .filter(|event| event["stage"] == "ResponseComplete")
        .filter(|event| event["annotations"]["authorization.k8s.io/decision"] == "forbid")
        .map(|event| {
            format!(
                "{} {} {}",
                event["verb"], event["objectRef"]["resource"], event["objectRef"]["namespace"]
            )
        })
        .collect()
}

/// True for a call made by the operator replica `identity` (its User-Agent names it).
pub fn sent_by(event: &Value, identity: &str) -> bool {
    event["userAgent"]
        .as_str()
        .is_some_and(|agent| agent.contains(&format!("({identity})")))
}

/// True for a call about a Lease (leader election).
pub fn about_leases(event: &Value) -> bool {
    event["objectRef"]["resource"] == "leases"
}

/// When the API server received the request of `event` (microseconds).
pub fn received_at(event: &Value) -> Option<Timestamp> {
    event["requestReceivedTimestamp"].as_str()?.parse().ok()
}
