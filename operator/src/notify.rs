//! Webhook notifications: one JSON POST per rollout event (step completed, paused, promoted,
//! rolled back). Delivery is best effort with a short timeout: a dead receiver must never hold
//! up a rollback.

use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Client, ResourceExt};
use mineru_crds::MineruDeployment;

use crate::rollout::{Notification, NotificationKind};

/// The JSON body of a notification.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload<'a> {
    /// `StepCompleted`, `Paused`, `Promoted` or `RolledBack`.
    pub event: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub model_revision: &'a str,
    pub worker_revision: &'a str,
    /// The step concerned (0-based), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i32>,
    /// Canary traffic percentage after the event.
    pub weight: i32,
    pub message: &'a str,
    /// RFC 3339 time of the decision.
    pub at: String,
}

/// The event name of a notification kind.
pub fn event_name(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::StepCompleted => "StepCompleted",
        NotificationKind::Paused => "Paused",
        NotificationKind::Promoted => "Promoted",
        NotificationKind::RolledBack => "RolledBack",
    }
}

/// Builds the body for `notification` about `namespace/name`.
pub fn payload<'a>(
    namespace: &'a str,
    name: &'a str,
    notification: &'a Notification,
    at: String,
) -> Payload<'a> {
    Payload {
        event: event_name(notification.kind),
        namespace,
        name,
        model_revision: &notification.revisions.model_revision,
        worker_revision: &notification.revisions.worker_revision,
        step: notification.step,
        weight: notification.weight,
        message: &notification.message,
        at,
    }
}

/// Why a notification was not delivered.
#[derive(Debug, Error)]
#[error("webhook {url} did not take the {event} notification: {reason}")]
pub struct DeliveryError {
    pub url: String,
    pub event: &'static str,
    pub reason: String,
}

/// POSTs `payload` to `url`, with `token` as a Bearer token when given.
pub async fn deliver(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    payload: &Payload<'_>,
) -> Result<(), DeliveryError> {
    let failed = |reason: String| DeliveryError {
        url: url.to_owned(),
        event: payload.event,
        reason,
    };
    let mut request = http.post(url).json(payload).timeout(Duration::from_secs(5));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    Ok(())
}

/// Best-effort webhook delivery; a receiver that is down never holds up a rollout.
pub async fn send(
    client: &Client,
    http: &reqwest::Client,
    md: &MineruDeployment,
    notifications: &[Notification],
    now: &Time,
) {
    let Some(webhook) = md.spec.rollout.notifications.as_ref().map(|n| &n.webhook) else {
        return;
    };
    if notifications.is_empty() {
        return;
    }
    let namespace = md.namespace().unwrap_or_default();
    let token = match &webhook.secret_ref {
        Some(secret) => crate::sources::secret_value(client, &namespace, &secret.name, "token")
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "webhook token unreadable; sending without it");
                None
            }),
        None => None,
    };
    let name = md.name_any();
    for notification in notifications {
        let payload = payload(&namespace, &name, notification, now.0.to_string());
        if let Err(error) = deliver(http, &webhook.url, token.as_deref(), &payload).await {
            tracing::warn!(%error, "notification not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mineru_crds::Revisions;
    use serde_json::{Value, json};

    use super::*;

    fn notification(kind: NotificationKind) -> Notification {
        Notification {
            kind,
            revisions: Revisions {
                model_revision: "m-7f3c".into(),
                worker_revision: "w-19ab".into(),
            },
            step: Some(1),
            weight: 50,
            message: "step 2/3 completed".into(),
        }
    }

    #[test]
    fn payload_shape() {
        let n = notification(NotificationKind::StepCompleted);
        let body = serde_json::to_value(payload(
            "parsing",
            "docs",
            &n,
            "2026-11-29T10:00:00Z".into(),
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({"event": "StepCompleted", "namespace": "parsing", "name": "docs",
                   "modelRevision": "m-7f3c", "workerRevision": "w-19ab", "step": 1,
                   "weight": 50, "message": "step 2/3 completed", "at": "2026-11-29T10:00:00Z"})
        );
    }

    /// What the test receiver saw: the Authorization header and the body of each POST.
    type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

    #[tokio::test]
    async fn delivers_with_the_token_and_reports_refusals() {
        let received: Received = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    sink.lock().unwrap().push((auth, body.0));
                    async { "ok" }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let http = reqwest::Client::new();
        let n = notification(NotificationKind::RolledBack);
        let body = payload("parsing", "docs", &n, "t".into());
        deliver(
            &http,
            &format!("http://{address}/hook"),
            Some("s3cret"),
            &body,
        )
        .await
        .unwrap();
        let got = received.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.as_deref(), Some("Bearer s3cret"));
        assert_eq!(got[0].1["event"], "RolledBack");

        let refused = deliver(&http, &format!("http://{address}/missing"), None, &body).await;
        assert!(refused.unwrap_err().to_string().contains("404"));
    }
}
