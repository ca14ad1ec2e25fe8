//! The release inputs, checked with the real linters: every Dockerfile under images/ passes
//! hadolint, every workflow passes actionlint (with shellcheck on its scripts), and the worker
//! image ships the pdfium build the test suite loads.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use mineru_e2e::{files_under, repo_path};

/// hadolint and actionlint, installed once per version by `install-deps.sh linters`.
fn linters() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = repo_path("e2e/scripts/install-deps.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("linters")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} linters: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

/// Runs a linter from the repository root, where it finds the repository's own configuration.
fn lint(tool: &str, args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(linters().join(tool))
        .args(args)
        .args(files)
        .current_dir(repo_path(""))
        .output()
        .unwrap()
}

fn report(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Files under `dir` (recursively) whose name satisfies `wanted`, sorted.
fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

fn dockerfiles() -> Vec<PathBuf> {
    files_under(&repo_path("images"), &|path| {
        file_name(path) == "Dockerfile" || file_name(path).ends_with(".Dockerfile")
    })
}

/// The value of the first `NAME=value` assignment in a shell script or Dockerfile, after `prefix`
/// (`""` for shell, `"ARG "` for a Dockerfile).
fn assignment(text: &str, prefix: &str, name: &str) -> String {
    let start = format!("{prefix}{name}=");
    text.lines()
        .find_map(|line| line.trim().strip_prefix(&start))
        .map(|value| value.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no {start} line"))
}

#[test]
fn every_dockerfile_under_images_passes_hadolint() {
    let dockerfiles = dockerfiles();
    let names: Vec<_> = dockerfiles
        .iter()
        .map(|path| path.strip_prefix(repo_path("images")).unwrap().to_owned())
        .collect();
    for image in ["operator", "worker", "vllm"] {
        assert!(
            names.contains(&Path::new(image).join("Dockerfile")),
            "images/{image}/Dockerfile is released: {names:?}"
        );
    }
    // Style findings fail too: hadolint's default lets them pass.
    let output = lint(
        "hadolint",
        &["--no-color", "--failure-threshold", "style"],
        &dockerfiles,
    );
    assert!(output.status.success(), "hadolint:\n{}", report(&output));
}

#[test]
fn every_workflow_passes_actionlint() {
    let workflows = files_under(&repo_path(".github/workflows"), &|path| {
        file_name(path).ends_with(".yml") || file_name(path).ends_with(".yaml")
    });
    assert!(
        workflows.iter().any(|path| path.ends_with("release.yml")),
        "the release workflow exists: {workflows:?}"
    );
    let output = lint("actionlint", &["-no-color"], &workflows);
    assert!(output.status.success(), "actionlint:\n{}", report(&output));
}

#[test]
fn the_worker_image_ships_the_pdfium_build_the_tests_load() {
    let install = std::fs::read_to_string(repo_path("e2e/scripts/install-deps.sh")).unwrap();
    let dockerfile = std::fs::read_to_string(repo_path("images/worker/Dockerfile")).unwrap();

    let tested_version = assignment(&install, "", "PYPDFIUM2_VERSION");
    let shipped_version = assignment(&dockerfile, "ARG ", "PYPDFIUM2_VERSION");
    assert_eq!(shipped_version, tested_version, "pypdfium2 version");

    // The suite runs on x86_64, so the amd64 image carries exactly the tested library.
    let tested_sum = assignment(&install, "", "LIBPDFIUM_SHA256");
    let shipped_sum = assignment(&dockerfile, "ARG ", "LIBPDFIUM_SHA256_AMD64");
    assert_eq!(shipped_sum, tested_sum, "libpdfium.so sha256 (amd64)");
    let arm_sum = assignment(&dockerfile, "ARG ", "LIBPDFIUM_SHA256_ARM64");
    for sum in [&tested_sum, &arm_sum] {
        assert!(
            sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()),
            "a sha256: {sum}"
        );
    }

    // The pins are only worth something if the download is checked against them.
    assert!(
        dockerfile.contains("sha256sum -c"),
        "the Dockerfile verifies libpdfium.so"
    );
    for path in dockerfiles() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.lines().any(|line| {
                let line = line.trim_start();
                line.starts_with("ADD ") && line.contains("://") && !line.contains("--checksum=")
            }),
            "{}: ADD of a URL without --checksum",
            path.display()
        );
    }
}
