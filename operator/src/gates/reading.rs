//! Raw readings: what Prometheus answered for one check and one revision, before any judging.

use std::collections::BTreeMap;

use super::Source;
use crate::evidence::Histogram;

/// What one instant query returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// A single sample value (possibly NaN or infinite: PromQL divides by zero freely).
    Value(f64),
    /// Cumulative histogram buckets by `le`.
    Buckets(Histogram),
    /// Counts by category.
    Counts(BTreeMap<String, f64>),
    /// The query succeeded but returned no series.
    Empty,
    /// The query failed: Prometheus unreachable, timeout, invalid PromQL, a result of the wrong
    /// shape.
    Error(String),
}

impl Reading {
    /// The failure, when the query failed.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reading::Error(error) => Some(error),
            _ => None,
        }
    }

    /// A count: a finite value, or 0 when the query found no series (nothing was counted).
    pub fn count(&self) -> Option<f64> {
        match self {
            Reading::Value(v) if v.is_finite() => Some(v.max(0.0)),
            Reading::Empty => Some(0.0),
            _ => None,
        }
    }
}

/// The readings of one check for one revision, shaped by the check's source.
#[derive(Clone, Debug, PartialEq)]
pub enum Measured {
    /// A value and, when the check has one, its samples count.
    Value {
        value: Reading,
        samples: Option<Reading>,
    },
    /// Bad and all documents.
    Proportion { bad: Reading, total: Reading },
    /// Histogram buckets.
    Quantile { buckets: Reading },
    /// Counts by category, and the documents they come from.
    Distribution { counts: Reading, units: Reading },
}

impl Measured {
    /// The readings of `source` when none could be taken, each the same failure.
    pub fn failed(source: &Source, error: &str) -> Measured {
        let error = || Reading::Error(error.to_owned());
        match source {
            Source::Proportion { .. } => Measured::Proportion {
                bad: error(),
                total: error(),
            },
            Source::Quantile { .. } => Measured::Quantile { buckets: error() },
            Source::Distribution { .. } => Measured::Distribution {
                counts: error(),
                units: error(),
            },
            _ => Measured::Value {
                value: error(),
                samples: None,
            },
        }
    }

    /// Every reading, for finding errors.
    pub fn readings(&self) -> Vec<&Reading> {
        match self {
            Measured::Value { value, samples } => {
                std::iter::once(value).chain(samples.as_ref()).collect()
            }
            Measured::Proportion { bad, total } => vec![bad, total],
            Measured::Quantile { buckets } => vec![buckets],
            Measured::Distribution { counts, units } => vec![counts, units],
        }
    }

    /// The first query failure among the readings.
    pub fn error(&self) -> Option<&str> {
        self.readings().into_iter().find_map(Reading::error)
    }
}
