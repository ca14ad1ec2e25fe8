//! Go/no-go checks: what each one measures and how a set of readings becomes a verdict.
//!
//! Everything here is pure. The controller renders a check's queries ([`template`]), runs them
//! against Prometheus, and hands the numbers to [`verdict::evaluate`]; the rollout engine then
//! turns verdicts into decisions.

pub mod builtin;
pub mod prometheus;
pub mod round;
pub mod template;
pub mod verdict;

use std::time::Duration;

use mineru_crds::{AnalysisSpec, CheckKind, Policy, PromotionCriterion, RollbackTrigger, Tier};

/// One promotion criterion or rollback trigger, built-in or from the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Name shown in status; a user entry replaces every built-in of the same name and kind.
    pub name: String,
    /// Promotion criterion or rollback trigger.
    pub kind: CheckKind,
    /// Tier whose series the query reads; chooses which revision fills `{{revision}}`.
    pub tier: Tier,
    /// Where the value comes from.
    pub source: Source,
    /// When the value passes.
    pub threshold: Threshold,
    /// The sample count that makes the value trustworthy.
    pub samples: Option<Samples>,
    /// Criteria: indexes of the steps this check gates; every step when empty.
    pub after_steps: Vec<i32>,
    /// Criteria: what a failure beyond `failureLimit` does.
    pub on_fail: Policy,
    /// Triggers: how long a breach must last before it rolls back.
    pub sustained_for: Duration,
}

/// Where a check's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A PromQL template, evaluated as an instant query.
    Query(String),
    /// Restarts of the canary's vLLM containers, read from pod status: a crash is visible there
    /// long before any metric shows it, and it needs no Prometheus.
    CanaryVllmRestarts,
    /// The share of golden documents whose canary output does not match stable's.
    Quality,
}

/// A sample-count query and the count below which the value is not trusted.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    /// PromQL template counting the samples behind the value.
    pub query: String,
    /// Fewer samples than this make the verdict Inconclusive.
    pub min: f64,
}

/// Pass conditions; every one that is set must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Threshold {
    /// value ≤ max.
    pub max: Option<f64>,
    /// value ≥ min.
    pub min: Option<f64>,
    /// canary ≤ ratio × max(stable, ratio_floor).
    pub max_ratio_to_stable: Option<f64>,
    /// Lower bound of the stable value in the ratio.
    pub ratio_floor: Option<f64>,
}

impl Threshold {
    /// Whether judging needs stable's value from the same round.
    pub fn compares_with_stable(&self) -> bool {
        self.max_ratio_to_stable.is_some()
    }

    /// The threshold in words, as status shows it: `<= 1.05 x stable`, `>= 0.95`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(min) = self.min {
            parts.push(format!(">= {min}"));
        }
        if let Some(max) = self.max {
            parts.push(format!("<= {max}"));
        }
        if let Some(ratio) = self.max_ratio_to_stable {
            match self.ratio_floor {
                Some(floor) => parts.push(format!("<= {ratio} x max(stable, {floor})")),
                None => parts.push(format!("<= {ratio} x stable")),
            }
        }
        parts.join(" and ")
    }
}

impl Check {
    /// Whether this check gates leaving step `index` (triggers gate nothing; they watch).
    pub fn gates_step(&self, index: i32) -> bool {
        self.kind == CheckKind::Promotion
            && (self.after_steps.is_empty() || self.after_steps.contains(&index))
    }

    fn from_criterion(criterion: &PromotionCriterion) -> Check {
        Check {
            name: criterion.name.clone(),
            kind: CheckKind::Promotion,
            tier: criterion.tier,
            source: Source::Query(criterion.query.clone()),
            threshold: Threshold {
                max: criterion.max,
                min: criterion.min,
                max_ratio_to_stable: criterion.max_ratio_to_stable,
                ratio_floor: criterion.ratio_floor,
            },
            samples: criterion.samples_query.as_ref().map(|query| Samples {
                query: query.clone(),
                min: criterion.min_samples.unwrap_or(0.0),
            }),
            after_steps: criterion.after_steps.clone(),
            on_fail: criterion.on_fail,
            sustained_for: Duration::ZERO,
        }
    }

    fn from_trigger(trigger: &RollbackTrigger) -> Check {
        Check {
            name: trigger.name.clone(),
            kind: CheckKind::Trigger,
            tier: trigger.tier,
            source: Source::Query(trigger.query.clone()),
            threshold: Threshold {
                max: trigger.max,
                min: trigger.min,
                max_ratio_to_stable: trigger.max_ratio_to_stable,
                ratio_floor: trigger.ratio_floor,
            },
            samples: None,
            after_steps: Vec::new(),
            on_fail: Policy::Rollback,
            sustained_for: trigger.sustained_for.get(),
        }
    }
}

/// Every check a rollout runs: the built-ins (unless `defaultCriteria: false`) and the quality
/// gate's checks (when configured), with user entries replacing built-ins of the same name and
/// kind, then the remaining user entries.
pub fn checks(analysis: &AnalysisSpec, migrating: bool) -> Vec<Check> {
    let user: Vec<Check> = analysis
        .promotion_criteria
        .iter()
        .map(Check::from_criterion)
        .chain(analysis.rollback_triggers.iter().map(Check::from_trigger))
        .collect();
    let mut builtins = if analysis.default_criteria {
        builtin::checks(migrating)
    } else {
        Vec::new()
    };
    // A configured quality gate is a choice of its own, with or without the other built-ins.
    builtins.extend(analysis.quality.iter().flat_map(builtin::quality_checks));
    let mut merged: Vec<Check> = builtins
        .into_iter()
        .filter(|b| !user.iter().any(|u| u.name == b.name && u.kind == b.kind))
        .collect();
    merged.extend(user);
    merged
}
