//! Shared helpers for integration tests: a per-test instance id, the real binary, real
//! podman, and cleanup of everything labelled with the instance, even when a test fails.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const LABEL_INSTANCE: &str = "io.devaipod.instance";

/// Whether podman's API answers. Without it the test is skipped loudly — unless
/// `DEVAIPOD_REQUIRE_PODMAN=1` (set by CI), where that is a failure.
pub fn podman_available() -> bool {
    let socket = std::env::var("CONTAINER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/run/podman/podman.sock".to_owned());
    let ok = Command::new("curl")
        .args([
            "-fsS",
            "--max-time",
            "3",
            "--unix-socket",
            &socket,
            "http://d/v4.0.0/libpod/_ping",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("DEVAIPOD_REQUIRE_PODMAN").as_deref() == Ok("1") {
            panic!(
                "podman's API does not answer on {socket}, and DEVAIPOD_REQUIRE_PODMAN=1: run scripts/setup.sh"
            );
        }
        eprintln!(
            "\n*** SKIPPED: podman's API does not answer on {socket}; run scripts/setup.sh to run this test ***\n"
        );
    }
    ok
}

/// One test's world: an instance id, a config file, a scratch directory, and cleanup.
pub struct TestEnv {
    pub instance: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl TestEnv {
    pub fn new(config_toml: &str) -> TestEnv {
        let instance = format!("it-{}-{:08x}", std::process::id(), rand_u32());
        let dir = tempfile::Builder::new()
            .prefix("devaipod-it-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("devaipod.toml");
        std::fs::write(&config, config_toml).unwrap();
        TestEnv {
            instance,
            dir,
            config,
            extra_env: Vec::new(),
        }
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// A command running the real devaipod binary in this test's instance.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_devaipod"));
        c.args(args)
            .env("DEVAIPOD_INSTANCE", &self.instance)
            .env("DEVAIPOD_CONFIG", &self.config)
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "devaipod {args:?} failed:\n{}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "devaipod {args:?} should fail; stdout:\n{}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Names of pods, containers and volumes carrying this instance's label.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers(&self.instance)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        cleanup(&self.instance);
    }
}

pub fn leftovers(instance: &str) -> Vec<String> {
    let filter = format!("label={LABEL_INSTANCE}={instance}");
    let mut out = Vec::new();
    for args in [
        vec![
            "pod",
            "ps",
            "--filter",
            &filter,
            "--format",
            "pod {{.Name}}",
        ],
        vec![
            "ps",
            "-a",
            "--filter",
            &filter,
            "--format",
            "container {{.Names}}",
        ],
        vec![
            "volume",
            "ls",
            "--filter",
            &filter,
            "--format",
            "volume {{.Name}}",
        ],
    ] {
        out.extend(podman(&args).lines().map(str::to_owned));
    }
    out
}

pub fn cleanup(instance: &str) {
    let filter = format!("label={LABEL_INSTANCE}={instance}");
    for pod in podman(&["pod", "ps", "-q", "--filter", &filter]).lines() {
        podman(&["pod", "rm", "-f", "-t", "0", pod]);
    }
    for c in podman(&["ps", "-aq", "--filter", &filter]).lines() {
        podman(&["rm", "-f", "-t", "0", c]);
    }
    for v in podman(&["volume", "ls", "-q", "--filter", &filter]).lines() {
        podman(&["volume", "rm", "-f", v]);
    }
    for i in podman(&["images", "-q", "--filter", &filter]).lines() {
        podman(&["rmi", "-f", i]);
    }
}

/// The podman CLI, for checking from outside what devaipod did (tests only).
pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman CLI");
    text(&out.stdout)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// A git repository with one commit, plus `files` (path → content).
pub fn fixture_repo(parent: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let repo = parent.join(name);
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), format!("# {name}\n")).unwrap();
    for (path, content) in files {
        let p = repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let git = |args: &[&str]| {
        let s = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(s.status.success(), "git {args:?}: {}", text(&s.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "fixture"]);
    repo
}
