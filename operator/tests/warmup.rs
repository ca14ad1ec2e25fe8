//! The warm-up gate against the strict vLLM simulator: a vLLM counts as warm only when it lists
//! the expected model and answers a real layout request, with the API key when one is set.

use std::time::Duration;

use mineru_operator::warmup::{WarmupError, probe};
use mineru_worker::simulator::{SimConfig, start_local};

const MODEL: &str = "opendatalab/MinerU2.5-2509-1.2B";
const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_serving_vllm_is_warm_and_the_probe_speaks_the_protocol_exactly() {
    let sim = start_local(SimConfig::new(MODEL)).await.unwrap();
    probe(&sim.url(), MODEL, None, TIMEOUT).await.unwrap();
    assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());
}

#[tokio::test]
async fn another_model_is_not_warm() {
    let sim = start_local(SimConfig::new("some/other-model"))
        .await
        .unwrap();
    let error = probe(&sim.url(), MODEL, None, TIMEOUT).await.unwrap_err();
    assert!(matches!(error, WarmupError::NotServing { .. }), "{error}");
}

#[tokio::test]
async fn a_restarting_vllm_is_not_warm_until_it_is_back() {
    let sim = start_local(SimConfig::new(MODEL)).await.unwrap();
    sim.restart(Duration::from_secs(2));
    assert!(probe(&sim.url(), MODEL, None, TIMEOUT).await.is_err());
    tokio::time::sleep(Duration::from_secs(3)).await;
    probe(&sim.url(), MODEL, None, TIMEOUT).await.unwrap();
}

#[tokio::test]
async fn the_api_key_is_required_and_used() {
    let mut config = SimConfig::new(MODEL);
    config.api_key = Some("secret".into());
    let sim = start_local(config).await.unwrap();
    assert!(probe(&sim.url(), MODEL, None, TIMEOUT).await.is_err());
    probe(&sim.url(), MODEL, Some("secret".into()), TIMEOUT)
        .await
        .unwrap();
}

#[tokio::test]
async fn nothing_listening_is_not_warm() {
    let error = probe("http://127.0.0.1:9", MODEL, None, TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(error, WarmupError::NotServing { .. }), "{error}");
}
