//! `mineru-worker serve` as MinerU clients see it: the `/file_parse` contract, health, readiness,
//! limits, refusals, metrics and the committed OpenAPI document.

mod common;
mod serve_common;

use std::time::Duration;

use base64::Engine as _;
use common::PageSpec;
use image::DynamicImage;
use mineru_protocol::model::{Angle, BBox, Block, BlockType};
use mineru_worker::simulator::{Faults, LayoutAnswer, Scenario, SimConfig};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serve_common::{
    MODEL, REVISION, Worker, form, huge_page, mineru_form, pdf, retry_after, sim, sim_config,
};

#[tokio::test]
async fn a_mineru_client_request_gets_a_mineru_shaped_answer() {
    let sim = sim(sim_config()).await;
    let worker = Worker::vlm(&sim, &["--model-name", MODEL]).await;
    let response = worker
        .http
        .post(worker.url("/file_parse"))
        .header("x-request-id", "req-42")
        .multipart(mineru_form(
            "reports/q3.pdf",
            pdf(&["First page", "Second page"]),
            "vlm-http-client",
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body["backend"], "vlm-http-client",
        "echoed as the caller named it"
    );
    assert!(body["version"].is_string());
    let result = &body["results"]["q3"];
    assert!(
        result["md_content"]
            .as_str()
            .is_some_and(|md| !md.is_empty()),
        "{body}"
    );
    // mineru-api returns the content list as the text of the file it wrote.
    let list: serde_json::Value =
        serde_json::from_str(result["content_list"].as_str().expect("a JSON string"))
            .expect("content list JSON");
    let items = list.as_array().expect("a list");
    assert!(items.iter().any(|i| i["page_idx"] == 1), "{list}");
    // Images, middle JSON and model output not asked for: none, and no image links.
    let fields: Vec<&String> = result.as_object().expect("result").keys().collect();
    assert_eq!(fields, ["content_list", "md_content"]);
    assert!(
        !result["md_content"]
            .as_str()
            .unwrap_or_default()
            .contains("![")
    );
    assert!(
        items
            .iter()
            .all(|i| i.get("img_path").is_none_or(|p| p == "")),
        "{list}"
    );
    assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());
}

/// The `images/<name>` files a result's Markdown and content list link, and its images as
/// `mineru-api` returns them: each a JPEG data URI, decoded.
fn linked_images(
    result: &serde_json::Value,
) -> (Vec<String>, Vec<String>, Vec<(String, DynamicImage)>) {
    let md = result["md_content"].as_str().expect("markdown");
    let in_markdown = md
        .split("![](images/")
        .skip(1)
        .map(|rest| rest.split(')').next().expect("closed link").to_owned())
        .collect();
    let list: serde_json::Value =
        serde_json::from_str(result["content_list"].as_str().expect("a JSON string"))
            .expect("content list JSON");
    let in_list = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|item| item["img_path"].as_str().filter(|p| !p.is_empty()))
        .map(|path| {
            path.strip_prefix("images/")
                .expect("under images/")
                .to_owned()
        })
        .collect();
    let images = result["images"]
        .as_object()
        .expect("images")
        .iter()
        .map(|(name, uri)| {
            let data = uri
                .as_str()
                .and_then(|u| u.strip_prefix("data:image/jpeg;base64,"))
                .unwrap_or_else(|| panic!("{name}: not a JPEG data URI"));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64");
            let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
                .expect("a JPEG");
            (name.clone(), image)
        })
        .collect();
    (in_markdown, in_list, images)
}

/// A vlm worker whose simulator answers every page with these upright blocks.
async fn vlm_worker_answering(
    layout: &[(BlockType, [u32; 4])],
) -> (mineru_worker::simulator::SimHandle, Worker) {
    let blocks = layout
        .iter()
        .map(|&(kind, [x0, y0, x1, y1])| Block {
            angle: Some(Angle::Up),
            ..Block::new(kind, BBox::new(x0, y0, x1, y1).expect("valid box"))
        })
        .collect();
    let sim = sim(SimConfig {
        scenario: Scenario {
            layout: LayoutAnswer::Blocks(blocks),
            ..Scenario::default()
        },
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(&sim, &[]).await;
    (sim, worker)
}

#[tokio::test]
async fn vlm_images_middle_json_and_model_output_come_back_as_mineru_api_returns_them() {
    let (sim, worker) = vlm_worker_answering(&[
        (BlockType::Header, [100, 20, 900, 40]),
        (BlockType::Title, [100, 60, 900, 100]),
        (BlockType::Image, [100, 270, 600, 520]),
        (BlockType::ImageCaption, [100, 530, 600, 560]),
        (BlockType::Table, [100, 580, 900, 760]),
        (BlockType::Equation, [200, 780, 800, 840]),
    ])
    .await;
    let form = form("paper.pdf", pdf(&["First page", "Second page"]), "vlm")
        .text("return_content_list", "true")
        .text("return_images", "true")
        .text("return_middle_json", "true")
        .text("return_model_output", "true");
    let response = worker.parse(form).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("json");
    let result = &body["results"]["paper"];

    let (in_markdown, in_list, images) = linked_images(result);
    let names: Vec<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
    // The image and the table of each page, the table linked from the content list only (its
    // HTML is what the Markdown shows).
    assert_eq!(names, ["p1_b1.jpg", "p1_b3.jpg", "p2_b1.jpg", "p2_b3.jpg"]);
    assert_eq!(in_markdown, ["p1_b1.jpg", "p2_b1.jpg"]);
    for name in in_markdown.iter().chain(&in_list) {
        assert!(
            names.contains(&name.as_str()),
            "{name} is linked but not returned"
        );
    }
    // Every crop returned is linked (a table with HTML is linked from the content list only).
    for name in &names {
        assert!(
            in_list.iter().any(|n| n == name),
            "{name} is returned but not linked"
        );
    }
    assert!(images.iter().all(|(_, i)| i.width() > 1 && i.height() > 1));

    let middle: serde_json::Value =
        serde_json::from_str(result["middle_json"].as_str().expect("a JSON string"))
            .expect("middle JSON");
    assert_eq!(middle["schema"], "docvortex.middle");
    assert_eq!(middle["schema_version"], "2.0");
    assert_eq!(
        middle["pages"].as_array().map(Vec::len),
        Some(2),
        "{middle}"
    );
    assert_eq!(middle["metadata"]["document"]["page_count"], 2);

    // MinerU's `_model.json`: per page, the post-processed blocks as `ContentBlock`s, page
    // furniture in place, bboxes as page fractions.
    let model: serde_json::Value =
        serde_json::from_str(result["model_output"].as_str().expect("a JSON string"))
            .expect("model output JSON");
    let pages = model.as_array().expect("pages");
    assert_eq!(pages.len(), 2);
    for blocks in pages {
        let blocks = blocks.as_array().expect("blocks");
        let types: Vec<&str> = blocks.iter().filter_map(|b| b["type"].as_str()).collect();
        assert!(
            types.contains(&"image") && types.contains(&"header"),
            "{types:?}"
        );
        for block in blocks {
            let bbox = block["bbox"].as_array().expect("bbox");
            assert_eq!(bbox.len(), 4);
            assert!(
                bbox.iter()
                    .all(|c| (0.0..=1.0).contains(&c.as_f64().expect("number")))
            );
            assert!(
                block.get("angle").is_some() && block.get("content").is_some(),
                "{block}"
            );
            assert_eq!(
                block.get("merge_prev").is_some(),
                block["type"] == "text",
                "{block}"
            );
        }
    }
    assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());
}

/// MinerU's `image_analysis` form field: on by default (the analysis follows the image as a
/// `<details>` element), off for a request that says `false` (no image call is made).
#[tokio::test]
async fn image_analysis_runs_unless_the_request_turns_it_off() {
    let (sim, worker) = vlm_worker_answering(&[(BlockType::Image, [100, 100, 900, 600])]).await;
    let markdown = |form: reqwest::multipart::Form| async {
        let response = worker.parse(form).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = response.json().await.expect("json");
        body["results"]["paper"]["md_content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let analysed = markdown(form("paper.pdf", pdf(&["One page"]), "vlm")).await;
    assert!(
        analysed.contains("<details>\n<summary>natural_image</summary>\n\nA simulated figure."),
        "{analysed}"
    );
    assert_eq!(sim.stats().answered.get("image"), Some(&1));

    let plain =
        markdown(form("paper.pdf", pdf(&["One page"]), "vlm").text("image_analysis", "false"))
            .await;
    assert!(!plain.contains("<details>"), "{plain}");
    assert_eq!(
        sim.stats().answered.get("image"),
        Some(&1),
        "no image call when analysis is off"
    );
    assert_eq!(sim.deviations(), 0, "{:?}", sim.deviation_log());
}

#[tokio::test]
async fn text_backend_images_are_the_pages_own_images() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let above = "Above the figure, a sentence long enough for a text layer.";
    let below = "Below the figure, another sentence of the same kind.";
    let document = common::build_pdf(&[PageSpec::letter()
        .lines(72.0, 100.0, 12.0, 14.0, &[above])
        .image(72.0, 200.0, 300.0, 200.0)
        .lines(72.0, 500.0, 12.0, 14.0, &[below])]);
    let asked = form("figure.pdf", document.clone(), "text")
        .text("return_content_list", "true")
        .text("return_images", "true");
    let body: serde_json::Value = worker.parse(asked).await.json().await.expect("json");
    let result = &body["results"]["figure"];
    assert_eq!(
        result["md_content"],
        format!("{above}\n\n![](images/p1_b1.jpg)\n\n{below}\n")
    );
    let (in_markdown, in_list, images) = linked_images(result);
    assert_eq!(in_markdown, ["p1_b1.jpg"]);
    assert_eq!(in_list, ["p1_b1.jpg"]);
    let [(name, image)] = images.as_slice() else {
        panic!("one image: {result}")
    };
    assert_eq!(name, "p1_b1.jpg");
    // The embedded bitmap at its own resolution, not a crop of a render.
    assert_eq!((image.width(), image.height()), (64, 64));

    // Not asked for: the answer is as it always was.
    let plain: serde_json::Value = worker
        .parse(form("figure.pdf", document, "text"))
        .await
        .json()
        .await
        .expect("json");
    let result = plain["results"]["figure"].as_object().expect("result");
    assert_eq!(result.keys().collect::<Vec<_>>(), ["md_content"]);
    assert_eq!(result["md_content"], format!("{above}\n\n{below}\n"));
}

#[tokio::test]
async fn model_output_from_the_text_backend_is_refused_as_impossible() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let response = worker
        .parse(form("notes.pdf", pdf(&["Words"]), "text").text("return_model_output", "true"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.expect("json");
    let error = body["error"].as_str().expect("error");
    assert!(
        error.contains("return_model_output") && error.contains("backend text"),
        "{error}"
    );
}

#[tokio::test]
async fn the_text_backend_needs_no_vllm_tier() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let response = worker
        .parse(form("notes.pdf", pdf(&["Plain words on a page"]), "text"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["backend"], "text");
    assert_eq!(
        body["results"]["notes"]["md_content"],
        "Plain words on a page\n"
    );
    assert!(
        body["results"]["notes"].get("content_list").is_none(),
        "not asked for"
    );
    assert_eq!(worker.get("/ready").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn page_ids_count_from_zero_and_end_inclusive() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let form = form("p.pdf", pdf(&["zero", "one", "two", "three"]), "text")
        .text("start_page_id", "1")
        .text("end_page_id", "2");
    let body: serde_json::Value = worker.parse(form).await.json().await.expect("json");
    let md = body["results"]["p"]["md_content"]
        .as_str()
        .expect("markdown");
    assert!(md.contains("one") && md.contains("two"), "{md}");
    assert!(!md.contains("zero") && !md.contains("three"), "{md}");
}

#[tokio::test]
async fn several_files_answer_under_their_stems() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let form = Form::new()
        .part("files", Part::bytes(pdf(&["alpha"])).file_name("a.pdf"))
        .part("files", Part::bytes(pdf(&["beta"])).file_name("b.pdf"));
    let body: serde_json::Value = worker.parse(form).await.json().await.expect("json");
    assert_eq!(body["results"]["a"]["md_content"], "alpha\n");
    assert_eq!(body["results"]["b"]["md_content"], "beta\n");
}

#[tokio::test]
async fn health_is_liveness_and_ready_checks_the_served_model() {
    let sim = sim(sim_config()).await;
    let right = Worker::vlm(&sim, &["--model-name", MODEL]).await;
    assert_eq!(right.get("/health").await.status(), StatusCode::OK);
    assert_eq!(right.get("/ready").await.status(), StatusCode::OK);

    let wrong = Worker::vlm(&sim, &["--model-name", "another-model"]).await;
    assert_eq!(wrong.get("/health").await.status(), StatusCode::OK);
    let ready = wrong.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["ready"], false);
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("another-model"),
        "{body}"
    );

    // Once it has seen its tier, a worker stays in the Service when the tier goes away: its
    // clients get fast 503s with Retry-After instead of refused connections.
    sim.shutdown().await;
    assert_eq!(right.get("/ready").await.status(), StatusCode::OK);
    assert_eq!(right.get("/health").await.status(), StatusCode::OK);
    let response = right.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&response).is_some());
}

#[tokio::test]
async fn a_text_tier_worker_is_ready_without_its_vllm_tier() {
    let worker = Worker::start(&["--backend", "text", "--server-url", "http://127.0.0.1:9"]).await;
    assert_eq!(worker.get("/ready").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn pipeline_and_unknown_backends_are_refused_clearly() {
    let worker = Worker::start(&["--backend", "text"]).await;
    for (backend, says) in [("pipeline", "pipeline"), ("hybrid", "unknown backend")] {
        let response = worker.parse(form("a.pdf", pdf(&["x"]), backend)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(says),
            "{body}"
        );
    }
    let response = worker.parse(form("a.pdf", pdf(&["x"]), "vlm")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "no vLLM tier");
}

/// What the simulator says when it refuses a token.
const SIM_AUTH_ERROR: &str = "missing or wrong bearer token";

async fn sim_with_key(key: &str) -> mineru_worker::simulator::SimHandle {
    sim(SimConfig {
        api_key: Some(key.into()),
        ..sim_config()
    })
    .await
}

#[tokio::test]
async fn a_caller_supplied_server_url_is_refused_unless_its_origin_is_allowed() {
    let sim = sim(sim_config()).await;
    let other = sim_with_key("not-for-you").await;
    let request =
        |url: String| form("a.pdf", pdf(&["x"]), "vlm-http-client").text("server_url", url);
    let refused = |response: reqwest::Response| async move {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("--allow-server-url"),
            "{body}"
        );
    };
    let guarded = Worker::start(&["--backend", "text"]).await;
    refused(guarded.parse(request(sim.url())).await).await;
    assert_eq!(sim.stats().requests, 0, "nothing reached the server");

    let allowed = sim.url();
    let open = Worker::start(&["--backend", "text", "--allow-server-url", &allowed]).await;
    let response = open.parse(request(format!("{allowed}/v1"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["backend"], "vlm-http-client");
    assert!(sim.stats().requests > 0);
    refused(open.parse(request(other.url())).await).await;
    assert_eq!(other.stats().requests, 0, "another origin is not reached");
}

#[tokio::test]
async fn the_configured_key_is_never_sent_to_a_caller_supplied_server() {
    let tier = sim_with_key("tier-key").await;
    let caller = sim_with_key("tier-key").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("api-key");
    std::fs::write(&key, "tier-key\n").expect("write key");
    let caller_url = caller.url();
    let worker = Worker::vlm(
        &tier,
        &[
            "--api-key-file",
            key.to_str().unwrap(),
            "--allow-server-url",
            &caller_url,
        ],
    )
    .await;
    assert_eq!(
        worker
            .parse(form("a.pdf", pdf(&["x"]), "vlm"))
            .await
            .status(),
        StatusCode::OK,
        "the configured tier gets the key"
    );
    let response = worker
        .parse(form("a.pdf", pdf(&["x"]), "vlm").text("server_url", caller_url))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_GATEWAY,
        "sent without a key"
    );
    let body: serde_json::Value = response.json().await.expect("json");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("401"), "{body}");
    assert!(
        !error.contains(SIM_AUTH_ERROR),
        "the other host's words are not reflected: {body}"
    );
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413() {
    let worker = Worker::start(&["--backend", "text", "--max-file-bytes", "2Ki"]).await;
    let big = pdf(&["a"; 40]);
    assert!(big.len() > 2048);
    let response = worker.parse(form("big.pdf", big, "text")).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("2048 bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn too_many_pages_is_413_and_a_page_range_gets_under_the_limit() {
    let worker = Worker::start(&["--backend", "text", "--max-pages", "2"]).await;
    let doc = pdf(&["1", "2", "3"]);
    let response = worker.parse(form("long.pdf", doc.clone(), "text")).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = response.json().await.expect("json");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("3 pages selected") && error.contains("at most 2"),
        "{error}"
    );

    let ranged = form("long.pdf", doc, "text").text("end_page_id", "1");
    assert_eq!(worker.parse(ranged).await.status(), StatusCode::OK);
}

/// A page that costs pdfium more CPU than it may spend stops its render subprocess: that
/// document is refused 422 with the reason, the stop is counted, and the next document is
/// parsed by a fresh subprocess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_exhausts_pdfium_costs_its_document_and_nothing_else() {
    let sim = sim(sim_config()).await;
    let worker = Worker::vlm(
        &sim,
        &["--render-processes", "1", "--render-cpu-limit", "1s"],
    )
    .await;
    // Twenty thousand full-page fills: tens of seconds of rasterising.
    let content = b"0 0 612 792 re f\n".repeat(20_000);
    let expensive = serve_common::raw_pdf(serve_common::Content::Plain(&content), None);
    let response = worker.parse(form("costly.pdf", expensive, "vlm")).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.expect("json");
    let error = body["error"].as_str().expect("error");
    // Its CPU budget, or on a loaded machine the wall-clock deadline (three times that), ends it.
    assert!(
        error.contains("page 1: pdfium used more than its 1 s of CPU")
            || error.contains("page 1: pdfium ran past its deadline of 3 s"),
        "{error}"
    );
    let good = worker.parse(form("good.pdf", pdf(&["fine"]), "vlm")).await;
    assert_eq!(good.status(), StatusCode::OK);
    let metrics = worker.metrics().await;
    let stops: f64 = ["cpu", "killed"]
        .iter()
        .filter_map(|reason| {
            metrics.value(
                "mineru_worker_render_subprocess_stops_total",
                &[("reason", reason)],
            )
        })
        .sum();
    assert_eq!(stops, 1.0);
    assert_eq!(sim.deviations(), 0);
}

#[tokio::test]
async fn malformed_requests_and_hostile_pdfs_are_4xx_and_the_worker_stays_up() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let encrypted = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encrypted.pdf"),
    )
    .expect("fixture");
    let raw = |content_type: &'static str, body: &'static [u8]| {
        worker
            .http
            .post(worker.url("/file_parse"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        raw("application/json", b"{}").await.expect("answered"),
        raw("multipart/form-data; boundary=X", b"--X\r\ngarbage")
            .await
            .expect("answered"),
        worker.parse(Form::new().text("backend", "text")).await,
        worker
            .parse(form("a.pdf", b"hello, not a pdf".to_vec(), "text"))
            .await,
        worker
            .parse(form("a.pdf", pdf(&["cut"])[..300].to_vec(), "text"))
            .await,
        worker
            .parse(form(
                "a.pdf",
                b"%PDF-1.7\n1 0 obj <<>>\n%%EOF".to_vec(),
                "text",
            ))
            .await,
        worker
            .parse(form("a.pdf", pdf(&["x"]), "text").text("return_md", "maybe"))
            .await,
        worker
            .parse(form("a.pdf", pdf(&["x"]), "text").text("start_page_id", "7"))
            .await,
        worker.parse(form("a.pdf", encrypted, "text")).await,
        worker.parse(form("a.pdf", huge_page(), "text")).await,
    ];
    for response in cases {
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("a JSON error");
        assert!(status.is_client_error(), "{status}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    assert_eq!(worker.get("/health").await.status(), StatusCode::OK);
    let ok = worker
        .parse(form("a.pdf", pdf(&["still here"]), "text"))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn beyond_capacity_requests_get_429_with_retry_after() {
    let sim = sim(SimConfig {
        faults: Faults {
            latency_ms: 1_000,
            ..Faults::default()
        },
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(&sim, &["--max-concurrent-documents", "1"]).await;
    let first = tokio::spawn({
        let (http, url) = (worker.http.clone(), worker.url("/file_parse"));
        async move {
            http.post(url)
                .multipart(form("a.pdf", pdf(&["x"]), "vlm"))
                .send()
                .await
                .expect("answered")
                .status()
        }
    });
    worker
        .wait_for_metric("mineru_worker_inflight_documents", &[], 1.0)
        .await;
    // A large upload: the refusal must reach a client still sending it.
    let large = vec![b'%'; 16 << 20];
    let refused = worker.parse(form("b.pdf", large, "vlm")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused).is_some_and(|s| s >= 1));
    assert_eq!(first.await.expect("first request"), StatusCode::OK);
    let metrics = worker.metrics().await;
    assert_eq!(
        metrics.value(
            "mineru_worker_requests_total",
            &[("backend", "unknown"), ("outcome", "rejected")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn concurrent_uploads_are_all_answered() {
    let sim = sim(SimConfig {
        faults: Faults {
            latency_ms: 20,
            latency_jitter_ms: 20,
            ..Faults::default()
        },
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(&sim, &["--max-concurrent-documents", "4"]).await;
    let doc = pdf(&["one"]);
    let requests = (0..4).map(|i| {
        let (http, url, doc) = (worker.http.clone(), worker.url("/file_parse"), doc.clone());
        tokio::spawn(async move {
            let response = http
                .post(url)
                .multipart(form(&format!("d{i}.pdf"), doc, "vlm"))
                .send()
                .await
                .expect("answered");
            let status = response.status();
            let body: serde_json::Value = response.json().await.expect("json");
            (
                status,
                body["results"][format!("d{i}")]["md_content"].is_string(),
            )
        })
    });
    for request in requests {
        assert_eq!(request.await.expect("task"), (StatusCode::OK, true));
    }
    assert_eq!(sim.deviations(), 0);
    let metrics = worker.metrics().await;
    let labels = [("revision", REVISION), ("backend", "vlm")];
    assert_eq!(
        metrics.value("mineru_worker_pages_total", &labels),
        Some(4.0)
    );
}

/// A `/v1` job counts as `/file_parse` does, for the revision that ran it, so the rollout gates
/// see MinerU 4 clients' documents too; a failed file counts as the client's error.
#[tokio::test]
async fn v1_jobs_count_in_the_revisions_metrics() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let upload = |name: &str, data: Vec<u8>| {
        let part = Part::bytes(data).file_name(name.to_owned());
        Form::new().part("files", part)
    };
    let done = worker
        .http
        .post(worker.url("/v1/file_parse?tier=flash"))
        .multipart(upload("a.pdf", pdf(&["x", "y", "z"])))
        .send()
        .await
        .expect("answered");
    assert_eq!(done.status(), StatusCode::OK);
    let failed = worker
        .http
        .post(worker.url("/v1/file_parse?tier=flash"))
        .multipart(upload("b.pdf", b"not a pdf".to_vec()))
        .send()
        .await
        .expect("answered");
    assert_eq!(failed.status(), StatusCode::CONFLICT);
    let metrics = worker.metrics().await;
    let labels = |outcome| {
        [
            ("revision", REVISION),
            ("backend", "text"),
            ("outcome", outcome),
        ]
    };
    assert_eq!(
        metrics.value("mineru_worker_requests_total", &labels("success")),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("mineru_worker_requests_total", &labels("client_error")),
        Some(1.0)
    );
    let pages = [("revision", REVISION), ("backend", "text")];
    assert_eq!(
        metrics.value("mineru_worker_pages_total", &pages),
        Some(3.0)
    );
    assert_eq!(
        metrics.value("mineru_worker_documents_total", &pages),
        Some(1.0)
    );
}

#[tokio::test]
async fn metrics_count_known_traffic_with_the_revision_label() {
    let worker = Worker::start(&["--backend", "text"]).await;
    for _ in 0..2 {
        let ok = worker
            .parse(form("a.pdf", pdf(&["x", "y", "z"]), "text"))
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    let bad = worker.parse(form("a.pdf", b"nope".to_vec(), "text")).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let metrics = worker.metrics().await;
    let count = |outcome: &str| {
        metrics.value(
            "mineru_worker_requests_total",
            &[
                ("revision", REVISION),
                ("backend", "text"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(count("success"), Some(2.0));
    assert_eq!(count("client_error"), Some(1.0));
    assert_eq!(
        count("error"),
        Some(0.0),
        "zero series exist from the start"
    );
    assert_eq!(
        metrics.value(
            "mineru_worker_pages_total",
            &[("revision", REVISION), ("backend", "text")]
        ),
        Some(6.0)
    );
    assert_eq!(
        metrics.value(
            "mineru_worker_request_duration_seconds_count",
            &[("revision", REVISION), ("backend", "text")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metrics.value(
            "mineru_worker_request_duration_seconds_bucket",
            &[("revision", REVISION), ("backend", "text"), ("le", "+Inf")]
        ),
        Some(3.0)
    );
    // The SLO's lines are bucket bounds, so its quantiles are not interpolated across them.
    for le in ["45.0", "90.0", "120.0"] {
        assert!(
            metrics
                .value(
                    "mineru_worker_request_duration_seconds_bucket",
                    &[("revision", REVISION), ("backend", "text"), ("le", le)]
                )
                .is_some(),
            "bucket {le}"
        );
    }
    // Seconds per page of each extracted document (the bad one extracted nothing).
    assert_eq!(
        metrics.value(
            "mineru_worker_page_duration_seconds_count",
            &[("revision", REVISION), ("backend", "text")]
        ),
        Some(2.0)
    );
    for name in [
        "mineru_worker_inflight_documents",
        "mineru_worker_breaker_state",
        "mineru_worker_breaker_opens_total",
        "mineru_worker_vllm_retries_total",
    ] {
        assert_eq!(
            metrics.value(name, &[("revision", REVISION)]),
            Some(0.0),
            "{name}"
        );
    }
    for line in metrics.0.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.contains("revision=\"w-test\""), "unlabelled: {line}");
    }
}

#[tokio::test]
async fn a_request_past_its_deadline_is_504_with_retry_after_and_its_work_stops() {
    let sim = sim(SimConfig {
        faults: Faults {
            latency_ms: 200,
            ..Faults::default()
        },
        ..sim_config()
    })
    .await;
    let worker = Worker::vlm(
        &sim,
        &["--request-timeout", "1s", "--vllm-timeout", "500ms"],
    )
    .await;
    let pages: Vec<String> = (0..40).map(|i| format!("page {i}")).collect();
    let pages: Vec<&str> = pages.iter().map(String::as_str).collect();
    let response = worker.parse(form("long.pdf", pdf(&pages), "vlm")).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(retry_after(&response).is_some());
    // The slot is given back once the document's work has stopped, and nothing more is sent.
    worker
        .wait_for_metric("mineru_worker_inflight_documents", &[], 0.0)
        .await;
    let sent = sim.stats().requests;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        sim.stats().requests,
        sent,
        "no call after the request ended"
    );
    let metrics = worker.metrics().await;
    assert_eq!(
        metrics.value(
            "mineru_worker_requests_total",
            &[("backend", "vlm"), ("outcome", "timeout")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let served: serde_json::Value = worker
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/worker.yaml");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        let yaml = serde_yaml::to_string(&served).expect("yaml");
        std::fs::write(&path, yaml).expect("write docs/openapi/worker.yaml");
    }
    let committed: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("docs/openapi/worker.yaml"))
            .expect("yaml");
    assert_eq!(
        served, committed,
        "docs/openapi/worker.yaml is stale: rerun this test with UPDATE_OPENAPI=1"
    );
}

#[tokio::test]
async fn every_path_of_the_openapi_document_is_served() {
    let worker = Worker::start(&["--backend", "text"]).await;
    let document: serde_json::Value = worker
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() > 20, "{paths:?}");
    for (path, item) in paths {
        let concrete = path.replace("{id}", "x").replace("{model}", "x");
        for method in item.as_object().expect("operations").keys() {
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = worker
                .http
                .request(method.clone(), worker.url(&concrete))
                .send()
                .await
                .expect("answered");
            let status = response.status();
            let body = response.bytes().await.expect("body");
            // An unrouted path is an empty 404, a wrong method 405; our own 404s say what is missing.
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED
                    && !(status == StatusCode::NOT_FOUND && body.is_empty()),
                "{method} {path}: {status} — documented but not served"
            );
        }
    }
}

/// 32 clients send multi-page documents with hostile files mixed in, on both backends at once:
/// the worker never goes down, every hostile file is refused as the client's fault (or parsed),
/// and every good document comes back correct — retried while the worker says it is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_with_hostile_files_mixed_in_get_correct_answers_on_both_backends() {
    let sim = sim(sim_config()).await;
    let worker = Worker::vlm(&sim, &["--max-concurrent-documents", "8"]).await;
    let good = pdf(&["alpha", "beta", "gamma"]);
    let fixture = |name: &str| {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).expect("fixture")
    };
    let hostile: Vec<Vec<u8>> = vec![
        fixture("tests/fixtures/encrypted.pdf"),
        fixture("fuzz/corpus/open_pdf/flate-image-rotated.pdf"),
        good[..good.len() / 2].to_vec(),
        b"%PDF-1.7\n1 0 obj << /Type /Pages /Kids [1 0 R] /Count 9 >> endobj\n%%EOF".to_vec(),
        huge_page(),
        vec![0xff; 4096],
    ];
    // What a healthy parse of the good document reads, per backend.
    let mut expected = std::collections::BTreeMap::new();
    for backend in ["text", "vlm"] {
        let response = worker.parse(form("good.pdf", good.clone(), backend)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = response.json().await.expect("json");
        expected.insert(backend, body["results"]["good"]["md_content"].clone());
    }
    assert!(expected["text"].as_str().unwrap().contains("gamma"));
    let expected = std::sync::Arc::new(expected);
    let clients: Vec<_> = (0..32)
        .map(|client| {
            let (http, url) = (worker.http.clone(), worker.url("/file_parse"));
            let (good, hostile, expected) = (good.clone(), hostile.clone(), expected.clone());
            tokio::spawn(async move {
                let backend = if client % 2 == 0 { "text" } else { "vlm" };
                for round in 0..3 {
                    let bad = hostile[(client + round) % hostile.len()].clone();
                    let status = http
                        .post(&url)
                        .multipart(form("bad.pdf", bad, backend))
                        .send()
                        .await
                        .expect("answered")
                        .status();
                    assert!(
                        status.is_success() || status.is_client_error(),
                        "a hostile file is the client's fault, never the worker's: {status}"
                    );
                    loop {
                        let response = http
                            .post(&url)
                            .multipart(form("good.pdf", good.clone(), backend))
                            .send()
                            .await
                            .expect("answered");
                        if response.status() == StatusCode::TOO_MANY_REQUESTS {
                            assert!(retry_after(&response).is_some());
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        assert_eq!(response.status(), StatusCode::OK);
                        let body: serde_json::Value = response.json().await.expect("json");
                        assert_eq!(
                            body["results"]["good"]["md_content"], expected[backend],
                            "a wrong answer on {backend}"
                        );
                        break;
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    assert_eq!(worker.get("/health").await.status(), StatusCode::OK);
    assert_eq!(sim.deviations(), 0);
}
