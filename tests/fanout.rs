//! Fan-out end to end: one prompt to three candidate agents (real opencode, scripted LLM,
//! one model each), each in its own sandboxed container: one does the right change (its
//! check passes), one breaks the check, one fails at its provider. The set shows all three
//! with their reasons; at most `max-parallel` candidates run at once; the diff between two
//! candidates is the diff between their branches; approving the passing one ships exactly
//! its change, closes the others as not chosen and removes every candidate's container.
//! Then the lifecycle: a daemon killed mid-set (every candidate ends once), a round of
//! feedback to one candidate, cancel, and bad input.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// `[agent]` for the scripted LLM with three more models, and `[fanout]`.
fn config(llm: &ScriptedLlm, fanout: &str) -> String {
    format!("{}models = [\"good\", \"bad\", \"broken\"]\n[fanout]\n{fanout}", llm.agent_config())
}

/// Polls `compare <set>` until `done` holds (at most `secs`), calling `each` on every look.
fn wait_set(env: &TestEnv, id: &str, secs: u64, done: impl Fn(&Value) -> bool, mut each: impl FnMut(&Value)) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = env.json(&["compare", id]);
        each(&s);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "set {id} did not get there in {secs} s: {s:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn candidate(set: &Value, n: u64) -> &Value {
    set["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["n"] == n)
        .unwrap_or_else(|| panic!("candidate {n}: {set:#}"))
}

/// Names of the workspace's candidate containers that exist (any state).
fn candidate_containers(ws: &str) -> Vec<String> {
    let out = podman(&["ps", "-a", "--filter", &format!("name=^devaipod-{ws}-candidate-"), "--format", "{{.Names}}"]);
    out.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
}

fn running_candidates(ws: &str) -> usize {
    let out = podman(&["ps", "--filter", &format!("name=^devaipod-{ws}-candidate-"), "--format", "{{.Names}}"]);
    out.lines().filter(|l| !l.is_empty()).count()
}

#[test]
fn three_candidates_are_checked_compared_and_one_is_chosen() {
    if !podman_available() {
        return;
    }
    let folder = "/workspaces/fo-main";
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "fix the greeting", "model": "good", "delay": 1, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/greeting.txt"), "content": "hello, world\n" } },
            { "text": "Fixed the greeting" }
        ]},
        { "match": "fix the greeting", "model": "bad", "delay": 1, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/greeting.txt"), "content": "bye\n" } },
            { "text": "Changed the greeting" }
        ]},
        { "match": "fix the greeting", "model": "broken", "error": { "status": 400, "message": "model not allowed" } }
    ]}));
    let check = "grep -q hello greeting.txt || { echo \"greeting.txt says: $(cat greeting.txt)\"; exit 3; }";
    let env = TestEnv::new(&config(&llm, &format!("max-parallel = 2\ncheck = '{check}'\n")));
    let repo = fixture_repo(env.dir.path(), "fo-main", &[("greeting.txt", "helo\n")]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", "fo-main", "--image", "localhost/devaipod-base:latest"]);

    // Bad input first (nothing is made): the numbers and the models say what to use.
    for (args, want) in [
        (vec!["--agents", "0"], "agents: 0 is out of range: use 1 to 4 ([fanout] max-agents)"),
        (vec!["--agents", "5"], "agents: 5 is out of range: use 1 to 4"),
        (vec!["--agents", "2", "--model", "good"], "models: 1 given for 2 agents"),
        (vec!["--agents", "1", "--model", "gpt-9"], "model `gpt-9` is not one of [agent] model and [agent] models"),
    ] {
        let mut a = vec!["run", "-w", "fo-main", "-c", "x"];
        a.extend(args);
        let err = env.fails(&a);
        assert!(err.contains(want), "{a:?}: {err}");
    }
    assert!(env.fails(&["compare", "s-nope"]).contains("no proposal set `s-nope`"));
    assert!(candidate_containers("fo-main").is_empty());

    // Three candidates, at most two at once.
    let started = Instant::now();
    let child = env
        .cmd(&[
            "--json",
            "run",
            "-w",
            "fo-main",
            "--agents",
            "3",
            "--model",
            "good",
            "--model",
            "bad",
            "--model",
            "broken",
            "-c",
            "fix the greeting",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut most = 0;
    let id = loop {
        let sets = env.json(&["sets", "--workspace", "fo-main"]);
        if let Some(id) = sets.as_array().unwrap().first().and_then(|s| s["id"].as_str()) {
            break id.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no set appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let set = wait_set(&env, &id, 180, |s| s["state"] != "running", |_| most = most.max(running_candidates("fo-main")));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "run --agents:\n{}\n{}", text(&out.stderr), text(&out.stdout));
    let took: Vec<String> =
        set["candidates"].as_array().unwrap().iter().map(|c| format!("{}: {}s", c["n"], c["duration_secs"])).collect();
    eprintln!(
        "the set of 3 took {:?} ({took:?}); at most {most} candidate container(s) ran at once",
        started.elapsed()
    );
    let printed: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(printed["id"], id.as_str());
    assert!(most <= 2, "[fanout] max-parallel = 2, but {most} candidates ran at once");

    assert_eq!(set["state"], "complete", "{set:#}");
    let (good, bad, broken) = (candidate(&set, 1), candidate(&set, 2), candidate(&set, 3));
    assert_eq!((good["model"].as_str(), good["state"].as_str()), (Some("good"), Some("completed")), "{good:#}");
    assert_eq!(good["check"]["exit_code"], 0, "{good:#}");
    assert_eq!((bad["state"].as_str(), bad["check"]["exit_code"].as_i64()), (Some("completed"), Some(3)), "{bad:#}");
    assert!(bad["check"]["output"].as_str().unwrap().contains("greeting.txt says: bye"), "{bad:#}");
    assert_eq!(broken["state"], "failed", "{broken:#}");
    assert!(broken["reason"].as_str().unwrap().contains("model not allowed"), "{broken:#}");
    assert!(broken["proposal"].is_null() && broken["check"].is_null(), "{broken:#}");
    for c in [good, bad] {
        assert_eq!((c["files"].as_u64(), c["proposal_state"].as_str()), (Some(1), Some("open")), "{c:#}");
    }
    // Each candidate asked the LLM with its own model.
    let models: std::collections::BTreeSet<String> = llm
        .requests()
        .iter()
        .filter(|r| r["tools"] == true)
        .filter_map(|r| r["model"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(models, ["bad", "broken", "good"].map(str::to_owned).into(), "models asked for");
    // Candidates' tasks are in their set, not in the task list; their proposals are listed.
    assert!(env.json(&["tasks"]).as_array().unwrap().is_empty());
    let text_table = env.ok(&["compare", &id]);
    assert!(text_table.contains("FAIL(3)") && text_table.contains("greeting.txt says: bye"), "{text_table}");

    // The diff between two candidates is the diff between their branches.
    let between = env.json(&["compare", &id, "--diff", "1", "2"]);
    let git_dir = env.dir.path().join("data/repos/fo-main.git");
    let branch = |c: &Value| format!("devaipod/{}", c["task"].as_str().unwrap());
    let git = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["diff", &branch(good), &branch(bad)])
        .output()
        .unwrap();
    assert_eq!(between["diff"].as_str().unwrap(), text(&git.stdout), "{between:#}");
    assert!(between["diff"].as_str().unwrap().contains("-hello, world\n+bye"), "{between:#}");
    assert!(env.fails(&["compare", &id, "--diff", "1", "3"]).contains("candidate 3 of set"));

    // An undecided set is decided before the next one starts.
    let err = env.fails(&["run", "-w", "fo-main", "--agents", "1", "-c", "again"]);
    assert!(err.contains(&format!("proposal set {id} in fo-main waits for a choice")), "{err}");

    // Choose the passing one: exactly its change reaches the human's repository; the other
    // is not chosen; every candidate container and volume is gone.
    let p1 = good["proposal"].as_str().unwrap();
    env.ok(&["approve", p1, "--apply"]);
    let shipped = env.ok(&["exec", "fo-main", "--", "git", "diff", "--stat", "HEAD", &branch(good)]);
    assert!(shipped.contains("greeting.txt") && shipped.contains("1 file changed"), "{shipped}");
    let decided = env.json(&["compare", &id]);
    assert_eq!((decided["state"].as_str(), decided["chosen"].as_u64()), (Some("chosen"), Some(1)), "{decided:#}");
    assert_eq!(candidate(&decided, 2)["state"], "not_chosen");
    assert_eq!(candidate(&decided, 2)["proposal_state"], "not_chosen");
    let refused = env.fails(&["approve", bad["proposal"].as_str().unwrap(), "--apply"]);
    assert!(refused.contains("where candidate 1 was chosen"), "{refused}");
    assert!(candidate_containers("fo-main").is_empty(), "{:?}", candidate_containers("fo-main"));
    let vols = podman(&["volume", "ls", "--filter", "label=io.devaipod.role=candidate", "--format", "{{.Name}}"]);
    assert!(!vols.contains("devaipod-fo-main-candidate"), "{vols}");
    env.ok(&["delete", "fo-main"]);
}

#[test]
fn a_set_survives_a_killed_daemon_takes_feedback_and_cancels() {
    if !podman_available() {
        return;
    }
    let folder = "/workspaces/fo-life";
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "count slowly", "delay": 3, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/count.txt"), "content": "1 2 3\n" } },
            { "text": "Counted" }
        ]},
        { "match": "also count to four", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/count.txt"), "content": "1 2 3 4\n" } },
            { "text": "Counted to four" }
        ]}
    ]}));
    let env = TestEnv::new(&config(&llm, ""));
    let repo = fixture_repo(env.dir.path(), "fo-life", &[("README", "counting\n")]);
    // The workspace made and the set started by one command.
    let mut child = env
        .cmd(&[
            "run",
            repo.to_str().unwrap(),
            "--name",
            "fo-life",
            "--image",
            "localhost/devaipod-base:latest",
            "--agents",
            "2",
            "-c",
            "count slowly",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.dir.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        let sets = env.json(&["sets"]);
        let running = sets.as_array().unwrap().first().cloned();
        if let Some(s) = running {
            let id = s["id"].as_str().unwrap().to_owned();
            let view = env.json(&["compare", &id]);
            if view["candidates"].as_array().unwrap().iter().all(|c| c["state"] == "running") {
                break id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the candidates did not start: {}",
            std::fs::read_to_string(env.dir.path().join("run.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // A second set in the same workspace waits for this one.
    assert!(env.fails(&["run", "-w", "fo-life", "--agents", "1", "-c", "x"]).contains("is still running in fo-life"));

    env.kill_daemon("KILL");
    let _ = child.wait();
    let set = wait_set(&env, &id, 120, |s| s["state"] == "complete", |_| {});
    for c in set["candidates"].as_array().unwrap() {
        assert_eq!(c["state"], "completed", "{c:#}");
        let task = env.json(&["task", c["task"].as_str().unwrap()]);
        let ends = task["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "state" && e["message"] == "completed")
            .count();
        assert_eq!(ends, 1, "candidate {} ends once: {task:#}", c["n"]);
    }

    // Feedback for candidate 2 only: a next round in its own session. (Naming candidates
    // without feedback says what is wrong.)
    let err = env.fails(&["reject", &id, "--candidate", "2"]);
    assert!(err.contains("give feedback too"), "{err}");
    let first = candidate(&set, 2)["task"].as_str().unwrap().to_owned();
    let first_proposal = candidate(&set, 2)["proposal"].clone();
    let r = env.json(&["reject", &id, "-m", "also count to four", "--candidate", "2"]);
    assert_eq!((r["next_round"].clone(), r["set"]["round"].clone()), (json!([2]), json!(2)), "{r:#}");
    let set = wait_set(&env, &id, 120, |s| s["state"] == "complete", |_| {});
    let two = candidate(&set, 2);
    assert_ne!(two["task"].as_str().unwrap(), first);
    assert_eq!(
        (two["state"].as_str(), two["summary"].as_str()),
        (Some("completed"), Some("Counted to four")),
        "{two:#}"
    );
    let next = env.json(&["task", two["task"].as_str().unwrap()]);
    assert_eq!(next["task"]["follows_proposal"], first_proposal, "{next:#}");
    let p = env.json(&["proposal", first_proposal.as_str().unwrap()]);
    assert_eq!(p["state"], "rejected", "{p:#}");
    let one = candidate(&set, 1);
    assert_eq!(one["proposal_state"], "open", "candidate 1 kept its proposal: {one:#}");
    let diff = env.ok(&["diff", two["proposal"].as_str().unwrap()]);
    assert!(diff.contains("+1 2 3 4"), "{diff}");

    // Cancel closes it: nothing of it can be approved, its containers are gone.
    let cancelled = env.json(&["cancel", &id]);
    assert_eq!(cancelled["state"], "cancelled");
    let refused = env.fails(&["approve", one["proposal"].as_str().unwrap(), "--apply"]);
    assert!(refused.contains("which was cancelled"), "{refused}");
    assert!(env.fails(&["cancel", &id]).contains("was already cancelled"));
    assert!(candidate_containers("fo-life").is_empty(), "{:?}", candidate_containers("fo-life"));
    env.ok(&["delete", "fo-life"]);
}
