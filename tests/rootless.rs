//! devaipod on rootless podman: the core loop as a non-root user, against that user's own
//! podman. Started as root (CI), each test runs again as the rootless test user that
//! `scripts/setup.sh --rootless` prepares (see `common::rootless_here`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// `devaipod gator-bridge` inside `agent` (as the agent's own user): an MCP `initialize`
/// on stdin, the first line it answers.
fn gator_answer(agent: &str) -> String {
    let mut child = Command::new("podman")
        .args(["exec", "-i", agent, "timeout", "20", "/opt/devaipod/gator/devaipod", "gator-bridge"])
        .arg("/run/devaipod/gator/gator.sock")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let init = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "rootless-test", "version": "0" } } });
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{init}").unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        line
    });
    let line = reader.join().unwrap();
    drop(stdin);
    line
}

#[test]
fn the_core_loop_runs_on_rootless_podman() {
    if !rootless_here("the_core_loop_runs_on_rootless_podman") || !podman_available() {
        return;
    }
    assert!(!devaipod::pods::podman::is_root());
    let env = TestEnv::new("");
    let repo = fixture_repo(env.dir.path(), "rl", &[("src/main.txt", "rootless\n")]);
    let up = std::time::Instant::now();
    env.ok(&["up", repo.to_str().unwrap(), "--name", "rl"]);
    eprintln!("rootless up (agent answering) took {:?}", up.elapsed());
    let info = podman(&["info", "--format", "{{.Host.Security.Rootless}} {{.Store.GraphDriverName}}"]);
    assert!(info.starts_with("true "), "podman is rootless here: {info}");
    eprintln!("storage: {}", info.split_whitespace().nth(1).unwrap_or("?"));

    let status = env.json(&["status", "rl"]);
    assert_eq!((status["workspace"].as_str(), status["agent"].as_str()), (Some("running"), Some("running")));
    assert_eq!(env.ok(&["exec", "rl", "--", "cat", "src/main.txt"]), "rootless\n");
    assert_eq!(env.ok(&["exec", "rl", "--agent", "--", "id", "-u"]).trim(), "1000");

    // The walls hold rootless too: the agent's capabilities, no new privileges, loopback
    // only, no user namespaces, the human's workspace read-only.
    let proc1 = env.ok(&["exec", "rl", "--agent", "--", "cat", "/proc/1/status"]);
    assert!(proc1.lines().any(|l| l.split_whitespace().eq(["CapEff:", "0000000000000400"])), "{proc1}");
    assert!(proc1.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])), "{proc1}");
    let agent = "devaipod-rl-agent";
    let interfaces = podman(&["exec", agent, "cat", "/proc/net/dev"]);
    let names: Vec<&str> = interfaces.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(names, ["lo"], "{interfaces}");
    let unshare = podman(&["exec", agent, "sh", "-c", "unshare -Ur true 2>&1 && echo made || echo refused"]);
    assert_eq!(unshare.lines().last(), Some("refused"), "{unshare}");
    let w = env.run(&["exec", "rl", "--agent", "--", "touch", "/mnt/main-workspace/agent-was-here"]);
    assert!(text(&w.stderr).contains("Read-only file system"), "{}", text(&w.stderr));

    // The agent's API socket: made by the agent's uid (a subordinate uid of this user's),
    // reached by this user's daemon (`up` waited for its answer).
    let sock = env.dir.path().join("run/agent/rl/api.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(meta.file_type().is_socket(), "{}", sock.display());
    assert_ne!(meta.uid(), devaipod::pods::socket::euid(), "made inside the user namespace");

    // Gator's socket answers the agent's bridge in its own pod, and only its own pod has it.
    let answer = gator_answer(agent);
    let answer: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("gator's answer through the bridge: {e}: {answer:?}"));
    assert_eq!(answer["id"], 1, "{answer}");
    assert!(answer["result"]["serverInfo"].is_object(), "{answer}");
    let ws_mounts = podman(&["exec", "devaipod-rl-workspace", "cat", "/proc/self/mountinfo"]);
    assert!(!ws_mounts.contains("/gator/"), "gator's socket is the agent's only: {ws_mounts}");

    // stop → start → stop → delete.
    env.ok(&["stop", "rl"]);
    assert_ne!(env.json(&["status", "rl"])["status"], "Running");
    env.ok(&["start", "rl"]);
    assert_eq!(env.json(&["status", "rl"])["agent"], "running");
    assert_eq!(env.ok(&["exec", "rl", "--", "cat", "src/main.txt"]), "rootless\n", "the volume survives");
    env.ok(&["stop", "rl"]);
    env.ok(&["delete", "rl"]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// A non-root user without a runtime directory (no `XDG_RUNTIME_DIR`, no `/run/user/<uid>`)
/// is told exactly what to do; nothing is made in a directory shared with other users.
#[test]
fn a_user_without_a_runtime_directory_is_told_what_to_do() {
    if !devaipod::pods::podman::is_root() {
        eprintln!("\n*** SKIP: needs root (runs devaipod as the user nobody) ***\n");
        return;
    }
    let uid = text(&Command::new("id").args(["-u", "nobody"]).output().unwrap().stdout).trim().to_owned();
    assert!(!std::path::Path::new(&format!("/run/user/{uid}")).exists(), "nobody has no /run/user/{uid}");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "env", "-i", "HOME=/nonexistent", "PATH=/usr/bin:/bin", "DEVAIPOD_INSTANCE=norun"])
        .args([env!("CARGO_BIN_EXE_devaipod"), "list"])
        .current_dir("/")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "no runtime directory for uid {uid}: XDG_RUNTIME_DIR is not set and /run/user/{uid} does not exist"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("install -d -m 0700 -o $(id -un) /run/user/{uid}")), "{err}");
    assert!(!std::path::Path::new("/tmp/devaipod").exists());
}
