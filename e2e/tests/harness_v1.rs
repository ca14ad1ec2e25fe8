//! Smoke tests of the harness pieces the `/v1` tests stand on: a real PostgreSQL (answers
//! queries, keeps its data and port across a restart, is gone after drop), MinerU 4's
//! `mineru-api` in its flash tier (serves `/v1/health`; its Python imports `mineru`), and the
//! round-robin stand-in for a Service (alternates, skips a dead endpoint, follows endpoint
//! changes, keeps a kept-alive connection on one backend).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use mineru_e2e::mineru_api::{self, MineruApi};
use mineru_e2e::postgres::Postgres;
use mineru_e2e::round_robin::RoundRobin;

#[test]
fn postgres_answers_keeps_its_data_across_a_restart_and_stops_on_drop() -> Result<()> {
    let mut postgres = Postgres::start()?;
    let port = postgres.port();
    ensure!(
        postgres.url() == format!("postgres://postgres@127.0.0.1:{port}/mineru"),
        "url {}",
        postgres.url()
    );
    // Through the URL, as a client of the job store connects.
    let output = Command::new("psql")
        .arg(postgres.url())
        .args(["-At", "-c", "SELECT current_database(), 6 * 7"])
        .output()
        .context("running psql")?;
    ensure!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8(output.stdout)?.trim(), "mineru|42");

    postgres.psql("CREATE TABLE jobs (id text PRIMARY KEY, state text NOT NULL)")?;
    postgres.psql("INSERT INTO jobs VALUES ('a', 'queued'), ('b', 'done')")?;

    // An outage: down, connections refused; up again on the same port, with the same rows.
    postgres.stop();
    ensure!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "PostgreSQL still listens while stopped"
    );
    ensure!(
        postgres.psql("SELECT 1").is_err(),
        "psql works while stopped"
    );
    postgres.restart()?;
    assert_eq!(postgres.port(), port);
    assert_eq!(
        postgres.psql("SELECT string_agg(id || '=' || state, ',' ORDER BY id) FROM jobs")?,
        "a=queued,b=done"
    );

    drop(postgres);
    ensure!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "PostgreSQL still listens after drop"
    );
    Ok(())
}

#[test]
fn mineru_api_flash_serves_health_and_its_python_has_mineru() -> Result<()> {
    let api = MineruApi::start_flash_with(&["--concurrency", "2"])?;
    let health = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?
        .get(format!("{}/v1/health", api.url()))
        .send()?;
    let status = health.status();
    let body = health.text()?;
    println!("GET /v1/health -> {status}: {body}");
    ensure!(status.is_success(), "{status}: {body}\n{}", api.log());
    serde_json::from_str::<serde_json::Value>(&body).context("health is not JSON")?;

    let version = Command::new(mineru_api::python()?)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('mineru'))",
        ])
        .output()?;
    ensure!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert_eq!(String::from_utf8(version.stdout)?.trim(), "4.0.12");
    Ok(())
}

/// A TCP server that answers every line it reads with `<name>:<line>`.
fn echo(name: &'static str) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone the stream");
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(writer, "{name}:{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(address)
}

/// An address nothing listens on: connections to it are refused.
fn dead() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Connects to `front` and sends `lines` on one connection; the answers.
fn ask(front: SocketAddr, lines: &[&str]) -> Result<Vec<String>> {
    let stream = TcpStream::connect(front)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut answers = Vec::new();
    for line in lines {
        writeln!(writer, "{line}")?;
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        answers.push(answer.trim_end().to_owned());
    }
    Ok(answers)
}

#[test]
fn round_robin_alternates_skips_dead_endpoints_and_follows_changes() -> Result<()> {
    let (a, b) = (echo("a")?, echo("b")?);
    let front = RoundRobin::start(vec![a, b])?;
    assert_eq!(front.url(), format!("http://{}", front.addr()));
    assert_eq!(front.backends(), vec![a, b]);

    let answers: Vec<String> = (0..4)
        .map(|i| ask(front.addr(), &[&i.to_string()]).map(|a| a.concat()))
        .collect::<Result<_>>()?;
    assert_eq!(answers, ["a:0", "b:1", "a:2", "b:3"]);
    assert_eq!(front.connections_to(a), 2);
    assert_eq!(front.connections_to(b), 2);

    // Balancing is per connection: a kept-alive one stays on its backend.
    let kept = ask(front.addr(), &["x", "y", "z"])?;
    let backend = &kept[0][..1];
    assert_eq!(
        kept,
        ["x", "y", "z"].map(|line| format!("{backend}:{line}"))
    );

    // An endpoint that refuses is skipped; every connection still gets an answer.
    let gone = dead()?;
    front.set_backends(vec![gone, b]);
    for i in 0..4 {
        assert_eq!(ask(front.addr(), &[&format!("d{i}")])?, [format!("b:d{i}")]);
    }
    assert_eq!(front.connections_to(gone), 0);

    // The endpoints change, as in a rollout: new connections go to the new list only.
    let c = echo("c")?;
    front.set_backends(vec![c]);
    assert_eq!(ask(front.addr(), &["n"])?, ["c:n"]);
    let counts = front.connections();
    println!("connections per backend: {counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 4 + 1 + 4 + 1);
    assert_eq!(counts.get(&c), Some(&1));
    Ok(())
}
