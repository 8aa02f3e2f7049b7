//! `up` of a fixture repository against real podman, then inspection from outside.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        podman(&["secret", "rm", &self.0]);
    }
}

fn create_secret(name: &str, value: &str) -> Secret {
    let mut child = std::process::Command::new("podman")
        .args(["secret", "create", name, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    Secret(name.to_owned())
}

#[test]
fn up_gives_two_running_containers_with_the_security_model_and_delete_removes_all() {
    if !podman_available() {
        return;
    }
    let secret_name = format!("devaipod-it-{}", std::process::id());
    let config = format!(
        r#"
[env]
allowlist = ["IT_PLAIN"]
[trusted.env]
allowlist = ["IT_TRUSTED"]
[trusted]
secrets = ["IT_SECRET={secret_name}"]
"#
    );
    let env = TestEnv::new(&config).with_env("IT_PLAIN", "plain-value").with_env("IT_TRUSTED", "trusted-value-7f3a");
    let _secret = create_secret(&secret_name, "secret-value-91bc");
    let repo = fixture_repo(env.dir.path(), "fixture", &[("src/main.txt", "hello from the fixture\n")]);

    let up = env.run(&["up", repo.to_str().unwrap(), "--name", "fx"]);
    let stderr = text(&up.stderr);
    assert!(up.status.success(), "up failed:\n{stderr}");
    assert!(
        stderr.contains("==> cloning") && stderr.contains("==> creating pod devaipod-fx"),
        "progress on stderr:\n{stderr}"
    );

    let status = env.json(&["status", "fx"]);
    assert_eq!(status["workspace"], "running", "{status}");
    assert_eq!(status["agent"], "running", "{status}");
    assert_eq!(status["status"], "Running");
    assert_eq!(status["workspace_folder"], "/workspaces/fixture");
    let list = env.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "fx");

    // The repository is in both containers.
    assert_eq!(env.ok(&["exec", "fx", "--", "cat", "src/main.txt"]), "hello from the fixture\n");
    assert!(env.ok(&["exec", "fx", "--", "git", "log", "--format=%s"]).contains("fixture"));
    assert_eq!(env.ok(&["exec", "fx", "--agent", "--", "cat", "src/main.txt"]), "hello from the fixture\n");

    // The agent is hardened.
    let proc1 = env.ok(&["exec", "fx", "--agent", "--", "cat", "/proc/1/status"]);
    assert!(proc1.lines().any(|l| l.split_whitespace().eq(["CapEff:", "0000000000000400"])), "{proc1}");
    assert!(proc1.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])), "{proc1}");
    assert_eq!(env.ok(&["exec", "fx", "--agent", "--", "id", "-u"]).trim(), "1000");
    let ws_proc1 = env.ok(&["exec", "fx", "--", "cat", "/proc/1/status"]);
    assert!(!ws_proc1.contains("0000000000000400"), "the workspace container is not the agent's profile");

    // The human's workspace is read-only for the agent.
    let w = env.run(&["exec", "fx", "--agent", "--", "touch", "/mnt/main-workspace/agent-was-here"]);
    assert!(!w.status.success());
    assert!(text(&w.stderr).contains("Read-only file system"), "{}", text(&w.stderr));
    assert_eq!(
        env.ok(&["exec", "fx", "--agent", "--", "cat", "/mnt/main-workspace/src/main.txt"]),
        "hello from the fixture\n"
    );

    // opencode is present and runnable in the agent container.
    let v = env.ok(&["exec", "fx", "--agent", "--", "/opt/devaipod/bin/opencode", "--version"]);
    assert!(v.trim().chars().next().is_some_and(|c| c.is_ascii_digit()), "opencode --version: {v}");

    // Environment partition: trusted env and secrets in the workspace only.
    let ws_env = env.ok(&["exec", "fx", "--", "env"]);
    assert!(ws_env.contains("IT_TRUSTED=trusted-value-7f3a"), "{ws_env}");
    assert!(ws_env.contains("IT_SECRET=secret-value-91bc"), "{ws_env}");
    assert!(ws_env.contains("IT_PLAIN=plain-value"));
    let agent_env = env.ok(&["exec", "fx", "--agent", "--", "env"]);
    assert!(agent_env.contains("IT_PLAIN=plain-value"), "{agent_env}");
    assert!(!agent_env.contains("IT_TRUSTED") && !agent_env.contains("trusted-value-7f3a"), "{agent_env}");
    assert!(!agent_env.contains("IT_SECRET") && !agent_env.contains("secret-value-91bc"), "{agent_env}");
    let agent_cfg = podman(&["inspect", "devaipod-fx-agent"]);
    assert!(!agent_cfg.contains("trusted-value-7f3a") && !agent_cfg.contains("secret-value-91bc"));
    // …and never in a label of any object.
    for obj in [
        ["pod", "inspect", "devaipod-fx", "{{json .Labels}}"],
        ["container", "inspect", "devaipod-fx-workspace", "{{json .Config.Labels}}"],
        ["container", "inspect", "devaipod-fx-agent", "{{json .Config.Labels}}"],
    ] {
        let labels = podman(&[obj[0], obj[1], obj[2], "--format", obj[3]]);
        assert!(labels.contains("io.devaipod.instance"), "{labels}");
        assert!(!labels.contains("trusted-value") && !labels.contains("secret-value"), "{labels}");
    }

    // exec: exit codes pass through, stdin is streamed.
    let code = env.run(&["exec", "fx", "--", "sh", "-c", "exit 42"]);
    assert_eq!(code.status.code(), Some(42));
    let mut child = env
        .cmd(&["exec", "fx", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"streamed through stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "STREAMED THROUGH STDIN\n");

    // stop / start; each twice: a second one finds the pod in that state already (podman
    // answers 304), which is not an error.
    env.ok(&["stop", "fx"]);
    env.ok(&["stop", "fx"]);
    let stopped = env.json(&["status", "fx"]);
    assert_ne!(stopped["status"], "Running", "{stopped}");
    assert_ne!(stopped["agent"], "running");
    let e = env.fails(&["exec", "fx", "--", "true"]);
    assert!(e.contains("is not running") && e.contains("devaipod start fx"), "{e}");
    env.ok(&["start", "fx"]);
    env.ok(&["start", "fx"]);
    assert_eq!(env.json(&["status", "fx"])["agent"], "running");
    assert_eq!(env.ok(&["exec", "fx", "--", "cat", "src/main.txt"]), "hello from the fixture\n", "the volume survives");

    // logs answer (the idle process prints nothing, so only the call is checked).
    env.ok(&["logs", "fx", "--agent", "--tail", "5"]);

    // delete of a stopped workspace leaves nothing with this instance's label.
    env.ok(&["stop", "fx"]);
    let start = std::time::Instant::now();
    env.ok(&["delete", "fx"]);
    eprintln!("delete took {:?}", start.elapsed());
    assert_eq!(env.leftovers(), Vec::<String>::new());
    let e = env.fails(&["status", "fx"]);
    assert!(e.contains("no workspace named `fx`"), "{e}");
}

#[test]
fn devcontainer_build_lifecycle_mounts_and_git_url_source() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let repo = fixture_repo(
        env.dir.path(),
        "built",
        &[
            (
                ".devcontainer/Containerfile",
                "FROM localhost/devaipod-base:latest\nARG GREETING\nRUN echo \"$GREETING\" > /built-marker\n",
            ),
            (
                ".devcontainer/devcontainer.json",
                r#"{
                    // JSONC: comments and trailing commas
                    "build": { "dockerfile": "Containerfile", "args": { "GREETING": "built-${localWorkspaceFolderBasename}" }, },
                    "containerEnv": { "FROM_DEVCONTAINER": "${containerWorkspaceFolder}" },
                    "remoteEnv": { "REMOTE": "r-${containerEnv:FROM_DEVCONTAINER}" },
                    "mounts": [{ "type": "volume", "target": "/cache" }],
                    "onCreateCommand": "echo on-create > /tmp/on-create",
                    "postCreateCommand": { "a": "echo $REMOTE > /tmp/post-a", "b": ["sh", "-c", "pwd > /tmp/post-b"] },
                    "postStartCommand": ["touch", "/tmp/post-start"],
                }"#,
            ),
        ],
    );
    // A git URL source (file://) instead of a path.
    let url = format!("file://{}", repo.display());
    let up = env.run(&["up", &url, "--name", "bld"]);
    let stderr = text(&up.stderr);
    assert!(up.status.success(), "up failed:\n{stderr}");
    assert!(stderr.contains(&format!("==> building localhost/devaipod-build/{}-bld:latest", env.instance)), "{stderr}");
    assert!(stderr.contains("==> postCreateCommand [a]"), "{stderr}");

    assert_eq!(env.ok(&["exec", "bld", "--", "cat", "/built-marker"]), "built-built\n");
    assert_eq!(
        env.ok(&["exec", "bld", "--agent", "--", "cat", "/built-marker"]),
        "built-built\n",
        "the agent runs the same image"
    );
    assert_eq!(env.ok(&["exec", "bld", "--", "cat", "/tmp/on-create"]), "on-create\n");
    assert_eq!(env.ok(&["exec", "bld", "--", "cat", "/tmp/post-a"]), "r-/workspaces/built\n");
    assert_eq!(env.ok(&["exec", "bld", "--", "cat", "/tmp/post-b"]), "/workspaces/built\n");
    env.ok(&["exec", "bld", "--", "test", "-f", "/tmp/post-start"]);
    assert_eq!(env.ok(&["exec", "bld", "--", "printenv", "FROM_DEVCONTAINER"]), "/workspaces/built\n");
    assert!(
        env.run(&["exec", "bld", "--agent", "--", "printenv", "FROM_DEVCONTAINER"]).status.code() == Some(1),
        "containerEnv stays on the human's side"
    );
    env.ok(&["exec", "bld", "--", "touch", "/cache/x"]);
    assert_eq!(env.json(&["status", "bld"])["source"], url);

    env.ok(&["delete", "bld"]);
    assert_eq!(env.leftovers(), Vec::<String>::new(), "the anonymous mount volume is ours and goes too");
}

/// An `up` that fails after its pod was made and started (here a postCreateCommand that
/// fails) removes everything it made, on real podman; the name is free again at once.
#[test]
fn an_up_failing_after_the_pod_was_made_leaves_nothing() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let repo = fixture_repo(
        env.dir.path(),
        "failing",
        &[(
            ".devcontainer/devcontainer.json",
            r#"{ "image": "localhost/devaipod-base:latest", "postCreateCommand": "echo no >&2; exit 7" }"#,
        )],
    );
    let e = env.fails(&["up", repo.to_str().unwrap(), "--name", "late"]);
    assert!(e.contains("==> creating pod devaipod-late"), "the pod was made: {e}");
    assert!(e.contains("postCreateCommand") && e.contains('7'), "{e}");
    assert_eq!(env.leftovers(), Vec::<String>::new());
    assert!(podman(&["secret", "ls", "--format", "{{.Name}}"]).lines().all(|s| !s.starts_with("devaipod-late-")));
    let e = env.fails(&["status", "late"]);
    assert!(e.contains("no workspace named `late`"), "{e}");
}

#[test]
fn dry_run_prints_the_plan_and_creates_nothing() {
    let env = TestEnv::new("[trusted.env]\nvars = { HIDDEN = \"do-not-print-me\" }\n");
    let repo = fixture_repo(
        env.dir.path(),
        "dry",
        &[(
            ".devcontainer.json",
            r#"{"image": "localhost/some:img", "capAdd": ["SYS_PTRACE"], "forwardPorts": [8000]}"#,
        )],
    );
    let plan = env.json(&["up", repo.to_str().unwrap(), "--dry-run"]);
    assert_eq!(plan["name"], "dry");
    assert_eq!(plan["image"], serde_json::json!({"kind": "existing", "reference": "localhost/some:img"}));
    assert_eq!(plan["pod"]["ports"], serde_json::json!([8000]), "the agent's API is a socket, not a port");
    assert_eq!(plan["agent"]["network"], "loopback-only");
    assert_eq!(plan["agent"]["cap_drop"], serde_json::json!(["ALL"]));
    assert_eq!(plan["workspace"]["cap_add"], serde_json::json!(["SYS_PTRACE"]));
    assert_eq!(plan["workspace"]["trusted_env"]["HIDDEN"], "<redacted>");
    let text_plan = env.ok(&["up", repo.to_str().unwrap(), "--dry-run"]);
    assert!(
        text_plan.contains("container devaipod-dry-agent (agent)") && text_plan.contains("HIDDEN (trusted)"),
        "{text_plan}"
    );
    assert!(!text_plan.contains("do-not-print-me"));
    if podman_available() {
        assert_eq!(env.leftovers(), Vec::<String>::new());
    }
}

/// `[env]`, `api-key-env` and `${localEnv:…}` resolve against the shell that ran `up`, not
/// the environment the daemon was started with (it may have been started long before, by
/// another shell).
#[test]
fn up_uses_the_callers_environment_not_the_daemons() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&serde_json::json!({ "rules": [
        { "match": "nothing to change", "steps": [{ "text": "Nothing needed changing" }] }
    ]}));
    let config = format!("[env]\nallowlist = [\"IT_CALLER\"]\n{}api-key-env = \"IT_KEY\"\n", llm.agent_config());
    let env = TestEnv::new(&config);
    let dc = r#"{ "containerEnv": { "FROM_LOCAL": "${localEnv:IT_LOCAL}" } }"#;
    let repo = fixture_repo(env.dir.path(), "envs", &[(".devcontainer/devcontainer.json", dc)]);
    let repo = repo.to_str().unwrap();

    // The daemon starts with its own values of every variable.
    let started = env
        .cmd(&["list"])
        .env("IT_CALLER", "daemon-value")
        .env("IT_KEY", "daemon-key")
        .env("IT_LOCAL", "daemon-local")
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", text(&started.stderr));

    // Without the key in the caller's shell, `up` says which variable to set, although the
    // daemon has one.
    let out = env.cmd(&["up", repo, "--dry-run"]).env_remove("IT_KEY").output().unwrap();
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("api-key-env names IT_KEY, which is not set in the environment `up` was run from"), "{e}");

    // With the caller's values, the plan and the pod carry those.
    let with_caller = |args: &[&str]| {
        let out = env
            .cmd(args)
            .env("IT_CALLER", "caller-value")
            .env("IT_KEY", "caller-key-5d1e")
            .env("IT_LOCAL", "caller-local")
            .output()
            .unwrap();
        assert!(out.status.success(), "devaipod {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let plan: serde_json::Value = serde_json::from_str(&with_caller(&["--json", "up", repo, "--dry-run"])).unwrap();
    assert_eq!(plan["agent"]["env"]["IT_CALLER"], "caller-value", "{plan:#}");
    assert_eq!(plan["workspace"]["env"]["FROM_LOCAL"], "caller-local", "{plan:#}");
    let printed = plan.to_string();
    assert!(!printed.contains("caller-key-5d1e") && !printed.contains("daemon-key"), "no key in a plan: {printed}");

    with_caller(&["up", repo, "--name", "envs"]);
    assert_eq!(env.ok(&["exec", "envs", "--agent", "--", "printenv", "IT_CALLER"]).trim(), "caller-value");
    // The key never enters the agent: it holds a placeholder, the egress proxy adds the key.
    assert_eq!(
        env.ok(&["exec", "envs", "--agent", "--", "printenv", "DEVAIPOD_LLM_API_KEY"]).trim(),
        "devaipod-egress-proxy-adds-the-key"
    );
    let environ =
        env.ok(&["exec", "envs", "--agent", "--", "sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'"]);
    assert!(environ.contains("OPENCODE_CONFIG_CONTENT") && !environ.contains("caller-key-5d1e"), "{environ}");
    let files =
        env.run(&["exec", "envs", "--agent", "--", "grep", "-rls", "caller-key-5d1e", "/home/agent", "/run", "/tmp"]);
    assert!(text(&files.stdout).trim().is_empty(), "the key is in files of the agent: {}", text(&files.stdout));
    // A task works with the key all the same: the LLM got it from the egress proxy.
    let out = env.json(&["run", "-w", "envs", "-c", "nothing to change"]);
    assert_eq!(out["task"]["state"], "completed", "{out:#}");
    let seen = llm.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(r["authorization"], "Bearer caller-key-5d1e", "{r}");
    }
    assert_eq!(env.ok(&["exec", "envs", "--", "printenv", "FROM_LOCAL"]).trim(), "caller-local");
    // Never logged, never stored.
    for file in ["daemon.log", "state.db", "state.db-wal", "state.db-shm"] {
        let bytes = std::fs::read(env.dir.path().join("data").join(file)).unwrap_or_default();
        assert!(!bytes.windows(15).any(|w| w == b"caller-key-5d1e"), "the key is in {file}");
    }
    env.ok(&["delete", "envs"]);
}
