//! Sequential tests: when the documents a step has seen are enough to say Pass or Fail.
//!
//! Every statistical check reduces to one question about *bad documents* — documents that
//! failed, or took longer than some time — and is judged by Wald's sequential probability ratio
//! test (SPRT), recomputed from the step's cumulative counts at every analysis round:
//!
//! - H0: the share of bad documents is exactly what the threshold allows (p0);
//! - H1: the odds of a bad document are `regression` times those of H0 (p1);
//! - the log-likelihood ratio Λ of H1 against H0 is compared with
//!   `A = ln((1 − β) / α)` (Fail: the canary is beyond the threshold) and
//!   `B = ln(β / (1 − α))` (Pass: it is within); in between the verdict is Inconclusive.
//!
//! α bounds the chance of failing a canary that meets its threshold, β the chance of passing one
//! `regression` times worse, however often the counts are looked at (the likelihood ratio is a
//! martingale under H0). docs/adr/0008 gives the derivation and why this test was chosen.

use std::collections::BTreeMap;
use std::fmt;

use crate::gates::Threshold;

/// How sure a decision must be; `analysis.evidence` in the spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Confidence {
    /// α: the largest chance of failing a canary that meets its threshold.
    pub false_fail: f64,
    /// β: the largest chance of passing a canary `regression` times worse than the threshold.
    pub false_pass: f64,
    /// δ: how much worse (as an odds ratio of bad documents) a regression must be caught.
    pub regression: f64,
}

impl From<&mineru_crds::EvidenceSpec> for Confidence {
    fn from(spec: &mineru_crds::EvidenceSpec) -> Self {
        Confidence {
            false_fail: 1.0 - spec.confidence,
            false_pass: 1.0 - spec.power,
            regression: spec.regression,
        }
    }
}

impl Confidence {
    /// Λ at or above this fails.
    pub fn reject_at(&self) -> f64 {
        ((1.0 - self.false_pass) / self.false_fail).ln()
    }

    /// Λ at or below this passes.
    pub fn accept_at(&self) -> f64 {
        (self.false_pass / (1.0 - self.false_fail)).ln()
    }

    /// The share of bad documents under H1 when H0 allows `p0`: odds × δ.
    pub fn alternative(&self, p0: f64) -> f64 {
        let odds = p0 / (1.0 - p0) * self.regression;
        odds / (1.0 + odds)
    }
}

/// What one sequential test says at one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Enough evidence that the canary is within the threshold.
    Accept,
    /// Enough evidence that it is beyond.
    Reject,
    /// Not enough evidence either way yet.
    Continue,
}

/// A sequential test's state: its log-likelihood ratio and how fast it moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Test {
    /// Λ, the log-likelihood ratio of H1 against H0 for the counts so far.
    pub llr: f64,
    /// Expected change of Λ per further canary document, if the canary goes on as it has.
    pub drift: f64,
}

impl Test {
    /// Where Λ stands against the boundaries.
    pub fn outcome(&self, confidence: &Confidence) -> Outcome {
        if self.llr >= confidence.reject_at() {
            Outcome::Reject
        } else if self.llr <= confidence.accept_at() {
            Outcome::Accept
        } else {
            Outcome::Continue
        }
    }

    /// Further canary documents until Λ reaches the boundary it drifts toward; `None` when it
    /// does not move (the canary sits where H0 and H1 are equally likely).
    fn needed(&self, confidence: &Confidence) -> Option<(Outcome, f64)> {
        match self.outcome(confidence) {
            Outcome::Continue => {}
            decided => return Some((decided, 0.0)),
        }
        const STILL: f64 = 1e-9;
        if self.drift < -STILL {
            Some((
                Outcome::Accept,
                (self.llr - confidence.accept_at()) / -self.drift,
            ))
        } else if self.drift > STILL {
            Some((
                Outcome::Reject,
                (confidence.reject_at() - self.llr) / self.drift,
            ))
        } else {
            None
        }
    }
}

/// Counts of one revision over the evidence window: documents judged and those that went bad.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Bad documents (may be fractional: a latency bucket is split by interpolation, and
    /// Prometheus' `increase()` extrapolates to the window's edges).
    pub bad: f64,
    /// Documents judged.
    pub total: f64,
}

impl Counts {
    /// The share of bad documents, when there are any documents.
    pub fn share(&self) -> Option<f64> {
        (self.total > 0.0).then(|| self.bad / self.total)
    }

    /// The share the canary goes on at, "as it has": 0 with no documents yet (which moves no
    /// test: [`Test::needed`] then has nothing to say).
    fn going_rate(&self) -> f64 {
        self.share().unwrap_or(0.0)
    }

    fn clamped(self) -> Counts {
        let total = self.total.max(0.0);
        Counts {
            bad: self.bad.clamp(0.0, total),
            total,
        }
    }
}

/// H0 "at most `p0` of the documents are bad" against H1 "the odds are δ times higher":
/// `Λ = bad · ln(p1/p0) + (total − bad) · ln((1 − p1)/(1 − p0))`.
///
/// `p0` must lie in (0, 1); the spec's CEL rules keep proportion thresholds there.
pub fn one_sample(counts: Counts, p0: f64, confidence: &Confidence) -> Test {
    let counts = counts.clamped();
    let p1 = confidence.alternative(p0);
    let (bad_weight, good_weight) = ((p1 / p0).ln(), ((1.0 - p1) / (1.0 - p0)).ln());
    let rate = counts.going_rate();
    let drift = if counts.total > 0.0 {
        rate * bad_weight + (1.0 - rate) * good_weight
    } else {
        0.0
    };
    Test {
        llr: counts.bad * bad_weight + (counts.total - counts.bad) * good_weight,
        drift,
    }
}

/// H0 "the canary's rate of bad documents is `ratio` × the baseline's" against H1 "it is
/// `ratio × δ` ×", for rare bad documents (a Poisson approximation).
///
/// Conditional on the `E` bad documents of both revisions together, each is the canary's with
/// probability `π(r) = n_c·r / (n_c·r + n_b)`, whatever the baseline's unknown rate: so
/// `Λ = bad_c · ln(π1/π0) + bad_b · ln((1 − π1)/(1 − π0))`. `None` while either revision has
/// no documents.
pub fn two_sample(
    canary: Counts,
    baseline: Counts,
    ratio: f64,
    confidence: &Confidence,
) -> Option<Test> {
    let (canary, baseline) = (canary.clamped(), baseline.clamped());
    if canary.total <= 0.0 || baseline.total <= 0.0 || ratio <= 0.0 {
        return None;
    }
    let share = |r: f64| canary.total * r / (canary.total * r + baseline.total);
    let (pi0, pi1) = (share(ratio), share(ratio * confidence.regression));
    let (canary_weight, baseline_weight) = ((pi1 / pi0).ln(), ((1.0 - pi1) / (1.0 - pi0)).ln());
    // Per further canary document, the baseline sees `n_b / n_c` documents at its own rate.
    let per_canary_document = baseline.total / canary.total;
    Some(Test {
        llr: canary.bad * canary_weight + baseline.bad * baseline_weight,
        drift: canary.going_rate() * canary_weight
            + per_canary_document * baseline.going_rate() * baseline_weight,
    })
}

/// A cumulative histogram: `(upper bound, documents at or below it)`, sorted by bound, ending
/// with `+Inf` (Prometheus' `le` buckets).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
}

/// Why a set of buckets is not a histogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramError(pub String);

impl fmt::Display for HistogramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HistogramError {}

impl Histogram {
    /// Buckets in any order; the `+Inf` bucket must be among them. Counts that fall with a
    /// rising bound (`increase()` extrapolates each series on its own) are lifted to stay
    /// cumulative.
    pub fn new(mut buckets: Vec<(f64, f64)>) -> Result<Histogram, HistogramError> {
        if buckets
            .iter()
            .any(|(le, count)| le.is_nan() || !count.is_finite())
        {
            return Err(HistogramError(
                "a bucket bound or count is not a number".into(),
            ));
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets.dedup_by(|a, b| a.0 == b.0);
        if buckets.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
            return Err(HistogramError(
                "no le=\"+Inf\" bucket: aggregate with `sum by (le)` over a _bucket series".into(),
            ));
        }
        let mut highest: f64 = 0.0;
        for bucket in &mut buckets {
            highest = highest.max(bucket.1.max(0.0));
            bucket.1 = highest;
        }
        Ok(Histogram { buckets })
    }

    /// Documents in the histogram.
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, count)| *count)
    }

    /// Documents at or below `x`, interpolating linearly inside a bucket (as
    /// `histogram_quantile` does); the first bucket starts at 0.
    pub fn at_most(&self, x: f64) -> f64 {
        if x == f64::INFINITY {
            return self.count();
        }
        let mut lower = (0.0, 0.0);
        for &(le, count) in &self.buckets {
            if x <= le {
                if le.is_infinite() {
                    // Beyond the last finite bound nothing is known: count none of it as fast.
                    return lower.1;
                }
                let width = le - lower.0;
                let fraction = if width > 0.0 {
                    ((x - lower.0) / width).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                return lower.1 + (count - lower.1) * fraction;
            }
            lower = (le, count);
        }
        self.count()
    }

    /// The count in each bucket (not at or below it), keyed by its bound: the histogram as a
    /// distribution over its buckets.
    pub fn bucket_counts(&self) -> BTreeMap<String, f64> {
        let mut below = 0.0;
        self.buckets
            .iter()
            .map(|&(le, count)| {
                let inside = count - below;
                below = count;
                (format!("le={le}"), inside)
            })
            .collect()
    }

    /// The `q`-quantile, interpolated as `histogram_quantile` does; `None` without documents.
    /// A quantile in the `+Inf` bucket is the highest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (0.0, 0.0);
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let inside = count - lower.1;
                let fraction = if inside > 0.0 {
                    (rank - lower.1) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * fraction);
            }
            lower = (le, count);
        }
        Some(lower.0)
    }
}

/// The verdict of a statistical check at one look, with the numbers behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    /// Pass (Accept), Fail (Reject) or Inconclusive (Continue).
    pub outcome: Outcome,
    /// The canary's observed value (share or quantile).
    pub value: Option<f64>,
    /// The baseline's observed value.
    pub baseline_value: Option<f64>,
    /// Canary documents behind the value.
    pub samples: f64,
    /// Baseline documents behind its value.
    pub baseline_samples: Option<f64>,
    /// About how many more canary documents the verdict needs, when it is Inconclusive and
    /// the evidence moves at all.
    pub needed: Option<f64>,
    /// Why, in words, when not Accept.
    pub reason: Option<String>,
}

/// One sub-test of a threshold, combined with the others.
enum Part {
    Test(Test),
    /// Judged against a limit that is itself an estimate: accepting against the estimate,
    /// rejecting only against its upper confidence bound.
    Bounded {
        accept: Test,
        reject: Test,
    },
    /// Cannot be judged (no baseline data): holds the verdict at Continue.
    Unknown(String),
    /// `max(baseline, floor)`: within when either part is within, beyond when both are.
    Either(Box<Part>, Box<Part>),
}

impl Part {
    fn outcome(&self, confidence: &Confidence) -> Outcome {
        match self {
            Part::Test(test) => test.outcome(confidence),
            Part::Bounded { accept, reject } => match reject.outcome(confidence) {
                Outcome::Reject => Outcome::Reject,
                _ if accept.outcome(confidence) == Outcome::Accept => Outcome::Accept,
                _ => Outcome::Continue,
            },
            Part::Unknown(_) => Outcome::Continue,
            Part::Either(a, b) => match (a.outcome(confidence), b.outcome(confidence)) {
                (Outcome::Accept, _) | (_, Outcome::Accept) => Outcome::Accept,
                (Outcome::Reject, Outcome::Reject) => Outcome::Reject,
                _ => Outcome::Continue,
            },
        }
    }

    fn needed(&self, confidence: &Confidence) -> Option<(Outcome, f64)> {
        match self {
            Part::Test(test) => test.needed(confidence),
            Part::Bounded { accept, reject } => match accept.needed(confidence) {
                Some((Outcome::Accept, n)) => Some((Outcome::Accept, n)),
                _ => reject.needed(confidence),
            },
            Part::Unknown(_) => None,
            Part::Either(a, b) => {
                let (a, b) = (a.needed(confidence), b.needed(confidence));
                // Either accepting is enough; rejecting takes both.
                let accepting = [a, b]
                    .into_iter()
                    .flatten()
                    .filter(|(o, _)| *o == Outcome::Accept)
                    .map(|(_, n)| n)
                    .reduce(f64::min);
                match (accepting, a, b) {
                    (Some(n), _, _) => Some((Outcome::Accept, n)),
                    (None, Some((_, a)), Some((_, b))) => Some((Outcome::Reject, a.max(b))),
                    _ => None,
                }
            }
        }
    }

    fn unknown(&self) -> Option<&str> {
        match self {
            Part::Unknown(why) => Some(why),
            Part::Either(a, b) => a.unknown().or(b.unknown()),
            Part::Test(_) | Part::Bounded { .. } => None,
        }
    }
}

/// All parts must accept to pass; any rejecting fails.
fn combine(parts: &[Part], confidence: &Confidence) -> (Outcome, Option<f64>) {
    let outcomes: Vec<Outcome> = parts.iter().map(|p| p.outcome(confidence)).collect();
    if outcomes.contains(&Outcome::Reject) {
        return (Outcome::Reject, None);
    }
    if outcomes.iter().all(|o| *o == Outcome::Accept) {
        return (Outcome::Accept, None);
    }
    // The slowest undecided part decides when the whole does.
    let needed = parts
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == Outcome::Continue)
        .map(|(part, _)| part.needed(confidence).map(|(_, n)| n))
        .try_fold(0.0f64, |most, n| n.map(|n| most.max(n)));
    (Outcome::Continue, needed)
}

fn undecided_reason(parts: &[Part], samples: f64, needed: Option<f64>) -> String {
    if let Some(why) = parts
        .iter()
        .find_map(Part::unknown)
        .filter(|_| samples > 0.0)
    {
        return why.to_owned();
    }
    match needed {
        Some(n) => format!(
            "not enough evidence yet: {} documents seen, about {} more needed",
            samples.round(),
            n.ceil()
        ),
        None => format!(
            "not enough evidence yet: {} documents seen",
            samples.round()
        ),
    }
}

/// The share of bad documents against `bounds` (shares of bad documents): `max` and `min` by [`one_sample`], the ratio to
/// the baseline by [`two_sample`] or, below the floor, against `ratio × floor`.
pub fn proportion(
    canary: Counts,
    baseline: Option<Counts>,
    bounds: &Threshold,
    confidence: &Confidence,
) -> Judged {
    let canary = canary.clamped();
    let mut parts = Vec::new();
    if let Some(max) = bounds.max {
        parts.push(Part::Test(one_sample(canary, max, confidence)));
    }
    if let Some(min) = bounds.min {
        // "at least `min` bad" is "at most `1 − min` not bad".
        let good = Counts {
            bad: canary.total - canary.bad,
            total: canary.total,
        };
        parts.push(Part::Test(one_sample(good, 1.0 - min, confidence)));
    }
    if let Some(ratio) = bounds.max_ratio_to_stable {
        let relative = match baseline.and_then(|b| two_sample(canary, b, ratio, confidence)) {
            Some(test) => Part::Test(test),
            None => Part::Unknown("no baseline documents to compare with".into()),
        };
        let part = match bounds.ratio_floor.filter(|f| *f > 0.0 && ratio * f < 1.0) {
            Some(floor) => Part::Either(
                Box::new(relative),
                Box::new(Part::Test(one_sample(canary, ratio * floor, confidence))),
            ),
            None => relative,
        };
        parts.push(part);
    }
    let (outcome, needed) = combine(&parts, confidence);
    let value = canary.share();
    let reason = match outcome {
        Outcome::Accept => None,
        Outcome::Reject => Some(format!(
            "{} of {} documents bad ({}): beyond the threshold at the stated confidence",
            round(canary.bad),
            round(canary.total),
            percent(value.unwrap_or(0.0)),
        )),
        Outcome::Continue => Some(undecided_reason(&parts, canary.total, needed)),
    };
    Judged {
        outcome,
        value,
        baseline_value: baseline.and_then(|b| b.share()),
        samples: canary.total,
        baseline_samples: baseline.map(|b| b.total.max(0.0)),
        needed,
        reason,
    }
}

/// The canary's `q`-quantile against `bounds` (in the histogram's unit), judged as a share of documents: "the
/// q-quantile is at most x" is exactly "at most 1 − q of the documents are above x". Against
/// the baseline, x is `ratio × max(baseline's q-quantile, floor)`.
pub fn quantile(
    canary: &Histogram,
    baseline: Option<&Histogram>,
    q: f64,
    bounds: &Threshold,
    confidence: &Confidence,
) -> Judged {
    let total = canary.count();
    let above = |x: f64| Counts {
        bad: total - canary.at_most(x),
        total,
    };
    let below = |x: f64| Counts {
        bad: canary.at_most(x),
        total,
    };
    let mut parts = Vec::new();
    if let Some(max) = bounds.max {
        parts.push(Part::Test(one_sample(above(max), 1.0 - q, confidence)));
    }
    if let Some(min) = bounds.min {
        parts.push(Part::Test(one_sample(below(min), q, confidence)));
    }
    let baseline_value = baseline.and_then(|b| b.quantile(q));
    if let Some(ratio) = bounds.max_ratio_to_stable {
        let floor = bounds.ratio_floor.unwrap_or(0.0);
        parts.push(match (baseline, baseline_value) {
            (Some(baseline), Some(value)) => {
                // The baseline's quantile is an estimate too: a canary fails only beyond what
                // the baseline's own documents allow at the stated confidence.
                let upper = quantile_upper_bound(baseline, q, confidence.false_fail);
                Part::Bounded {
                    accept: one_sample(above(ratio * value.max(floor)), 1.0 - q, confidence),
                    reject: one_sample(above(ratio * upper.max(floor)), 1.0 - q, confidence),
                }
            }
            _ => Part::Unknown("no baseline documents to compare with".into()),
        });
    }
    let (outcome, needed) = combine(&parts, confidence);
    let value = canary.quantile(q);
    let reason = match outcome {
        Outcome::Accept => None,
        Outcome::Reject => Some(format!(
            "quantile {q} is {} over {} documents: beyond the threshold at the stated confidence",
            value.map_or("unknown".to_owned(), |v| round(v).to_string()),
            round(total)
        )),
        Outcome::Continue => Some(undecided_reason(&parts, total, needed)),
    };
    Judged {
        outcome,
        value,
        baseline_value,
        samples: total,
        baseline_samples: baseline.map(Histogram::count),
        needed,
        reason,
    }
}

/// One side of a distribution: counts by category, and the documents they come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Categories {
    pub counts: BTreeMap<String, f64>,
    pub documents: f64,
}

impl Categories {
    fn total(&self) -> f64 {
        self.counts.values().map(|c| c.max(0.0)).sum()
    }

    fn count(&self, key: &str) -> f64 {
        self.counts.get(key).copied().unwrap_or(0.0).max(0.0)
    }
}

/// Whether the canary's distribution over categories (block types, blocks per page) matches the
/// baseline's. There is no sequential test here: the categories are many and the counts come in
/// documents, so the distance is judged at each look with a guard each way:
///
/// - below `min_documents` on either side nothing is said;
/// - the total-variation distance (half the sum of the share differences) within
///   `threshold.max_distance` passes;
/// - beyond it, the verdict is Fail only when a chi-square test of homogeneity also finds the
///   two distributions different at the configured confidence, with the statistic divided by
///   the design effect of counting in documents (Rao–Scott, taking the worst case: every count
///   of one document alike, so the design effect is the counts per document). A distance made
///   of noise, or of a few odd documents, waits for more documents.
///
/// This guards against gross changes; unlike the sequential tests it makes no promise about
/// how often a smaller regression passes.
pub fn distribution(
    canary: &Categories,
    baseline: &Categories,
    min_documents: f64,
    threshold: &Threshold,
    confidence: &Confidence,
) -> Judged {
    let (n1, n2) = (canary.total(), baseline.total());
    let max_distance = threshold.max_distance.unwrap_or(f64::INFINITY);
    let judged = |outcome, value, reason| Judged {
        outcome,
        value,
        baseline_value: None,
        samples: canary.documents,
        baseline_samples: Some(baseline.documents),
        needed: None,
        reason,
    };
    if canary.documents < min_documents
        || baseline.documents < min_documents
        || n1 <= 0.0
        || n2 <= 0.0
    {
        return judged(
            Outcome::Continue,
            None,
            Some(format!(
                "needs {min_documents} documents on each side (canary {}, baseline {})",
                canary.documents.floor(),
                baseline.documents.floor()
            )),
        );
    }
    let categories: std::collections::BTreeSet<&String> =
        canary.counts.keys().chain(baseline.counts.keys()).collect();
    let mut distance = 0.0;
    let mut chi_square = 0.0;
    let mut occupied = 0usize;
    for key in categories {
        let (c, b) = (canary.count(key), baseline.count(key));
        distance += (c / n1 - b / n2).abs() / 2.0;
        let pooled = (c + b) / (n1 + n2);
        if pooled > 0.0 {
            occupied += 1;
            let (e1, e2) = (n1 * pooled, n2 * pooled);
            chi_square += (c - e1).powi(2) / e1 + (b - e2).powi(2) / e2;
        }
    }
    let distance = round(distance);
    if distance <= max_distance {
        return judged(Outcome::Accept, Some(distance), None);
    }
    let design_effect = ((n1 + n2) / (canary.documents + baseline.documents)).max(1.0);
    let adjusted = chi_square / design_effect;
    let freedom = occupied.saturating_sub(1).max(1) as f64;
    let critical = chi_square_quantile(1.0 - confidence.false_fail, freedom);
    let numbers = format!(
        "chi-square {} over {} counts per document, against {}",
        round(adjusted),
        round(design_effect),
        round(critical)
    );
    if adjusted >= critical {
        return judged(
            Outcome::Reject,
            Some(distance),
            Some(format!(
                "distance {distance} to the baseline's distribution is beyond {max_distance}, and significant ({numbers})"
            )),
        );
    }
    judged(
        Outcome::Continue,
        Some(distance),
        Some(format!(
            "distance {distance} is beyond {max_distance} but not yet significant ({numbers}): waiting for more documents"
        )),
    )
}

/// The chi-square distribution's `p`-quantile with `k` degrees of freedom, by the
/// Wilson–Hilferty approximation (within a few percent for k ≥ 1 at the tails used here).
fn chi_square_quantile(p: f64, k: f64) -> f64 {
    let spread = 2.0 / (9.0 * k);
    k * (1.0 - spread + normal_quantile(p) * spread.sqrt()).powi(3)
}

/// An upper bound of a histogram's `q`-quantile, exceeded by the true one with probability
/// `alpha`: the quantile at rank `q + z·sqrt(q(1 − q)/n)` (the binomial count of documents
/// below the true quantile, normally approximated). Infinite while that rank passes 1.
fn quantile_upper_bound(histogram: &Histogram, q: f64, alpha: f64) -> f64 {
    let n = histogram.count();
    let rank = q + normal_quantile(1.0 - alpha) * (q * (1.0 - q) / n.max(1.0)).sqrt();
    if rank >= 1.0 {
        return f64::INFINITY;
    }
    histogram.quantile(rank).unwrap_or(f64::INFINITY)
}

/// Φ⁻¹(p) for p in (0.5, 1), by Abramowitz and Stegun 26.2.23 (error below 4.5e-4).
fn normal_quantile(p: f64) -> f64 {
    let t = (-2.0 * (1.0 - p.clamp(0.5, 1.0 - 1e-12)).ln()).sqrt();
    t - (2.515_517 + 0.802_853 * t + 0.010_328 * t * t)
        / (1.0 + 1.432_788 * t + 0.189_269 * t * t + 0.001_308 * t * t * t)
}

/// Four significant digits: enough to read, short enough for a status line.
pub fn round(value: f64) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let scale = 10f64.powi(3 - value.abs().log10().floor() as i32);
    (value * scale).round() / scale
}

fn percent(share: f64) -> String {
    format!("{}%", round(share * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIDENCE: Confidence = Confidence {
        false_fail: 0.01,
        false_pass: 0.05,
        regression: 3.0,
    };

    fn counts(bad: f64, total: f64) -> Counts {
        Counts { bad, total }
    }

    #[test]
    fn the_chi_square_quantile_is_close_enough() {
        // (p, degrees of freedom, tabulated quantile)
        for (p, k, x) in [
            (0.995, 1.0, 7.879),
            (0.995, 5.0, 16.750),
            (0.99, 10.0, 23.209),
        ] {
            let approx = chi_square_quantile(p, k);
            assert!((approx - x).abs() / x < 0.05, "{p} {k}: {approx} vs {x}");
        }
    }

    #[test]
    fn distributions_are_judged_by_distance_and_significance() {
        // Ten blocks a document.
        let mix = |text: f64, table: f64, equation: f64| Categories {
            counts: BTreeMap::from([
                ("text".to_owned(), text),
                ("table".to_owned(), table),
                ("equation".to_owned(), equation),
            ]),
            documents: (text + table + equation) / 10.0,
        };
        let threshold = Threshold {
            max_distance: Some(0.1),
            ..Threshold::default()
        };
        let judge = |canary: Categories, baseline: Categories| {
            distribution(&canary, &baseline, 20.0, &threshold, &CONFIDENCE).outcome
        };
        // (behaviour, canary, baseline, outcome)
        let cases = [
            (
                "too few documents",
                mix(100.0, 60.0, 20.0),
                mix(700.0, 200.0, 100.0),
                Outcome::Continue,
            ),
            (
                "the same mix",
                mix(690.0, 210.0, 100.0),
                mix(700.0, 200.0, 100.0),
                Outcome::Accept,
            ),
            (
                "tables read as text",
                mix(880.0, 20.0, 100.0),
                mix(700.0, 200.0, 100.0),
                Outcome::Reject,
            ),
            // Distance 0.11 over 20 documents a side: as many blocks would be significant, as
            // many documents are not.
            (
                "noisy, not yet significant",
                mix(118.0, 62.0, 20.0),
                mix(140.0, 40.0, 20.0),
                Outcome::Continue,
            ),
            (
                "a category only one side has",
                mix(600.0, 0.0, 100.0),
                mix(500.0, 150.0, 50.0),
                Outcome::Reject,
            ),
        ];
        for (behaviour, canary, baseline, outcome) in cases {
            assert_eq!(judge(canary, baseline), outcome, "{behaviour}");
        }
        let judged = distribution(
            &mix(880.0, 20.0, 100.0),
            &mix(700.0, 200.0, 100.0),
            20.0,
            &threshold,
            &CONFIDENCE,
        );
        assert_eq!(
            (judged.value, judged.samples, judged.baseline_samples),
            (Some(0.18), 100.0, Some(100.0))
        );
    }

    #[test]
    fn a_histogram_is_a_distribution_over_its_buckets() {
        let histogram =
            Histogram::new(vec![(0.0, 1.0), (4.0, 3.0), (f64::INFINITY, 10.0)]).unwrap();
        assert_eq!(
            histogram.bucket_counts(),
            BTreeMap::from([
                ("le=0".to_owned(), 1.0),
                ("le=4".to_owned(), 2.0),
                ("le=inf".to_owned(), 7.0)
            ])
        );
    }

    #[test]
    fn boundaries_follow_wald() {
        assert!((CONFIDENCE.reject_at() - (0.95f64 / 0.01).ln()).abs() < 1e-12);
        assert!((CONFIDENCE.accept_at() - (0.05f64 / 0.99).ln()).abs() < 1e-12);
        // Odds of 1:49 (2%) tripled are 3:49.
        assert!((CONFIDENCE.alternative(0.02) - 3.0 / 52.0).abs() < 1e-12);
    }

    #[test]
    fn one_sample_verdicts() {
        // (behaviour, bad, total, p0, outcome)
        let cases = [
            (
                "no documents say nothing",
                0.0,
                0.0,
                0.02,
                Outcome::Continue,
            ),
            (
                "a few clean documents are not enough",
                0.0,
                20.0,
                0.02,
                Outcome::Continue,
            ),
            (
                "enough clean documents pass",
                0.0,
                100.0,
                0.02,
                Outcome::Accept,
            ),
            (
                "a share at the threshold passes in time",
                20.0,
                1000.0,
                0.02,
                Outcome::Accept,
            ),
            (
                "three times the threshold fails",
                30.0,
                500.0,
                0.02,
                Outcome::Reject,
            ),
            (
                "one bad in three says nothing yet",
                1.0,
                3.0,
                0.02,
                Outcome::Continue,
            ),
        ];
        for (behaviour, bad, total, p0, expected) in cases {
            let test = one_sample(counts(bad, total), p0, &CONFIDENCE);
            assert_eq!(test.outcome(&CONFIDENCE), expected, "{behaviour}: {test:?}");
        }
    }

    #[test]
    fn two_sample_compares_rates_whatever_the_baseline_rate() {
        // (behaviour, canary bad/total, baseline bad/total, ratio, outcome)
        let cases = [
            (
                "too few documents",
                (0.0, 10.0),
                (2.0, 90.0),
                1.05,
                Outcome::Continue,
            ),
            (
                "equal at 2% once enough",
                (40.0, 2000.0),
                (360.0, 18000.0),
                1.05,
                Outcome::Accept,
            ),
            (
                "3x the errors fails",
                (30.0, 500.0),
                (90.0, 4500.0),
                1.05,
                Outcome::Reject,
            ),
            (
                "equal at 20% too",
                (200.0, 1000.0),
                (1800.0, 9000.0),
                1.05,
                Outcome::Accept,
            ),
        ];
        for (behaviour, canary, baseline, ratio, expected) in cases {
            let test = two_sample(
                counts(canary.0, canary.1),
                counts(baseline.0, baseline.1),
                ratio,
                &CONFIDENCE,
            )
            .unwrap();
            assert_eq!(test.outcome(&CONFIDENCE), expected, "{behaviour}: {test:?}");
        }
        assert_eq!(
            two_sample(counts(0.0, 10.0), counts(0.0, 0.0), 1.05, &CONFIDENCE),
            None,
            "no baseline documents"
        );
    }

    #[test]
    fn a_ratio_with_a_floor_passes_when_either_holds_and_fails_only_when_both_break() {
        let bounds = Threshold {
            max_ratio_to_stable: Some(1.05),
            ratio_floor: Some(0.01),
            ..Threshold::default()
        };
        let judge = |canary: (f64, f64), baseline: (f64, f64)| {
            proportion(
                counts(canary.0, canary.1),
                Some(counts(baseline.0, baseline.1)),
                &bounds,
                &CONFIDENCE,
            )
        };
        // No errors anywhere: the ratio says nothing, the floor decides once enough documents.
        assert_eq!(judge((0.0, 30.0), (0.0, 270.0)).outcome, Outcome::Continue);
        assert_eq!(judge((0.0, 300.0), (0.0, 2700.0)).outcome, Outcome::Accept);
        // A canary at 2% beside a clean stable: beyond both 1.05 × 0 and 1.05 × 1%... in time.
        assert_eq!(
            judge((40.0, 1000.0), (0.0, 9000.0)).outcome,
            Outcome::Reject,
            "{:?}",
            judge((40.0, 1000.0), (0.0, 9000.0))
        );
        // Errors on both sides at the same 2%: within 1.05 × stable, whatever the floor says.
        assert_eq!(
            judge((40.0, 2000.0), (360.0, 18000.0)).outcome,
            Outcome::Accept
        );
    }

    #[test]
    fn an_undecided_verdict_says_how_many_documents_it_still_needs() {
        let judged = proportion(
            counts(0.0, 20.0),
            None,
            &Threshold {
                max: Some(0.02),
                ..Threshold::default()
            },
            &CONFIDENCE,
        );
        assert_eq!(judged.outcome, Outcome::Continue);
        let needed = judged.needed.unwrap();
        assert!((40.0..120.0).contains(&needed), "{needed}");
        assert!(
            judged
                .reason
                .as_deref()
                .unwrap()
                .contains("20 documents seen"),
            "{judged:?}"
        );
        // Taking the estimate at its word, that many more clean documents decide.
        let later = proportion(
            counts(0.0, 20.0 + needed.ceil()),
            None,
            &Threshold {
                max: Some(0.02),
                ..Threshold::default()
            },
            &CONFIDENCE,
        );
        assert_eq!(later.outcome, Outcome::Accept);
    }

    #[test]
    fn no_baseline_leaves_a_ratio_inconclusive_and_says_why() {
        let judged = proportion(
            counts(0.0, 500.0),
            Some(counts(0.0, 0.0)),
            &Threshold {
                max_ratio_to_stable: Some(1.05),
                ..Threshold::default()
            },
            &CONFIDENCE,
        );
        assert_eq!(judged.outcome, Outcome::Continue);
        assert_eq!(
            judged.reason.as_deref(),
            Some("no baseline documents to compare with")
        );
    }

    fn histogram(counts: &[(f64, f64)]) -> Histogram {
        Histogram::new(counts.to_vec()).unwrap()
    }

    #[test]
    fn the_normal_quantile_is_close_enough() {
        for (p, z) in [
            (0.5, 0.0),
            (0.95, 1.644_853_6),
            (0.99, 2.326_347_9),
            (0.995, 2.575_829_3),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 5e-4,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    #[test]
    fn a_few_baseline_documents_cannot_fail_a_canary_against_their_quantile() {
        let bounds = Threshold {
            max_ratio_to_stable: Some(1.10),
            ..Threshold::default()
        };
        // Twenty baseline documents put their p95 at 20 s; a canary at 30 s looks 1.5x slower,
        // but twenty documents do not know their own p95 well enough to say so.
        let baseline = histogram(&[(20.0, 19.0), (40.0, 20.0), (f64::INFINITY, 20.0)]);
        let canary = histogram(&[(20.0, 150.0), (40.0, 200.0), (f64::INFINITY, 200.0)]);
        let judged = quantile(&canary, Some(&baseline), 0.95, &bounds, &CONFIDENCE);
        assert_eq!(judged.outcome, Outcome::Continue, "{judged:?}");
        // Nor can a canary whose slow documents are all beyond the last bucket.
        let beyond = histogram(&[(20.0, 100.0), (40.0, 100.0), (f64::INFINITY, 200.0)]);
        let few = histogram(&[(20.0, 19.0), (40.0, 20.0), (f64::INFINITY, 20.0)]);
        let judged = quantile(&beyond, Some(&few), 0.95, &bounds, &CONFIDENCE);
        assert_eq!(judged.outcome, Outcome::Continue, "{judged:?}");
        // Two thousand baseline documents do.
        let baseline = histogram(&[(20.0, 1900.0), (40.0, 2000.0), (f64::INFINITY, 2000.0)]);
        let judged = quantile(&canary, Some(&baseline), 0.95, &bounds, &CONFIDENCE);
        assert_eq!(judged.outcome, Outcome::Reject, "{judged:?}");
    }

    #[test]
    fn histograms_interpolate_as_histogram_quantile_does() {
        let h = histogram(&[(10.0, 50.0), (30.0, 90.0), (f64::INFINITY, 100.0)]);
        assert_eq!(h.count(), 100.0);
        assert_eq!(h.at_most(5.0), 25.0);
        assert_eq!(h.at_most(20.0), 70.0);
        assert_eq!(
            h.at_most(100.0),
            90.0,
            "nothing beyond the last bound is known"
        );
        assert_eq!(h.quantile(0.5), Some(10.0));
        assert_eq!(h.quantile(0.7), Some(20.0));
        assert_eq!(
            h.quantile(0.95),
            Some(30.0),
            "+Inf bucket: the highest bound"
        );
        assert_eq!(histogram(&[(f64::INFINITY, 0.0)]).quantile(0.5), None);
        // Extrapolated counts that dip are lifted back to cumulative.
        let dipping = histogram(&[(1.0, 5.0), (2.0, 4.9), (f64::INFINITY, 6.0)]);
        assert_eq!(dipping.at_most(2.0), 5.0);
        assert!(Histogram::new(vec![(1.0, 1.0)]).is_err(), "no +Inf bucket");
    }

    #[test]
    fn quantile_verdicts() {
        let p95 = |bounds: Threshold, canary: &Histogram, baseline: Option<&Histogram>| {
            quantile(canary, baseline, 0.95, &bounds, &CONFIDENCE).outcome
        };
        let absolute = Threshold {
            max: Some(90.0),
            ..Threshold::default()
        };
        // 300 documents, all under a minute.
        let fast = histogram(&[(60.0, 300.0), (90.0, 300.0), (f64::INFINITY, 300.0)]);
        assert_eq!(p95(absolute, &fast, None), Outcome::Accept);
        // A quarter of them over 90 s.
        let slow = histogram(&[(60.0, 200.0), (90.0, 225.0), (f64::INFINITY, 300.0)]);
        assert_eq!(p95(absolute, &slow, None), Outcome::Reject);
        // Three documents say nothing.
        let few = histogram(&[(60.0, 3.0), (90.0, 3.0), (f64::INFINITY, 3.0)]);
        assert_eq!(p95(absolute, &few, None), Outcome::Continue);

        let relative = Threshold {
            max_ratio_to_stable: Some(1.10),
            ratio_floor: Some(1.0),
            ..Threshold::default()
        };
        // Baseline: p95 at 30 s; a canary with the same distribution passes once enough.
        let shape = |n: f64| {
            histogram(&[
                (10.0, 0.5 * n),
                (30.0, 0.95 * n),
                (60.0, n),
                (f64::INFINITY, n),
            ])
        };
        assert_eq!(
            p95(relative, &shape(2000.0), Some(&shape(18000.0))),
            Outcome::Accept
        );
        // A canary twice as slow fails.
        let doubled = histogram(&[
            (20.0, 1000.0),
            (60.0, 1900.0),
            (120.0, 2000.0),
            (f64::INFINITY, 2000.0),
        ]);
        assert_eq!(
            p95(relative, &doubled, Some(&shape(18000.0))),
            Outcome::Reject
        );
        assert_eq!(
            p95(relative, &shape(2000.0), None),
            Outcome::Continue,
            "no baseline"
        );
    }
}
