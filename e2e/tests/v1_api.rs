//! MinerU 4's `/v1` API on the worker, held to MinerU itself: the same calls against
//! `mineru-api` 4.0.12 (its model-free `flash` tier) and against our worker answer with the same
//! status codes and shapes; MinerU's own client, unchanged, gets from one worker and from two
//! behind one address (sharing a real PostgreSQL) the Markdown the legacy endpoint returns; and
//! jobs survive what the split architecture does to workers — polls on another replica,
//! cancellation, a SIGTERM and a SIGKILL mid-job.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use reqwest::blocking::{Client, multipart};
use serde_json::{Value, json};

use mineru_e2e::mineru_api::{self, MineruApi};
use mineru_e2e::postgres::Postgres;
use mineru_e2e::repo_path;
use mineru_e2e::round_robin::RoundRobin;
use mineru_e2e::stack::{Simulator, Worker};

const MODEL: &str = "mineru2.5";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client")
}

fn sample() -> Vec<u8> {
    std::fs::read(repo_path("examples/documents/sample.pdf")).expect("sample.pdf")
}

/// A JSON value's shape: its keys, recursively, and the kind of every leaf.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    // What a document parses to is compared by the client tests, not here.
                    let opaque =
                        matches!(k.as_str(), "middle_json" | "structured_content") && v.is_object();
                    (k.clone(), if opaque { json!("object") } else { shape(v) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

/// One call's answer, as the contract compares it.
#[derive(Debug, PartialEq)]
struct Answer {
    step: &'static str,
    status: u16,
    content_type: String,
    shape: Value,
}

struct Session {
    base: String,
    http: Client,
    answers: Vec<Answer>,
}

impl Session {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: client(),
            answers: Vec::new(),
        }
    }

    fn record(
        &mut self,
        step: &'static str,
        response: reqwest::blocking::Response,
    ) -> Result<Value> {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes()?;
        let body: Value = if content_type == "application/json" {
            serde_json::from_slice(&bytes).with_context(|| format!("{step}: not JSON"))?
        } else {
            Value::Null
        };
        self.answers.push(Answer {
            step,
            status,
            content_type,
            shape: shape(&body),
        });
        Ok(body)
    }

    fn get(&mut self, step: &'static str, path: &str) -> Result<Value> {
        let response = self.http.get(format!("{}{path}", self.base)).send()?;
        self.record(step, response)
    }

    fn post_json(&mut self, step: &'static str, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()?;
        self.record(step, response)
    }

    fn post_files(
        &mut self,
        step: &'static str,
        path: &str,
        name: &str,
        data: Vec<u8>,
    ) -> Result<Value> {
        let part = multipart::Part::bytes(data)
            .file_name(name.to_owned())
            .mime_str("application/pdf")?;
        let form = multipart::Form::new().part("files", part);
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .multipart(form)
            .send()?;
        self.record(step, response)
    }

    /// Polls a job or task until it has ended.
    fn wait(&self, path: &str) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job: Value = self
                .http
                .get(format!("{}{path}", self.base))
                .send()?
                .json()?;
            let status = job["status"].as_str().unwrap_or_default();
            if !matches!(status, "queued" | "running") {
                return Ok(job);
            }
            ensure!(
                Instant::now() < deadline,
                "{path} still {status} after 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The calls of the contract, each recorded; ids come from earlier answers.
fn contract(base: &str) -> Result<Vec<Answer>> {
    let mut s = Session::new(base);
    let pdf = sample();
    s.get("health", "/v1/health")?;
    let models = s.get("models", "/v1/models")?;
    let model = models["data"][0]["id"]
        .as_str()
        .context("a model id")?
        .to_owned();
    s.get("model", &format!("/v1/models/{model}"))?;
    s.get("unknown model", "/v1/models/no-such-model")?;
    s.get("tiers", "/v1/tiers")?;
    s.get("usage", "/v1/usage")?;

    // Uploads: create, the bytes, complete, and the refusals on the way.
    let create =
        json!({"filename": "sample.pdf", "bytes": pdf.len(), "mime_type": "application/pdf"});
    let upload = s.post_json("create upload", "/v1/uploads", &create)?;
    let id = upload["id"].as_str().context("upload id")?.to_owned();
    s.get("get pending upload", &format!("/v1/uploads/{id}"))?;
    s.post_json(
        "complete before the bytes",
        &format!("/v1/uploads/{id}/complete"),
        &json!({}),
    )?;
    let wrong = s
        .http
        .put(format!("{base}/v1/uploads/{id}/content"))
        .body(pdf[..10].to_vec())
        .send()?;
    s.record("bytes of the wrong size", wrong)?;
    let put = s
        .http
        .put(format!("{base}/v1/uploads/{id}/content"))
        .body(pdf.clone())
        .send()?;
    s.record("bytes", put)?;
    let done = s.post_json(
        "complete",
        &format!("/v1/uploads/{id}/complete"),
        &json!({}),
    )?;
    s.post_json(
        "complete again",
        &format!("/v1/uploads/{id}/complete"),
        &json!({}),
    )?;
    s.post_json(
        "cancel completed",
        &format!("/v1/uploads/{id}/cancel"),
        &json!({}),
    )?;
    s.get(
        "unknown upload",
        "/v1/uploads/upload_000000000000000000000000",
    )?;
    s.post_json(
        "upload without bytes",
        "/v1/uploads",
        &json!({"filename": "a.pdf", "mime_type": "application/pdf"}),
    )?;
    let file_id = done["file"]["id"].as_str().context("file id")?.to_owned();

    // Files.
    s.get("file", &format!("/v1/files/{file_id}"))?;
    s.get(
        "source file content",
        &format!("/v1/files/{file_id}/content"),
    )?;
    s.get("files", "/v1/files?purpose=parse&limit=5")?;
    s.get("unknown file", "/v1/files/file-000000000000000000000000")?;

    // A parse job on the uploaded file, and its outputs.
    let source = json!({"type": "file_id", "file_id": file_id});
    let job = s.post_json(
        "create job",
        "/v1/parse/jobs",
        &json!({"files": [{"source": source}], "tier": "flash", "output_formats": ["markdown", "structured_content"]}),
    )?;
    let job_id = job["job_id"].as_str().context("job id")?.to_owned();
    s.wait(&format!("/v1/parse/jobs/{job_id}"))?;
    let finished = s.get("finished job", &format!("/v1/parse/jobs/{job_id}"))?;
    let markdown = finished["files"][0]["output_files"]["markdown"]["file_id"]
        .as_str()
        .context("markdown output")?
        .to_owned();
    s.get("output content", &format!("/v1/files/{markdown}/content"))?;
    s.get("jobs", "/v1/parse/jobs?limit=5")?;
    s.get("completed jobs", "/v1/parse/jobs?status=completed")?;
    let cancel = s
        .http
        .delete(format!("{base}/v1/parse/jobs/{job_id}"))
        .send()?;
    s.record("cancel finished job", cancel)?;
    s.get("unknown job", "/v1/parse/jobs/job_000000000000000000000000")?;
    s.get("usage after a job", "/v1/usage")?;
    let delete = s
        .http
        .delete(format!("{base}/v1/files/{markdown}"))
        .send()?;
    s.record("delete output", delete)?;

    // Refused submissions.
    let job_with = |extra: Value| {
        let mut body = json!({"files": [{"source": source}], "tier": "flash"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        body
    };
    for (step, body) in [
        (
            "job on a tier not served",
            job_with(json!({"tier": "basic"})),
        ),
        (
            "job with a page range reversed",
            json!({"files": [{"source": source, "page_range": "2-1"}], "tier": "flash"}),
        ),
        (
            "job with an unknown format",
            job_with(json!({"output_formats": ["pdf"]})),
        ),
        (
            "job with a keyed format",
            job_with(json!({"output_formats": ["docx"]})),
        ),
        (
            "job with a callback",
            job_with(json!({"callback": {"url": "https://example.com/hook"}})),
        ),
        (
            "job with an unknown field",
            job_with(json!({"priority": 1})),
        ),
        ("job without files", json!({"files": [], "tier": "flash"})),
        (
            "job on an unknown file",
            json!({"files": [{"source": {"type": "file_id", "file_id": "file-000000000000000000000000"}}], "tier": "flash"}),
        ),
        (
            "job with bad inline data",
            json!({"files": [{"source": {"type": "inline", "name": "a.pdf", "data": "not base64!"}}], "tier": "flash"}),
        ),
    ] {
        s.post_json(step, "/v1/parse/jobs", &body)?;
    }
    // A PDF without a tier: a text-only server wants flash named.
    s.post_json(
        "job without a tier",
        "/v1/parse/jobs",
        &json!({"files": [{"source": source}]}),
    )?;

    // Inline source, pages past the end: the job fails, in the job.
    let inline = json!({"type": "inline", "name": "sample.pdf", "data": base64_of(&pdf)});
    let late = s.post_json(
        "job on pages past the end",
        "/v1/parse/jobs",
        &json!({"files": [{"source": inline, "page_range": "3-4"}], "tier": "flash"}),
    )?;
    let late_id = late["job_id"].as_str().context("job id")?.to_owned();
    s.wait(&format!("/v1/parse/jobs/{late_id}"))?;
    s.get(
        "job failed on its pages",
        &format!("/v1/parse/jobs/{late_id}"),
    )?;

    // Tasks: the form upload, its status, its result, and zip only when asked for.
    let task = s.post_files(
        "create task",
        "/v1/tasks?tier=flash",
        "sample.pdf",
        pdf.clone(),
    )?;
    let task_id = task["task_id"].as_str().context("task id")?.to_owned();
    s.wait(&format!("/v1/tasks/{task_id}"))?;
    s.get("task", &format!("/v1/tasks/{task_id}"))?;
    s.get("task result", &format!("/v1/tasks/{task_id}/result"))?;
    s.get(
        "task result as zip not asked for",
        &format!("/v1/tasks/{task_id}/result?response_format=zip"),
    )?;
    let zipped = s.post_files(
        "create zip task",
        "/v1/tasks?tier=flash&output_formats=zip",
        "sample.pdf",
        pdf.clone(),
    )?;
    let zipped_id = zipped["task_id"].as_str().context("task id")?.to_owned();
    s.wait(&format!("/v1/tasks/{zipped_id}"))?;
    s.get(
        "task result as zip",
        &format!("/v1/tasks/{zipped_id}/result?response_format=zip"),
    )?;
    let cancel = s.http.delete(format!("{base}/v1/tasks/{task_id}")).send()?;
    s.record("cancel finished task", cancel)?;
    s.post_files(
        "task with an unknown option",
        "/v1/tasks?tier=flash&priority=1",
        "sample.pdf",
        pdf.clone(),
    )?;

    // The synchronous form, its JSON body, its refusals.
    s.post_files(
        "file_parse",
        "/v1/file_parse?tier=flash&output_formats=markdown&output_formats=structured_content",
        "sample.pdf",
        pdf.clone(),
    )?;
    s.post_files(
        "file_parse of pages past the end",
        "/v1/file_parse?tier=flash&page_range=3-4",
        "sample.pdf",
        pdf.clone(),
    )?;
    s.post_files(
        "file_parse of a text file",
        "/v1/file_parse?tier=flash",
        "notes.txt",
        b"not a pdf".to_vec(),
    )?;
    s.post_files(
        "file_parse with a reversed range",
        "/v1/file_parse?tier=flash&page_range=2-1",
        "sample.pdf",
        pdf.clone(),
    )?;
    s.post_files(
        "file_parse with a format not served",
        "/v1/file_parse?tier=flash&output_formats=html",
        "sample.pdf",
        pdf.clone(),
    )?;
    s.post_json(
        "file_parse of a JSON job",
        "/v1/file_parse",
        &json!({"files": [{"source": inline}], "tier": "flash"}),
    )?;
    let plain = s
        .http
        .post(format!("{base}/v1/file_parse?tier=flash"))
        .header("content-type", "text/plain")
        .body("x")
        .send()?;
    s.record("file_parse of text/plain", plain)?;
    let raw = s
        .http
        .post(format!(
            "{base}/v1/file_parse?tier=flash&filename=sample.pdf"
        ))
        .header("content-type", "application/octet-stream")
        .body(pdf.clone())
        .send()?;
    s.record("file_parse of a raw body", raw)?;
    let nameless = s
        .http
        .post(format!("{base}/v1/file_parse?tier=flash"))
        .header("content-type", "application/octet-stream")
        .body(pdf)
        .send()?;
    s.record("file_parse of a raw body without a name", nameless)?;
    Ok(s.answers)
}

fn base64_of(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn the_v1_api_answers_as_mineru_api_does() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let reference = MineruApi::start_flash()?;
    let worker = Worker::start_text("contract", logs.path())?;
    let theirs = contract(&reference.url())?;
    let ours = contract(&worker.url())?;
    let mut differences = Vec::new();
    for (theirs, ours) in theirs.iter().zip(&ours) {
        if theirs != ours {
            differences.push(format!(
                "{}: mineru-api {} {} {}\n   worker     {} {} {}",
                theirs.step,
                theirs.status,
                theirs.content_type,
                theirs.shape,
                ours.status,
                ours.content_type,
                ours.shape
            ));
        }
    }
    ensure!(
        theirs.len() == ours.len(),
        "{} calls against {}",
        theirs.len(),
        ours.len()
    );
    ensure!(
        differences.is_empty(),
        "answers differ:\n{}",
        differences.join("\n")
    );
    Ok(())
}

/// What MinerU's own client and the two convenience forms return for `pdf` on `tier`.
fn mineru_client(url: &str, pdf: &Path, tier: &str) -> Result<Value> {
    let output = Command::new(mineru_api::python()?)
        .arg(repo_path("e2e/python/v1_client.py"))
        .args([url, &pdf.display().to_string(), tier])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .context("running MinerU's client")?;
    if !output.status.success() {
        bail!(
            "MinerU's client against {url} ({tier}) failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The legacy endpoint's Markdown for the same document on the same backend.
fn legacy_markdown(url: &str, backend: &str) -> Result<String> {
    let part = multipart::Part::bytes(sample()).file_name("sample.pdf");
    let form = multipart::Form::new()
        .part("files", part)
        .text("backend", backend.to_owned())
        .text("return_md", "true");
    let answer: Value = client()
        .post(format!("{url}/file_parse"))
        .multipart(form)
        .send()?
        .error_for_status()?
        .json()?;
    answer["results"]["sample"]["md_content"]
        .as_str()
        .map(str::to_owned)
        .context("md_content")
}

#[test]
fn minerus_own_client_works_unchanged_on_one_worker_and_on_two_behind_one_address() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let simulator = Simulator::start("m1", MODEL, &[], logs.path())?;
    let postgres = Postgres::start()?;
    let store = postgres.url();
    let vlm = |id: &str| {
        Worker::spawn(
            "w1",
            &[
                "--backend",
                "vlm",
                "--server-url",
                &simulator.url(),
                "--model-name",
                MODEL,
                "--job-store",
                &store,
                "--worker-id",
                id,
            ],
            logs.path(),
        )
    };
    let alone = Worker::start("w1", &simulator.url(), MODEL, logs.path())?;
    let pair = [vlm("w1-a")?, vlm("w1-b")?];
    let front = RoundRobin::start(pair.iter().map(|w| w.address).collect())?;
    let pdf = repo_path("examples/documents/sample.pdf");
    for (tier, backend) in [("flash", "text"), ("standard", "vlm")] {
        let want = legacy_markdown(&alone.url(), backend)?;
        for (setup, url) in [("one worker", alone.url()), ("two workers", front.url())] {
            let got = mineru_client(&url, &pdf, tier)?;
            for form in ["task", "file_parse"] {
                assert_eq!(
                    got[form].as_str().map(str::trim_end),
                    Some(want.trim_end()),
                    "{form} on {setup}, tier {tier}"
                );
            }
            // MinerU's client renders the middle JSON itself, and MinerU 4 writes a table
            // without merged cells as a pipe table where the worker keeps MinerU's HTML.
            assert_eq!(
                got["parse"].as_str().map(str::trim_end),
                Some(pipe_tables(want.trim_end()).as_str()),
                "MinerUApiParser.parse on {setup}, tier {tier}"
            );
        }
    }
    Ok(())
}

/// `<table>` HTML without merged cells as MinerU 4 renders it: a pipe table, the first row as
/// header.
fn pipe_tables(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("<table>") {
        let Some(len) = rest[start..].find("</table>") else {
            break;
        };
        out.push_str(&rest[..start]);
        let table = &rest[start + "<table>".len()..start + len];
        let rows: Vec<Vec<&str>> = table
            .split("<tr>")
            .filter_map(|row| row.strip_suffix("</tr>"))
            .map(|row| {
                row.split("<td>")
                    .filter_map(|cell| cell.strip_suffix("</td>"))
                    .collect()
            })
            .collect();
        for (i, row) in rows.iter().enumerate() {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
            if i == 0 {
                out.push_str(&format!("|{}\n", " --- |".repeat(row.len())));
            }
        }
        out.pop();
        rest = &rest[start + len + "</table>".len()..];
    }
    out.push_str(rest);
    out
}

#[test]
fn html_tables_become_minerus_pipe_tables() {
    assert_eq!(
        pipe_tables(
            "a\n\n<table><tr><td>x</td><td>y</td></tr><tr><td>1</td><td>2</td></tr></table>\n\nb"
        ),
        "a\n\n| x | y |\n| --- | --- |\n| 1 | 2 |\n\nb"
    );
}

/// A worker of the shared store with a slow GPU tier, so that a job is seen mid-way.
fn shared_worker(id: &str, simulator: &Simulator, store: &str, logs: &Path) -> Result<Worker> {
    Worker::spawn(
        "w1",
        &[
            "--backend",
            "vlm",
            "--server-url",
            &simulator.url(),
            "--model-name",
            MODEL,
            "--job-store",
            store,
            "--worker-id",
            id,
            "--job-lease",
            "3s",
            "--job-poll",
            "300ms",
            "--shutdown-delay",
            "0s",
            "--shutdown-grace",
            "1s",
        ],
        logs,
    )
}

fn submit(worker: &str) -> Result<String> {
    let inline = json!({"type": "inline", "name": "sample.pdf", "data": base64_of(&sample())});
    let job: Value = client()
        .post(format!("{worker}/v1/parse/jobs"))
        .json(&json!({"files": [{"source": inline}], "tier": "standard"}))
        .send()?
        .json()?;
    job["job_id"].as_str().map(str::to_owned).context("job id")
}

fn job(worker: &str, id: &str) -> Result<Value> {
    Ok(client()
        .get(format!("{worker}/v1/parse/jobs/{id}"))
        .send()?
        .json()?)
}

fn wait_for(worker: &str, id: &str, wanted: &[&str], budget: Duration) -> Result<Value> {
    let deadline = Instant::now() + budget;
    loop {
        let job = job(worker, id)?;
        if wanted.contains(&job["status"].as_str().unwrap_or_default()) {
            return Ok(job);
        }
        ensure!(
            Instant::now() < deadline,
            "job {id} is {} after {budget:?}, wanted {wanted:?}",
            job["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jobs_survive_other_replicas_cancellation_sigterm_and_sigkill() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let simulator = Simulator::start("m1", MODEL, &["--latency-ms", "700"], logs.path())?;
    let mut postgres = Postgres::start()?;
    let store = postgres.url();
    let mut a = shared_worker("w1-a", &simulator, &store, logs.path())?;
    let b = shared_worker("w1-b", &simulator, &store, logs.path())?;
    let http = client();

    // Upload through one replica, send the bytes and complete through the other, submit through
    // the first, poll and download through the second.
    let pdf = sample();
    let upload: Value = http
        .post(format!("{}/v1/uploads", a.url()))
        .json(
            &json!({"filename": "sample.pdf", "bytes": pdf.len(), "mime_type": "application/pdf"}),
        )
        .send()?
        .json()?;
    let upload_id = upload["id"].as_str().context("upload id")?;
    http.put(format!("{}/v1/uploads/{upload_id}/content", b.url()))
        .body(pdf)
        .send()?
        .error_for_status()?;
    let done: Value = http
        .post(format!("{}/v1/uploads/{upload_id}/complete", b.url()))
        .send()?
        .json()?;
    let file_id = done["file"]["id"].as_str().context("file id")?;
    let created: Value = http
        .post(format!("{}/v1/parse/jobs", a.url()))
        .json(&json!({"files": [{"source": {"type": "file_id", "file_id": file_id}, "page_range": "2"}], "tier": "standard"}))
        .send()?
        .json()?;
    let id = created["job_id"].as_str().context("job id")?.to_owned();
    let finished = wait_for(
        &b.url(),
        &id,
        &["completed", "failed", "partial"],
        Duration::from_secs(60),
    )?;
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["files"][0]["page_range"], "2", "{finished}");
    let markdown = finished["files"][0]["output_files"]["markdown"]["file_id"]
        .as_str()
        .context("markdown")?;
    let text = http
        .get(format!("{}/v1/files/{markdown}/content", b.url()))
        .send()?
        .error_for_status()?
        .text()?;
    assert!(!text.trim().is_empty(), "page 2 gave no Markdown");

    // Cancellation through the other replica stops the job and sticks.
    let id = submit(&a.url())?;
    wait_for(&a.url(), &id, &["running"], Duration::from_secs(20))?;
    let canceled = http
        .delete(format!("{}/v1/parse/jobs/{id}", b.url()))
        .send()?;
    assert_eq!(canceled.status(), 200);
    std::thread::sleep(Duration::from_secs(4));
    let after = job(&a.url(), &id)?;
    assert_eq!(after["status"], "canceled", "{after}");
    let result = http
        .get(format!("{}/v1/tasks/{id}/result", b.url()))
        .send()?;
    assert_eq!(result.status(), 409);

    // SIGTERM mid-job: the worker hands the job back at the end of its grace; the other runs it.
    // The other is stalled until the job runs, so that it is the first worker's.
    b.freeze();
    let id = submit(&a.url())?;
    let running = wait_for(&a.url(), &id, &["running"], Duration::from_secs(20));
    b.thaw();
    running?;
    a.stop(Duration::from_secs(20));
    let finished = wait_for(
        &b.url(),
        &id,
        &["completed", "failed", "partial", "canceled"],
        Duration::from_secs(60),
    )?;
    assert_eq!(finished["status"], "completed", "{finished}");
    assert!(a.log().contains("handed back"), "{}", a.log());

    // SIGKILL mid-job: the lease runs out and the survivor runs the job again.
    let mut c = shared_worker("w1-c", &simulator, &store, logs.path())?;
    b.freeze();
    let id = submit(&c.url())?;
    let running = wait_for(&c.url(), &id, &["running"], Duration::from_secs(20));
    b.thaw();
    running?;
    c.kill();
    let finished = wait_for(
        &b.url(),
        &id,
        &["completed", "failed", "partial", "canceled"],
        Duration::from_secs(60),
    )?;
    assert_eq!(finished["status"], "completed", "{finished}");
    assert!(b.log().contains("worker lost mid-job"), "{}", b.log());

    // The store down mid-job: /v1 answers 503 job_store_unavailable while /file_parse keeps
    // working, and the job comes through once the database is back.
    let id = submit(&b.url())?;
    wait_for(&b.url(), &id, &["running"], Duration::from_secs(20))?;
    postgres.stop();
    let health = http.get(format!("{}/v1/health", b.url())).send()?;
    assert_eq!(health.status(), 503);
    let body: Value = health.json()?;
    assert_eq!(body["error"]["code"], "job_store_unavailable", "{body}");
    let legacy = legacy_markdown(&b.url(), "vlm")?;
    assert!(!legacy.is_empty());
    postgres.restart()?;
    let finished = wait_for(
        &b.url(),
        &id,
        &["completed", "failed", "partial", "canceled"],
        Duration::from_secs(60),
    )?;
    assert_eq!(finished["status"], "completed", "{finished}");
    Ok(())
}

/// MinerU's client rebuilds a document from our middle JSON and renders it itself: for the
/// repository's sample and PDFs built to exercise the text backend (running headers, columns,
/// a scan, a table, Markdown's own characters), MinerU accepts every document and renders our
/// Markdown, but where its escaping necessarily differs (listed in e2e/python/middle_json_check.py).
#[test]
fn minerus_renderer_accepts_our_middle_json_and_renders_our_markdown() -> Result<()> {
    let python = mineru_api::python()?;
    let work = tempfile::tempdir()?;
    let pdfs = work.path().join("pdfs");
    let built = Command::new(&python)
        .arg(repo_path("e2e/python/make_check_pdfs.py"))
        .arg(&pdfs)
        .output()?;
    ensure!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut inputs: Vec<_> = std::fs::read_dir(&pdfs)?
        .flatten()
        .map(|e| e.path())
        .collect();
    inputs.push(repo_path("examples/documents/sample.pdf"));
    let out = work.path().join("out");
    for pdf in &inputs {
        let parsed = Command::new(mineru_e2e::workspace_binary("mineru-worker")?)
            .arg("parse")
            .arg(pdf)
            .arg("-o")
            .arg(&out)
            .output()?;
        ensure!(
            parsed.status.success(),
            "{}: {}",
            pdf.display(),
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
    let checked = Command::new(&python)
        .arg(repo_path("e2e/python/middle_json_check.py"))
        .arg(&out)
        .args(["--allow-mismatch", "markdown-chars"])
        .output()?;
    let report = String::from_utf8_lossy(&checked.stdout);
    ensure!(
        checked.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    ensure!(
        report.matches("PASS").count() >= inputs.len() - 1,
        "{report}"
    );
    Ok(())
}
