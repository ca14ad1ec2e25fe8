//! Webhook delivery from the outbox in status (`pendingNotifications`, docs/adr/0013): each
//! notification was recorded with the decision that made it; here the due ones are POSTed, and
//! [`settle`] says what the outbox holds afterwards — delivered ones gone, failed ones due again
//! after a growing backoff. A receiver that is down never holds up a rollout: each POST has a
//! short timeout, and what it did not take waits in status for the next reconcile.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Client, ResourceExt};
use mineru_crds::{MineruDeployment, PendingNotification, Webhook, WebhookFormat};
use serde_json::{Value, json};

use crate::outbound::OutboundPolicy;

/// How long one POST may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait after a first failed delivery; it doubles with each further one.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between two deliveries of one notification.
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// The body of `pending` about `namespace/name`, and its content type.
pub fn body(
    format: WebhookFormat,
    namespace: &str,
    name: &str,
    pending: &PendingNotification,
) -> (&'static str, Value) {
    match format {
        WebhookFormat::CloudEvents => (
            "application/cloudevents+json; charset=utf-8",
            cloud_event(namespace, name, pending),
        ),
        WebhookFormat::Slack => (
            "application/json",
            json!({"text": format!("*{}* {namespace}/{name}: {}", pending.kind.as_str(), pending.message)}),
        ),
    }
}

/// A CloudEvents 1.0 event in structured JSON mode. `source` + `id` identify it, so a receiver
/// drops a redelivery (after a crash between the POST and the status write that removes it).
fn cloud_event(namespace: &str, name: &str, pending: &PendingNotification) -> Value {
    let mut data = json!({
        "namespace": namespace,
        "name": name,
        "modelRevision": pending.revisions.model_revision,
        "workerRevision": pending.revisions.worker_revision,
        "weight": pending.weight,
        "message": pending.message,
    });
    if let Some(step) = pending.step {
        data["step"] = step.into();
    }
    if let Some(rollback) = &pending.rollback {
        data["rollback"] = serde_json::to_value(rollback).unwrap_or(Value::Null);
    }
    json!({
        "specversion": "1.0",
        "id": pending.id,
        "source": format!("/apis/mineru.dev/v1alpha1/namespaces/{namespace}/minerudeployments/{name}"),
        "type": format!("dev.mineru.rollout.{}", pending.kind.as_str().to_lowercase()),
        "subject": format!("{namespace}/{name}"),
        "time": pending.at.0.to_string(),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// The scheme and authority of `url`: what may be logged of a webhook URL, whose path and
/// query often carry its secret (Slack's do).
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => format!(
            "{}://{}{}/…",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "an unparsable URL".into(),
    }
}

/// POSTs one notification; `Err` says why it was not taken.
pub async fn deliver(
    http: &reqwest::Client,
    webhook: &Webhook,
    token: Option<&str>,
    (content_type, body): (&str, &Value),
) -> Result<(), String> {
    let mut request = http
        .post(&webhook.url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body.to_string())
        .timeout(DELIVERY_TIMEOUT);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    // reqwest names the URL in its errors: leave it out.
    let response = request
        .send()
        .await
        .map_err(|error| error.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// The outbox entries due at `now`.
pub fn due(outbox: &[PendingNotification], now: Timestamp) -> Vec<&PendingNotification> {
    outbox
        .iter()
        .filter(|pending| {
            pending
                .next_attempt_at
                .as_ref()
                .is_none_or(|at| at.0 <= now)
        })
        .collect()
}

/// What became of one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The notification's id.
    pub id: String,
    /// `Err`: why it was not taken.
    pub result: Result<(), String>,
}

/// The outbox after `outcomes`: delivered notifications leave it, failed ones wait
/// [`backoff`] before the next try; the rest are untouched.
pub fn settle(
    outbox: &[PendingNotification],
    outcomes: &[Outcome],
    now: Timestamp,
) -> Vec<PendingNotification> {
    outbox
        .iter()
        .filter_map(|pending| {
            let Some(outcome) = outcomes.iter().find(|o| o.id == pending.id) else {
                return Some(pending.clone());
            };
            let reason = outcome.result.as_ref().err()?;
            let attempts = pending.attempts + 1;
            let wait = jiff_span(backoff(attempts));
            Some(PendingNotification {
                attempts,
                next_attempt_at: now.checked_add(wait).ok().map(Time),
                last_error: Some(reason.clone()),
                ..pending.clone()
            })
        })
        .collect()
}

/// The wait after `attempts` failed deliveries.
pub fn backoff(attempts: i32) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 16) as u32;
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(LONGEST_RETRY)
}

fn jiff_span(wait: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::try_from(wait)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
}

/// Why the platform does not let the operator use `webhook` (its host off the allowlist, its
/// token Secret unreadable or unlabelled), or `None`. Preflight reports it; delivery refuses.
pub async fn refusal(
    client: &Client,
    policy: &OutboundPolicy,
    md: &MineruDeployment,
    webhook: &Webhook,
) -> Option<String> {
    token(client, policy, md, webhook).await.err()
}

/// The webhook's token, after the URL and its Secret passed the policy.
async fn token(
    client: &Client,
    policy: &OutboundPolicy,
    md: &MineruDeployment,
    webhook: &Webhook,
) -> Result<Option<String>, String> {
    policy.check_url("rollout.notifications.webhook.url", &webhook.url)?;
    let Some(secret) = &webhook.secret_ref else {
        return Ok(None);
    };
    let namespace = md.namespace().unwrap_or_default();
    crate::sources::secret_value(client, policy, &namespace, &secret.name, "token")
        .await
        .map_err(|reason| format!("webhook token unreadable: {reason}"))
}

/// Delivers the outbox entries due at `now`, in order, and says how each went. `after` runs
/// after each delivery that was taken (a crash point for the tests).
pub async fn deliver_due(
    client: &Client,
    http: &reqwest::Client,
    policy: &OutboundPolicy,
    md: &MineruDeployment,
    outbox: &[PendingNotification],
    now: Timestamp,
    after: impl Fn(&str),
) -> Vec<Outcome> {
    let Some(webhook) = md.spec.rollout.notifications.as_ref().map(|n| &n.webhook) else {
        return Vec::new();
    };
    let due = due(outbox, now);
    if due.is_empty() {
        return Vec::new();
    }
    let namespace = md.namespace().unwrap_or_default();
    let token = match token(client, policy, md, webhook).await {
        Ok(token) => token,
        // Refused or unreadable: nothing is sent, and the notification waits for a fix.
        Err(reason) => {
            return due
                .iter()
                .map(|p| Outcome {
                    id: p.id.clone(),
                    result: Err(reason.clone()),
                })
                .collect();
        }
    };
    let name = md.name_any();
    let mut outcomes = Vec::new();
    for pending in due {
        let (content_type, body) = body(webhook.format, &namespace, &name, pending);
        let result = deliver(http, webhook, token.as_deref(), (content_type, &body)).await;
        match &result {
            Ok(()) => after(&pending.id),
            Err(reason) => tracing::warn!(
                webhook = %redacted(&webhook.url),
                id = %pending.id,
                attempts = pending.attempts + 1,
                %reason,
                "notification not delivered; retrying later"
            ),
        }
        outcomes.push(Outcome {
            id: pending.id.clone(),
            result,
        });
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mineru_crds::{NotificationKind, Revisions};

    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn pending(id: &str, kind: NotificationKind) -> PendingNotification {
        PendingNotification {
            id: id.into(),
            kind,
            revisions: Revisions {
                model_revision: "m-7f3c".into(),
                worker_revision: "w-19ab".into(),
            },
            step: Some(1),
            weight: 50,
            message: "step 2/3 completed".into(),
            rollback: None,
            at: Time(at(1_764_410_400)),
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
        }
    }

    #[test]
    fn a_cloud_event_names_its_source_type_and_stable_id() {
        let p = pending(
            "stepcompleted-m-7f3c-w-19ab-1764410400-0",
            NotificationKind::StepCompleted,
        );
        let (content_type, body) = body(WebhookFormat::CloudEvents, "parsing", "docs", &p);
        assert_eq!(content_type, "application/cloudevents+json; charset=utf-8");
        assert_eq!(
            body,
            json!({
                "specversion": "1.0",
                "id": "stepcompleted-m-7f3c-w-19ab-1764410400-0",
                "source": "/apis/mineru.dev/v1alpha1/namespaces/parsing/minerudeployments/docs",
                "type": "dev.mineru.rollout.stepcompleted",
                "subject": "parsing/docs",
                "time": "2025-11-29T10:00:00Z",
                "datacontenttype": "application/json",
                "data": {"namespace": "parsing", "name": "docs", "modelRevision": "m-7f3c",
                         "workerRevision": "w-19ab", "step": 1, "weight": 50,
                         "message": "step 2/3 completed"}
            })
        );
    }

    #[test]
    fn a_slack_message_is_one_line_of_text() {
        let p = pending("x", NotificationKind::RolledBack);
        let (content_type, body) = body(WebhookFormat::Slack, "parsing", "docs", &p);
        assert_eq!(content_type, "application/json");
        assert_eq!(
            body,
            json!({"text": "*RolledBack* parsing/docs: step 2/3 completed"})
        );
    }

    #[test]
    fn settling_drops_what_was_taken_and_backs_off_what_was_not() {
        let outbox = vec![
            pending("a", NotificationKind::Started),
            pending("b", NotificationKind::StepCompleted),
            pending("c", NotificationKind::Promoted),
        ];
        let outcomes = [
            Outcome {
                id: "a".into(),
                result: Ok(()),
            },
            Outcome {
                id: "b".into(),
                result: Err("HTTP 503".into()),
            },
        ];
        let after = settle(&outbox, &outcomes, at(100));
        let ids: Vec<&str> = after.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(after[0].attempts, 1);
        assert_eq!(after[0].next_attempt_at, Some(Time(at(102))));
        assert_eq!(after[0].last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(after[1], outbox[2], "not tried: untouched");
        assert_eq!(due(&after, at(101)).len(), 1, "b waits, c is due");
        assert_eq!(due(&after, at(102)).len(), 2);
    }

    #[test]
    fn the_backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(i32::MAX), LONGEST_RETRY);
    }

    #[test]
    fn a_logged_url_keeps_only_scheme_and_host() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T000/B000/XXXX?token=s3cret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redacted("http://127.0.0.1:9000/hook"),
            "http://127.0.0.1:9000/…"
        );
    }

    /// What the test receiver saw: the Authorization and Content-Type headers and each body.
    type Received = Arc<Mutex<Vec<(Option<String>, Option<String>, Value)>>>;

    #[tokio::test]
    async fn delivers_with_the_token_and_reports_refusals_without_the_url() {
        let received: Received = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let body: Value = serde_json::from_str(&body).unwrap();
                sink.lock()
                    .unwrap()
                    .push((header("authorization"), header("content-type"), body));
                async { "ok" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let http = reqwest::Client::new();
        let webhook = Webhook {
            url: format!("http://{address}/hook"),
            secret_ref: None,
            format: WebhookFormat::CloudEvents,
        };
        let p = pending("r-1", NotificationKind::RolledBack);
        let (content_type, body) = body(webhook.format, "parsing", "docs", &p);
        deliver(&http, &webhook, Some("s3cret"), (content_type, &body))
            .await
            .unwrap();
        let got = received.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.as_deref(), Some("Bearer s3cret"));
        assert_eq!(got[0].1.as_deref(), Some(content_type));
        assert_eq!(got[0].2["type"], "dev.mineru.rollout.rolledback");

        let missing = Webhook {
            url: format!("http://{address}/missing?key=s3cret"),
            ..webhook.clone()
        };
        let refused = deliver(&http, &missing, None, (content_type, &body)).await;
        assert_eq!(refused, Err("HTTP 404 Not Found".into()));
        let down = Webhook {
            url: "http://127.0.0.1:1/hook?key=s3cret".into(),
            ..webhook
        };
        let unreachable = deliver(&http, &down, None, (content_type, &body))
            .await
            .unwrap_err();
        assert!(!unreachable.contains("s3cret"), "{unreachable}");
    }
}
