//! What the benchmarks share: an isolated devaipod instance (its own config, data and
//! runtime directories, daemon on a free port) and a one-commit repository.

#![allow(dead_code)] // each benchmark uses a different part

use std::path::PathBuf;
use std::process::Command;

pub struct Env {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub instance: String,
}

impl Env {
    /// A fresh instance named `<prefix>-<pid>` with an empty config.
    pub fn new(prefix: &str) -> Env {
        let env = Env {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_devaipod")),
            dir: tempfile::tempdir().unwrap(),
            instance: format!("{prefix}-{}", std::process::id()),
        };
        env.write_config("");
        env
    }

    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.dir.path().join("devaipod.toml"), toml).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("DEVAIPOD_INSTANCE", &self.instance)
            .env("DEVAIPOD_CONFIG", self.dir.path().join("devaipod.toml"))
            .env("DEVAIPOD_DATA_DIR", self.dir.path().join("data"))
            .env("DEVAIPOD_RUNTIME_DIR", self.dir.path().join("run"))
            .env("DEVAIPOD_LISTEN", "127.0.0.1:0");
        c
    }

    /// Runs devaipod and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("devaipod");
        assert!(out.status.success(), "devaipod {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A file of the instance's directories, trimmed ("" when missing).
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap_or_default().trim().to_owned()
    }

    /// A git repository `r` with one commit.
    pub fn repo(&self) -> PathBuf {
        let repo = self.dir.path().join("r");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("README.md"), "# r\n").unwrap();
        for args in [
            &["init", "-q"][..],
            &["add", "-A"],
            &["-c", "user.name=b", "-c", "user.email=b@b.invalid", "commit", "-qm", "r"],
        ] {
            Command::new("git").args(args).current_dir(&repo).output().unwrap();
        }
        repo
    }
}
