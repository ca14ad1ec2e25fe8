//! Publishes Events about MineruDeployments.
//!
//! kube's `Recorder` folds every Event with the same reason and action about an object into one
//! series for six minutes and keeps the first note: "step 1/3 completed" followed by "step 2/3
//! completed" shows as the first, counted twice, and the second step is invisible in
//! `kubectl get events`. Here an Event repeats into a series only when its note is the same too,
//! so each decision is an Event of its own and only true repeats are counted.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::EventType,
};

use crate::{labels, reconcile::events::Notice};

/// How long a published Event is remembered to count its repeats (what kube's Recorder uses).
const REPEATS_WITHIN: SignedDuration = SignedDuration::from_mins(6);

/// What makes two Events the same one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: String,
    warning: bool,
    reason: &'static str,
    action: &'static str,
    note: String,
}

/// Publishes [`Notice`]s as `events.k8s.io/v1` Events, counting true repeats in a series.
pub struct Recorder {
    client: Client,
    instance: String,
    published: Mutex<HashMap<Key, Event>>,
    sequence: AtomicU64,
}

impl Recorder {
    /// Events reported by this operator, from replica `instance` (the pod name).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Recorder {
            client,
            instance: instance.unwrap_or_else(|| labels::MANAGER.to_owned()),
            published: Mutex::new(HashMap::new()),
            sequence: AtomicU64::new(0),
        }
    }

    /// Creates the Event for `notice` about `regarding`, or counts a repeat of the same one.
    pub async fn publish(&self, notice: &Notice, regarding: &ObjectReference) -> kube::Result<()> {
        let now = Timestamp::now();
        let key = Key {
            regarding: regarding.uid.clone().unwrap_or_default(),
            warning: notice.type_ == EventType::Warning,
            reason: notice.reason,
            action: notice.action,
            note: notice.note.clone(),
        };
        // The lock is never held across a call: reconciles of other objects publish meanwhile.
        let seen = {
            let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
            published
                .retain(|_, event| last_seen(event).is_some_and(|at| at + REPEATS_WITHIN > now));
            published.get(&key).cloned()
        };
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let event = match seen {
            Some(mut event) => {
                let count = event.series.as_ref().map_or(2, |series| series.count + 1);
                event.series = Some(EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                });
                api.patch(
                    &event.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&event),
                )
                .await?
            }
            None => {
                api.create(&PostParams::default(), &self.event(notice, regarding, now))
                    .await?
            }
        };
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, event);
        Ok(())
    }

    fn event(&self, notice: &Notice, regarding: &ObjectReference, now: Timestamp) -> Event {
        // Unique within this replica even for two Events in the same nanosecond.
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.{:x}{sequence:x}",
            regarding.name.as_deref().unwrap_or(labels::MANAGER),
            now.as_nanosecond()
        );
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(notice.action.to_owned()),
            reason: Some(notice.reason.to_owned()),
            note: Some(notice.note.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(labels::MANAGER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match notice.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..Event::default()
        }
    }
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .map(|series| series.last_observed_time.0)
        .or(event.event_time.as_ref().map(|time| time.0))
}

#[cfg(test)]
mod tests {
    use http::Method;
    use kube::Resource;
    use mineru_crds::MineruDeployment;

    use super::*;
    use crate::reconcile::{apiserver::ApiServer, fixtures::Fixture};

    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/parsing/events";

    fn notice(note: &str) -> Notice {
        Notice {
            type_: EventType::Normal,
            reason: "StepCompleted",
            action: "Advance",
            note: note.to_owned(),
        }
    }

    #[tokio::test]
    async fn distinct_notes_are_distinct_events_and_a_true_repeat_is_counted() {
        let (client, calls) = ApiServer::default().start();
        let recorder = Recorder::new(client, Some("replica-a".into()));
        let regarding = MineruDeployment::test().object_ref(&());
        for note in [
            "step 1/3 completed",
            "step 2/3 completed",
            "step 2/3 completed",
        ] {
            recorder.publish(&notice(note), &regarding).await.unwrap();
        }
        drop(recorder);
        let calls = calls.await.unwrap();
        let methods: Vec<_> = calls.iter().map(|c| c.method.clone()).collect();
        assert_eq!(methods, [Method::POST, Method::POST, Method::PATCH]);
        assert!(calls.iter().all(|c| c.path.starts_with(EVENTS)));
        assert_eq!(calls[1].body["note"], "step 2/3 completed");
        assert_ne!(
            calls[0].body["metadata"]["name"],
            calls[1].body["metadata"]["name"]
        );
        assert_eq!(
            calls[2].path,
            format!(
                "{EVENTS}/{}",
                calls[1].body["metadata"]["name"].as_str().unwrap()
            )
        );
        assert_eq!(calls[2].body["series"]["count"], 2);
        assert_eq!(calls[0].body["reportingController"], "mineru-operator");
        assert_eq!(calls[0].body["reportingInstance"], "replica-a");
        assert_eq!(calls[0].body["regarding"]["name"], "docs");
    }
}
