//! Shared helpers for integration tests: a per-test instance id, the real binary, real
//! podman, and cleanup of everything labelled with the instance, even when a test fails.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const LABEL_INSTANCE: &str = "io.devaipod.instance";

/// Whether podman's API answers. Without it the test is skipped loudly — unless
/// `DEVAIPOD_REQUIRE_PODMAN=1` (set by CI), where that is a failure.
pub fn podman_available() -> bool {
    // Where devaipod itself looks (root's podman, or a user's own rootless one).
    let socket = devaipod::pods::podman::default_socket().display().to_string();
    let ok = Command::new("curl")
        .args(["-fsS", "--max-time", "3", "--unix-socket", &socket, "http://d/v4.0.0/libpod/_ping"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("DEVAIPOD_REQUIRE_PODMAN").as_deref() == Ok("1") {
            panic!("podman's API does not answer on {socket}, and DEVAIPOD_REQUIRE_PODMAN=1: run scripts/setup.sh");
        }
        eprintln!(
            "\n*** SKIPPED: podman's API does not answer on {socket}; run scripts/setup.sh to run this test ***\n"
        );
    }
    ok
}

/// The user rootless tests run as when started by root (`scripts/setup.sh --rootless`
/// prepares it).
pub fn rootless_user() -> String {
    std::env::var("DEVAIPOD_ROOTLESS_USER").unwrap_or_else(|_| "devaipod-rootless".to_owned())
}

/// For a test of rootless podman: `true` when it is to run in this process (not root: its
/// podman is rootless). As root, runs the same test of this binary as [`rootless_user`],
/// asserts that it passed and returns `false`. Without that user it skips loudly, unless
/// `DEVAIPOD_REQUIRE_ROOTLESS=1` (set by CI), where that is a failure.
pub fn rootless_here(test: &str) -> bool {
    if !devaipod::pods::podman::is_root() {
        return true;
    }
    let user = rootless_user();
    let skip = |why: String| {
        if std::env::var("DEVAIPOD_REQUIRE_ROOTLESS").as_deref() == Ok("1") {
            panic!("{why}, and DEVAIPOD_REQUIRE_ROOTLESS=1");
        }
        eprintln!("\n*** SKIP: {why}; run `scripts/setup.sh --rootless` to run {test} ***\n");
        false
    };
    let passwd = Command::new("getent").args(["passwd", &user]).output().unwrap();
    let fields: Vec<String> = text(&passwd.stdout).trim().split(':').map(str::to_owned).collect();
    let (Some(uid), Some(home)) = (fields.get(2), fields.get(5)) else {
        return skip(format!("there is no user {user} for rootless podman"));
    };
    let run_dir = format!("/run/user/{uid}");
    // The build may sit where only root can enter (a target directory under /root): the
    // user runs copies, in a directory of this run's that everyone can read.
    let staged = stage_for_other_users();
    let exe = staged.path().join("tests").join(std::env::current_exe().unwrap().file_name().unwrap());
    let as_user = |argv: &[&str]| {
        let mut c = Command::new("runuser");
        c.args(["-u", &user, "--", "env", "-i"])
            .arg(format!("HOME={home}"))
            .arg(format!("USER={user}"))
            .arg(format!("XDG_RUNTIME_DIR={run_dir}"))
            .arg(format!("PATH={}", std::env::var("PATH").unwrap_or_default()))
            .arg("RUST_BACKTRACE=1");
        for var in ["DEVAIPOD_REQUIRE_PODMAN", "DEVAIPOD_BASE_IMAGE"] {
            if let Ok(v) = std::env::var(var) {
                c.arg(format!("{var}={v}"));
            }
        }
        c.arg(format!("DEVAIPOD_TEST_EXE={}", staged.path().join("devaipod").display()));
        c.arg(format!("DEVAIPOD_TEST_SUPPORT={}", staged.path().join("support").display()));
        c.args(argv);
        c
    };
    let reach = as_user(&["test", "-x", exe.to_str().unwrap()]).status();
    assert!(reach.is_ok_and(|s| s.success()), "{user} cannot run the staged copy {}", exe.display());
    let socket = format!("{run_dir}/podman/podman.sock");
    let ping = ["curl", "-fsS", "--max-time", "3", "--unix-socket", &socket, "http://d/v4.0.0/libpod/_ping"];
    if !as_user(&ping).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
        return skip(format!("{user}'s rootless podman does not answer on {socket}"));
    }
    eprintln!("running {test} as {user} (rootless podman at {socket})");
    let status = as_user(&[exe.to_str().unwrap(), "--exact", test, "--nocapture", "--test-threads", "1"])
        .current_dir("/")
        .status()
        .unwrap();
    assert!(status.success(), "{test} failed as {user} (rootless podman): {status}");
    false
}

/// The devaipod executable under test: `DEVAIPOD_TEST_EXE` (a staged copy, see
/// [`rootless_here`]) or cargo's build.
pub fn devaipod_exe() -> PathBuf {
    std::env::var_os("DEVAIPOD_TEST_EXE").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_devaipod")), PathBuf::from)
}

/// `tests/support`: `DEVAIPOD_TEST_SUPPORT` (a staged copy) or the source tree's.
pub fn support_dir() -> PathBuf {
    std::env::var_os("DEVAIPOD_TEST_SUPPORT")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support"), PathBuf::from)
}

/// Copies of this test binary (`tests/`), the devaipod executable (`devaipod`) and
/// `tests/support` (`support/`) in a fresh directory that every user can read and run;
/// removed on drop.
pub fn stage_for_other_users() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("devaipod-staged-").tempdir().unwrap();
    let open = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
        open(to, 0o755);
    };
    open(dir.path(), 0o755);
    for sub in ["tests", "support"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        open(&dir.path().join(sub), 0o755);
    }
    let exe = std::env::current_exe().unwrap();
    copy(&exe, &dir.path().join("tests").join(exe.file_name().unwrap()));
    copy(&devaipod_exe(), &dir.path().join("devaipod"));
    for entry in std::fs::read_dir(support_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            copy(&entry.path(), &dir.path().join("support").join(entry.file_name()));
        }
    }
    dir
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
        let dir = tempfile::Builder::new().prefix("devaipod-it-").tempdir().unwrap();
        let config = dir.path().join("devaipod.toml");
        std::fs::write(&config, config_toml).unwrap();
        let (data, run) = (dir.path().join("data"), dir.path().join("run"));
        let extra_env = vec![
            ("DEVAIPOD_DATA_DIR".to_owned(), data.display().to_string()),
            ("DEVAIPOD_RUNTIME_DIR".to_owned(), run.display().to_string()),
            ("DEVAIPOD_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        TestEnv { instance, dir, config, extra_env }
    }

    /// The daemon's pid, when one runs for this test.
    pub fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("run/daemon.pid")).ok()?.trim().parse().ok()
    }

    /// The daemon's TCP address (`127.0.0.1:<port>`).
    pub fn daemon_addr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run/listen")).unwrap().trim().to_owned()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/token")).unwrap().trim().to_owned()
    }

    /// Stops this test's daemon with `signal` (e.g. "KILL") and waits until it is gone.
    pub fn kill_daemon(&self, signal: &str) {
        if let Some(pid) = self.daemon_pid() {
            let _ = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// A command running the real devaipod binary in this test's instance.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_exe(&devaipod_exe(), args)
    }

    /// The same, running another devaipod executable (a copy, an older build).
    pub fn cmd_exe(&self, exe: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(exe);
        c.args(args).env("DEVAIPOD_INSTANCE", &self.instance).env("DEVAIPOD_CONFIG", &self.config).stdin(Stdio::null());
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
        assert!(out.status.success(), "devaipod {args:?} failed:\n{}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "devaipod {args:?} should fail; stdout:\n{}", text(&out.stdout));
        text(&out.stderr)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Names of pods, containers and volumes carrying this instance's label, once the
    /// daemon has finished the removals of deleted workspaces (`delete` returns first and
    /// removes in the background; a record under `data/removals/` stays until it is done).
    pub fn leftovers(&self) -> Vec<String> {
        self.wait_for_removals();
        leftovers(&self.instance)
    }

    /// Waits (at most 60 s) until no removal of a deleted workspace is pending.
    pub fn wait_for_removals(&self) {
        let dir = self.dir.path().join("data/removals");
        let pending = || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        let start = std::time::Instant::now();
        while pending() > 0 && start.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_daemon("TERM");
        cleanup(&self.instance);
    }
}

pub fn leftovers(instance: &str) -> Vec<String> {
    let filter = format!("label={LABEL_INSTANCE}={instance}");
    let mut out = Vec::new();
    for args in [
        vec!["pod", "ps", "--filter", &filter, "--format", "pod {{.Name}}"],
        vec!["ps", "-a", "--filter", &filter, "--format", "container {{.Names}}"],
        vec!["volume", "ls", "--filter", &filter, "--format", "volume {{.Name}}"],
    ] {
        out.extend(podman(&args).lines().map(str::to_owned));
    }
    out
}

pub fn cleanup(instance: &str) {
    let filter = format!("label={LABEL_INSTANCE}={instance}");
    for pod in podman(&["pod", "ps", "--filter", &filter, "--format", "{{.Name}}"]).lines() {
        podman(&["pod", "rm", "-f", "-t", "0", pod]);
        for suffix in ["-agent-password", "-llm-key"] {
            podman(&["secret", "rm", &format!("{pod}{suffix}")]);
        }
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

/// A helper server from `tests/support/` (Python): started with `--port 0` and `--log`,
/// it prints `listening on PORT` and logs every request as a JSON line. Killed on drop.
struct SupportServer {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SupportServer {
    /// Runs `tests/support/<script>` with `args`; `input` (name, JSON) is written into its
    /// scratch directory first and passed as `--<name> <path>`.
    fn start(script: &str, args: &[&str], input: (&str, &serde_json::Value)) -> SupportServer {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let input_path = dir.path().join(format!("{}.json", input.0));
        std::fs::write(&input_path, input.1.to_string()).unwrap();
        let log = dir.path().join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(support_dir().join(script))
            .args(args)
            .args(["--port", "0", &format!("--{}", input.0)])
            .arg(&input_path)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 runs {script}: {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} printed no port: {line:?}"));
        SupportServer { child, port, log, _dir: dir }
    }

    /// Every request the server received, in order.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for SupportServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scripted OpenAI-compatible LLM (`tests/support/scripted_llm.py`), on this host's
/// loopback only: agents reach it through the daemon's egress proxy, which connects to
/// `host.containers.internal` at loopback.
pub struct ScriptedLlm {
    server: SupportServer,
}

impl ScriptedLlm {
    pub fn start(script: &serde_json::Value) -> ScriptedLlm {
        let server = SupportServer::start("scripted_llm.py", &["--host", "127.0.0.1"], ("script", script));
        ScriptedLlm { server }
    }

    /// The `[agent]` section that points the agent at this LLM.
    pub fn agent_config(&self) -> String {
        format!(
            "[agent]\nbase-url = \"http://host.containers.internal:{}/v1\"\nmodel = \"scripted\"\n",
            self.server.port
        )
    }

    /// Every request the LLM received, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.server.requests()
    }
}

/// The podman CLI, for checking from outside what devaipod did (tests only).
pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().expect("podman CLI");
    text(&out.stdout)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
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
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c", "init.defaultBranch=main"])
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

/// The fake GitHub API (`tests/support/fake_github.py`) on 127.0.0.1: only the daemon
/// talks to it. It records every request, with whether the token was right.
pub struct FakeGithub {
    server: SupportServer,
    pub port: u16,
    pub token: String,
}

impl FakeGithub {
    pub fn start(data: &serde_json::Value) -> FakeGithub {
        let token = format!("ghs_test_{:08x}", rand_u32());
        let server =
            SupportServer::start("fake_github.py", &["--host", "127.0.0.1", "--token", &token], ("data", data));
        FakeGithub { port: server.port, server, token }
    }

    /// Every request the fake received, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.server.requests()
    }
}

/// The podman-backed fake Kubernetes API (`tests/support/fake_kube.py`) on 127.0.0.1, and a
/// kubeconfig pointing at it (plain `http://`, no credentials) with `namespace`. Every
/// podman object it makes also carries `labels`, so [`cleanup`] finds what a test leaves.
pub struct FakeKube {
    server: SupportServer,
    pub port: u16,
    pub namespace: String,
    pub kubeconfig: PathBuf,
}

impl FakeKube {
    pub fn start(labels: &serde_json::Value, namespace: &str) -> FakeKube {
        let server = SupportServer::start("fake_kube.py", &["--host", "127.0.0.1"], ("config", &json_labels(labels)));
        let kubeconfig = server._dir.path().join("kubeconfig");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": format!("http://127.0.0.1:{}", server.port)}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        });
        std::fs::write(&kubeconfig, config.to_string()).unwrap();
        FakeKube { port: server.port, server, namespace: namespace.to_owned(), kubeconfig }
    }

    /// Every request the fake answered, in the order of its answers' status lines.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.server.requests()
    }
}

fn json_labels(labels: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "labels": labels })
}
