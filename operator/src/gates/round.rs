//! One round of readings against Prometheus: render each requested check's queries for its
//! revision and window, and read them, concurrently, at the requested instant.

use futures::future::join_all;

use super::{
    Source,
    prometheus::PrometheusSource,
    reading::{Measured, Reading},
    template::{self, Context},
};
use crate::rollout::{ReadingRequest, ReadingResult};

/// The object whose checks run, for `{{namespace}}`, `{{name}}` and `{{interval}}`.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub interval: std::time::Duration,
}

/// Reads every request; one that cannot be rendered reads as an error.
pub async fn read(
    requests: &[ReadingRequest],
    subject: Subject<'_>,
    source: &PrometheusSource,
) -> Vec<ReadingResult> {
    join_all(
        requests
            .iter()
            .map(|request| read_one(request, subject, source)),
    )
    .await
}

fn context<'a>(request: &'a ReadingRequest, subject: Subject<'a>) -> Context<'a> {
    Context {
        namespace: subject.namespace,
        name: subject.name,
        revision: &request.revision,
        canary_revision: &request.canary_revision,
        stable_revision: &request.stable_revision,
        tier: request.tier,
        interval: subject.interval,
        window: request.window,
    }
}

async fn read_one(
    request: &ReadingRequest,
    subject: Subject<'_>,
    source: &PrometheusSource,
) -> ReadingResult {
    let context = context(request, subject);
    let at = request.at.as_second();
    let render = |template: &str| template::render(template, &context);
    let value = |template: &str| {
        let rendered = render(template);
        async move {
            match rendered {
                Ok(query) => (Some(query.clone()), source.read(&query, at).await),
                Err(error) => (None, Reading::Error(error.to_string())),
            }
        }
    };
    let (query, measured) = match &request.source {
        Source::Value { query, samples } => {
            let samples_query = samples.as_ref().map(|s| s.query.as_str());
            let ((query, value), samples) = futures::join!(value(query), async {
                match samples_query {
                    Some(template) => Some(value(template).await.1),
                    None => None,
                }
            });
            (query, Measured::Value { value, samples })
        }
        Source::Proportion { bad, total } => {
            let ((query, bad), (_, total)) = futures::join!(value(bad), value(total));
            (query, Measured::Proportion { bad, total })
        }
        Source::Quantile { buckets, .. } => match render(buckets) {
            Ok(query) => {
                let buckets = source.read_buckets(&query, at).await;
                (Some(query), Measured::Quantile { buckets })
            }
            Err(error) => (None, Measured::failed(&request.source, &error.to_string())),
        },
        Source::Distribution { counts, units, .. } => match render(counts) {
            Ok(query) => {
                let (counts, (_, units)) =
                    futures::join!(source.read_counts(&query, at), value(units));
                (Some(query), Measured::Distribution { counts, units })
            }
            Err(error) => (None, Measured::failed(&request.source, &error.to_string())),
        },
        Source::CanaryVllmRestarts | Source::Quality => (
            None,
            Measured::failed(&request.source, "not a Prometheus check"),
        ),
    };
    ReadingResult {
        check: request.check.clone(),
        kind: request.kind,
        role: request.role,
        revision: request.revision.clone(),
        query,
        measured,
    }
}
