//! Upgrades in place: a daemon whose executable is replaced (the ways installers do it)
//! keeps `up`, tasks and approvals working, old workspaces included; a client newer than
//! its daemon restarts it, and a task running meanwhile completes exactly once; copies of
//! old executables go once no container uses them; a database of a newer schema is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn script(folder: &str) -> Value {
    json!({ "rules": [
        { "match": "please write the greeting", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/hello.txt"), "content": "hi there\n" } },
            { "text": "Wrote hello.txt" }
        ]},
        { "match": "now say goodbye", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/goodbye.txt"), "content": "bye\n" } },
            { "text": "Added goodbye.txt" }
        ]},
        { "match": "slow greeting", "delay": 4, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/slow.txt"), "content": "slow\n" } },
            { "text": "Wrote slow.txt" }
        ]}
    ]})
}

/// What the daemon says of itself (over its unix socket).
fn daemon_version(env: &TestEnv) -> Value {
    let socket = env.dir.path().join("run/api.sock");
    let out = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "5", "--unix-socket"])
        .arg(&socket)
        .arg("http://d/api/v1/version")
        .output()
        .unwrap();
    assert!(out.status.success(), "version: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The host file an agent container runs as gator's bridge.
fn bridge_of(workspace: &str) -> PathBuf {
    let format = r#"{{range .Mounts}}{{if eq .Destination "/opt/devaipod/gator/devaipod"}}{{.Source}}{{end}}{{end}}"#;
    let source = podman(&["inspect", &format!("devaipod-{workspace}-agent"), "--format", format]);
    assert!(!source.trim().is_empty(), "the agent of {workspace} mounts a bridge");
    PathBuf::from(source.trim())
}

fn copies(env: &TestEnv) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(env.dir.path().join("data/bin")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Another build of devaipod: the same program with `tag` appended (ELF ignores it), so its
/// content, and its hash, differ.
fn build(tag: &str) -> Vec<u8> {
    let mut b = std::fs::read(env!("CARGO_BIN_EXE_devaipod")).unwrap();
    b.extend_from_slice(tag.as_bytes());
    b
}

fn install(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", text(&out.stderr));
    text(&out.stderr)
}

fn wait_task(env: &TestEnv, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let t = env.json(&["task", id]);
        if done(&t) {
            return t;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "task {id} did not get there in {secs} s: {t:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The executable replaced under the running daemon — renamed over (cargo install, package
/// managers) and deleted then recreated (install(1), `cp --remove-destination`) — leaves
/// `up`, tasks and approvals working, in new workspaces and in one made before either.
/// Regression: every `up` failed with `statfs …/devaipod (deleted): no such file or
/// directory` because agent containers mounted the daemon's executable by its path.
#[test]
fn an_executable_replaced_under_the_daemon_leaves_up_tasks_and_approve_working() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/upg"));
    // The clients here leave the old daemon running (by default they would restart it):
    // the old daemon itself must cope.
    let env = TestEnv::new(&llm.agent_config()).with_env("DEVAIPOD_AUTO_RESTART", "0");
    let exe = env.dir.path().join("bin/devaipod");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    install(&exe, &build(""));
    let dv = |args: &[&str]| env.cmd_exe(&exe, args).output().unwrap();
    let repo = fixture_repo(env.dir.path(), "upg", &[]);
    let repo = repo.to_str().unwrap();

    ok(dv(&["up", repo, "--name", "one"]), "up one"); // starts the daemon from `exe`
    let first = daemon_version(&env);
    assert_eq!((first["exe"].as_str(), first["exe_replaced"].as_bool()), (exe.to_str(), Some(false)));
    let first_copy = PathBuf::from(first["bridge"].as_str().unwrap());
    assert!(first_copy.starts_with(env.dir.path().join("data/bin")), "{first_copy:?}");
    assert_eq!(bridge_of("one"), first_copy, "the agent mounts the daemon's copy, not its executable");
    assert!(std::fs::read(&first_copy).unwrap() == build(""), "the copy is the daemon's executable");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&first_copy).unwrap().permissions().mode() & 0o777, 0o555);

    // 1. Renamed over. (Written in place it cannot be while it runs: ETXTBSY.)
    let in_place = std::fs::OpenOptions::new().write(true).open(&exe).unwrap_err();
    assert_eq!(in_place.raw_os_error(), Some(26), "{in_place}");
    let staged = env.dir.path().join("bin/.devaipod.new");
    install(&staged, &build("two"));
    std::fs::rename(&staged, &exe).unwrap();
    let out = dv(&["--json", "run", repo, "--name", "two", "-c", "please write the greeting"]);
    let stderr = ok(out.clone(), "run after the executable was renamed over");
    let pid = first["pid"].as_u64().unwrap();
    assert!(
        stderr.contains(&format!(
            "note: the devaipod daemon (pid {pid}) runs an older build: its executable {} was replaced since it started; \
             run `devaipod restart-daemon` to restart it with this devaipod",
            exe.display()
        )),
        "{stderr}"
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    assert_eq!(bridge_of("two"), first_copy);
    let proposal = done["proposal"].as_str().expect("a proposal").to_owned();
    let applied: Value = serde_json::from_str(&text(&dv(&["--json", "approve", &proposal, "--apply"]).stdout)).unwrap();
    assert_eq!(applied["state"], "applied", "{applied:#}");

    // 2. Restarted on purpose: the new daemon runs the new build, from its own copy.
    let stderr = ok(dv(&["restart-daemon"]), "restart-daemon");
    let second = daemon_version(&env);
    assert_ne!(second["pid"], first["pid"]);
    assert!(
        stderr.contains(&format!("started the devaipod daemon in the background (pid {}", second["pid"])),
        "{stderr}"
    );
    let second_copy = PathBuf::from(second["bridge"].as_str().unwrap());
    assert_ne!(second_copy, first_copy);
    assert!(std::fs::read(&second_copy).unwrap() == build("two"));
    assert_eq!(copies(&env), sorted([first_copy.clone(), second_copy.clone()]), "one and two still use the first");

    // 3. Deleted, then recreated.
    std::fs::remove_file(&exe).unwrap();
    install(&exe, &build("three"));
    ok(dv(&["up", repo, "--name", "three"]), "up after the executable was deleted and recreated");
    assert_eq!(bridge_of("three"), second_copy);
    // The workspace made before both replacements runs tasks still.
    let out = dv(&["--json", "run", "-w", "one", "-c", "now say goodbye"]);
    ok(out.clone(), "run in a workspace made before the replacements");
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (done["task"]["state"].as_str(), done["task"]["summary"].as_str()),
        (Some("completed"), Some("Added goodbye.txt"))
    );

    // 4. A copy no container uses any more goes at the next start; those in use stay.
    ok(dv(&["delete", "one"]), "delete one");
    ok(dv(&["delete", "two"]), "delete two");
    // `delete` removes the pods in the background: until they are gone, their containers
    // still use the first copy.
    for pod in ["devaipod-one", "devaipod-two"] {
        let gone = (0..600).any(|_| {
            let exists = std::process::Command::new("podman").args(["pod", "exists", pod]).status().unwrap();
            exists.code() == Some(1) || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                false
            }
        });
        assert!(gone, "{pod} is removed within a minute");
    }
    ok(dv(&["restart-daemon"]), "restart-daemon");
    let third_copy = PathBuf::from(daemon_version(&env)["bridge"].as_str().unwrap().to_owned());
    assert_eq!(copies(&env), sorted([second_copy, third_copy]), "the first copy is gone; three uses the second");
    ok(dv(&["delete", "three"]), "delete three");
}

/// Whether process `pid` has exited (gone, or a zombie its new parent has not reaped yet).
fn exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

fn sorted<const N: usize>(mut v: [PathBuf; N]) -> Vec<PathBuf> {
    v.sort();
    v.to_vec()
}

/// A client newer than its daemon restarts it (no task was being delivered), saying so; the
/// task running meanwhile completes once. Then the daemon is the newer one: an older client
/// is told so and talks on, one of another API is refused with both versions named.
#[test]
fn a_newer_client_restarts_an_older_daemon_and_the_running_task_completes_once() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/nv"));
    let env = TestEnv::new(&llm.agent_config());
    let repo = fixture_repo(env.dir.path(), "nv", &[]);
    let up = env.json(&["up", repo.to_str().unwrap(), "--name", "nv", "-c", "slow greeting"]);
    let id = up["task"]["id"].as_str().unwrap().to_owned();
    wait_task(&env, &id, 60, |t| t["task"]["state"] == "running");
    let old = env.daemon_pid().unwrap();

    let out = env.cmd(&["tasks"]).env("DEVAIPOD_TEST_VERSION", "99.0.0").output().unwrap();
    let stderr = ok(out, "tasks from a newer client");
    assert!(
        stderr.contains(&format!(
            "the devaipod daemon (pid {old}) runs devaipod {VERSION}, older than this devaipod 99.0.0: restarting it \
             with this devaipod 99.0.0 (no task is being delivered; running tasks resume)"
        )),
        "{stderr}"
    );
    let new = env.daemon_pid().unwrap();
    assert_ne!(new, old);
    assert!(exited(old), "the old daemon has exited");
    assert!(
        stderr.contains(&format!("restarted the devaipod daemon (pid {old}, devaipod {VERSION} → pid {new}, devaipod 99.0.0); 1 unfinished task(s) resumed")),
        "{stderr}"
    );

    let t = wait_task(&env, &id, 90, |t| t["task"]["state"] == "completed" || t["task"]["state"] == "failed");
    assert_eq!(t["task"]["state"], "completed", "{t:#}");
    let first_turns =
        llm.requests().iter().filter(|r| r["last_user"] == "slow greeting" && r["tool_results"] == 0).count();
    assert_eq!(first_turns, 1, "the prompt reached the LLM once: {:?}", llm.requests());
    let proposals = env.json(&["proposals"]);
    assert_eq!(proposals["total"], 1, "{proposals:#}");
    let events = t["events"].as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    for e in events {
        assert!(seen.insert((e["kind"].clone(), e["message"].clone())), "duplicate event {e}");
    }

    // The daemon now reports 99.0.0: this (older) client is told, and works.
    let out = env.run(&["tasks"]);
    let stderr = ok(out, "tasks from an older client");
    assert!(
        stderr.contains(&format!(
            "note: this devaipod {VERSION} is older than the devaipod daemon (pid {new}), which runs devaipod 99.0.0"
        )),
        "{stderr}"
    );
    assert_eq!(env.daemon_pid(), Some(new));
    // A client of an older API is refused, naming both versions.
    let out = env
        .cmd(&["tasks"])
        .env("DEVAIPOD_TEST_VERSION", "0.0.1")
        .env("DEVAIPOD_TEST_API_VERSION", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "this devaipod 0.0.1 (API 0) cannot talk to the devaipod daemon (pid {new}): it runs devaipod 99.0.0 (API 1). Use the newer devaipod"
        )),
        "{stderr}"
    );
    env.ok(&["delete", "nv"]);
}

/// A database written by a newer devaipod (a higher schema version) is refused by the
/// daemon, untouched, with both versions named.
#[test]
fn a_database_newer_than_the_daemon_is_refused_naming_both_versions() {
    let env = TestEnv::new("");
    let db = env.dir.path().join("data/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let newer = devaipod::store::SCHEMA_VERSION + 1;
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE from_the_future (x INTEGER);").unwrap();
        c.pragma_update(None, "user_version", newer).unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let e = env.fails(&["tasks"]);
    assert!(
        e.contains(&format!(
            "the database {} has schema version {newer}, newer than this devaipod {VERSION} knows (schema version {})",
            db.display(),
            devaipod::store::SCHEMA_VERSION
        )),
        "{e}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database is left as it was");
}

/// The upgrade from a release before version reporting (`DEVAIPOD_PREVIOUS_BINARY`: that
/// release's devaipod; skipped without it): its daemon runs a task; this client restarts it
/// (SIGTERM: that daemon has no shutdown route) and the task completes once.
#[test]
fn a_daemon_of_a_release_before_version_reporting_is_restarted_and_its_task_completes() {
    let Some(previous) = std::env::var_os("DEVAIPOD_PREVIOUS_BINARY").map(PathBuf::from) else {
        eprintln!("\n*** SKIPPED: set DEVAIPOD_PREVIOUS_BINARY to an older devaipod to run this test ***\n");
        return;
    };
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/prev"));
    let env = TestEnv::new(&llm.agent_config());
    let repo = fixture_repo(env.dir.path(), "prev", &[]);
    let up_args = ["--json", "up", repo.to_str().unwrap(), "--name", "prev", "-c", "slow greeting"];
    let out = env.cmd_exe(&previous, &up_args).output().unwrap();
    ok(out.clone(), "up with the previous release");
    let up: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = up["task"]["id"].as_str().unwrap().to_owned();
    let old = env.daemon_pid().unwrap();
    let start = Instant::now();
    loop {
        let out = env.cmd_exe(&previous, &["--json", "task", &id]).output().unwrap();
        let t: Value = serde_json::from_slice(&out.stdout).unwrap();
        if t["task"]["state"] == "running" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{t:#}");
        std::thread::sleep(Duration::from_millis(300));
    }

    let stderr = ok(env.run(&["tasks"]), "tasks from this release");
    assert!(
        stderr.contains(
            "the devaipod daemon is older than this devaipod (it does not report its version): restarting it"
        ),
        "{stderr}"
    );
    let new = env.daemon_pid().unwrap();
    assert_ne!(new, old);
    let t = wait_task(&env, &id, 90, |t| t["task"]["state"] == "completed" || t["task"]["state"] == "failed");
    assert_eq!(t["task"]["state"], "completed", "{t:#}");
    let first_turns =
        llm.requests().iter().filter(|r| r["last_user"] == "slow greeting" && r["tool_results"] == 0).count();
    assert_eq!(first_turns, 1, "{:?}", llm.requests());
    assert_eq!(env.json(&["proposals"])["total"], 1);
    env.ok(&["delete", "prev"]);
}

/// The agents' copies live in the data directory, which devcontainer.json may not mount:
/// the bridge's own mount is the one exception, made by devaipod for the agent alone.
#[test]
fn a_devcontainer_mount_of_the_executable_copies_is_refused() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    env.ok(&["tasks"]); // starts the daemon, which makes its copy
    let bin = env.dir.path().join("data/bin");
    let copy = copies(&env).pop().expect("the daemon's copy");
    for source in [&bin, &copy] {
        let mount =
            json!({ "mounts": [{ "type": "bind", "source": source, "target": "/opt/devaipod/gator/devaipod" }] });
        let repo = fixture_repo(
            env.dir.path(),
            &format!("mnt{}", source.components().count()),
            &[(".devcontainer/devcontainer.json", &mount.to_string())],
        );
        let e = env.fails(&["up", repo.to_str().unwrap()]);
        assert!(
            e.contains(&format!(
                "devcontainer.json mounts {}, which holds devaipod's own state ({})",
                source.display(),
                env.dir.path().join("data").display()
            )),
            "{e}"
        );
    }
    assert_eq!(env.leftovers(), Vec::<String>::new());
}
