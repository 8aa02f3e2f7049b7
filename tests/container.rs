//! The daemon in a container: the image built offline from `Containerfile` (`prebuilt`
//! target, `scripts/daemon-container.sh build`), run with `scripts/daemon-container.sh run`
//! (host podman socket, state volume at its host path, host network), and the host's CLI
//! talking to it over TCP with its token (`DEVAIPOD_URL`, `DEVAIPOD_TOKEN`): a workspace,
//! a task with the scripted LLM, the proposal approved from the host, the agent's walls
//! as a host daemon builds them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Removes the daemon container, its state volume and the image, even when the test fails
/// (they carry the instance's label too: `TestEnv`'s cleanup would find them as well).
struct Daemon {
    name: String,
    volume: String,
    image: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        podman(&["rm", "-f", "-t", "5", &self.name]);
        podman(&["volume", "rm", "-f", &self.volume]);
        podman(&["rmi", "-f", &self.image]);
    }
}

fn script_cmd(env: &TestEnv, d: &Daemon, run_dir: &Path, args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/daemon-container.sh");
    Command::new("bash")
        .arg(script)
        .args(args)
        .env("DEVAIPOD_IMAGE", &d.image)
        .env("DEVAIPOD_NAME", &d.name)
        .env("DEVAIPOD_VOLUME", &d.volume)
        .env("DEVAIPOD_INSTANCE", &env.instance)
        .env("DEVAIPOD_LISTEN", "127.0.0.1:0")
        .env("DEVAIPOD_RUNTIME_DIR", run_dir)
        .env("DEVAIPOD_SOURCES", env.dir.path().join("src"))
        .env("DEVAIPOD_CONFIG", &env.config)
        .env("DEVAIPOD_OPENCODE_DIR", devaipod::core::opencode_dir())
        .output()
        .unwrap()
}

#[test]
fn the_daemon_in_a_container_serves_the_host_cli() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "please write the greeting", "steps": [
            { "tool": "write", "args": { "filePath": "/workspaces/boxed/hello.txt", "content": "hi from a box\n" } },
            { "text": "Wrote hello.txt" }
        ]}
    ]}));
    let config = format!("{}\n[ssh]\nenabled = false\n", llm.agent_config());
    // The host CLI's own runtime directory stays empty: it must not start a daemon of its own.
    let env = TestEnv::new(&config);
    let d = Daemon {
        name: format!("devaipod-{}", env.instance),
        volume: format!("devaipod-{}-state", env.instance),
        image: format!("localhost/devaipod-it:{}", env.instance),
    };
    let run_dir = env.dir.path().join("daemon-run");
    std::fs::create_dir_all(env.dir.path().join("src")).unwrap();
    let repo = fixture_repo(&env.dir.path().join("src"), "boxed", &[]);

    // The image, offline, from this build; its devaipod runs.
    let t = Instant::now();
    let out = script_cmd(&env, &d, &run_dir, &["build", devaipod_exe().to_str().unwrap()]);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    eprintln!("image built in {:.1} s", t.elapsed().as_secs_f64());
    let version = podman(&["run", "--rm", "--network", "none", &d.image, "--version"]);
    assert_eq!(version.trim(), format!("devaipod {}", env!("CARGO_PKG_VERSION")));
    let oc = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/opt/devaipod/opencode/opencode",
        &d.image,
        "--version",
    ]);
    assert!(!oc.trim().is_empty(), "the image's opencode runs");

    // The daemon container.
    let t = Instant::now();
    let out = script_cmd(&env, &d, &run_dir, &["run"]);
    assert!(out.status.success(), "run failed:\n{}", text(&out.stderr));
    let listen = run_dir.join("listen");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(listen.exists() && run_dir.join("api.sock").exists()) {
        assert!(Instant::now() < deadline, "the daemon did not come up:\n{}", podman(&["logs", &d.name]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = std::fs::read_to_string(&listen).unwrap().trim().to_owned();
    eprintln!("daemon container serving on {addr} after {:.1} s", t.elapsed().as_secs_f64());
    let token = podman(&["exec", &d.name, "devaipod", "token"]).trim().to_owned();
    assert_eq!(token.len(), 64, "a 256-bit token in hex: {token:?}");

    // Without the token, or with a wrong one, the host CLI is refused and says what to do.
    let env = env.with_env("DEVAIPOD_URL", &format!("http://{addr}"));
    let e = env.fails(&["list"]);
    assert!(e.contains(&format!("the daemon at http://{addr} needs its token: set DEVAIPOD_TOKEN")), "{e}");
    let mut wrong = env.cmd(&["list"]);
    wrong.env("DEVAIPOD_TOKEN", "0".repeat(64));
    let out = wrong.output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("refused the token"), "{}", text(&out.stderr));
    let env = env.with_env("DEVAIPOD_TOKEN", &token);

    // A workspace and a task through the containerized daemon, approved from the host.
    let t = Instant::now();
    let out = env.run(&["--json", "run", repo.to_str().unwrap(), "--name", "boxed", "-c", "please write the greeting"]);
    assert!(out.status.success(), "run failed:\n{}\ndaemon log:\n{}", text(&out.stderr), podman(&["logs", &d.name]));
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    eprintln!("workspace + task in {:.1} s", t.elapsed().as_secs_f64());
    let pid = done["proposal"].as_str().expect("a proposal").to_owned();
    let list = env.json(&["list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names, ["boxed"], "{list:#}");
    assert_eq!(env.json(&["approve", &pid, "--apply"])["state"], "applied");
    let branch = format!("devaipod/{}", done["task"]["id"].as_str().unwrap());
    assert_eq!(env.ok(&["exec", "boxed", "--", "git", "show", &format!("{branch}:hello.txt")]), "hi from a box\n");
    assert!(!env.dir.path().join("run/daemon.pid").exists(), "the host CLI started no daemon of its own");

    // The walls are the host daemon's: the agent's capabilities, no new privileges, no
    // network but loopback, and opencode from the daemon's data volume (a host path).
    let agent = "devaipod-boxed-agent";
    let status = podman(&["exec", agent, "cat", "/proc/self/status"]);
    assert!(status.contains("CapEff:\t0000000000000400"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let mode = podman(&["inspect", agent, "--format", "{{.HostConfig.NetworkMode}}"]);
    assert_eq!(mode.trim(), "none", "the agent has no network but loopback");
    let mounts = podman(&["inspect", agent, "--format", "{{range .Mounts}}{{.Source}} {{end}}"]);
    let data = podman(&["volume", "inspect", "--format", "{{.Mountpoint}}", &d.volume]).trim().to_owned();
    assert!(mounts.contains(&format!("{data}/opencode/")), "opencode from the state volume: {mounts}");
    assert!(mounts.contains(&format!("{data}/bin/devaipod-")), "devaipod's copy from the state volume: {mounts}");

    env.ok(&["delete", "boxed"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !podman(&["pod", "ps", "-q", "--filter", "name=^devaipod-boxed$"]).trim().is_empty() {
        assert!(Instant::now() < deadline, "the pod was not removed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = script_cmd(&env, &d, &run_dir, &["rm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `devaipod systemd`: the host unit passes `systemd-analyze verify` (systemd itself is not
/// running on the test machines: the unit cannot be started there); the Quadlet files are
/// written where asked, and `--json` gives both.
#[test]
fn systemd_units_verify() {
    let env = TestEnv::new("");
    let dir = env.dir.path().join("units");
    let out = env.run(&["systemd", "--system", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unit = dir.join("devaipod.service");
    let content = std::fs::read_to_string(&unit).unwrap();
    assert!(content.contains(&format!("ExecStart={} --config ", devaipod_exe().display())), "{content}");
    match Command::new("systemd-analyze").arg("verify").arg(&unit).output() {
        Ok(v) => assert!(v.status.success(), "systemd-analyze verify:\n{}{}", text(&v.stdout), text(&v.stderr)),
        Err(e) => eprintln!("\n*** SKIPPED systemd-analyze verify: {e} ***\n"),
    }
    let files = env.json(&["systemd", "--quadlet", "--source", "/srv/src", "--image", "localhost/devaipod:1"]);
    let names: Vec<&str> = files["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["devaipod.container", "devaipod-state.volume"]);
    let container = files["files"][0]["content"].as_str().unwrap();
    assert!(
        container.contains("\nImage=localhost/devaipod:1\n") && container.contains("\nVolume=/srv/src:/srv/src:ro\n"),
        "{container}"
    );
    assert!(container.contains(&format!("\nEnvironment=DEVAIPOD_INSTANCE={}\n", env.instance)), "{container}");
    let e = env.fails(&["systemd", "--image", "x"]);
    assert!(e.contains("--quadlet"), "{e}");
    let e = env.fails(&["systemd", "--quadlet", "--graph-root", "storage"]);
    assert!(e.contains("--graph-root storage is a relative path"), "{e}");
}
