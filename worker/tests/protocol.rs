//! The wire protocol: request shapes, answer interpretation, and the client's traffic against
//! the strict simulator.

use mineru_protocol::chat::{AnswerError, ChatRequest, Step, parse_answer, request_body};
use mineru_protocol::client::{CallError, ClientConfig, ClientError, VlmClient};
use mineru_worker::simulator::{self, SimConfig};
use serde_json::{Value, json};

const MODEL: &str = "mineru2.5";

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb([250, 250, 250]));
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

fn image_for(step: Step) -> Vec<u8> {
    match step {
        Step::Layout => png(1036, 1036),
        _ => png(300, 60),
    }
}

#[test]
fn request_body_is_exactly_minerus() {
    let body =
        serde_json::to_value(ChatRequest::new(MODEL, Step::Table, b"png")).expect("serialise");
    let expected = json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,cG5n"}},
                {"type": "text", "text": "\nTable Recognition:"}]}],
        "temperature": 0.0, "top_p": 0.01, "top_k": 1,
        "presence_penalty": 1.0, "frequency_penalty": 0.005, "repetition_penalty": 1.0,
        "vllm_xargs": {"no_repeat_ngram_size": 100, "debug": false},
        "skip_special_tokens": false
    });
    assert_eq!(body, expected);
}

#[test]
fn fast_request_body_equals_the_serialised_request() {
    let image = png(37, 91);
    for model in ["mineru2.5", "odd \"name\" \u{0}png\u{0}"] {
        for step in Step::ALL {
            let fast = request_body(model, step, &image).expect("body");
            let plain =
                serde_json::to_vec(&ChatRequest::new(model, step, &image)).expect("serialise");
            assert_eq!(fast, plain, "{model:?} {step:?}");
        }
    }
}

#[test]
fn prompts_and_penalties_follow_the_protocol_table() {
    let cases = [
        (Step::Layout, "\nLayout Detection:", 0.0, 0.0),
        (Step::Table, "\nTable Recognition:", 1.0, 0.005),
        (Step::Equation, "\nFormula Recognition:", 1.0, 0.05),
        (Step::ImageAnalysis, "\nImage Analysis:", 1.0, 0.05),
        (Step::Text, "\nText Recognition:", 1.0, 0.05),
    ];
    for (step, prompt, presence, frequency) in cases {
        let s = step.sampling();
        assert_eq!(step.prompt(), prompt);
        assert_eq!(
            (s.presence_penalty, s.frequency_penalty),
            (presence, frequency),
            "{step:?}"
        );
        assert_eq!(
            (s.temperature, s.top_p, s.top_k, s.repetition_penalty),
            (0.0, 0.01, 1, 1.0)
        );
        assert_eq!(s.no_repeat_ngram_size, 100);
    }
}

#[test]
fn answers_are_interpreted_like_mineru() {
    let answer = |finish: Value, content: Value| {
        json!({"object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]})
        .to_string()
    };
    /// (case, body, expected content and truncation)
    type Case = (
        &'static str,
        String,
        Result<(&'static str, bool), AnswerError>,
    );
    let cases: Vec<Case> = vec![
        (
            "stop",
            answer(json!("stop"), json!("hello")),
            Ok(("hello", false)),
        ),
        (
            "length is accepted as truncated",
            answer(json!("length"), json!("hel")),
            Ok(("hel", true)),
        ),
        (
            "trailing im_end is stripped",
            answer(json!("stop"), json!("hi<|im_end|>")),
            Ok(("hi", false)),
        ),
        (
            "null content is empty",
            answer(json!("stop"), Value::Null),
            Ok(("", false)),
        ),
        (
            "other finish reasons fail",
            answer(json!("abort"), json!("x")),
            Err(AnswerError::UnexpectedFinishReason("abort".into())),
        ),
        (
            "missing finish reason fails",
            answer(Value::Null, json!("x")),
            Err(AnswerError::NoFinishReason),
        ),
        (
            "no choices",
            json!({"choices": []}).to_string(),
            Err(AnswerError::NoChoices),
        ),
        (
            "error objects are server errors",
            json!({"object": "error", "message": "boom", "code": 400}).to_string(),
            Err(AnswerError::Server("boom".into())),
        ),
    ];
    for (name, body, expected) in cases {
        let got = parse_answer(body.as_bytes()).map(|a| (a.content, a.truncated));
        let expected = expected.map(|(c, t)| (c.to_owned(), t));
        assert_eq!(got, expected, "case: {name}");
    }
    assert!(matches!(
        parse_answer(b"<html>"),
        Err(AnswerError::NotJson(_))
    ));
}

#[tokio::test]
async fn client_traffic_has_zero_deviations() {
    let sim = simulator::start_local(SimConfig::new(MODEL))
        .await
        .expect("start simulator");
    let client = VlmClient::connect(ClientConfig::new(sim.url()))
        .await
        .expect("connect");
    assert_eq!(client.model(), MODEL);
    for step in Step::ALL {
        client
            .complete(step, &image_for(step))
            .await
            .expect("answer");
    }
    assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());
    assert_eq!(sim.stats().answered.values().sum::<u64>(), 5);
}

#[tokio::test]
async fn configured_model_must_be_served() {
    let sim = simulator::start_local(SimConfig::new(MODEL))
        .await
        .expect("start simulator");
    let config = ClientConfig {
        model: Some("other".into()),
        ..ClientConfig::new(sim.url())
    };
    let err = VlmClient::connect(config).await.expect_err("unknown model");
    assert!(matches!(err, ClientError::ModelNotServed { .. }), "{err}");
    let config = ClientConfig {
        model: Some(MODEL.into()),
        ..ClientConfig::new(format!("{}/v1/", sim.url()))
    };
    VlmClient::connect(config)
        .await
        .expect("served model, URL with /v1");
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let sim = simulator::start_local(SimConfig {
        api_key: Some("s3cret".into()),
        ..SimConfig::new(MODEL)
    })
    .await
    .expect("start simulator");
    let err = VlmClient::connect(ClientConfig::new(sim.url()))
        .await
        .expect_err("no key");
    match &err {
        ClientError::Models {
            source: CallError::Status { status, .. },
            ..
        } => assert_eq!(status.as_u16(), 401),
        other => panic!("expected a 401, got {other}"),
    }
    assert!(!err.is_retryable());
    let wrong = ClientConfig {
        api_key: Some("wrong".into()),
        ..ClientConfig::new(sim.url())
    };
    assert!(VlmClient::connect(wrong).await.is_err());
    let deviations_before = sim.deviations();

    let client = VlmClient::connect(ClientConfig {
        api_key: Some("s3cret".into()),
        ..ClientConfig::new(sim.url())
    })
    .await
    .expect("connect with key");
    client
        .complete(Step::Text, &png(100, 40))
        .await
        .expect("answer");
    assert_eq!(sim.deviations(), deviations_before);
}

/// A server whose model list is `size` bytes, sent with or without a `Content-Length`.
async fn oversized_server(size: usize, announced: bool) -> String {
    use axum::body::Body;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/models",
        axum::routing::get(move || async move {
            let body = vec![b' '; size];
            if announced {
                Body::from(body)
            } else {
                let chunks = body
                    .chunks(64 << 10)
                    .map(|c| Ok::<_, std::io::Error>(c.to_vec()));
                Body::from_stream(futures::stream::iter(chunks.collect::<Vec<_>>()))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_refused_not_held() {
    use mineru_protocol::client::MAX_RESPONSE_BYTES;
    for announced in [true, false] {
        let url = oversized_server(MAX_RESPONSE_BYTES + 1, announced).await;
        let err = VlmClient::connect(ClientConfig::new(url))
            .await
            .expect_err("too large");
        assert!(
            matches!(
                &err,
                ClientError::Models {
                    source: CallError::TooLarge { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_retryable(), "the same answer would come again");
    }
}

/// Holds every attempt off, as an open circuit breaker does, and counts the asks and calls.
#[derive(Debug, Default)]
struct AlwaysDown {
    asks: std::sync::atomic::AtomicU32,
    calls: std::sync::atomic::AtomicU32,
}

impl mineru_protocol::client::CallObserver for AlwaysDown {
    fn attempt(&self, _: Result<(), &CallError>, _: std::time::Duration, _: bool) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn hold_off(&self) -> Option<std::time::Duration> {
        self.asks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(std::time::Duration::from_millis(20))
    }
}

#[tokio::test]
async fn a_held_off_client_waits_its_retry_budget_then_calls_once() {
    let sim = simulator::start_local(SimConfig::new(MODEL))
        .await
        .expect("start simulator");
    let observer = std::sync::Arc::new(AlwaysDown::default());
    // Backoff steps of 10 and 20 ms: a budget of 30 ms holds one 20 ms wait and 10 ms of the
    // next, then the call goes out.
    let config = ClientConfig {
        max_retries: 2,
        backoff_base: std::time::Duration::from_millis(10),
        observer: Some(observer.clone()),
        ..ClientConfig::new(sim.url())
    };
    VlmClient::connect(config)
        .await
        .expect("the tier answers the one call");
    let count = |n: &std::sync::atomic::AtomicU32| n.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(count(&observer.asks), 2);
    assert_eq!(count(&observer.calls), 1, "the model list, asked once");
}

/// A valid body for `step`, as JSON to be bent by a test.
fn valid_body(step: Step, image: &[u8]) -> Value {
    serde_json::to_value(ChatRequest::new(MODEL, step, image)).expect("serialise")
}

#[tokio::test]
async fn strict_simulator_rejects_each_deviation() {
    let sim = simulator::start_local(SimConfig::new(MODEL))
        .await
        .expect("start simulator");
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", sim.url());
    let layout = png(1036, 1036);
    let block = png(200, 50);
    let set = |mut body: Value, pointer: &str, value: Value| {
        *body.pointer_mut(pointer).expect("pointer exists") = value;
        body
    };
    let remove = |mut body: Value, key: &str| {
        body.as_object_mut().expect("object").remove(key);
        body
    };
    let insert = |mut body: Value, key: &str, value: Value| {
        body.as_object_mut()
            .expect("object")
            .insert(key.into(), value);
        body
    };
    let image_url = "/messages/1/content/0/image_url/url";
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "wrong model",
            set(valid_body(Step::Text, &block), "/model", json!("gpt-4")),
            404,
            "unknown_model",
        ),
        (
            "missing image",
            set(
                valid_body(Step::Text, &block),
                "/messages/1/content",
                json!([{"type": "text", "text": "\nText Recognition:"}]),
            ),
            400,
            "missing_image",
        ),
        (
            "JPEG data URL",
            set(
                valid_body(Step::Text, &block),
                image_url,
                json!("data:image/jpeg;base64,/9j/4AAQ"),
            ),
            400,
            "image_not_png",
        ),
        (
            "undecodable PNG",
            set(
                valid_body(Step::Text, &block),
                image_url,
                json!("data:image/png;base64,iVBORw0KGgoAAAA="),
            ),
            400,
            "undecodable_image",
        ),
        (
            "image URL not a string",
            set(valid_body(Step::Text, &block), image_url, json!(42)),
            400,
            "messages",
        ),
        (
            "two images",
            {
                let mut body = valid_body(Step::Text, &block);
                let parts = body
                    .pointer_mut("/messages/1/content")
                    .and_then(Value::as_array_mut)
                    .expect("parts");
                parts.insert(0, parts[0].clone());
                body
            },
            400,
            "messages",
        ),
        (
            "base64 garbage",
            set(
                valid_body(Step::Text, &block),
                image_url,
                json!("data:image/png;base64,!!!"),
            ),
            400,
            "undecodable_image",
        ),
        (
            "layout image not 1036x1036",
            valid_body(Step::Layout, &png(1000, 1036)),
            400,
            "layout_image_size",
        ),
        (
            "block image under 28 px",
            valid_body(Step::Text, &png(200, 20)),
            400,
            "block_image_size",
        ),
        (
            "block image aspect over 50",
            valid_body(Step::Text, &png(2600, 50)),
            400,
            "block_image_size",
        ),
        (
            "unknown prompt",
            set(
                valid_body(Step::Text, &block),
                "/messages/1/content/1/text",
                json!("Describe:"),
            ),
            400,
            "unknown_prompt",
        ),
        (
            "skip_special_tokens true",
            set(
                valid_body(Step::Layout, &layout),
                "/skip_special_tokens",
                json!(true),
            ),
            400,
            "skip_special_tokens",
        ),
        (
            "skip_special_tokens missing",
            remove(valid_body(Step::Layout, &layout), "skip_special_tokens"),
            400,
            "skip_special_tokens",
        ),
        (
            "temperature",
            set(valid_body(Step::Text, &block), "/temperature", json!(0.7)),
            400,
            "sampling",
        ),
        (
            "layout penalties",
            set(
                valid_body(Step::Layout, &layout),
                "/presence_penalty",
                json!(1.0),
            ),
            400,
            "sampling",
        ),
        (
            "no_repeat_ngram_size",
            set(
                valid_body(Step::Table, &block),
                "/vllm_xargs/no_repeat_ngram_size",
                json!(50),
            ),
            400,
            "sampling",
        ),
        (
            "missing vllm_xargs",
            remove(valid_body(Step::Table, &block), "vllm_xargs"),
            400,
            "sampling",
        ),
        (
            "wrong system prompt",
            set(
                valid_body(Step::Text, &block),
                "/messages/0/content",
                json!("Be brief."),
            ),
            400,
            "messages",
        ),
        (
            "text before image",
            {
                let mut body = valid_body(Step::Text, &block);
                let parts = body
                    .pointer_mut("/messages/1/content")
                    .and_then(Value::as_array_mut)
                    .expect("parts");
                parts.reverse();
                body
            },
            400,
            "messages",
        ),
        (
            "max_tokens beyond max_model_len",
            insert(valid_body(Step::Text, &block), "max_tokens", json!(100_000)),
            400,
            "max_tokens",
        ),
        (
            "unexpected field",
            insert(valid_body(Step::Text, &block), "stream", json!(true)),
            400,
            "unexpected_field",
        ),
    ];
    let total = cases.len() as u64;
    for (name, body, status, kind) in cases {
        let before = sim.deviations();
        let response = http.post(&url).json(&body).send().await.expect("send");
        assert_eq!(response.status().as_u16(), status, "case: {name}");
        let error: Value = response.json().await.expect("error body");
        assert_eq!(error["object"], "error", "case: {name}");
        assert_eq!(sim.deviations(), before + 1, "case: {name}");
        let metrics = http
            .get(format!("{}/metrics", sim.url()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        assert!(
            metrics.contains(&format!("kind=\"{kind}\"")),
            "case {name}: no deviation of kind {kind} in metrics"
        );
    }
    assert_eq!(sim.deviations(), total);
    assert_eq!(sim.deviation_log().len() as u64, total);

    let before = sim.deviations();
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 400, "truncated JSON");
    assert_eq!(sim.deviations(), before + 1);

    // A request exactly as the protocol says is still accepted.
    let ok = http
        .post(&url)
        .json(&valid_body(Step::Layout, &layout))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status().as_u16(), 200);
}

#[test]
fn every_deviation_kind_is_listed_for_the_metrics() {
    use mineru_worker::simulator::Deviation;
    let all = [
        Deviation::Unauthorized,
        Deviation::MalformedBody(String::new()),
        Deviation::UnknownModel(String::new()),
        Deviation::Messages(String::new()),
        Deviation::MissingImage,
        Deviation::ImageNotPng(String::new()),
        Deviation::UndecodableImage(String::new()),
        Deviation::LayoutImageSize {
            width: 1,
            height: 1,
        },
        Deviation::BlockImageSize {
            width: 1,
            height: 1,
        },
        Deviation::UnknownPrompt(String::new()),
        Deviation::SkipSpecialTokens(String::new()),
        Deviation::Sampling {
            field: String::new(),
            actual: String::new(),
            expected: String::new(),
        },
        Deviation::MaxTokens {
            field: String::new(),
            value: String::new(),
            max_model_len: 1,
        },
        Deviation::UnexpectedField(String::new()),
    ];
    let kinds: Vec<&str> = all.iter().map(Deviation::kind).collect();
    assert_eq!(kinds, Deviation::KINDS);
}
