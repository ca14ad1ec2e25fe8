//! Probe traffic against real workers: golden documents reach the canary and the baseline at
//! the planned rate, marked so the workers count them apart from clients' documents, and stop
//! when the rollout no longer asks for them.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use mineru_e2e::{controlplane::work_dir, repo_path, stack::Worker};
use mineru_operator::{
    metrics::Metrics,
    probes::{self, ProbePlan, ProbeResult, ProbeTraffic},
    quality,
};

/// The sum of `mineru_worker_requests_total` samples of `worker` whose labels include `labels`.
async fn requests(http: &reqwest::Client, worker: &Worker, labels: &[&str]) -> f64 {
    let text = http
        .get(format!("{}/metrics", worker.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("mineru_worker_requests_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn probes_reach_both_sides_marked_as_probes_and_stop_when_asked() {
    let logs = work_dir("probe-traffic");
    std::fs::create_dir_all(&logs).unwrap();
    let canary = Worker::start_text("w-canary", &logs).unwrap();
    let baseline = Worker::start_text("w-baseline", &logs).unwrap();
    let pdf = std::fs::read(repo_path("examples/documents/sample.pdf")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let metrics = Arc::new(Metrics::default());
    let traffic = ProbeTraffic::counted_in(metrics.clone());
    let plan = ProbePlan {
        canary_revision: "w-canary".into(),
        canary_url: canary.url(),
        baseline: Some(quality::Endpoint::worker(baseline.url())),
        // One document a side every 100 ms.
        documents_per_hour: 36_000.0,
        concurrency: 1,
        timeout: Duration::from_secs(30),
    };
    let golden = BTreeMap::from([
        ("a.pdf".to_owned(), pdf.clone()),
        ("b.pdf".to_owned(), pdf.clone()),
    ]);
    runtime.block_on(async {
        traffic.ensure("parsing/docs", plan.clone(), &http, async move { Ok(golden) });
        let probed = |worker| requests(&http, worker, &[r#"source="probe""#, r#"outcome="success""#]);
        for _ in 0..300 {
            if probed(&canary).await >= 3.0 && probed(&baseline).await >= 3.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(probed(&canary).await >= 3.0, "the canary got its probes");
        assert!(probed(&baseline).await >= 3.0, "the baseline got the same");
        assert_eq!(
            requests(&http, &canary, &[r#"source="traffic""#]).await,
            0.0,
            "probes are not counted as clients' documents"
        );
        let counted = metrics.render();
        assert!(
            counted.contains(
                r#"mineru_operator_probe_documents_total{object="parsing/docs",side="canary",result="answered"}"#
            ),
            "{counted}"
        );

        traffic.stop("parsing/docs");
        // What was in flight finishes; nothing is sent after that.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stopped = probed(&canary).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(probed(&canary).await, stopped, "no probe after stop");

        // A probe is never retried: a worker that cannot take it is a refusal.
        assert_eq!(
            probes::send(&http, &quality::Endpoint::worker("http://127.0.0.1:9".into()), "a.pdf", &pdf, Duration::from_secs(5)).await,
            ProbeResult::Refused
        );
    });
}
