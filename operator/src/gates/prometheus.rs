//! Prometheus at the edge: runs a check's instant queries and reports each answer as a
//! [`Reading`]. Every failure becomes `Reading::Error` with the reason, never a number, so that
//! an unreachable or misconfigured Prometheus can only hold a rollout, never promote it.
//!
//! The HTTP API is spoken here rather than through `prometheus_http_query`'s client (whose
//! answer types are reused) because a CR names the server: its answer is read only up to
//! [`MAX_RESPONSE_BYTES`], and redirects are not followed.

use std::collections::BTreeMap;
use std::time::Duration;

use mineru_crds::PrometheusSpec;
use prometheus_http_query::response::{Data, InstantVector, PromqlResult};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::{Source, reading::Reading};
use crate::{
    evidence::Histogram,
    outbound::{self, MAX_RESPONSE_BYTES},
};

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
    http: reqwest::Client,
    /// `<address>/api/v1/query`.
    endpoint: reqwest::Url,
    timeout: Duration,
}

/// The envelope of every Prometheus HTTP API answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<PromqlResult>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Longest piece of an unexpected answer repeated in a reading's error.
const MAX_QUOTED: usize = 200;

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
        let http = outbound::http_client(
            reqwest::Client::builder()
                .default_headers(headers)
                // The HTTP deadline a little beyond Prometheus' own, so its timeout error wins.
                .timeout(timeout + Duration::from_secs(1))
                .connect_timeout(timeout.min(Duration::from_secs(5))),
        )
        .map_err(|error| address_error(error.to_string()))?;
        let endpoint = reqwest::Url::parse(&format!(
            "{}/api/v1/query",
            spec.address.trim_end_matches('/')
        ))
        .map_err(|error| address_error(error.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(address_error("not an http:// or https:// URL".to_owned()));
        }
        Ok(PrometheusSource {
            http,
            endpoint,
            timeout,
        })
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
        let failed = |reason: String| Reading::Error(format!("query {query:?} failed: {reason}"));
        let form = [
            ("query", query.to_owned()),
            ("time", at.to_string()),
            ("timeout", format!("{}ms", self.timeout.as_millis())),
        ];
        let response = self
            .http
            .post(self.endpoint.clone())
            .form(&form)
            .send()
            .await
            // reqwest names the URL in its errors; the address is in the spec already.
            .map_err(|error| failed(error.without_url().to_string()))?;
        let status = response.status();
        let body = outbound::read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(failed)?;
        match serde_json::from_slice::<Answer>(&body) {
            Ok(Answer {
                data: Some(result), ..
            }) if status.is_success() => Ok(result.into_inner().0),
            Ok(answer) if answer.status == "error" => Err(failed(format!(
                "{}: {}",
                answer.error_type.unwrap_or_default(),
                quoted(answer.error.as_deref().unwrap_or_default())
            ))),
            _ => Err(failed(format!(
                "HTTP {status}, not a Prometheus query answer: {}",
                quoted(&String::from_utf8_lossy(&body))
            ))),
        }
    }
}

/// At most [`MAX_QUOTED`] characters of `text`, marked when cut.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on 127.0.0.1 answering every query with `status`, `headers` and `body`; its
    /// base URL.
    async fn server(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: Vec<u8>,
    ) -> String {
        serve(status, headers, body, false).await
    }

    /// The same; `chunked` streams the body in 64 KiB chunks, without a Content-Length.
    async fn serve(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: Vec<u8>,
        chunked: bool,
    ) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::post(move || {
                let body = body.clone();
                async move {
                    let body = if chunked {
                        let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = body
                            .chunks(64 << 10)
                            .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
                            .collect();
                        axum::body::Body::from_stream(futures::stream::iter(chunks))
                    } else {
                        axum::body::Body::from(body)
                    };
                    let mut response = axum::response::Response::new(body);
                    *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                    for (name, value) in headers {
                        response.headers_mut().insert(*name, value.parse().unwrap());
                    }
                    response
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn source(address: &str) -> PrometheusSource {
        let spec: PrometheusSpec =
            serde_json::from_value(serde_json::json!({"address": address})).unwrap();
        PrometheusSource::new(&spec, None).unwrap()
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_cap_is_refused_unread() {
        let huge = format!(
            r#"{{"status":"success","data":{{"resultType":"scalar","result":[0,"{}"]}}}}"#,
            "1".repeat(MAX_RESPONSE_BYTES)
        );
        for chunked in [false, true] {
            let address = serve(200, &[], huge.clone().into_bytes(), chunked).await;
            let reading = source(&address).read("vector(1)", 0).await;
            assert!(
                matches!(&reading, Reading::Error(m) if m.contains("larger than")),
                "chunked {chunked}: {reading:?}"
            );
        }
        let small = br#"{"status":"success","data":{"resultType":"scalar","result":[0,"0.5"]}}"#;
        let reading = source(&server(200, &[], small.to_vec()).await)
            .read("vector(1)", 0)
            .await;
        assert_eq!(reading, Reading::Value(0.5));
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let redirect = server(307, &[("location", "http://169.254.169.254/")], Vec::new()).await;
        let reading = source(&redirect).read("vector(1)", 0).await;
        assert!(
            matches!(&reading, Reading::Error(m) if m.contains("HTTP 307")),
            "{reading:?}"
        );
    }

    #[tokio::test]
    async fn an_error_body_is_quoted_short() {
        let body = format!("<html>{}</html>", "x".repeat(10_000));
        let reading = source(&server(502, &[], body.into_bytes()).await)
            .read("vector(1)", 0)
            .await;
        let Reading::Error(message) = reading else {
            panic!("{reading:?}")
        };
        assert!(message.contains("HTTP 502"), "{message}");
        assert!(
            message.len() < 2 * MAX_QUOTED + 200,
            "{} bytes",
            message.len()
        );
    }
}
