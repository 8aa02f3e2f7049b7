//! Gator end to end: the real agent in a real pod reads an issue, pushes its branch and
//! opens a draft PR through its own socket, against a fake GitHub and a local bare remote;
//! and the scope-escape suite, each attempt denied and audited.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A bare remote at `<dir>/remotes/<owner>/<repo>.git`, as the config's git-url names it.
fn remote(dir: &Path, owner: &str, repo: &str) -> std::path::PathBuf {
    let seed = fixture_repo(dir, &format!("seed-{repo}"), &[]);
    let bare = dir.join("remotes").join(owner).join(format!("{repo}.git"));
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git(dir, &["clone", "-q", "--bare", seed.to_str().unwrap(), bare.to_str().unwrap()]);
    bare
}

/// Config: the scripted LLM, the fake GitHub as `github.test`, remotes under the test dir.
fn config(llm: &ScriptedLlm, gh: &FakeGithub, dir: &Path) -> String {
    format!(
        "{}\n[trusted]\ngithub-token-env = \"DEVAIPOD_TEST_GH_TOKEN\"\n\n[service-gator.gh]\nhost = \"github.test\"\napi-url = \"http://127.0.0.1:{}\"\ngit-url = \"file://{}/remotes/{{repo}}.git\"\n",
        llm.agent_config(),
        gh.port,
        dir.display()
    )
}

#[test]
fn agent_reads_issue_pushes_branch_and_opens_a_draft_pr() {
    if !podman_available() {
        return;
    }
    let folder = "/workspaces/gh-e2e";
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "please write the greeting via gator", "steps": [
            { "tool": "gator_github_get_issue", "args": { "number": 1 } },
            { "tool": "write", "args": { "filePath": format!("{folder}/hello.txt"), "content": "hi from the agent\n" } },
            { "tool": "gator_git_push_branch", "args": {} },
            { "tool": "gator_github_create_draft_pr", "args": { "title": "Add a greeting", "body": "Closes #1" } },
            { "text": "Pushed my branch and opened a draft PR" }
        ]}
    ]}));
    let gh = FakeGithub::start(&json!({ "repos": { "acme/gh-e2e": { "issues": {
        "1": { "title": "Add a greeting", "body": "Users want hello.txt: please write the greeting via gator.", "state": "open" }
    }}}}));
    let dir = tempfile::tempdir().unwrap();
    let env = TestEnv::new(&config(&llm, &gh, dir.path())).with_env("DEVAIPOD_TEST_GH_TOKEN", &gh.token);
    let bare = remote(dir.path(), "acme", "gh-e2e");

    // The issue URL is the whole request: the task is its title and body.
    let out = env.run(&["--json", "run", "https://github.test/acme/gh-e2e/issues/1"]);
    assert!(out.status.success(), "run failed:\n{}", text(&out.stderr));
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    assert_eq!(done["task"]["summary"], "Pushed my branch and opened a draft PR");
    let task_id = done["task"]["id"].as_str().unwrap();
    let ws = done["task"]["workspace"].as_str().unwrap();
    let branch = format!("devaipod/{task_id}");

    // The agent was offered gator's tools, and saw the issue through them.
    let reqs = llm.requests();
    let first = reqs.iter().find(|r| r["tools"] == true).expect("an agent turn");
    let names: Vec<&str> = first["tool_names"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for t in ["gator_github_get_issue", "gator_git_push_branch", "gator_github_create_draft_pr"] {
        assert!(names.contains(&t), "{t} offered: {names:?}");
    }
    assert!(!names.contains(&"gator_github_comment"), "no write scope, no comment tool: {names:?}");
    let saw_issue = reqs.iter().any(|r| r["last_tool"].as_str().is_some_and(|t| t.contains("Users want hello.txt")));
    assert!(saw_issue, "the issue's body reached the agent: {reqs:#?}");

    // The branch is on the remote, with the agent's file.
    let shown = git(&bare, &["show", &format!("{branch}:hello.txt")]);
    assert_eq!(shown, "hi from the agent\n");

    // GitHub saw the daemon's token on every call, and a draft PR from that branch.
    let gh_reqs = gh.requests();
    assert!(gh_reqs.iter().all(|r| r["auth_ok"] == true), "{gh_reqs:#?}");
    let pr = gh_reqs.iter().find(|r| r["method"] == "POST" && r["path"] == "/repos/acme/gh-e2e/pulls").expect("a PR");
    assert_eq!(pr["body"]["draft"], true, "{pr:#}");
    assert_eq!(pr["body"]["head"], branch.as_str());
    assert_eq!(pr["body"]["base"], "main");

    // The token never entered the pod.
    let agent_env = podman(&["exec", &format!("devaipod-{ws}-agent"), "env"]);
    assert!(!agent_env.contains(&gh.token), "token in the agent's env");
    let ws_env = podman(&["inspect", &format!("devaipod-{ws}-agent"), "--format", "{{json .Config.Env}}"]);
    assert!(!ws_env.contains(&gh.token));

    // Every call is in the audit log, allowed, with its target.
    let log = env.json(&["gator", "log", ws]);
    let entries = log.as_array().unwrap();
    for (tool, target) in [
        ("github_get_issue", "acme/gh-e2e#1".to_owned()),
        ("git_push_branch", format!("acme/gh-e2e {branch}")),
        ("github_create_draft_pr", format!("acme/gh-e2e {branch}")),
    ] {
        assert!(
            entries.iter().any(|e| e["tool"] == tool && e["target"] == target.as_str() && e["decision"] == "allow"),
            "{tool} {target} audited: {log:#}"
        );
    }
    // Approving ships exactly what was reviewed: a moved branch is refused...
    let pid = done["proposal"].as_str().expect("a proposal").to_owned();
    let repo = env.dir.path().join(format!("data/repos/{ws}.git"));
    let head = git(&repo, &["rev-parse", &branch]).trim().to_owned();
    git(&repo, &["update-ref", &format!("refs/heads/{branch}"), &format!("{head}~1")]);
    let moved = env.fails(&["approve", &pid, "--apply"]);
    assert!(moved.contains("has moved since proposal") && moved.contains("nothing was shipped"), "{moved}");
    git(&repo, &["update-ref", &format!("refs/heads/{branch}"), &head]);
    // ...and draft_pr pushes and opens a draft PR with the daemon's token.
    let approved = env.json(&["approve", &pid, "--draft-pr"]);
    assert_eq!(approved["state"], "pushed", "{approved:#}");
    let prs: Vec<Value> = gh.requests().into_iter().filter(|r| r["method"] == "POST").collect();
    assert_eq!(prs.len(), 2, "the agent's draft PR and the approval's: {prs:#?}");
    assert!(prs.iter().all(|r| r["body"]["draft"] == true && r["auth_ok"] == true));

    // The gator calls are part of the task's progress.
    let events = env.json(&["task", task_id])["events"].clone();
    let gator_events: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "gator")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(gator_events.iter().any(|m| m.starts_with("gator allow git_push_branch")), "{events:#}");
    assert!(gator_events.iter().any(|m| m.starts_with("gator allow github_create_draft_pr")), "{events:#}");

    let scopes = env.json(&["gator", "show", ws]);
    assert_eq!(scopes["github_repo"], "acme/gh-e2e");
    assert_eq!(scopes["scopes"], json!(["github:acme/gh-e2e:read,create-draft,push-new-branch"]));

    // The bridge outlives a daemon restart: it reconnects, replays `initialize`, and the
    // client's next request is answered (and the replayed initialize's answer is not seen).
    let socket = env.dir.path().join("run/gator").join(ws).join("gator.sock");
    let mut bridge = Bridge::start(&socket);
    bridge.send(json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } } }));
    assert_eq!(bridge.recv()["id"], 1);
    bridge.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    bridge.send(json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }));
    let listed = bridge.recv();
    assert_eq!(listed["id"], 2, "{listed}");
    assert!(listed.to_string().contains("git_push_branch"), "{listed}");
    env.kill_daemon("KILL");
    env.ok(&["list"]); // starts the daemon again; it reopens every pod's socket
    bridge.send(json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list" }));
    let again = bridge.recv();
    assert_eq!(again["id"], 3, "{again}");
    assert!(again.to_string().contains("github_get_issue"), "{again}");
    drop(bridge);
    env.ok(&["delete", ws]);
}

/// `devaipod gator-bridge` run as opencode runs it, with JSON-RPC lines on stdin/stdout.
struct Bridge {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Bridge {
    fn start(socket: &Path) -> Bridge {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_devaipod"))
            .arg("gator-bridge")
            .arg(socket)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Bridge { child, stdin, lines }
    }

    fn send(&mut self, v: Value) {
        use std::io::Write;
        writeln!(self.stdin, "{v}").unwrap();
    }

    fn recv(&self) -> Value {
        let line = self.lines.recv_timeout(std::time::Duration::from_secs(60)).expect("an answer from the bridge");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Client = rmcp::service::RunningService<rmcp::RoleClient, ()>;

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct Watcher(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl rmcp::ClientHandler for Watcher {
    async fn on_tool_list_changed(&self, _: rmcp::service::NotificationContext<rmcp::RoleClient>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An MCP session on a pod's gator socket, as the bridge in that pod opens it.
async fn connect(socket: &Path) -> Client {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    let (r, w) = stream.into_split();
    ().serve((r, w)).await.expect("gator MCP session")
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    c.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args)).await.expect("a tool result")
}

async fn tool_names(c: &Client) -> Vec<String> {
    c.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect()
}

/// Runs a task that changes nothing and returns its id (so that its branch exists by name).
fn quick_task(env: &TestEnv, ws: &str) -> String {
    let t = env.json(&["run", "-w", ws, "-c", "nothing to change"]);
    assert_eq!(t["task"]["state"], "completed", "{t:#}");
    t["task"]["id"].as_str().unwrap().to_owned()
}

#[test]
fn scope_escapes_are_denied_and_audited() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "nothing to change", "steps": [{ "text": "Nothing needed changing" }] }
    ]}));
    let gh = FakeGithub::start(&json!({ "repos": {
        "acme/gh-esc": { "issues": { "1": { "title": "t", "body": "b" } } },
        "acme/gh-esc-ro": { "issues": { "1": { "title": "t", "body": "b" } } },
        "evil/other": { "issues": { "1": { "title": "secret", "body": "not yours" } } }
    }}));
    let dir = tempfile::tempdir().unwrap();
    let env = TestEnv::new(&config(&llm, &gh, dir.path())).with_env("DEVAIPOD_TEST_GH_TOKEN", &gh.token);
    let bare = remote(dir.path(), "acme", "gh-esc");
    remote(dir.path(), "acme", "gh-esc-ro");
    let a = env.json(&["up", "https://github.test/acme/gh-esc"])["workspace"]["name"].as_str().unwrap().to_owned();
    let b =
        env.json(&["up", "-R", "https://github.test/acme/gh-esc-ro"])["workspace"]["name"].as_str().unwrap().to_owned();
    let task_a = quick_task(&env, &a);
    let task_b = quick_task(&env, &b);
    let runtime = env.dir.path().join("run/gator");
    let (sock_a, sock_b) = (runtime.join(&a).join("gator.sock"), runtime.join(&b).join("gator.sock"));

    // In the pod: only its own socket directory, and the other pod's socket is not there.
    let agent_a = format!("devaipod-{a}-agent");
    assert_eq!(podman(&["exec", &agent_a, "ls", "-A", "/run/devaipod/gator"]).trim(), "egress.sock\ngator.sock");
    let probe =
        Command::new("podman").args(["exec", &agent_a, "test", "-e", sock_b.to_str().unwrap()]).status().unwrap();
    assert!(!probe.success(), "{} is reachable from {a}'s agent", sock_b.display());
    let mounts = podman(&["exec", &agent_a, "cat", "/proc/self/mountinfo"]);
    assert!(!mounts.contains(&format!("/gator/{b}")), "{b}'s gator directory is mounted in {a}: {mounts}");
    assert!(!podman(&["exec", &agent_a, "env"]).contains(&gh.token));

    // The agent writes files that look like scope configuration (they change nothing).
    let evil_toml = "[service-gator.gh]\nread = true\n[service-gator.gh.repos]\n\"evil/other\" = { write = true }\n";
    for path in
        ["/workspaces/gh-esc/devaipod.toml", "/workspaces/gh-esc/.devaipod/scopes", "/home/agent/.config/devaipod.toml"]
    {
        let dir = Path::new(path).parent().unwrap().to_str().unwrap().to_owned();
        let script = format!("mkdir -p {dir} && printf '%s' \"$1\" > {path}");
        let out =
            Command::new("podman").args(["exec", &agent_a, "sh", "-c", &script, "sh", evil_toml]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ca = connect(&sock_a).await;
        let names = tool_names(&ca).await;
        assert!(names.contains(&"git_push_branch".to_owned()) && names.contains(&"github_create_draft_pr".to_owned()));
        assert!(!names.contains(&"github_comment".to_owned()), "{names:?}");
        // Allowed: reading its own repository.
        let ok = call(&ca, "github_get_issue", json!({ "number": 1 })).await;
        assert_ne!(ok.is_error, Some(true), "{ok:?}");

        let own = format!("devaipod/{task_a}");
        let other = format!("devaipod/{task_b}");
        // (tool, arguments, what the denial must say)
        let attempts = [
            ("github_get_issue", json!({ "repo": "evil/other", "number": 1 }), "evil/other needs `read`"),
            ("github_list_issues", json!({ "repo": "evil/other" }), "evil/other needs `read`"),
            ("github_create_draft_pr", json!({ "title": "x", "head": own, "draft": false }), "always drafts"),
            ("github_create_draft_pr", json!({ "title": "x", "head": "main" }), "head must be"),
            (
                "github_create_draft_pr",
                json!({ "title": "x", "head": own, "repo": "evil/other" }),
                "needs `create-draft`",
            ),
            ("git_push_branch", json!({ "branch": "main" }), "only devaipod/*"),
            ("git_push_branch", json!({ "branch": other }), "not the branch of this workspace's running task"),
            ("git_push_branch", json!({ "branch": own }), "not the branch of this workspace's running task"),
            ("git_push_branch", json!({ "branch": own, "force": true }), "force push on acme/gh-esc needs `write`"),
            ("git_push_branch", json!({ "branch": own, "repo": "evil/other" }), "needs `push-new-branch`"),
            ("github_comment", json!({ "number": 1, "body": "hi" }), "needs `write`"),
            ("github_delete_repo", json!({ "repo": "acme/gh-esc" }), "unknown tool"),
            ("github_get_issue", json!({ "number": "one" }), "bad arguments"),
        ];
        for (tool, args, why) in &attempts {
            let r = call(&ca, tool, args.clone()).await;
            assert_eq!(r.is_error, Some(true), "{tool} {args} was not refused: {r:?}");
            let shown = serde_json::to_string(&r.content).unwrap();
            assert!(shown.contains(why), "{tool} {args}: {shown} (wanted {why})");
        }

        // The read-only workspace is offered read tools only, and cannot push.
        let cb = connect(&sock_b).await;
        let names = tool_names(&cb).await;
        assert!(names.contains(&"github_get_issue".to_owned()), "{names:?}");
        assert!(!names.iter().any(|n| n == "git_push_branch" || n == "github_create_draft_pr"), "{names:?}");
        let r = call(&cb, "git_push_branch", json!({ "branch": other })).await;
        assert_eq!(r.is_error, Some(true), "{r:?}");
        assert!(serde_json::to_string(&r.content).unwrap().contains("needs `push-new-branch`"));
    });

    // Nothing reached GitHub or the remote from the denied calls.
    let gh_reqs = gh.requests();
    assert!(gh_reqs.iter().all(|r| !r["path"].as_str().unwrap_or("").contains("evil")), "{gh_reqs:#?}");
    assert!(gh_reqs.iter().all(|r| r["method"] == "GET"), "{gh_reqs:#?}");
    assert_eq!(git(&bare, &["branch", "--list", "devaipod/*"]).trim(), "", "nothing was pushed");

    // Every attempt is in the audit log as a denial (beside the egress proxy's rows, which
    // share the log: the LLM route, and what opencode tries to reach on its own).
    let log = env.json(&["gator", "log", &a]);
    let gator = |e: &&Value| e["tool"] != "egress";
    let denials: Vec<&Value> =
        log.as_array().unwrap().iter().filter(gator).filter(|e| e["decision"] == "deny").collect();
    assert_eq!(denials.len(), 13, "{log:#}");
    assert!(
        denials
            .iter()
            .any(|e| e["tool"] == "github_delete_repo" && e["reason"].as_str().unwrap().contains("unknown tool"))
    );
    assert!(log.as_array().unwrap().iter().any(|e| e["decision"] == "allow" && e["tool"] == "github_get_issue"));
    let log_b = env.json(&["gator", "log", &b]);
    assert_eq!(log_b.as_array().unwrap().iter().filter(gator).count(), 1, "{log_b:#}");

    // Scopes are changed by the owner only, and take effect at once: an open session is
    // told that its tool list changed.
    let changed = Watcher::default();
    let watching = rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&sock_a).await.unwrap();
        let (r, w) = stream.into_split();
        changed.clone().serve((r, w)).await.expect("gator MCP session")
    });
    env.ok(&["gator", "add", &a, "github:acme/gh-esc:write"]);
    rt.block_on(async {
        for _ in 0..50 {
            if changed.0.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    assert_eq!(changed.0.load(std::sync::atomic::Ordering::SeqCst), 1, "tools/list_changed after gator add");
    drop(watching);
    let bad = env.fails(&["gator", "add", &a, "github:acme/gh-esc:pushh"]);
    assert!(bad.contains("`pushh` is not a permission"), "{bad}");
    let shown = env.json(&["gator", "show", &a]);
    assert!(shown["scopes"].as_array().unwrap().contains(&json!("github:acme/gh-esc:write")), "{shown:#}");
    rt.block_on(async {
        let ca = connect(&sock_a).await;
        assert!(tool_names(&ca).await.contains(&"github_comment".to_owned()));
    });
    env.ok(&["gator", "remove", &a, "github:acme/gh-esc:write"]);
    env.ok(&["delete", &a]);
    env.ok(&["delete", &b]);
    assert!(!sock_a.exists(), "the socket goes with the workspace");
}

/// The token can live in a podman secret: the daemon reads it (podman 4.3 reveals secret
/// data only to containers, so a throwaway container without network prints it) and uses it.
#[test]
fn the_github_token_can_come_from_a_podman_secret() {
    if !podman_available() {
        return;
    }
    let gh = FakeGithub::start(&json!({ "repos": { "acme/gh-sec": { "issues": {
        "1": { "title": "From a secret", "body": "b" } } } } }));
    let dir = tempfile::tempdir().unwrap();
    remote(dir.path(), "acme", "gh-sec");
    let env = TestEnv::new("");
    let secret = format!("{}-gh-token", env.instance);
    struct Secret(String);
    impl Drop for Secret {
        fn drop(&mut self) {
            podman(&["secret", "rm", &self.0]);
        }
    }
    let mut create = Command::new("podman")
        .args(["secret", "create", &secret, "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        create.stdin.take().unwrap().write_all(gh.token.as_bytes()).unwrap();
    }
    assert!(create.wait().unwrap().success());
    let _secret = Secret(secret.clone());
    std::fs::write(
        &env.config,
        format!(
            "[trusted]\ngithub-token-secret = \"{secret}\"\n\n[service-gator.gh]\nhost = \"github.test\"\napi-url = \"http://127.0.0.1:{}\"\ngit-url = \"file://{}/remotes/{{repo}}.git\"\n",
            gh.port,
            dir.path().display()
        ),
    )
    .unwrap();
    env.ok(&["up", "--dry-run", "https://github.test/acme/gh-sec/issues/1"]);
    let reqs = gh.requests();
    let read = reqs.iter().find(|r| r["path"] == "/repos/acme/gh-sec/issues/1").expect("the issue was read");
    assert_eq!(read["auth_ok"], true, "{reqs:#?}");
    let left = podman(&["ps", "-a", "--filter", "name=devaipod-secret-read", "--format", "{{.Names}}"]);
    assert_eq!(left.trim(), "", "the throwaway container is gone");
}
