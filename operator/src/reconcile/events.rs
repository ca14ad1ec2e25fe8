//! Which Kubernetes Events a reconcile publishes. Events are writes too, so each one follows a
//! change: an object written, the first revision seen, a rollout decision (the engine's own
//! events: rollout started, step completed, promoted, rolled back, ...).

use kube::runtime::events::EventType;
use mineru_crds::{MineruDeploymentStatus, Revisions};

use super::apply::ApplyReport;
use crate::rollout;

/// Longest note the Events API accepts, in bytes.
const MAX_NOTE: usize = 1024;

/// One Event about the MineruDeployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Normal or Warning.
    pub type_: EventType,
    /// PascalCase reason shown by `kubectl describe`.
    pub reason: &'static str,
    /// What the operator did, PascalCase.
    pub action: &'static str,
    /// The sentence for people.
    pub note: String,
}

/// The Events for going from `old` to `new` status having written what `report` says.
pub fn notices(
    old: &MineruDeploymentStatus,
    new: &MineruDeploymentStatus,
    report: &ApplyReport,
) -> Vec<Notice> {
    let pair = |r: &Revisions| format!("{}/{}", r.model_revision, r.worker_revision);
    let mut notices = Vec::new();
    // A first stable is news when deployed, not when promoted from a legacy Service.
    if let (None, Some(stable), None) = (&old.stable, &new.stable, &new.promoted_at) {
        notices.push(normal(
            "NewRevision",
            "Deploy",
            format!("deploying revision {}", pair(stable)),
        ));
    }
    if let Some(failing) = newly_true(old, new, "ModelServerFailing") {
        notices.push(Notice {
            type_: EventType::Warning,
            reason: "ModelServerFailing",
            action: "Observe",
            note: fit(failing.to_owned()),
        });
    }
    if !report.created.is_empty() {
        notices.push(normal(
            "Created",
            "Apply",
            format!("created {}", report.created.join(", ")),
        ));
    }
    if !report.updated.is_empty() {
        notices.push(normal(
            "Updated",
            "Apply",
            format!("updated {}", report.updated.join(", ")),
        ));
    }
    if !report.deleted.is_empty() {
        notices.push(normal(
            "OrphanDeleted",
            "Delete",
            format!(
                "deleted objects no longer desired: {}",
                report.deleted.join(", ")
            ),
        ));
    }
    notices
}

/// The message of condition `kind` when it turned true from `old` to `new`: news once per
/// failure, not per restart (the message quotes the last log line, which changes every time).
fn newly_true<'a>(
    old: &MineruDeploymentStatus,
    new: &'a MineruDeploymentStatus,
    kind: &str,
) -> Option<&'a str> {
    let now = true_message(new, kind)?;
    true_message(old, kind).is_none().then_some(now)
}

fn true_message<'a>(status: &'a MineruDeploymentStatus, kind: &str) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| c.message.as_str())
}

/// The rollout engine's decisions as Events; rollbacks and holds are warnings.
pub fn from_rollout(events: &[rollout::Event]) -> Vec<Notice> {
    events
        .iter()
        .map(|event| Notice {
            type_: if event.reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.reason.as_str(),
            action: "Rollout",
            note: fit(event.message.clone()),
        })
        .collect()
}

/// A manual-control annotation whose value meant nothing; it was removed.
pub fn refused_command(reason: String) -> Notice {
    Notice {
        type_: EventType::Warning,
        reason: "CommandRefused",
        action: "Consume",
        note: fit(reason),
    }
}

/// The spec names a Secret the platform does not let the operator use; nothing was written.
pub fn refused_secret(reason: String) -> Notice {
    Notice {
        type_: EventType::Warning,
        reason: "SecretRefused",
        action: "Reconcile",
        note: fit(reason),
    }
}

fn normal(reason: &'static str, action: &'static str, note: String) -> Notice {
    Notice {
        type_: EventType::Normal,
        reason,
        action,
        note: fit(note),
    }
}

/// Cuts `note` to what the Events API accepts, at a character boundary, marking the cut.
fn fit(mut note: String) -> String {
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revisions(model: &str, worker: &str) -> Revisions {
        Revisions {
            model_revision: model.into(),
            worker_revision: worker.into(),
        }
    }

    fn stable() -> MineruDeploymentStatus {
        MineruDeploymentStatus {
            stable: Some(revisions("m-1", "w-1")),
            ..MineruDeploymentStatus::default()
        }
    }

    fn reasons(notices: &[Notice]) -> Vec<&'static str> {
        notices.iter().map(|n| n.reason).collect()
    }

    #[test]
    fn nothing_changed_means_no_event() {
        assert_eq!(notices(&stable(), &stable(), &ApplyReport::default()), []);
    }

    #[test]
    fn first_revision_and_created_objects_are_announced() {
        let report = ApplyReport {
            created: vec!["StatefulSet/docs-vllm-m-1".into(), "Service/docs".into()],
            ..ApplyReport::default()
        };
        let notices = notices(&MineruDeploymentStatus::default(), &stable(), &report);
        assert_eq!(reasons(&notices), ["NewRevision", "Created"]);
        assert_eq!(notices[0].note, "deploying revision m-1/w-1");
        assert_eq!(
            notices[1].note,
            "created StatefulSet/docs-vllm-m-1, Service/docs"
        );
    }

    #[test]
    fn a_failing_model_server_is_announced_once_per_failure() {
        let failing = |message: &str| MineruDeploymentStatus {
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "ModelServerFailing".into(),
                status: "True".into(),
                reason: "ContainerExiting".into(),
                message: message.into(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            }],
            ..stable()
        };
        let none = ApplyReport::default();
        let first = notices(
            &stable(),
            &failing("revision m-1: lacks mineru_vl_utils"),
            &none,
        );
        assert_eq!(reasons(&first), ["ModelServerFailing"]);
        assert_eq!(first[0].type_, EventType::Warning);
        assert_eq!(first[0].note, "revision m-1: lacks mineru_vl_utils");
        let same = failing("revision m-1: lacks mineru_vl_utils");
        assert_eq!(notices(&same, &same, &none), []);
        let restarted = failing("revision m-1: killed (exit code 137)");
        assert_eq!(
            notices(&same, &restarted, &none),
            [],
            "the same failure, restarted"
        );
        assert_eq!(
            reasons(&notices(&stable(), &restarted, &none)),
            ["ModelServerFailing"],
            "failing again after it ran"
        );
    }

    #[test]
    fn deleted_orphans_are_announced() {
        let report = ApplyReport {
            deleted: vec!["Deployment/docs-worker-w-0".into()],
            ..ApplyReport::default()
        };
        assert_eq!(
            reasons(&notices(&stable(), &stable(), &report)),
            ["OrphanDeleted"]
        );
    }

    #[test]
    fn long_notes_are_cut_to_what_the_api_accepts() {
        let report = ApplyReport {
            created: (0..200).map(|i| format!("Service/docs-é-{i}")).collect(),
            ..ApplyReport::default()
        };
        let note = &notices(&stable(), &stable(), &report)[0].note;
        assert!(note.len() <= MAX_NOTE, "{}", note.len());
        assert!(note.ends_with('…'));
    }

    #[test]
    fn rollout_decisions_become_events_and_rollbacks_are_warnings() {
        let decided = [
            rollout::Event {
                reason: rollout::EventReason::StepCompleted,
                message: "step 1/3 completed".into(),
            },
            rollout::Event {
                reason: rollout::EventReason::RolledBack(mineru_crds::RollbackReason::TriggerFired),
                message: "error-spike breached".into(),
            },
        ];
        let notices = from_rollout(&decided);
        assert_eq!(reasons(&notices), ["StepCompleted", "RolledBack"]);
        assert_eq!(notices[0].type_, EventType::Normal);
        assert_eq!(notices[1].type_, EventType::Warning);
        assert_eq!(notices[1].note, "error-spike breached");
    }

    #[test]
    fn a_refused_command_is_a_warning() {
        let notice = refused_command("mineru.dev/promote: \"x\" is not a promotion".into());
        assert_eq!(
            (notice.type_, notice.reason),
            (EventType::Warning, "CommandRefused")
        );
    }
}
