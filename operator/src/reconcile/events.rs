//! Which Kubernetes Events a reconcile publishes. Events are writes too, so each one follows a
//! change: an object written, a revision first seen, a condition flipped.

use kube::runtime::events::EventType;
use mineru_crds::{MineruDeploymentStatus, Revisions};

use super::apply::ApplyReport;
use super::status::DEGRADED;

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
    if let (None, Some(stable)) = (&old.stable, &new.stable) {
        notices.push(normal(
            "NewRevision",
            "Deploy",
            format!("deploying revision {}", pair(stable)),
        ));
    }
    if let Some(canary) = new
        .canary
        .as_ref()
        .filter(|c| old.canary.as_ref() != Some(*c))
    {
        let stable = new.stable.as_ref().map(pair).unwrap_or_default();
        notices.push(normal(
            "NewRevision",
            "DeployCanary",
            format!(
                "canary revision {} deployed beside stable {stable}",
                pair(canary)
            ),
        ));
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
    let degraded = |status: &MineruDeploymentStatus| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.status == "True")
    };
    if degraded(new) && !degraded(old) {
        notices.push(Notice {
            type_: EventType::Warning,
            reason: "TierUnavailable",
            action: "Observe",
            note: fit(new.message.clone().unwrap_or_default()),
        });
    }
    notices
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
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
        jiff::Timestamp,
    };

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

    fn degraded(mut status: MineruDeploymentStatus) -> MineruDeploymentStatus {
        status.message = Some("model tier unavailable: stable m-1 has 0/1 ready".into());
        status.conditions.push(Condition {
            type_: DEGRADED.into(),
            status: "True".into(),
            reason: "TierUnavailable".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        });
        status
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
    fn a_new_canary_is_announced_once() {
        let mut with_canary = stable();
        with_canary.canary = Some(revisions("m-2", "w-2"));
        let first = notices(&stable(), &with_canary, &ApplyReport::default());
        assert_eq!(
            first[0].note,
            "canary revision m-2/w-2 deployed beside stable m-1/w-1"
        );
        assert_eq!(
            notices(&with_canary, &with_canary, &ApplyReport::default()),
            []
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
    fn becoming_degraded_is_a_warning_once() {
        let now_degraded = degraded(stable());
        let first = notices(&stable(), &now_degraded, &ApplyReport::default());
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].type_, EventType::Warning);
        assert_eq!(
            first[0].note,
            "model tier unavailable: stable m-1 has 0/1 ready"
        );
        assert_eq!(
            notices(&now_degraded, &now_degraded, &ApplyReport::default()),
            []
        );
    }
}
