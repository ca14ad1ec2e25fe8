//! Go/no-go checks: what each one measures, and where its readings come from.
//!
//! Everything here but [`prometheus`] is pure. The rollout engine says which checks it needs
//! read over which window; the controller renders their queries ([`template`]) and reads them
//! from Prometheus into raw [`reading`]s; the engine judges them ([`verdict`] for plain values,
//! [`crate::evidence`] for the statistical checks).

pub mod builtin;
pub mod prometheus;
pub mod reading;
pub mod round;
pub mod template;
pub mod verdict;

use std::time::Duration;

use mineru_crds::{
    AnalysisSpec, CheckKind, Policy, PromotionCriterion, RollbackTrigger, Step, Tier,
};

/// One promotion criterion or rollback trigger, built-in or from the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Name shown in status; a user entry replaces every built-in of the same name and kind.
    pub name: String,
    /// Promotion criterion or rollback trigger.
    pub kind: CheckKind,
    /// Tier whose series the queries read; chooses which revision fills `{{revision}}`.
    pub tier: Tier,
    /// Where the value comes from, and how it is judged.
    pub source: Source,
    /// When the value passes.
    pub threshold: Threshold,
    /// Criteria: indexes of the steps this check gates; every step when empty.
    pub after_steps: Vec<i32>,
    /// Criteria: what a failure beyond `failureLimit` does.
    pub on_fail: Policy,
    /// Triggers: how long a breach must last before it rolls back.
    pub sustained_for: Duration,
    /// What a built-in measures, so that `kubectl mineru plan` can simulate it; user queries
    /// measure something only their author knows.
    pub measure: Option<Measure>,
    /// The comparison this one is the operator's-documents twin of: judged on probe and golden
    /// documents alone, its Pass also passes that check (see [`checks`]).
    pub stands_for: Option<String>,
}

/// Where a check's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A PromQL template, evaluated as an instant query and judged as it is.
    Value {
        /// The value's template.
        query: String,
        /// The sample count that makes the value trustworthy.
        samples: Option<Samples>,
    },
    /// Two PromQL counts, bad and all documents, judged by a sequential test.
    Proportion {
        /// Template counting the bad documents.
        bad: String,
        /// Template counting every document judged.
        total: String,
    },
    /// Histogram buckets by `le`, whose `q`-quantile is judged by a sequential test.
    Quantile {
        /// The quantile.
        q: f64,
        /// Template returning the cumulative buckets.
        buckets: String,
    },
    /// Counts by category (one series each: a label's values, or a histogram's buckets by
    /// `le`), whose distribution is compared with the baseline's (see
    /// [`crate::evidence::distribution`]).
    Distribution {
        /// Template returning one count per category.
        counts: String,
        /// Template counting the documents the counts come from: blocks come in documents and
        /// are alike within one, so documents, not blocks, are the independent units.
        units: String,
        /// Fewer documents than this, on either side, make the verdict Inconclusive.
        min_samples: f64,
    },
    /// Restarts of the canary's vLLM containers, read from pod status: a crash is visible there
    /// long before any metric shows it, and it needs no Prometheus.
    CanaryVllmRestarts,
    /// The share of golden documents whose canary output does not match stable's.
    Quality,
}

impl Source {
    /// Whether the readings come from Prometheus.
    pub fn reads_prometheus(&self) -> bool {
        matches!(
            self,
            Source::Value { .. }
                | Source::Proportion { .. }
                | Source::Quantile { .. }
                | Source::Distribution { .. }
        )
    }

    /// Whether a pass is a statement about documents (or samples) actually seen: a sequential
    /// test, a value with a samples count, a golden-document comparison. A pod-status check or
    /// a bare value passes just as well with no traffic at all.
    pub fn evidence_backed(&self) -> bool {
        match self {
            Source::Proportion { .. }
            | Source::Quantile { .. }
            | Source::Distribution { .. }
            | Source::Quality => true,
            Source::Value { samples, .. } => samples.is_some(),
            Source::CanaryVllmRestarts => false,
        }
    }

    /// Every PromQL template the source reads, for preflight.
    pub fn templates(&self) -> Vec<&str> {
        match self {
            Source::Value { query, samples } => std::iter::once(query.as_str())
                .chain(samples.iter().map(|s| s.query.as_str()))
                .collect(),
            Source::Proportion { bad, total } => vec![bad, total],
            Source::Quantile { buckets, .. } => vec![buckets],
            Source::Distribution { counts, units, .. } => vec![counts, units],
            Source::CanaryVllmRestarts | Source::Quality => Vec::new(),
        }
    }
}

/// What a built-in check measures per document, for simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Documents that failed for the worker's or the GPU tier's fault.
    DocumentErrors,
    /// A document's duration, in seconds.
    DocumentSeconds,
    /// A document's duration divided by its pages.
    SecondsPerPage,
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
    /// Distributions: total-variation distance to the baseline's ≤ max_distance.
    pub max_distance: Option<f64>,
}

impl Threshold {
    /// Whether judging needs the baseline's readings.
    pub fn compares_with_stable(&self) -> bool {
        self.max_ratio_to_stable.is_some() || self.max_distance.is_some()
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
        if let Some(distance) = self.max_distance {
            parts.push(format!("distance to stable <= {distance}"));
        }
        parts.join(" and ")
    }
}

impl Check {
    /// Reads only the documents `matcher` selects by their `source` label: every query
    /// selecting the judged revision gets it (series without the label, like vLLM's, match a
    /// negative matcher).
    fn restrict(&mut self, matcher: &str) {
        let restrict = |template: &mut String| {
            *template = template.replace(
                r#"revision="{{revision}}""#,
                &format!(r#"revision="{{{{revision}}}}",{matcher}"#),
            );
        };
        match &mut self.source {
            Source::Value { query, samples } => {
                restrict(query);
                if let Some(samples) = samples {
                    restrict(&mut samples.query);
                }
            }
            Source::Proportion { bad, total } => {
                restrict(bad);
                restrict(total);
            }
            Source::Quantile { buckets, .. } => restrict(buckets),
            Source::Distribution { counts, units, .. } => {
                restrict(counts);
                restrict(units);
            }
            Source::CanaryVllmRestarts | Source::Quality => {}
        }
    }

    /// A comparison of worker series split by who sent the documents: clients' alone, and the
    /// operator's alone (`<name>-probes`, standing for the first). Each compares like with like:
    /// a 10% canary gets as many probes as the baseline but a tenth of the clients, so pooled,
    /// the two sides would read different mixes of documents. Other checks stay whole.
    fn by_source(self) -> Vec<Check> {
        let compares = self.tier == Tier::Worker
            && self.source.reads_prometheus()
            && self.threshold.compares_with_stable();
        if !compares {
            return vec![self];
        }
        let mut clients = self.clone();
        clients.restrict(CLIENT_DOCUMENTS);
        let mut operator = self;
        operator.restrict(OPERATOR_DOCUMENTS);
        operator.stands_for = Some(operator.name.clone());
        operator.name = format!("{}-probes", operator.name);
        // Simulated as one check at the faster of the two rates.
        operator.measure = None;
        vec![clients, operator]
    }

    /// Whether this check gates leaving step `index` (triggers gate nothing; they watch).
    pub fn gates_step(&self, index: i32) -> bool {
        self.kind == CheckKind::Promotion
            && (self.after_steps.is_empty() || self.after_steps.contains(&index))
    }

    fn from_criterion(criterion: &PromotionCriterion) -> Check {
        let samples = criterion.samples_query.as_ref().map(|query| Samples {
            query: query.clone(),
            min: criterion.min_samples.unwrap_or(0.0),
        });
        Check {
            name: criterion.name.clone(),
            kind: CheckKind::Promotion,
            tier: criterion.tier,
            source: user_source(
                criterion.query.as_ref(),
                criterion.proportion.as_ref(),
                criterion.quantile.as_ref(),
                samples,
            ),
            threshold: Threshold {
                max: criterion.max,
                min: criterion.min,
                max_ratio_to_stable: criterion.max_ratio_to_stable,
                ratio_floor: criterion.ratio_floor,
                max_distance: None,
            },
            after_steps: criterion.after_steps.clone(),
            on_fail: criterion.on_fail,
            sustained_for: Duration::ZERO,
            measure: None,
            stands_for: None,
        }
    }

    fn from_trigger(trigger: &RollbackTrigger) -> Check {
        Check {
            name: trigger.name.clone(),
            kind: CheckKind::Trigger,
            tier: trigger.tier,
            source: user_source(
                trigger.query.as_ref(),
                trigger.proportion.as_ref(),
                trigger.quantile.as_ref(),
                None,
            ),
            threshold: Threshold {
                max: trigger.max,
                min: trigger.min,
                max_ratio_to_stable: trigger.max_ratio_to_stable,
                ratio_floor: trigger.ratio_floor,
                max_distance: None,
            },
            after_steps: Vec::new(),
            on_fail: Policy::Rollback,
            sustained_for: trigger.sustained_for.get(),
            measure: None,
            stands_for: None,
        }
    }
}

/// The source a user wrote; the CRD's CEL rules admit exactly one of the three. An object
/// stored before those rules (or written around them) with none reads as an empty query,
/// which Prometheus refuses: an Error verdict that says so, never a pass.
fn user_source(
    query: Option<&String>,
    proportion: Option<&mineru_crds::ProportionQuery>,
    quantile: Option<&mineru_crds::QuantileQuery>,
    samples: Option<Samples>,
) -> Source {
    match (query, proportion, quantile) {
        (_, Some(p), _) => Source::Proportion {
            bad: p.bad.clone(),
            total: p.total.clone(),
        },
        (_, _, Some(q)) => Source::Quantile {
            q: q.q,
            buckets: q.buckets.clone(),
        },
        (query, None, None) => Source::Value {
            query: query.cloned().unwrap_or_default(),
            samples,
        },
    }
}

/// Series selectors of clients' documents and of the operator's (golden rounds and probes).
const CLIENT_DOCUMENTS: &str = r#"source!~"probe|golden""#;
const OPERATOR_DOCUMENTS: &str = r#"source=~"probe|golden""#;

/// Every check a rollout over `steps` runs: the built-ins (unless `defaultCriteria: false`) and
/// the quality gate's checks (when configured), with user entries replacing built-ins of the
/// same name and kind (and their `-probes` twins), then the remaining user entries. With a
/// quality gate, the built-in worker comparisons are split by who sent the documents
/// ([`Check::by_source`]), or read clients' documents only when `probes.countAsEvidence` is
/// false.
pub fn checks(analysis: &AnalysisSpec, steps: &[Step], migrating: bool) -> Vec<Check> {
    let user: Vec<Check> = analysis
        .promotion_criteria
        .iter()
        .map(Check::from_criterion)
        .chain(analysis.rollback_triggers.iter().map(Check::from_trigger))
        .collect();
    let mut builtins = if analysis.default_criteria {
        builtin::checks(steps, migrating, analysis.evidence.min_documents)
    } else {
        Vec::new()
    };
    // The operator's own documents (golden rounds, probes) exist only with a quality gate.
    match analysis
        .quality
        .as_ref()
        .map(|q| q.probes.count_as_evidence)
    {
        None => {}
        Some(false) => builtins
            .iter_mut()
            .for_each(|check| check.restrict(CLIENT_DOCUMENTS)),
        Some(true) => builtins = builtins.into_iter().flat_map(Check::by_source).collect(),
    }
    // A configured quality gate is a choice of its own, with or without the other built-ins.
    builtins.extend(
        analysis
            .quality
            .iter()
            .flat_map(|quality| builtin::quality_checks(quality, steps)),
    );
    let mut merged: Vec<Check> = builtins
        .into_iter()
        .filter(|b| {
            !user.iter().any(|u| {
                u.kind == b.kind && (u.name == b.name || b.stands_for.as_ref() == Some(&u.name))
            })
        })
        .collect();
    merged.extend(user);
    merged
}
