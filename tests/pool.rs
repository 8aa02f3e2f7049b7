//! The warm pool end to end (real podman, real opencode, scripted LLM): with `[pool] size
//! = 2` the daemon keeps two pods whose agent already answers; `up`s take them (and the
//! pool refills), an `up` beyond the pool goes cold and says why; a workspace in a former
//! member is walled and hardened like a cold one, is listed like one, and runs a task to an
//! approved proposal; `kill -9` of the daemon while an `up` fills a member leaves no
//! half-claimed member and loses no workspace that was made.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn config(llm: &ScriptedLlm, size: u32) -> String {
    format!("{}[pool]\nsize = {size}\n", llm.agent_config())
}

/// Polls `pool` until `warm` members of the default image are warm (at most `secs`).
fn wait_warm(env: &TestEnv, warm: u64, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = env.json(&["pool"]);
        if p["images"][0]["warm"] == warm && p["images"][0]["starting"] == 0 {
            return p;
        }
        assert!(Instant::now() < deadline, "the pool did not get {warm} warm member(s) in {secs} s: {p:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `up --json` of a fixture repository; the result.
fn up(env: &TestEnv, name: &str) -> Value {
    let repo = fixture_repo(env.dir.path(), name, &[("greeting.txt", "helo\n")]);
    let out = env.run(&["--json", "up", repo.to_str().unwrap(), "--name", name]);
    assert!(out.status.success(), "up {name}: {}", text(&out.stderr));
    serde_json::from_str(&text(&out.stdout)).unwrap()
}

fn has_line(text: &str, words: &[&str]) -> bool {
    text.lines().any(|l| l.split_whitespace().eq(words.iter().copied()))
}

#[test]
fn ups_take_warm_pods_that_are_walled_like_cold_ones_and_the_pool_refills() {
    if !podman_available() {
        return;
    }
    let folder = "/workspaces/pa";
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "fix the greeting", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/greeting.txt"), "content": "hello\n" } },
            { "text": "Fixed the greeting" }
        ]}
    ]}));
    let env = TestEnv::new(&format!("[trusted.env]\nallowlist = [\"POOL_TRUSTED\"]\n{}", config(&llm, 2)))
        .with_env("POOL_TRUSTED", "trusted-value-5e1d");
    let pool = wait_warm(&env, 2, 180);
    assert_eq!(pool["size"], 2);
    assert_eq!(pool["images"][0]["image"], "localhost/devaipod-base:latest");
    // Members are not workspaces.
    assert_eq!(env.json(&["list"]), json!([]));

    // Three `up`s at once: two take the warm pods, the third is made cold and says why. A
    // fourth of a name being made at the same time is refused, whichever comes first (a
    // pooled workspace is no podman pod of its name, so the daemon itself keeps it).
    let names = ["pa", "pb", "pc"];
    let repos: Vec<_> = names.iter().map(|n| fixture_repo(env.dir.path(), n, &[("greeting.txt", "helo\n")])).collect();
    let env_ref = &env;
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = [&repos[0], &repos[1], &repos[2], &repos[0]]
            .into_iter()
            .zip(["pa", "pb", "pc", "pa"])
            .map(|(r, n)| s.spawn(move || env_ref.run(&["--json", "up", r.to_str().unwrap(), "--name", n])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (pa, twin) = if outs[0].status.success() { (&outs[0], &outs[3]) } else { (&outs[3], &outs[0]) };
    assert!(!twin.status.success(), "one of two `up --name pa` at once must fail");
    assert!(text(&twin.stderr).contains("workspace `pa` already exists"), "{}", text(&twin.stderr));
    let results: Vec<Value> = [pa, &outs[1], &outs[2]]
        .iter()
        .map(|o| {
            assert!(o.status.success(), "up: {}", text(&o.stderr));
            serde_json::from_str(&text(&o.stdout)).unwrap()
        })
        .collect();
    let pooled: Vec<&str> =
        names.iter().zip(&results).filter(|(_, r)| r["from_pool"] == true).map(|(n, _)| *n).collect();
    assert_eq!(pooled.len(), 2, "{results:#?}");
    let cold = results.iter().find(|r| r["from_pool"] == false).unwrap();
    assert!(
        cold["pool"].as_str().unwrap().contains("no warm pod of localhost/devaipod-base:latest was free"),
        "{cold:#}"
    );
    for r in &results {
        assert_eq!(r["workspace"]["status"], "Running", "{r:#}");
    }
    // The pool refills.
    wait_warm(&env, 2, 180);

    // Listed like any workspace: its name, source and folder, not the member's key.
    let list = env.json(&["list"]);
    let listed: Vec<&str> = list.as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names);
    let ws = pooled[0];
    let status = env.json(&["status", ws]);
    assert_eq!(status["workspace_folder"], format!("/workspaces/{ws}"), "{status:#}");
    assert!(status["source"].as_str().unwrap().ends_with(ws), "{status:#}");
    assert!(status["pod"].as_str().unwrap().starts_with("devaipod-pool."), "{status:#}");
    assert_eq!((status["workspace"].as_str(), status["agent"].as_str()), (Some("running"), Some("running")));

    // The repository is in both containers, at the same path as in a cold workspace.
    assert_eq!(env.ok(&["exec", ws, "--", "cat", "greeting.txt"]), "helo\n");
    assert_eq!(env.ok(&["exec", ws, "--agent", "--", "cat", "greeting.txt"]), "helo\n");
    assert_eq!(env.ok(&["exec", ws, "--agent", "--", "pwd"]).trim(), format!("/workspaces/{ws}"));

    // The same security model as a cold workspace's agent: hardened, no network but
    // loopback, the human's workspace read-only, no trusted variable.
    let proc1 = env.ok(&["exec", ws, "--agent", "--", "cat", "/proc/1/status"]);
    assert!(has_line(&proc1, &["CapEff:", "0000000000000400"]), "{proc1}");
    assert!(has_line(&proc1, &["NoNewPrivs:", "1"]), "{proc1}");
    assert_eq!(env.ok(&["exec", ws, "--agent", "--", "id", "-u"]).trim(), "1000");
    let nets = env.ok(&["exec", ws, "--agent", "--", "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = nets.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(ifaces, ["lo"], "{nets}");
    let w = env.run(&["exec", ws, "--agent", "--", "touch", "/mnt/main-workspace/agent-was-here"]);
    assert!(text(&w.stderr).contains("Read-only file system"), "{}", text(&w.stderr));
    assert_eq!(env.ok(&["exec", ws, "--agent", "--", "cat", "/mnt/main-workspace/greeting.txt"]), "helo\n");
    assert!(env.ok(&["exec", ws, "--", "env"]).contains("POOL_TRUSTED=trusted-value-5e1d"));
    let agent_env = env.ok(&["exec", ws, "--agent", "--", "env"]);
    assert!(!agent_env.contains("trusted-value-5e1d"), "{agent_env}");

    // A task end to end, in the former member.
    let out = env.run(&["--json", "run", "-w", "pa", "-c", "fix the greeting"]);
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    let pid = done["proposal"].as_str().expect("a proposal").to_owned();
    assert_eq!(env.ok(&["exec", "pa", "--", "cat", "greeting.txt"]), "helo\n", "nothing before approval");
    assert_eq!(env.json(&["approve", &pid, "--apply"])["state"], "applied");
    let branch = format!("devaipod/{}", done["task"]["id"].as_str().unwrap());
    assert_eq!(env.ok(&["exec", "pa", "--", "git", "show", &format!("{branch}:greeting.txt")]), "hello\n");

    // A name in a former member is taken like any other.
    let repo = fixture_repo(env.dir.path(), "again", &[]);
    let e = env.fails(&["up", repo.to_str().unwrap(), "--name", ws]);
    assert!(e.contains(&format!("workspace `{ws}` already exists")), "{e}");

    // Deleting removes the former member's objects; the warm members stay.
    for n in names {
        env.ok(&["delete", n]);
    }
    let left = env.leftovers();
    let pods: Vec<&String> = left.iter().filter(|l| l.starts_with("pod ")).collect();
    assert_eq!(pods.len(), 2, "only the two warm members are left: {left:#?}");
    assert!(pods.iter().all(|p| p.starts_with("pod devaipod-pool.")), "{left:#?}");
}

#[test]
fn a_daemon_killed_while_a_workspace_takes_a_member_leaves_no_half_claimed_member() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&json!({ "rules": [{ "match": "say hi", "steps": [{ "text": "hi" }] }] }));
    let env = TestEnv::new(&config(&llm, 1));
    wait_warm(&env, 1, 180);
    let made = up(&env, "kept");
    assert_eq!(made["from_pool"], true, "{made:#}");
    wait_warm(&env, 1, 180);

    // This one's postCreateCommand holds it in the member while the daemon is killed.
    let repo = fixture_repo(
        env.dir.path(),
        "held",
        &[(".devcontainer/devcontainer.json", r#"{ "postCreateCommand": "touch /tmp/held-started; sleep 30" }"#)],
    );
    let child = env
        .cmd(&["up", repo.to_str().unwrap(), "--name", "held"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let member = loop {
        let p = env.json(&["pool"]);
        let claimed = p["images"][0]["members"].as_array().unwrap().iter().find(|m| m["state"] == "claimed").cloned();
        if let Some(m) = claimed {
            let container = format!("{}-workspace", m["pod"].as_str().unwrap());
            let started = std::process::Command::new("podman")
                .args(["exec", &container, "test", "-e", "/tmp/held-started"])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            if started.success() {
                break m;
            }
        }
        assert!(Instant::now() < deadline, "no member was being filled: {p:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(member["workspace"], "held");
    env.kill_daemon("KILL");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "up cannot finish without its daemon");

    // The next daemon undoes the claim: the member is destroyed, `held` does not exist,
    // `kept` is whole and its agent answers.
    let list = env.json(&["list"]);
    assert_eq!(list.as_array().unwrap().iter().map(|w| w["name"].clone()).collect::<Vec<_>>(), [json!("kept")]);
    let pod = member["pod"].as_str().unwrap();
    // Its pod goes first, then its volumes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let gone = || {
        podman(&["pod", "ps", "--filter", &format!("name=^{pod}$"), "--format", "{{.Name}}"]).trim().is_empty()
            && !podman(&["volume", "ls", "--format", "{{.Name}}"]).contains(pod)
    };
    while !gone() {
        assert!(Instant::now() < deadline, "the half-claimed member {pod} (pod or volumes) is still there");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pool = wait_warm(&env, 1, 180);
    assert!(pool["images"][0]["members"].as_array().unwrap().iter().all(|m| m["state"] == "warm"), "{pool:#}");
    assert_eq!(env.json(&["status", "kept"])["agent"], "running");
    assert_eq!(env.ok(&["exec", "kept", "--agent", "--", "cat", "greeting.txt"]), "helo\n");
    let t = env.json(&["run", "-w", "kept", "-c", "say hi"]);
    assert_eq!(t["task"]["state"], "completed", "{t:#}");
}
