//! Crash safety on the real control plane: the operator aborts right after every distinct write
//! it makes (each child apply and delete, the status patch, the route, each notification and
//! the record of its delivery) and is started again under the same identity, as a kubelet
//! restarts a crashed container, from the first rollout to the canary's verification. Read from
//! the webhook receiver, the Events and the apiserver's audit log: no step is repeated or
//! skipped, every notification arrives under one id, and no route write ever gives a worker
//! revision more traffic than the status written before it allowed.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{Router, http::HeaderMap, http::StatusCode, routing::post};
use mineru_e2e::{
    audit,
    controlplane::{ControlPlane, Nodes},
    operator::get_json,
    scenario::{NAMESPACE, Scenario, Setup, manifest, pair},
};
use serde_json::Value;

/// Where the webhook receiver listens; set before the first manifest is built.
static HOOK: OnceLock<String> = OnceLock::new();

fn notifying_manifest(model_image: &str, prometheus: &str) -> String {
    let hook = HOOK.get().expect("the receiver is started first");
    format!(
        "{}    notifications: {{webhook: {{url: \"{hook}\"}}}}\n",
        manifest(model_image, prometheus)
    )
}

/// One POST the receiver took: its content type, its body, and whether it was accepted.
#[derive(Clone, Debug)]
struct Delivery {
    content_type: String,
    event: Value,
    accepted: bool,
}

/// A webhook receiver that refuses the first delivery of every event id with 503 (so each one
/// is retried) and accepts every later one.
struct Receiver {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> (Receiver, String) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let taken = deliveries.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let taken = taken.clone();
                async move {
                    let event: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let mut deliveries = taken.lock().unwrap();
                    let accepted = deliveries.iter().any(|d| d.event["id"] == event["id"]);
                    deliveries.push(Delivery {
                        content_type: headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        event,
                        accepted,
                    });
                    if accepted {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        let receiver = Receiver {
            deliveries,
            _runtime: runtime,
        };
        (receiver, url)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

/// The traffic a status allows each worker revision, by its Service name: all of it to stable,
/// the canary weight to the canary, none to any other.
fn allowed_by(status: &Value) -> BTreeMap<String, i64> {
    let mut allowed = BTreeMap::new();
    if let Some((_, worker)) = pair(status, "canary") {
        let weight = status["canaryWeight"].as_i64().unwrap_or(0);
        allowed.insert(format!("docs-worker-{worker}"), weight);
    }
    if let Some((_, worker)) = pair(status, "stable") {
        allowed.insert(format!("docs-worker-{worker}"), 100);
    }
    allowed
}

/// Walks the operator's successful status patches and route updates in the order the apiserver
/// received them; every route weight of a worker revision must be within what the latest
/// status allowed. Returns how many route writes gave the canary traffic.
fn assert_traffic_follows_status(plane: &ControlPlane, canary_worker: &str) -> usize {
    let mut writes: Vec<Value> = audit::events(plane)
        .into_iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_i64()
                .is_some_and(|c| c < 300)
        })
        .filter(|e| {
            let resource = (&e["objectRef"]["resource"], &e["objectRef"]["subresource"]);
            matches!(
                (resource.0.as_str(), resource.1.as_str(), e["verb"].as_str()),
                (Some("minerudeployments"), Some("status"), Some("patch"))
                    | (Some("httproutes"), None, Some("update"))
            )
        })
        .collect();
    // A write is sent only once the one before it was answered, so it was received later.
    writes.sort_by(|a, b| {
        let at = |e: &Value| {
            e["requestReceivedTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        at(a).cmp(&at(b))
    });
    let canary_service = format!("docs-worker-{canary_worker}");
    let mut allowed = BTreeMap::new();
    let mut canary_routes = 0;
    let mut statuses = 0;
    for write in &writes {
        let body = &write["requestObject"];
        assert!(body.is_object(), "the audit log holds the body: {write}");
        if write["objectRef"]["resource"] == "minerudeployments" {
            statuses += 1;
            allowed = allowed_by(&body["status"]);
            continue;
        }
        for rule in body["spec"]["rules"].as_array().into_iter().flatten() {
            for backend in rule["backendRefs"].as_array().into_iter().flatten() {
                let name = backend["name"].as_str().unwrap_or_default();
                if !name.starts_with("docs-worker-") {
                    continue;
                }
                let weight = backend["weight"].as_i64().unwrap_or(1);
                let limit = allowed.get(name).copied().unwrap_or(0);
                assert!(
                    weight <= limit,
                    "{name} routed {weight} while status allowed {limit}: {allowed:?}"
                );
                if name == canary_service && weight > 0 {
                    canary_routes += 1;
                }
            }
        }
    }
    assert!(statuses > 0, "status patches are audited");
    canary_routes
}

/// Every Event of a step is published at most once: one object, never a `series` of repeats.
fn assert_no_event_repeated(plane: &ControlPlane) {
    let events = get_json(plane, &["get", "events.events.k8s.io", "-n", NAMESPACE]).unwrap();
    let mut notes = BTreeSet::new();
    for event in events["items"].as_array().unwrap() {
        let reason = event["reason"].as_str().unwrap_or_default();
        if !matches!(reason, "StepCompleted" | "Promoted" | "CanaryReady") {
            continue;
        }
        let note = format!("{reason}: {}", event["note"].as_str().unwrap_or_default());
        assert!(event["series"].is_null(), "repeated: {event}");
        assert!(notes.insert(note.clone()), "published twice: {note}");
    }
}

#[test]
fn a_rollout_crashed_after_every_write_does_each_step_once_and_routes_only_what_status_allowed() {
    let (receiver, hook) = Receiver::start();
    HOOK.set(hook).unwrap();
    let crash_file = std::env::temp_dir().join(format!("mineru-crashes-{}", std::process::id()));
    let _ = std::fs::remove_file(&crash_file);
    let setup = Setup {
        template: notifying_manifest,
        operator_args: vec![
            "--crash-after-writes".into(),
            crash_file.to_string_lossy().into_owned(),
        ],
        restart_crashed_operator: true,
        ..Setup::default()
    };
    let mut scenario = Scenario::start_with("crashes", &Nodes::default(), setup);
    scenario.settle_on_stable();
    let canary = scenario.canary.clone();
    let canary_pair = Some((
        canary.model_revision.clone(),
        canary.worker_revision.clone(),
    ));
    scenario.apply_canary();

    // Follow the rollout to the end of its verification, with every notification delivered.
    let mut seen_steps: Vec<(i64, i64)> = Vec::new();
    let done = scenario.wait_for(
        "the canary promoted, verified and its notifications delivered",
        Duration::from_secs(420),
        |status| {
            if let (true, Some(step), Some(weight)) = (
                status["canary"].is_object(),
                status["currentStep"].as_i64(),
                status["canaryWeight"].as_i64(),
            ) && weight > 0
                && seen_steps.last() != Some(&(step, weight))
            {
                seen_steps.push((step, weight));
            }
            pair(status, "stable") == canary_pair
                && status["phase"] == "Healthy"
                && status["pendingNotifications"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
                // Promoted and verified: the post-promotion window is over.
                && status["promotedAt"].is_null()
        },
    );
    let crashed = std::fs::read_to_string(&crash_file).unwrap_or_default();
    let crashes: Vec<&str> = crashed.lines().collect();
    eprintln!(
        "{} crashes, {} restarts:\n{crashed}",
        crashes.len(),
        scenario.crash_restarts()
    );

    // The operator crashed after every kind of write, and was restarted each time.
    for kind in [
        "apply ", "delete ", "status ", "route ", "deliver ", "settled ",
    ] {
        assert!(
            crashes.iter().any(|c| c.starts_with(kind)),
            "no crash after a {kind}write:\n{crashed}"
        );
    }
    // Each crash was followed by a restart, but for one after the last look at status.
    let restarts = scenario.crash_restarts() as usize;
    assert!(
        restarts <= crashes.len() && crashes.len() <= restarts + 1,
        "{restarts} restarts after {} crashes",
        crashes.len()
    );

    // Steps in order, none repeated (polling may miss one that lasted a single interval).
    let mut expected = [(0, 10), (1, 50), (2, 100)].iter();
    assert!(
        seen_steps
            .iter()
            .all(|seen| expected.any(|step| step == seen)),
        "steps out of order or repeated: {seen_steps:?}"
    );
    assert_eq!(pair(&done, "stable"), canary_pair);

    // Every notification about the canary arrived, under one id per decision, retried after
    // the receiver's first refusal and after any crash before its delivery was recorded.
    let deliveries = receiver.deliveries();
    let mut decisions: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for delivery in &deliveries {
        let event = &delivery.event;
        assert!(
            delivery
                .content_type
                .starts_with("application/cloudevents+json"),
            "{}: {event}",
            delivery.content_type
        );
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert_eq!(
            event["source"],
            format!("/apis/mineru.dev/v1alpha1/namespaces/{NAMESPACE}/minerudeployments/docs"),
        );
        if event["data"]["modelRevision"] != canary.model_revision.as_str() {
            continue;
        }
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        let step = event["data"]["step"].to_string();
        decisions
            .entry((kind, step))
            .or_default()
            .insert(event["id"].as_str().unwrap_or_default().to_owned());
    }
    let accepted: BTreeSet<&str> = deliveries
        .iter()
        .filter(|d| d.accepted)
        .filter_map(|d| d.event["id"].as_str())
        .collect();
    for (kind, step) in [
        ("started", "0"),
        ("stepcompleted", "0"),
        ("stepcompleted", "1"),
        ("promoted", "null"),
        ("verified", "null"),
    ] {
        let key = (format!("dev.mineru.rollout.{kind}"), step.to_owned());
        let ids = decisions.get(&key).cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "{key:?}: {ids:?}\n{decisions:?}");
        let id = ids.first().expect("one id");
        assert!(accepted.contains(id.as_str()), "{key:?} was never taken");
    }
    assert!(
        !decisions
            .keys()
            .any(|(kind, _)| kind.ends_with("rolledback")),
        "{decisions:?}"
    );

    // Events at most once each; traffic only ever as status allowed, and the canary got some.
    assert_no_event_repeated(&scenario.plane);
    // Restarted replicas read objects afresh: every call they made is one the chart grants.
    let refused = audit::forbidden(&audit::events(&scenario.plane));
    assert!(refused.is_empty(), "calls RBAC refused: {refused:?}");
    let canary_routes = assert_traffic_follows_status(&scenario.plane, &canary.worker_revision);
    assert!(canary_routes > 0, "the canary was routed traffic");
    assert!(scenario.load.answers(&canary.worker_revision).0 > 0);
    let _ = std::fs::remove_file(&crash_file);
}
