//! The documentation's commands run. Every `kubectl`, `helm` and `make` command in a fenced
//! shell block of README.md and docs/*.md (and every `$ `-prompted one in other blocks) is run
//! here: `make` as `make -n`, `kubectl` and `helm` for real, in document order, against a real
//! control plane holding the CRD, the chart and examples/minimal.yaml, with the `kubectl-mineru`
//! plugin on `PATH` (the chart without its `kubeVersion`, which the source-built API server's
//! version fails). The exceptions, commands that need a real cluster with real workloads, are
//! listed with their reason in docs/commands-needing-a-cluster.txt. A command in neither place
//! fails, and so does a listed command the docs no longer have. The runbooks carry every anchor
//! the alerts link to.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    io::Read as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mineru_e2e::{
    controlplane::{ControlPlane, Nodes, OPERATOR_NAMESPACE},
    copy_dir, files_under,
    operator::install_monitoring_crds,
    process::tail_text,
    repo_path,
    rules::RUNBOOK_ANCHORS,
    wait_until, workspace_binary,
};

/// The commands not run here, each with the reason.
const LISTED: &str = "docs/commands-needing-a-cluster.txt";
const TOOLS: [&str; 3] = ["kubectl", "helm", "make"];
/// Placeholders the docs may use in commands, and what the test runs them with.
const PLACEHOLDERS: [(&str, &str); 2] = [("<name>", "docs"), ("<namespace>", "parsing")];
const RELEASE: &str = "mineru-operator";
/// Longer than the longest wait a documented command asks for (`--timeout=120s`).
const COMMAND_BUDGET: Duration = Duration::from_secs(180);

/// One command as the docs write it.
#[derive(Clone, Debug, PartialEq)]
struct DocCommand {
    /// `docs/install.md:42`.
    at: String,
    /// The command without its comment, continuation lines joined and whitespace collapsed:
    /// how the list names it.
    text: String,
    /// The trailing comment, if any.
    comment: String,
    /// What runs: the joined lines and a here-document's body.
    script: String,
    /// Variable assignments earlier in the same block (`SA=...`), run first.
    prelude: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Block {
    /// `sh`, `bash`, `shell`: every line is a command.
    Shell,
    /// `console`, `text` or none: lines prompted with `$ ` are commands.
    Prompted,
    /// YAML, PromQL, ...: no commands.
    Other,
}

/// Whether a quote is left open at the end of `text`.
fn open_quote(text: &str) -> bool {
    let mut quote = None;
    let mut escaped = false;
    for c in text.chars() {
        match (quote, c) {
            (_, _) if escaped => escaped = false,
            (None | Some('"'), '\\') => escaped = true,
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            _ => {}
        }
    }
    quote.is_some()
}

/// `(command, comment)`: a `#` starting a word outside quotes begins the comment.
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote = None;
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, '#') if previous.is_whitespace() => {
                return (line[..index].trim_end(), line[index + 1..].trim());
            }
            _ => {}
        }
        previous = c;
    }
    (line.trim_end(), "")
}

/// The word ending a here-document opened on this line (`<<'YAML'`, `<<EOF`), if any.
fn heredoc_end(command: &str) -> Option<String> {
    let (_, rest) = command.split_once("<<")?;
    let word: String = rest
        .trim_start_matches('-')
        .trim_start()
        .trim_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// The tools a command line runs: the first word of every simple command in it (after `|`,
/// `;`, `&&`, `(` or `$(`, and after variable assignments), quoted text aside.
fn tools_in(command: &str) -> Vec<&'static str> {
    let mut unquoted = String::new();
    let mut quote = None;
    for c in command.chars() {
        match (quote, c) {
            (None, '\'') => quote = Some(c),
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            _ => unquoted.push(c),
        }
    }
    let mut tools = Vec::new();
    for segment in unquoted.split(['|', ';', '&', '(', '`']) {
        let word = segment.split_whitespace().find(|word| !is_assignment(word));
        if let Some(tool) = TOOLS.iter().find(|tool| word == Some(**tool)) {
            tools.push(*tool);
        }
    }
    tools
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Every command of one Markdown file that runs a tool of [`TOOLS`], in order.
fn commands_in(file: &str, markdown: &str) -> Vec<DocCommand> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut commands = Vec::new();
    let mut fence: Option<(String, Block)> = None;
    let mut prelude = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let trimmed = line.trim();
        index += 1;
        let Some((marker, block)) = &fence else {
            if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                let marker: String = trimmed
                    .chars()
                    .take_while(|c| *c == '`' || *c == '~')
                    .collect();
                let info = trimmed[marker.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_lowercase();
                let block = match info.as_str() {
                    "sh" | "bash" | "shell" | "zsh" => Block::Shell,
                    "" | "console" | "text" => Block::Prompted,
                    _ => Block::Other,
                };
                fence = Some((marker, block));
                prelude.clear();
            }
            continue;
        };
        if trimmed == marker.as_str() {
            fence = None;
            continue;
        }
        let first = match (block, trimmed.strip_prefix("$ ")) {
            (Block::Other, _) | (Block::Prompted, None) => continue,
            (_, Some(prompted)) => prompted,
            (Block::Shell, None) => trimmed,
        };
        let at = format!("{file}:{index}");
        let mut joined = first.to_owned();
        loop {
            let more = if joined.ends_with('\\') {
                joined.pop();
                " "
            } else if open_quote(split_comment(&joined).0) {
                "\n"
            } else {
                break;
            };
            match lines.get(index) {
                Some(next) if next.trim() != marker.as_str() => {
                    joined.push_str(more);
                    joined.push_str(next.trim());
                    index += 1;
                }
                _ => break,
            }
        }
        let (command, comment) = split_comment(&joined);
        if command.is_empty() {
            continue;
        }
        let mut script = command.to_owned();
        if let Some(end) = heredoc_end(command) {
            while let Some(next) = lines.get(index) {
                index += 1;
                script.push('\n');
                script.push_str(next);
                if next.trim() == end {
                    break;
                }
            }
        }
        let tools = tools_in(command);
        if !tools.is_empty() {
            commands.push(DocCommand {
                at,
                text: command.split_whitespace().collect::<Vec<_>>().join(" "),
                comment: comment.to_owned(),
                script,
                prelude: prelude.clone(),
            });
        }
        if command.split_whitespace().next().is_some_and(is_assignment) {
            prelude.push(command.to_owned());
        }
    }
    commands
}

/// README.md, then docs/*.md by name.
fn documentation() -> Vec<(String, String)> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(repo_path("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(repo_path(&file)).unwrap();
            (file, text)
        })
        .collect()
}

fn documented_commands() -> Vec<DocCommand> {
    documentation()
        .iter()
        .flat_map(|(file, text)| commands_in(file, text))
        .collect()
}

/// The listed commands and their reasons: a command on its own line, its reason indented on
/// the lines below; `#` lines are comments.
fn parse_listed(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let Some(command) = &current else {
                return Err(format!("line {}: a reason without a command", number + 1));
            };
            let reason = listed.get_mut(command).unwrap();
            if !reason.is_empty() {
                reason.push(' ');
            }
            reason.push_str(line.trim());
        } else {
            let command = line.split_whitespace().collect::<Vec<_>>().join(" ");
            if listed.insert(command.clone(), String::new()).is_some() {
                return Err(format!("line {}: {command} is listed twice", number + 1));
            }
            current = Some(command);
        }
    }
    match listed.iter().find(|(_, reason)| reason.is_empty()) {
        Some((command, _)) => Err(format!("{command} is listed without a reason")),
        None => Ok(listed),
    }
}

fn listed() -> BTreeMap<String, String> {
    parse_listed(&std::fs::read_to_string(repo_path(LISTED)).unwrap()).unwrap()
}

/// The command as the test runs it: placeholders replaced, optional `[--flag]`s given.
fn runnable(script: &str) -> Result<String, String> {
    let mut script = script.to_owned();
    for (placeholder, value) in PLACEHOLDERS {
        script = script.replace(placeholder, value);
    }
    let words: Vec<String> = script
        .split(' ')
        .map(
            |word| match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                Some(flag) if flag.starts_with('-') => flag.to_owned(),
                _ => word.to_owned(),
            },
        )
        .collect();
    let script = words.join(" ");
    let unknown = script.match_indices('<').find_map(|(start, _)| {
        let rest = &script[start + 1..];
        let name = &rest[..rest.find('>')?];
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .then(|| format!("<{name}>"))
    });
    match unknown {
        Some(placeholder) => Err(format!(
            "unknown placeholder {placeholder}: add it to PLACEHOLDERS"
        )),
        None => Ok(script),
    }
}

/// The control plane the docs' commands run against, and where they run.
struct Cluster {
    plane: ControlPlane,
    /// The working directory: the repository's top-level entries linked, so that files a
    /// command writes stay out of the repository.
    scratch: PathBuf,
    path: OsString,
    fixture: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let plane = ControlPlane::start(
            "docs",
            &Nodes {
                gpu_nodes: 1,
                gpus_per_node: 1,
                cpu_nodes: 1,
            },
        )
        .unwrap();
        // The monitoring objects the install page turns on need the Prometheus Operator's CRDs.
        install_monitoring_crds(&plane).unwrap();
        let scratch = plane.dir().join("repo");
        std::fs::create_dir_all(scratch.join("helm")).unwrap();
        for entry in std::fs::read_dir(repo_path("")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name != "target" && name != ".git" && name != "charts" {
                std::os::unix::fs::symlink(entry.path(), scratch.join(&name)).unwrap();
            }
        }
        // The API server, built from source, calls itself v0.0.0-master, which the chart's
        // `kubeVersion` refuses at install: the commands get the chart without that line
        // (chart.rs renders and lints it with the constraint, at 1.37).
        let chart = scratch.join("charts/mineru-operator");
        copy_dir(&repo_path("charts/mineru-operator"), &chart).unwrap();
        let manifest = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
        let unconstrained = manifest
            .lines()
            .filter(|line| !line.starts_with("kubeVersion:"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(chart.join("Chart.yaml"), unconstrained + "\n").unwrap();
        let plugin = workspace_binary("kubectl-mineru").unwrap();
        let mut path = OsString::from(plane.bin());
        path.push(":");
        path.push(plugin.parent().unwrap());
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let fixture = plane.dir().join("fixture.yaml");
        let example = std::fs::read_to_string(repo_path("examples/minimal.yaml")).unwrap();
        std::fs::write(&fixture, format!("{FIXTURE}---\n{example}")).unwrap();
        Cluster {
            plane,
            scratch,
            path,
            fixture,
        }
    }

    /// A shell command in the scratch directory, with the cluster's kubectl, helm and plugin.
    fn shell(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-o", "pipefail", "-c", script])
            .current_dir(&self.scratch)
            .env("PATH", &self.path)
            .env("KUBECONFIG", self.plane.admin_kubeconfig());
        for (variable, dir) in [
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ] {
            command.env(variable, self.scratch.join("helm").join(dir));
        }
        command
    }

    /// Runs `script`; whether it succeeded, its exit code, stdout and stderr.
    fn run(&self, script: &str) -> Run {
        let mut child = self
            .shell(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + COMMAND_BUDGET;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let (stdout, mut stderr) = (out.join().unwrap(), err.join().unwrap());
        if status.is_none() {
            stderr = format!("{stderr}\ntimed out after {COMMAND_BUDGET:?}");
        }
        Run {
            ok: status.is_some_and(|s| s.success()),
            code: status.and_then(|s| s.code()),
            stdout,
            stderr,
        }
    }

    fn must(&self, script: &str) {
        let run = self.run(script);
        assert!(run.ok, "{script}: {}{}", run.stdout, run.stderr);
    }

    /// What every command may assume, restored before each: the CRD, the namespaces, a
    /// labelled API key Secret, examples/minimal.yaml, and the chart installed.
    fn ensure_fixture(&self) {
        if !self.run("kubectl get crd minerudeployments.mineru.dev").ok {
            self.must("kubectl apply --server-side -f crds/minerudeployments.yaml");
            wait_until(
                "the CRD to be Established",
                Duration::from_secs(60),
                || {
                    let status = self.run(
                        "kubectl get crd minerudeployments.mineru.dev -o jsonpath='{.status.conditions[?(@.type==\"Established\")].status}'",
                    );
                    Ok((status.stdout.trim() == "True").then_some(()))
                },
            )
            .unwrap();
        }
        let fixture = self.fixture.to_str().unwrap();
        self.must(&format!(
            "kubectl apply --server-side --force-conflicts --field-manager=docs-fixture -f {fixture}"
        ));
        if !self
            .run(&format!("helm status {RELEASE} -n {OPERATOR_NAMESPACE}"))
            .ok
        {
            self.must(&format!(
                "helm install {RELEASE} charts/mineru-operator -n {OPERATOR_NAMESPACE}"
            ));
        }
    }

    /// Back to the chart's defaults, for the next page.
    fn reset_release(&self) {
        if self
            .run(&format!("helm status {RELEASE} -n {OPERATOR_NAMESPACE}"))
            .ok
        {
            self.must(&format!(
                "helm uninstall {RELEASE} -n {OPERATOR_NAMESPACE} --wait"
            ));
        }
    }

    /// Why `command` failed, or `None` when it did what the docs say.
    fn check(&self, command: &DocCommand) -> Option<String> {
        let script = match runnable(&command.script) {
            Ok(script) => script,
            Err(error) => return Some(error),
        };
        let words: Vec<&str> = command.text.split_whitespace().collect();
        if tools_in(&command.text).contains(&"make") {
            if words.first() != Some(&"make") || tools_in(&command.text).len() > 1 {
                return Some("a make command stands alone on its line".into());
            }
            let output = Command::new("make")
                .arg("-n")
                .args(&words[1..])
                .current_dir(repo_path(""))
                .output()
                .unwrap();
            return (!output.status.success())
                .then(|| String::from_utf8_lossy(&output.stderr).into_owned());
        }
        self.ensure_fixture();
        let mut full = command.prelude.join("\n");
        full.push('\n');
        full.push_str(&script);
        let run = self.run(&full);
        let refused = command.comment.starts_with("refused");
        // `kubectl auth can-i` answers no with exit status 1.
        let answered =
            command.text.contains("auth can-i") && run.code == Some(1) && run.stdout.trim() == "no";
        let output = format!("{}{}", run.stdout, run.stderr);
        match (run.ok || answered, refused) {
            (true, false) | (false, true) => None,
            (true, true) => Some(format!("accepted, but the docs say refused:\n{output}")),
            (false, false) => Some(format!("exit {:?}:\n{}", run.code, tail_text(&output, 20))),
        }
    }
}

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

const FIXTURE: &str = "apiVersion: v1
kind: Namespace
metadata: {name: parsing}
---
apiVersion: v1
kind: Namespace
metadata: {name: mineru-system}
---
apiVersion: v1
kind: Secret
metadata:
  name: vllm-api-key
  namespace: parsing
  labels: {mineru.dev/operator-readable: \"true\"}
stringData: {token: docs-test-key}
";

#[test]
fn commands_are_read_from_shell_blocks_with_continuations_comments_heredocs_and_prompts() {
    let markdown = "Text with `kubectl get pods` inline.

```sh
SA=system:serviceaccount:mineru-system:mineru-operator
kubectl get mdep -n parsing      # phase, weight
# the operator's own comment
helm template m charts/mineru-operator \\
  --set a=b
kubectl -n parsing apply --dry-run=server -f - <<'YAML'    # refused: a reason
kind: X
YAML
W=$(kubectl get pod -o name | head -1)
kubectl get pods -o jsonpath='{.items[?(@.kind==\"Pod\")].metadata.name}' --as \"$SA\"
cargo test
make demo   # the demo
```

```yaml
command: kubectl delete everything
```

```
$ kubectl mineru plan --docs-per-hour 60
step 1/3: kubectl output is not a command
```
";
    let commands = commands_in("x.md", markdown);
    let texts: Vec<&str> = commands.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "kubectl get mdep -n parsing",
            "helm template m charts/mineru-operator --set a=b",
            "kubectl -n parsing apply --dry-run=server -f - <<'YAML'",
            "W=$(kubectl get pod -o name | head -1)",
            "kubectl get pods -o jsonpath='{.items[?(@.kind==\"Pod\")].metadata.name}' --as \"$SA\"",
            "make demo",
            "kubectl mineru plan --docs-per-hour 60",
        ]
    );
    assert_eq!(commands[0].at, "x.md:5");
    assert_eq!(
        commands[1].at, "x.md:7",
        "an apostrophe in a comment opens no quote"
    );
    assert_eq!(commands[0].comment, "phase, weight");
    assert_eq!(commands[2].comment, "refused: a reason");
    assert_eq!(
        commands[2].script,
        "kubectl -n parsing apply --dry-run=server -f - <<'YAML'\nkind: X\nYAML"
    );
    assert_eq!(
        commands[4].prelude,
        [
            "SA=system:serviceaccount:mineru-system:mineru-operator",
            "W=$(kubectl get pod -o name | head -1)"
        ]
    );
    assert_eq!(
        runnable("kubectl mineru promote <name> -n <namespace> [--full]").unwrap(),
        "kubectl mineru promote docs -n parsing --full"
    );
    assert!(runnable("kubectl get pod <pod>").is_err());
    assert!(runnable("kubectl apply -f - <<'YAML' 2>/dev/null").is_ok());
}

#[test]
fn the_list_of_commands_needing_a_cluster_names_only_documented_commands_each_with_a_reason() {
    let documented: BTreeSet<String> = documented_commands().into_iter().map(|c| c.text).collect();
    let listed = listed();
    let stale: Vec<&String> = listed
        .keys()
        .filter(|command| !documented.contains(*command))
        .collect();
    assert!(
        stale.is_empty(),
        "{LISTED} lists commands the docs no longer have: {stale:#?}"
    );
    assert!(
        parse_listed("kubectl logs x\n").is_err(),
        "a reason is required"
    );
}

#[test]
fn the_runbooks_have_every_anchor_the_alerts_and_the_docs_link_to() {
    let runbooks = std::fs::read_to_string(repo_path("docs/runbooks.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(github_anchor)
        .collect();
    for anchor in RUNBOOK_ANCHORS {
        assert!(
            anchors.contains(anchor),
            "docs/runbooks.md has no ## {anchor}"
        );
    }
    let mut sources: Vec<PathBuf> = documentation()
        .into_iter()
        .map(|(file, _)| repo_path(&file))
        .collect();
    sources.extend(files_under(&repo_path("charts"), &|_| true));
    for source in sources {
        let Ok(text) = std::fs::read_to_string(&source) else {
            continue;
        };
        let mut from = 0;
        while let Some(found) = text[from..].find("runbooks.md#") {
            let start = from + found + "runbooks.md#".len();
            let anchor: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(
                anchors.contains(&anchor),
                "{} links to runbooks.md#{anchor}, which is no heading there",
                source.display()
            );
            from = start;
        }
    }
}

/// The anchor GitHub gives a heading: lower case, spaces to `-`, punctuation dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_kubectl_helm_and_make_command_in_the_docs_runs_or_is_listed_as_needing_a_cluster() {
    let listed = listed();
    let commands = documented_commands();
    let cluster = Cluster::start();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut page = String::new();
    for command in &commands {
        if listed.contains_key(&command.text) {
            continue;
        }
        let file = command.at.split(':').next().unwrap();
        if file != page {
            cluster.reset_release();
            page = file.to_owned();
        }
        ran += 1;
        if let Some(why) = cluster.check(command) {
            failures.push(format!("{}: {}\n  {}", command.at, command.text, why));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} documented commands failed; make them run here, or list them with the reason in {LISTED}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(ran > listed.len(), "ran {ran}, listed {}", listed.len());
}
