//! Where a rollout stands, derived from status alone, and the small vocabulary every part of
//! the engine shares (time, revisions in words). A leaf: it imports no other engine module.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use mineru_crds::{LegacyRole, MineruDeploymentStatus, Revisions, RollbackReason};

use super::Input;
use crate::gates::Check;

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Stable serves everything; nothing to watch.
    Steady,
    /// Promoted; the post-promotion window is running.
    Verifying,
    /// The canary is starting and warming up; no traffic yet.
    Warming,
    /// The canary takes the weight of this step (0-based).
    Stepping(i32),
}

pub(super) fn stage(input: &Input, status: &MineruDeploymentStatus) -> Stage {
    match (&status.canary, status.canary_weight.unwrap_or(0)) {
        (Some(_), 0) => Stage::Warming,
        (Some(_), _) => {
            let last = input.rollout.steps.len() as i32 - 1;
            Stage::Stepping(status.current_step.unwrap_or(0).clamp(0, last.max(0)))
        }
        (None, _)
            if status.promoted_at.is_some()
                && (status.previous_stable.is_some()
                    || status.legacy == Some(LegacyRole::Standby)) =>
        {
            Stage::Verifying
        }
        (None, _) => Stage::Steady,
    }
}

/// What every engine part reads: the input, the status as it stands in this decision, the
/// rollout's checks and the time.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub input: &'a Input,
    pub s: &'a MineruDeploymentStatus,
    pub checks: &'a [Check],
    pub now: Timestamp,
}

impl View<'_> {
    pub fn stage(&self) -> Stage {
        stage(self.input, self.s)
    }

    /// The stable revisions; none while the legacy Service is the baseline.
    pub fn stable(&self) -> Option<&Revisions> {
        self.s.stable.as_ref()
    }

    /// A model canary: a new vLLM to warm up (always, when migrating from a legacy Service).
    pub fn model_changed(&self) -> bool {
        self.s.canary.as_ref().is_some_and(|c| {
            self.stable()
                .is_none_or(|stable| c.model_revision != stable.model_revision)
        })
    }

    /// What serves the traffic the canary does not, in words.
    pub fn baseline_name(&self) -> String {
        show_or_legacy(self.input, self.stable())
    }

    /// The weight of step `index`; 100 past the last step.
    pub fn weight_of(&self, index: i32) -> i32 {
        weight_of(self.input, index)
    }

    /// When the current stage's evidence began: the step's start, or the promotion.
    pub fn stage_started(&self) -> Option<&Time> {
        match self.stage() {
            Stage::Stepping(_) | Stage::Warming => self.s.step_started_at.as_ref(),
            Stage::Verifying => self.s.promoted_at.as_ref(),
            Stage::Steady => None,
        }
    }

    /// The post-promotion window: at least as long as the longest trigger's `for`, so that a
    /// breach that began at promotion can still be sustained long enough to roll back.
    pub fn verification_window(&self) -> Duration {
        let longest_trigger = self
            .checks
            .iter()
            .filter(|c| c.kind == mineru_crds::CheckKind::Trigger)
            .map(|c| c.sustained_for)
            .max()
            .unwrap_or(Duration::ZERO);
        self.input
            .rollout
            .post_promotion_window
            .get()
            .max(longest_trigger)
    }
}

/// The weight of step `index`; 100 past the last step.
pub(super) fn weight_of(input: &Input, index: i32) -> i32 {
    input
        .rollout
        .steps
        .get(index as usize)
        .map_or(100, |s| s.weight)
}

/// Status stores whole seconds; deciding on the same truncated instant keeps a decision and
/// its replay from a persisted status identical.
pub(super) fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

pub(super) fn later(t: Timestamp, by: Duration) -> Timestamp {
    t.checked_add(by).unwrap_or(Timestamp::MAX)
}

pub(super) fn reached(now: Timestamp, since: Option<&Time>, after: Duration) -> bool {
    since.is_some_and(|since| now >= later(since.0, after))
}

/// Whole seconds from `since` to `now` (0 when `since` is later).
pub(super) fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::from_secs((now.as_second() - since.as_second()).max(0) as u64)
}

pub(super) fn show(revisions: &Revisions) -> String {
    format!("{}/{}", revisions.model_revision, revisions.worker_revision)
}

/// Revisions in words, or the legacy Service that stands in for them.
pub(super) fn show_or_legacy(input: &Input, revisions: Option<&Revisions>) -> String {
    match (revisions, input.rollout.legacy_backend()) {
        (Some(revisions), _) => show(revisions),
        (None, Some(legacy)) => format!("legacy Service {}", legacy.name),
        (None, None) => "nothing".to_owned(),
    }
}

/// A duration the way people say it: `15m`, `1h30m`, `45s`.
pub(super) fn human(duration: Duration) -> String {
    let total = duration.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Why a rollback happened, with what proves it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Evidence {
    pub reason: RollbackReason,
    pub check: Option<String>,
    pub query: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<String>,
    pub message: String,
}

impl Evidence {
    pub fn plain(reason: RollbackReason, message: String) -> Evidence {
        Evidence {
            reason,
            check: None,
            query: None,
            value: None,
            threshold: None,
            message,
        }
    }
}
