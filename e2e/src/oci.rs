//! Container images built from files on this machine, for the real node (e2e/src/node.rs): one
//! uncompressed layer in a hand-written OCI image layout (`oci-layout`, `index.json`, `blobs/`),
//! tarred for `ctr images import`. No registry, no image builder.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::process::run;

/// An image tarball and the name `ctr images import` gives it.
pub struct Image {
    /// `localhost/<repository>:<tag>`, the tag being a hash of the layer: what pod specs name.
    pub name: String,
    /// The OCI layout tar, under `<cache>/images/`.
    pub tar: PathBuf,
}

/// What goes into an image: files (copied, symlinks followed) at absolute paths, empty
/// directories, and the config's entrypoint and user.
#[derive(Default)]
pub struct Contents {
    files: Vec<(String, PathBuf)>,
    dirs: Vec<String>,
    entrypoint: Vec<String>,
    user: Option<String>,
}

impl Contents {
    /// `source` at `path` in the image.
    pub fn file(mut self, path: &str, source: &Path) -> Self {
        self.files.push((path.to_owned(), source.to_owned()));
        self
    }

    /// `binary` at `path`, and the shared libraries it loads (as `ldd` lists them) at the
    /// paths `ldd` names, so the image runs it with nothing else.
    pub fn binary(mut self, path: &str, binary: &Path) -> Result<Self> {
        for library in shared_libraries(binary)? {
            let at = library.to_string_lossy().into_owned();
            if !self.files.iter().any(|(existing, _)| *existing == at) {
                self.files.push((at, library));
            }
        }
        Ok(self.file(path, binary))
    }

    /// An empty directory (mode 1777: a mount point or scratch space any user may write).
    pub fn dir(mut self, path: &str) -> Self {
        self.dirs.push(path.to_owned());
        self
    }

    pub fn entrypoint(mut self, command: &[&str]) -> Self {
        self.entrypoint = command.iter().map(|arg| (*arg).to_owned()).collect();
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }
}

/// The image `localhost/<repository>:<hash>` holding `contents`, built once per content.
pub fn build(repository: &str, contents: &Contents) -> Result<Image> {
    let cache = cache_dir()?.join("images");
    std::fs::create_dir_all(&cache)?;
    let work = tempfile::tempdir_in(&cache)?;
    let rootfs = work.path().join("rootfs");
    for (path, source) in &contents.files {
        let target = rootfs.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("an absolute path has a parent"))?;
        std::fs::copy(source, &target)
            .with_context(|| format!("copying {} into the image", source.display()))?;
    }
    for dir in &contents.dirs {
        let target = rootfs.join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&target)?;
        run(Command::new("chmod").arg("1777").arg(&target))?;
    }
    // Reproducible: the same files make the same layer, hence the same tag.
    let layer = work.path().join("layer.tar");
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
        ])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let layer_digest = sha256_file(&layer)?;
    let tag = &layer_digest[..16];
    let name = format!("localhost/{repository}:{tag}");
    let tar = cache.join(format!("{repository}-{tag}.tar"));
    if tar.is_file() {
        return Ok(Image { name, tar });
    }

    let blobs = work.path().join("layout/blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let layer_size = std::fs::metadata(&layer)?.len();
    std::fs::rename(&layer, blobs.join(&layer_digest))?;
    let mut config = json!({"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "WorkingDir": "/"});
    if !contents.entrypoint.is_empty() {
        config["Entrypoint"] = json!(contents.entrypoint);
    }
    if let Some(user) = &contents.user {
        config["User"] = json!(user);
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let config = blob(&blobs, &serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer_size,
        }],
    });
    let manifest = blob(&blobs, &serde_json::to_vec(&manifest)?)?;
    // ctr takes the image's name from io.containerd.image.name; without it, it imports nothing.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.0,
            "size": manifest.1,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    });
    let layout = work.path().join("layout");
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let partial = work.path().join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&partial)
        .args(["oci-layout", "index.json", "blobs"]))?;
    // Renamed into place, so a concurrent or interrupted build never leaves half a tarball.
    std::fs::rename(&partial, &tar)?;
    // A rebuilt binary makes a new tag; the older tarballs of this image are dead weight.
    let prefix = format!("{repository}-");
    for entry in std::fs::read_dir(&cache)?.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let old_tag = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tar"));
        if old_tag.is_some_and(|old| old.len() == tag.len() && old != tag) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(Image { name, tar })
}

/// Writes `bytes` as a blob; its digest (`sha256:...`) and size.
fn blob(blobs: &Path, bytes: &[u8]) -> Result<(String, usize)> {
    let digest = hex(&Sha256::digest(bytes));
    std::fs::write(blobs.join(&digest), bytes)?;
    Ok((format!("sha256:{digest}"), bytes.len()))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// The libraries `ldd` resolves for `binary`, the dynamic loader included.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let error = String::from_utf8_lossy(&output.stderr);
        // A static binary: nothing to add.
        if error.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {}: {error}", binary.display());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let resolved = line.split("=>").nth(1).unwrap_or(line).trim();
        if let Some(path) = resolved
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libraries.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("ldd {}: {line}", binary.display());
        }
    }
    Ok(libraries)
}

/// `${MINERU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mineru-operator}`, as the scripts use.
fn cache_dir() -> Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(cache) = non_empty("MINERU_CACHE") {
        return Ok(PathBuf::from(cache));
    }
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither MINERU_CACHE, XDG_CACHE_HOME nor HOME is set")?;
    Ok(base.join("mineru-operator"))
}
