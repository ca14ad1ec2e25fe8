//! Prometheus at the edge: runs a check's instant queries and reports each answer as a
//! [`Reading`]. Every failure becomes `Reading::Error` with the reason, never a number, so that
//! an unreachable or misconfigured Prometheus can only hold a rollout, never promote it.

use std::collections::BTreeMap;
use std::time::Duration;

use mineru_crds::PrometheusSpec;
use prometheus_http_query::{
    Client,
    response::{Data, InstantVector},
};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::{Source, reading::Reading};
use crate::evidence::Histogram;

/// How the operator authenticates to Prometheus (from `analysis.prometheus.authSecretRef`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP basic authentication.
    Basic { username: String, password: String },
}

/// Why a Prometheus client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("analysis.prometheus.address {address:?} is not a usable URL: {reason}")]
    Address { address: String, reason: String },
    #[error("Prometheus credentials contain characters not allowed in an HTTP header")]
    Credentials,
}

/// Runs instant queries against one Prometheus server.
#[derive(Clone)]
pub struct PrometheusSource {
    client: Client,
    timeout: Duration,
}

impl PrometheusSource {
    /// A source for `spec`, authenticating with `credentials` when given.
    pub fn new(
        spec: &PrometheusSpec,
        credentials: Option<&Credentials>,
    ) -> Result<Self, SourceError> {
        let timeout = spec.timeout.get();
        let mut headers = HeaderMap::new();
        if let Some(credentials) = credentials {
            let value = match credentials {
                Credentials::Bearer(token) => format!("Bearer {token}"),
                Credentials::Basic { username, password } => {
                    use base64::Engine as _;
                    let pair = format!("{username}:{password}");
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    )
                }
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| SourceError::Credentials)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let address_error = |reason: String| SourceError::Address {
            address: spec.address.clone(),
            reason,
        };
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // The HTTP deadline a little beyond Prometheus' own, so its timeout error wins.
            .timeout(timeout + Duration::from_secs(1))
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|error| address_error(error.to_string()))?;
        let client = Client::from(http, spec.address.trim_end_matches('/'))
            .map_err(|error| address_error(error.to_string()))?;
        Ok(PrometheusSource { client, timeout })
    }

    /// Runs `query` as an instant query evaluated at `at` (Unix seconds). A check needs one
    /// number: one series or a scalar.
    pub async fn read(&self, query: &str, at: i64) -> Reading {
        let data = match self.instant(query, at).await {
            Ok(data) => data,
            Err(error) => return error,
        };
        match data {
            Data::Vector(series) => match series.as_slice() {
                [] => Reading::Empty,
                [only] => Reading::Value(only.sample().value()),
                many => Reading::Error(format!(
                    "query {query:?} returned {} series; a check needs one value (aggregate with sum, max or histogram_quantile)",
                    many.len()
                )),
            },
            Data::Scalar(sample) => Reading::Value(sample.value()),
            Data::Matrix(_) => Reading::Error(format!(
                "query {query:?} returned a range vector; a check needs an instant value"
            )),
        }
    }

    /// Runs one of `source`'s queries at `at` and reads it in the shape `source` judges:
    /// buckets, counts by category, or a value.
    pub async fn read_as(&self, source: &Source, query: &str, at: i64) -> Reading {
        match source {
            Source::Quantile { .. } => self.read_buckets(query, at).await,
            Source::Distribution { .. } => self.read_counts(query, at).await,
            _ => self.read(query, at).await,
        }
    }

    /// Runs `query` at `at` and reads its series as cumulative buckets by their `le` label.
    pub async fn read_buckets(&self, query: &str, at: i64) -> Reading {
        match self.vector(query, at).await {
            Ok(series) if series.is_empty() => Reading::Empty,
            Ok(series) => match histogram(query, &series) {
                Ok(histogram) => Reading::Buckets(histogram),
                Err(error) => error,
            },
            Err(error) => error,
        }
    }

    /// Runs `query` at `at` and reads one count per series, keyed by its labels; series
    /// labelled `le` alone are a histogram, and count what falls in each bucket.
    pub async fn read_counts(&self, query: &str, at: i64) -> Reading {
        let series = match self.vector(query, at).await {
            Ok(series) if series.is_empty() => return Reading::Empty,
            Ok(series) => series,
            Err(error) => return error,
        };
        let bucketed = series
            .iter()
            .all(|one| one.metric().len() == 1 && one.metric().contains_key("le"));
        if bucketed {
            return match histogram(query, &series) {
                Ok(histogram) => Reading::Counts(histogram.bucket_counts()),
                Err(error) => error,
            };
        }
        let category = |one: &InstantVector| {
            let labels: BTreeMap<_, _> = one.metric().iter().collect();
            labels
                .into_iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        Reading::Counts(
            series
                .iter()
                .map(|one| (category(one), one.sample().value()))
                .collect(),
        )
    }

    /// An instant query whose answer must be a vector.
    async fn vector(&self, query: &str, at: i64) -> Result<Vec<InstantVector>, Reading> {
        match self.instant(query, at).await? {
            Data::Vector(series) => Ok(series),
            _ => Err(Reading::Error(format!(
                "query {query:?} must return one series per bucket or category"
            ))),
        }
    }

    async fn instant(&self, query: &str, at: i64) -> Result<Data, Reading> {
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        match self
            .client
            .query(query)
            .at(at)
            .timeout(timeout_ms)
            .post()
            .await
        {
            Ok(response) => Ok(response.into_inner().0),
            Err(error) => Err(Reading::Error(format!("query {query:?} failed: {error}"))),
        }
    }
}

/// Series labelled `le` as a cumulative histogram.
fn histogram(query: &str, series: &[InstantVector]) -> Result<Histogram, Reading> {
    let mut buckets = Vec::with_capacity(series.len());
    for one in series {
        let bound = one.metric().get("le").map(|le| match le.as_str() {
            "+Inf" => Ok(f64::INFINITY),
            finite => finite.parse::<f64>(),
        });
        match bound {
            Some(Ok(le)) => buckets.push((le, one.sample().value())),
            _ => {
                return Err(Reading::Error(format!(
                    "query {query:?} returned a series without a numeric le label: aggregate with `sum by (le)`"
                )));
            }
        }
    }
    Histogram::new(buckets).map_err(|error| Reading::Error(format!("query {query:?}: {error}")))
}
