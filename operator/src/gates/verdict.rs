//! From the numbers a check's queries returned to a verdict.
//!
//! The rules, in order: any query error → Error (never counts toward promotion); too few samples
//! → Inconclusive; no data, NaN or ±Inf for the judged revision (or for stable in a ratio check)
//! → Inconclusive with the reason; otherwise Pass when every threshold holds, else Fail.

use mineru_crds::{QualityResult, Verdict};

use super::Threshold;
pub use super::reading::Reading;
use crate::evidence::round;

/// The readings of a value check in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct Readings {
    /// The value for the judged revision.
    pub value: Reading,
    /// The value for stable, read in the same round; needed by ratio thresholds.
    pub stable: Option<Reading>,
    /// The sample count, when the check has a samples query.
    pub samples: Option<Reading>,
}

/// The outcome of one check in one round, with the numbers that led to it. Numbers are finite
/// or absent: status is JSON, which has no NaN.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Pass, Fail, Inconclusive or Error.
    pub verdict: Verdict,
    /// The judged revision's value.
    pub value: Option<f64>,
    /// Stable's value in the same round.
    pub stable_value: Option<f64>,
    /// Samples behind the value.
    pub samples: Option<f64>,
    /// Samples behind stable's value.
    pub stable_samples: Option<f64>,
    /// About how many more samples a sequential test needs to decide.
    pub needed: Option<f64>,
    /// Why, when the verdict is not Pass.
    pub message: Option<String>,
}

fn finite(reading: Option<&Reading>) -> Option<f64> {
    match reading {
        Some(Reading::Value(v)) if v.is_finite() => Some(*v),
        _ => None,
    }
}

/// Judges `readings` against `threshold`; `min_samples` applies when a samples reading is given.
pub fn evaluate(
    threshold: &Threshold,
    min_samples: Option<f64>,
    readings: &Readings,
) -> Evaluation {
    let evaluation = Evaluation {
        verdict: Verdict::Pass,
        value: finite(Some(&readings.value)),
        stable_value: finite(readings.stable.as_ref()),
        samples: finite(readings.samples.as_ref()),
        stable_samples: None,
        needed: None,
        message: None,
    };
    let settle = |verdict, message: String| Evaluation {
        verdict,
        message: Some(message),
        ..evaluation.clone()
    };

    let errors = [
        ("value", Some(&readings.value)),
        ("stable value", readings.stable.as_ref()),
        ("samples", readings.samples.as_ref()),
    ];
    for (what, reading) in errors {
        if let Some(Reading::Error(error)) = reading {
            return settle(Verdict::Error, format!("{what} query failed: {error}"));
        }
    }

    if let (Some(reading), Some(min)) = (&readings.samples, min_samples) {
        match finite(Some(reading)) {
            None => return settle(Verdict::Inconclusive, "no samples yet".into()),
            Some(samples) if samples < min => {
                return settle(
                    Verdict::Inconclusive,
                    format!("{} samples, {} needed", round(samples), round(min)),
                );
            }
            Some(_) => {}
        }
    }

    let Some(value) = evaluation.value else {
        return settle(Verdict::Inconclusive, no_data("", &readings.value));
    };

    let mut breaches = Vec::new();
    if let Some(max) = threshold.max.filter(|max| value > *max) {
        breaches.push(format!("{} > {}", round(value), round(max)));
    }
    if let Some(min) = threshold.min.filter(|min| value < *min) {
        breaches.push(format!("{} < {}", round(value), round(min)));
    }
    if let Some(ratio) = threshold.max_ratio_to_stable {
        let Some(stable) = evaluation.stable_value else {
            let stable = readings.stable.as_ref().unwrap_or(&Reading::Empty);
            return settle(Verdict::Inconclusive, no_data("stable ", stable));
        };
        let limit = ratio * stable.max(threshold.ratio_floor.unwrap_or(0.0));
        if value > limit {
            breaches.push(format!(
                "{} > {} x {} (stable {})",
                round(value),
                round(ratio),
                round(limit / ratio),
                round(stable)
            ));
        }
    }

    if breaches.is_empty() {
        evaluation
    } else {
        settle(Verdict::Fail, breaches.join("; "))
    }
}

fn no_data(whose: &str, reading: &Reading) -> String {
    match reading {
        Reading::Value(v) if v.is_nan() => {
            format!("{whose}value is NaN (no traffic in the window?)")
        }
        Reading::Value(v) => format!("{whose}value is {v} (division by zero?)"),
        Reading::Buckets(_) => format!("{whose}query returned histogram buckets, not one value"),
        _ => format!("no {whose}data: the query returned no series"),
    }
}

/// The quality gate's number: the share of golden documents whose canary output did not match
/// stable's, judged against `threshold`'s `max` once the round's `wanted` documents are all in.
/// Before that, a round already beyond the threshold whatever its remaining documents say fails
/// at once; otherwise it is Inconclusive with its progress. Documents that could not be compared
/// (verdict Error) are counted for progress but not in the share.
pub fn evaluate_quality(
    threshold: &Threshold,
    results: &[QualityResult],
    wanted: usize,
) -> Evaluation {
    let count = |verdict| results.iter().filter(|r| r.verdict == verdict).count();
    let (regressed, passed, errors) = (
        count(Verdict::Fail),
        count(Verdict::Pass),
        count(Verdict::Error),
    );
    let compared = regressed + passed;
    let wanted = wanted.max(results.len()).max(1);
    let limit = threshold.max.unwrap_or(0.0);
    let progress = format!(
        "{} of {wanted} documents compared, {regressed} regressed{}",
        results.len(),
        if errors > 0 {
            format!(", {errors} could not be compared")
        } else {
            String::new()
        }
    );
    let evaluation = |verdict, value: Option<f64>, message: Option<String>| Evaluation {
        verdict,
        value,
        stable_value: None,
        samples: Some(compared as f64),
        stable_samples: None,
        needed: (verdict == Verdict::Inconclusive).then(|| (wanted - results.len()) as f64),
        message,
    };
    // However the rest turn out, at least this share regresses.
    let certain = regressed as f64 / wanted as f64;
    if certain > limit {
        return evaluation(
            Verdict::Fail,
            Some(certain),
            Some(format!(
                "{progress}: more than {limit} of the round already"
            )),
        );
    }
    if results.len() < wanted {
        return evaluation(Verdict::Inconclusive, None, Some(progress));
    }
    if compared == 0 {
        return evaluation(
            Verdict::Inconclusive,
            None,
            Some(format!("{progress}: none could be compared")),
        );
    }
    let share = regressed as f64 / compared as f64;
    if share > limit {
        evaluation(
            Verdict::Fail,
            Some(share),
            Some(format!("{progress}: {} > {limit}", round(share))),
        )
    } else {
        evaluation(Verdict::Pass, Some(share), None)
    }
}
