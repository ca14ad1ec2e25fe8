//! The notification outbox in status: what a decision has to announce is recorded with it, in
//! the same status write, and stays there until it is delivered or superseded. A crash between
//! the decision and the delivery loses nothing; a crash between the delivery and the write that
//! removes it delivers it again under the same id (docs/adr/0013).

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use mineru_crds::PendingNotification;

use super::Notification;

/// Undelivered notifications kept at most; the oldest go first. A receiver down for long
/// hears the newest news, not an unbounded backlog in status.
pub const KEPT: usize = 16;

/// Adds this decision's notifications to the outbox, decided at `now`. Without a webhook there
/// is nobody to deliver to and the outbox is emptied.
pub fn record(
    outbox: &mut Vec<PendingNotification>,
    notifications: &[Notification],
    webhook: bool,
    now: Timestamp,
) {
    if !webhook {
        outbox.clear();
        return;
    }
    for (index, notification) in notifications.iter().enumerate() {
        // A hold, a pause or a failed preflight no longer describes a rollout that moved on.
        outbox.retain(|pending| {
            !(pending.kind.is_state() && pending.revisions == notification.revisions)
        });
        outbox.push(PendingNotification {
            id: id(notification, now, index),
            kind: notification.kind,
            revisions: notification.revisions.clone(),
            step: notification.step,
            weight: notification.weight,
            message: notification.message.clone(),
            rollback: notification.rollback.clone(),
            at: Time(now),
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
        });
    }
    let excess = outbox.len().saturating_sub(KEPT);
    outbox.drain(..excess);
}

/// Unique per decision: a decision is recorded once (its status write is conditioned on the
/// version it was made from), at one instant, and lists its notifications in order.
fn id(notification: &Notification, at: Timestamp, index: usize) -> String {
    format!(
        "{}-{}-{}-{}-{index}",
        notification.kind.as_str().to_lowercase(),
        notification.revisions.model_revision,
        notification.revisions.worker_revision,
        at.as_second()
    )
}

/// When the next retry is due, if one waits.
pub fn next_attempt(outbox: &[PendingNotification], now: Timestamp) -> Option<Timestamp> {
    outbox
        .iter()
        .filter_map(|pending| pending.next_attempt_at.as_ref())
        .map(|at| at.0.max(now))
        .min()
}

#[cfg(test)]
mod tests {
    use mineru_crds::{NotificationKind, Revisions};

    use super::*;

    fn revisions(worker: &str) -> Revisions {
        Revisions {
            model_revision: "m-1".into(),
            worker_revision: worker.into(),
        }
    }

    fn notification(kind: NotificationKind, worker: &str) -> Notification {
        Notification {
            kind,
            revisions: revisions(worker),
            step: Some(0),
            weight: 10,
            message: format!("{kind:?}"),
            rollback: None,
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn kinds(outbox: &[PendingNotification]) -> Vec<NotificationKind> {
        outbox.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn ids_are_unique_per_decision_and_notification() {
        let mut outbox = Vec::new();
        let two = [
            notification(NotificationKind::StepCompleted, "w-2"),
            notification(NotificationKind::StepCompleted, "w-2"),
        ];
        record(&mut outbox, &two, true, at(100));
        record(&mut outbox, &two[..1], true, at(101));
        let ids: Vec<&str> = outbox.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "stepcompleted-m-1-w-2-100-0",
                "stepcompleted-m-1-w-2-100-1",
                "stepcompleted-m-1-w-2-101-0"
            ]
        );
    }

    #[test]
    fn a_newer_notice_supersedes_a_pending_state_of_the_same_rollout() {
        let mut outbox = Vec::new();
        let hold = notification(NotificationKind::Holding, "w-2");
        let other = notification(NotificationKind::Paused, "w-3");
        record(&mut outbox, &[hold, other], true, at(1));
        let step = notification(NotificationKind::StepCompleted, "w-2");
        record(&mut outbox, std::slice::from_ref(&step), true, at(2));
        assert_eq!(
            kinds(&outbox),
            [NotificationKind::Paused, NotificationKind::StepCompleted],
            "the hold is over; the other rollout's pause is not"
        );
        // History is never superseded.
        record(&mut outbox, &[step], true, at(3));
        assert_eq!(outbox.len(), 3);
    }

    #[test]
    fn the_outbox_keeps_the_newest_and_empties_without_a_webhook() {
        let mut outbox = Vec::new();
        for second in 0..KEPT as i64 + 4 {
            let started = notification(NotificationKind::Started, "w-2");
            record(&mut outbox, &[started], true, at(second));
        }
        assert_eq!(outbox.len(), KEPT);
        assert_eq!(outbox[0].at, Time(at(4)), "the oldest went first");
        record(&mut outbox, &[], false, at(50));
        assert!(outbox.is_empty());
    }

    #[test]
    fn the_next_retry_is_the_earliest_and_never_in_the_past() {
        let mut outbox = Vec::new();
        let n = notification(NotificationKind::Started, "w-2");
        record(&mut outbox, &[n.clone(), n], true, at(0));
        assert_eq!(next_attempt(&outbox, at(5)), None, "due now: no wait");
        outbox[0].next_attempt_at = Some(Time(at(30)));
        outbox[1].next_attempt_at = Some(Time(at(3)));
        assert_eq!(next_attempt(&outbox, at(5)), Some(at(5)));
        assert_eq!(next_attempt(&outbox, at(1)), Some(at(3)));
    }
}
