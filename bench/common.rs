//! What the benchmarks share: an isolated devaipod instance (its own config, data and
//! runtime directories, daemon on a free port) and a one-commit repository.

#![allow(dead_code)] // each benchmark uses a different part

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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
        self.repo_named("r")
    }

    /// A git repository `name` with one commit.
    pub fn repo_named(&self, name: &str) -> PathBuf {
        let repo = self.dir.path().join(name);
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("README.md"), format!("# {name}\n")).unwrap();
        commit_all(&repo);
        repo
    }

    /// `devaipod serve` of this instance, once its address and token are written.
    pub fn serve(&self) -> std::process::Child {
        let daemon = self.cmd(&["serve"]).stderr(std::process::Stdio::null()).spawn().expect("daemon");
        for _ in 0..100 {
            if !self.read("run/listen").is_empty() && !self.read("data/token").is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }
}

/// `git init` (when needed) and one commit of everything in `repo`.
pub fn commit_all(repo: &std::path::Path) {
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["-c", "user.name=b", "-c", "user.email=b@b.invalid", "commit", "-qm", "r"],
    ] {
        Command::new("git").args(args).current_dir(repo).output().unwrap();
    }
}

/// The scripted LLM (`tests/support/scripted_llm.py`) on 127.0.0.1 playing `script`,
/// logging its requests to `log` when given; returns it (kill it when done) and its port.
pub fn scripted_llm(
    env: &Env,
    script: &serde_json::Value,
    log: Option<&std::path::Path>,
) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let script_path = env.dir.path().join("script.json");
    std::fs::write(&script_path, script.to_string()).unwrap();
    let mut c = Command::new("python3");
    c.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/scripted_llm.py"))
        .args(["--host", "127.0.0.1", "--port", "0", "--script"])
        .arg(&script_path)
        .stdout(std::process::Stdio::piped());
    if let Some(log) = log {
        c.arg("--log").arg(log);
    }
    let mut llm = c.spawn().expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(llm.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().trim_start_matches("listening on ").parse().expect("the scripted LLM's port");
    (llm, port)
}

/// p50, p90 and max of a set of timings (nearest rank), and how many there were.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn of(v: &[Duration]) -> Stats {
        assert!(!v.is_empty(), "no timings");
        let mut v = v.to_vec();
        v.sort();
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats { n: v.len(), p50: rank(0.5), p90: rank(0.9), p99: rank(0.99), max: v[v.len() - 1] }
    }

    /// `p50 / p90 / max` in milliseconds.
    pub fn cols(&self) -> String {
        format!("{:>8} {:>8} {:>8}", fmt_ms(self.p50), fmt_ms(self.p90), fmt_ms(self.max))
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds with the digits that matter: 0.55, 21.3, 3512.
pub fn fmt_ms(d: Duration) -> String {
    match ms(d) {
        m if m < 10.0 => format!("{m:.2}"),
        m if m < 1000.0 => format!("{m:.1}"),
        m => format!("{m:.0}"),
    }
}

/// The header of [`row`]'s table.
pub fn header() {
    println!(
        "{:<46} {:>3} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>6} {:>6}",
        "measure (ms)", "n", "p50", "p90", "max", "floor50", "floor90", "floormax", "p50/f", "p90/50", "max/50"
    );
}

/// One row: ours, the floor measured in the same run, the ratio of the p50s, and the tail
/// (p90 and max over our own p50); then the target.
pub fn row(what: &str, ours: &Stats, floor: Option<&Stats>, target: &str) {
    let (f, ratio) = match floor {
        Some(f) => (f.cols(), format!("{:>5.2}×", ours.p50.as_secs_f64() / f.p50.as_secs_f64())),
        None => (format!("{:>8} {:>8} {:>8}", "—", "—", "—"), format!("{:>6}", "—")),
    };
    let tail = |d: Duration| d.as_secs_f64() / ours.p50.as_secs_f64();
    println!(
        "{what:<46} {:>3} {} | {f} | {ratio} {:>5.2}× {:>5.2}×   {target}",
        ours.n,
        ours.cols(),
        tail(ours.p90),
        tail(ours.max)
    );
}

/// Waits (at most `limit`) until the instance's daemon has finished removing deleted
/// workspaces (`data/removals/` holds a record per pending removal); returns how long.
pub fn removals_done(data: &std::path::Path, limit: Duration) -> Duration {
    let dir = data.join("removals");
    let start = std::time::Instant::now();
    while std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) > 0 && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Podman objects left by `workspaces` of `instance`: pods, containers, volumes and images
/// carrying the instance's label and named after one of them, and their secrets (podman
/// 4.3 cannot filter secrets by label; they are named after the pods).
pub fn leftovers(instance: &str, workspaces: &[String]) -> Vec<String> {
    let filter = format!("label=io.devaipod.instance={instance}");
    let podman = |args: &[&str]| -> Vec<String> {
        let out = Command::new("podman").args(args).output().expect("podman");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    };
    let theirs = |n: &str| {
        workspaces.iter().any(|w| {
            let pod = format!("devaipod-{w}");
            n == pod || n.starts_with(&format!("{pod}-")) || n.contains(&format!("/{instance}-{w}:"))
        })
    };
    let mut out = Vec::new();
    for (kind, args) in [
        ("pod", &["pod", "ps", "--filter", &filter, "--format", "{{.Name}}"][..]),
        ("container", &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]),
        ("volume", &["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"]),
        ("image", &["images", "--filter", &filter, "--format", "{{.Repository}}:{{.Tag}}"]),
        ("secret", &["secret", "ls", "--format", "{{.Name}}"]),
    ] {
        out.extend(podman(args).into_iter().filter(|n| theirs(n)).map(|n| format!("{kind} {n}")));
    }
    out
}

pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().expect("podman");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes what [`podman_floor_up`] made.
pub fn podman_floor_delete(n: &str) {
    let pod = format!("devaipod-{n}");
    podman(&["pod", "rm", "-f", "-t", "0", &pod]);
    for v in ["workspace", "agent-workspace", "agent-home"] {
        podman(&["volume", "rm", "-f", &format!("{pod}-{v}")]);
    }
}

const IMAGE: &str = "localhost/devaipod-base:latest";

/// What `devaipod up` creates, done with the podman CLI.
pub fn podman_floor_up(n: &str, instance: &str, opencode: &std::path::Path) -> String {
    let label = format!("io.devaipod.instance={instance}");
    let pod = format!("devaipod-{n}");
    for v in ["workspace", "agent-workspace", "agent-home"] {
        podman(&["volume", "create", "--label", &label, &format!("{pod}-{v}")]);
    }
    podman(&["pod", "create", "--label", &label, "--name", &pod, "-p", "127.0.0.1::4096"]);
    podman(&[
        "create",
        "--pod",
        &pod,
        "--name",
        &format!("{pod}-workspace"),
        "--init",
        "--label",
        &label,
        "-v",
        &format!("{pod}-workspace:/workspaces/r"),
        IMAGE,
        "/run/podman-init",
        "-P",
    ]);
    podman(&[
        "create",
        "--pod",
        &pod,
        "--name",
        &format!("{pod}-agent"),
        "--init",
        "--label",
        &label,
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "1000:1000",
        "-v",
        &format!("{pod}-agent-workspace:/workspaces/r"),
        "-v",
        &format!("{pod}-workspace:/mnt/main-workspace:ro"),
        "-v",
        &format!("{pod}-agent-home:/home/agent"),
        "-v",
        &format!("{}:/opt/devaipod/bin:ro", opencode.display()),
        "-e",
        "HOME=/home/agent",
        "-e",
        "OPENCODE_DISABLE_MODELS_FETCH=1",
        "-e",
        "OPENCODE_SERVER_PASSWORD=floor",
        IMAGE,
        "/opt/devaipod/bin/opencode",
        "serve",
        "--port",
        "4096",
        "--hostname",
        "0.0.0.0",
    ]);
    podman(&["pod", "start", &pod]);
    // Ready when opencode's API answers, as devaipod waits for it (a short limit per try:
    // opencode never answers a request that arrives just before it serves).
    let port = podman(&["port", &format!("{pod}-agent"), "4096"]);
    let url = format!("http://{}/session", port.trim());
    for _ in 0..600 {
        let ok = Command::new("curl")
            .args(["-fs", "-o", "/dev/null", "--max-time", "0.3", "-u", "opencode:floor", &url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    port
}

/// Memory of a container (cgroup `memory.current`, MiB), through podman.
pub fn memory_mib(container: &str) -> f64 {
    let out = Command::new("podman")
        .args(["stats", "--no-stream", "--no-reset", "--format", "{{.MemUsage}}", container])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let used = text.split('/').next().unwrap_or("").trim().to_owned();
    let (num, unit): (String, String) = used.chars().partition(|c| c.is_ascii_digit() || *c == '.');
    let n: f64 = num.parse().unwrap_or(0.0);
    match unit.trim() {
        "kB" | "KB" | "KiB" => n / 1024.0,
        "GB" | "GiB" => n * 1024.0,
        "B" => n / 1024.0 / 1024.0,
        _ => n,
    }
}
