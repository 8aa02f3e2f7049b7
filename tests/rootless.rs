//! devaipod on rootless podman: the core loop as a non-root user, against that user's own
//! podman. Started as root (CI), each test runs again as the rootless test user that
//! `scripts/setup.sh --rootless` prepares (see `common::rootless_here`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// A podman secret of this user's, removed on drop.
struct Secret(String);

impl Secret {
    fn create(name: &str, value: &str) -> Secret {
        let mut child = Command::new("podman")
            .args(["secret", "create", name, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        Secret(name.to_owned())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        podman(&["secret", "rm", &self.0]);
    }
}

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
    let secret = format!("devaipod-rl-{}", std::process::id());
    let _secret = Secret::create(&secret, "rootless-secret-5e1f");
    let llm = ScriptedLlm::start(&serde_json::json!({ "rules": [
        { "match": "please write the greeting", "steps": [
            { "tool": "write", "args": { "filePath": "/workspaces/rl/hello.txt", "content": "hi from rootless\n" } },
            { "text": "Wrote hello.txt" }
        ]}
    ]}));
    let env = TestEnv::new(&format!("{}[trusted]\nsecrets = [\"RL_SECRET={secret}\"]\n", llm.agent_config()));
    let devcontainer = r#"{ "image": "localhost/devaipod-base:latest", "forwardPorts": [9000] }"#;
    let repo = fixture_repo(
        env.dir.path(),
        "rl",
        &[("src/main.txt", "rootless\n"), (".devcontainer/devcontainer.json", devcontainer)],
    );
    let up = std::time::Instant::now();
    env.ok(&["up", repo.to_str().unwrap(), "--name", "rl"]);
    eprintln!("rootless up (agent answering) took {:?}", up.elapsed());
    let info = podman(&["info", "--format", "{{.Host.Security.Rootless}} {{.Store.GraphDriverName}}"]);
    assert!(info.starts_with("true "), "podman is rootless here: {info}");
    eprintln!("storage: {}", info.split_whitespace().nth(1).unwrap_or("?"));

    // A podman secret of the user's reaches the human's container only.
    assert_eq!(env.ok(&["exec", "rl", "--", "printenv", "RL_SECRET"]), "rootless-secret-5e1f\n");
    assert!(!env.ok(&["exec", "rl", "--agent", "--", "env"]).contains("rootless-secret-5e1f"));

    // A forwarded port is published on the host's 127.0.0.1 (rootlessport) and reaches a
    // server in the human's container.
    let status = env.json(&["status", "rl"]);
    let port = status["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["container_port"] == 9000))
        .unwrap_or_else(|| panic!("port 9000 published: {status}"));
    assert_eq!(port["host_ip"], "127.0.0.1", "{status}");
    let host_port = port["host_port"].as_u64().unwrap();
    let serve = "git init -q --bare /tmp/p.git && (git daemon --reuseaddr --export-all --listen=0.0.0.0 --port=9000 --base-path=/tmp /tmp >/dev/null 2>&1 </dev/null &)";
    env.ok(&["exec", "rl", "--", "sh", "-c", serve]);
    let url = format!("git://127.0.0.1:{host_port}/p.git");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !Command::new("git").args(["ls-remote", &url]).output().unwrap().status.success() {
        assert!(std::time::Instant::now() < deadline, "{url} does not answer");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The agent's UI through the daemon's proxy (its own port), which reaches the agent
    // through its API socket.
    let auth = format!("Authorization: Bearer {}", env.token());
    let curl = |url: &str| {
        let out = Command::new("curl").args(["-fsS", "--max-time", "20", "-H", &auth, url]).output().unwrap();
        assert!(out.status.success(), "GET {url}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let page = curl(&format!("http://{}/workspaces/rl/agent", env.daemon_addr()));
    let origin = page.split("http://127.0.0.1:").nth(1).unwrap_or_else(|| panic!("the agent UI's origin: {page}"));
    let ui_port: String = origin.chars().take_while(char::is_ascii_digit).collect();
    let sessions = curl(&format!("http://127.0.0.1:{ui_port}/session"));
    assert!(sessions.trim_start().starts_with('['), "opencode's sessions through the proxy: {sessions}");

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

    // A task: the agent reaches the scripted LLM only through the daemon's egress proxy;
    // its proposal is applied into the human's workspace.
    let out = env.run(&["--json", "run", "-w", "rl", "-c", "please write the greeting"]);
    assert!(out.status.success(), "run failed:\n{}", text(&out.stderr));
    let done: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    assert!(!llm.requests().is_empty(), "the LLM was asked");
    let task_id = done["task"]["id"].as_str().unwrap().to_owned();
    let pid = done["proposal"].as_str().expect("a proposal").to_owned();
    assert_eq!(env.json(&["approve", &pid, "--apply"])["state"], "applied");
    let branch = format!("devaipod/{task_id}");
    assert_eq!(env.ok(&["exec", "rl", "--", "git", "show", &format!("{branch}:hello.txt")]), "hi from rootless\n");

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
    let staged = stage_for_other_users(); // the build may sit where nobody cannot enter
    let uid = text(&Command::new("id").args(["-u", "nobody"]).output().unwrap().stdout).trim().to_owned();
    assert!(!std::path::Path::new(&format!("/run/user/{uid}")).exists(), "nobody has no /run/user/{uid}");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "env", "-i", "HOME=/nonexistent", "PATH=/usr/bin:/bin", "DEVAIPOD_INSTANCE=norun"])
        .arg(staged.path().join("devaipod"))
        .arg("list")
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
    assert!(!std::path::Path::new("/tmp/devaipod/norun").exists(), "nothing in a shared directory");
}
