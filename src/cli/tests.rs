//! One input, three surfaces, one outcome. The same requests go through the CLI
//! (`cli::execute` with the client over the daemon's router, as `devaipod` does over the
//! socket), MCP (an rmcp client talking to `DevaipodMcp` over a pipe, as `devaipod mcp`
//! serves it) and the web (the TCP app with a login session, posting what the browser's form
//! posts), against one core over the fakes. Core decides; the surfaces only translate, so
//! every row must end the same way on all three — the same first task, the same refusal
//! word for word.

use std::process::ExitCode;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{Cli, execute};
use crate::client::Client;
use crate::core::testing::{FakeEngine, Turn, WS, World, git, wait_task};
use crate::core::{CallerEnv, Core};
use crate::mcp::{Caller, DevaipodMcp};
use crate::store::TaskState;

const TOKEN: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Cli,
    Mcp,
    Web,
}

/// What a request comes to, as a user of any surface sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The workspace exists, with this first task (its prompt) or none.
    Created { first_task: Option<String> },
    /// Done (a task started, a listing answered).
    Done,
    /// Refused with this message (the daemon's own words).
    Refused(String),
}

/// An input, as each surface takes it.
#[derive(Debug, Clone)]
enum Input {
    Create { source: String, task: Option<String>, hosts: Vec<String> },
    RunTask { workspace: String, prompt: String },
    ListTasks { state: String },
    ListProposals { state: String },
    Approve { proposal: String, action: String },
    Cancel { task: String },
}

struct Surfaces {
    world: World,
    client: Client,
    mcp: rmcp::service::RunningService<rmcp::RoleClient, ()>,
    web: axum::Router,
    cookie: String,
    _github: tokio::task::JoinHandle<()>,
    _scratch: tempfile::TempDir,
}

/// A GitHub API that knows issue o/r#7, on a loopback port.
async fn fake_github() -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/repos/o/r/issues/7",
        axum::routing::get(|| async {
            axum::Json(json!({
                "number": 7, "title": "Greet the reader", "body": "Add a greeting to README.md.",
                "html_url": "https://github.com/o/r/issues/7", "state": "open"
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), handle)
}

impl Surfaces {
    async fn new() -> Surfaces {
        let (api, github) = fake_github().await;
        let scratch =
            tempfile::Builder::new().prefix("devaipod-surfaces-").tempdir_in(crate::core::testing::scratch()).unwrap();
        let token_file = scratch.path().join("gh-token");
        std::fs::write(&token_file, "gh-test-token").unwrap();
        let remotes = scratch.path().join("remotes");
        let world = World::with_config(|c| {
            c.service_gator.gh.api_url = api.clone();
            c.service_gator.gh.git_url = format!("file://{}/{{repo}}.git", remotes.display());
            c.trusted.github_token_file = Some(token_file.clone());
        })
        .await;
        // The GitHub repository's remote: a bare clone of the world's source.
        std::fs::create_dir_all(remotes.join("o")).unwrap();
        git(&world.source, &["clone", "-q", "--bare", ".", remotes.join("o/r.git").to_str().unwrap()]);

        let router = crate::web::unix_app(world.core.clone());
        let client = Client::new(Arc::new(router));
        let caller = Caller { cwd: std::env::current_dir().ok(), env: Some(CallerEnv::current()) };
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        let server = DevaipodMcp::new(client.clone(), caller);
        tokio::spawn(async move {
            if let Ok(s) = server.serve(server_io).await {
                let _ = s.waiting().await;
            }
        });
        let mcp = ().serve(client_io).await.expect("an MCP session");
        let (web, _) = crate::web::tcp_app(world.core.clone(), TOKEN.to_owned(), 8080, Default::default());
        let cookie = login(&web).await;
        Surfaces { world, client, mcp, web, cookie, _github: github, _scratch: scratch }
    }

    fn core(&self) -> &Arc<Core<FakeEngine>> {
        &self.world.core
    }

    async fn send(&self, s: Surface, input: &Input) -> Result<(), String> {
        match s {
            Surface::Cli => self.cli(input).await,
            Surface::Mcp => self.mcp(input).await,
            Surface::Web => self.web(input).await,
        }
    }

    async fn cli(&self, input: &Input) -> Result<(), String> {
        let args: Vec<String> = match input {
            Input::Create { source, task, hosts } => {
                let mut a = vec!["up".into(), source.clone(), "--name".into(), WS.into()];
                if let Some(t) = task {
                    a.extend(["-c".into(), t.clone()]);
                }
                for h in hosts {
                    a.extend(["--allow-host".into(), h.clone()]);
                }
                a
            }
            Input::RunTask { workspace, prompt } => {
                vec!["run".into(), "-w".into(), workspace.clone(), "-c".into(), prompt.clone()]
            }
            Input::ListTasks { state } => vec!["tasks".into(), "--state".into(), state.clone()],
            Input::ListProposals { state } => vec!["proposals".into(), "--state".into(), state.clone()],
            Input::Approve { proposal, action } => {
                let flag = match action.as_str() {
                    "apply" => "--apply",
                    "push" => "--push",
                    "draft_pr" => "--draft-pr",
                    other => panic!("the CLI has no flag for `{other}`: not a CLI row"),
                };
                vec!["approve".into(), proposal.clone(), flag.into()]
            }
            Input::Cancel { task } => vec!["cancel".into(), task.clone()],
        };
        let cli = Cli::try_parse_from(std::iter::once("devaipod".to_owned()).chain(args)).map_err(|e| e.to_string())?;
        match execute(cli.command, &self.client, true).await {
            Ok(code) if code == ExitCode::SUCCESS => Ok(()),
            Ok(code) => Err(format!("exit {code:?}")),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    async fn mcp(&self, input: &Input) -> Result<(), String> {
        let (tool, args) = match input {
            Input::Create { source, task, hosts } => {
                ("create_workspace", json!({ "source": source, "name": WS, "task": task, "allow_hosts": hosts }))
            }
            Input::RunTask { workspace, prompt } => ("run_task", json!({ "workspace": workspace, "prompt": prompt })),
            Input::ListTasks { state } => ("list_tasks", json!({ "state": state })),
            Input::ListProposals { state } => ("list_proposals", json!({ "state": state })),
            Input::Approve { proposal, action } => ("approve", json!({ "proposal": proposal, "action": action })),
            Input::Cancel { task } => ("cancel_task", json!({ "id": task })),
        };
        let args = args.as_object().cloned().unwrap_or_default();
        let r = self
            .mcp
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .map_err(|e| format!("protocol error: {e}"))?;
        if r.is_error == Some(true) {
            let text: Vec<String> = r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
            return Err(text.join("\n"));
        }
        Ok(())
    }

    async fn web(&self, input: &Input) -> Result<(), String> {
        // What the pages' forms post (app.js `formBody`: empty fields left out).
        let (method, path, body) = match input {
            Input::Create { source, task, hosts } => {
                let mut b = json!({ "name": WS, "read_only": false });
                if !source.is_empty() {
                    b["source"] = json!(source);
                }
                if let Some(t) = task.as_ref().filter(|t| !t.is_empty()) {
                    b["task"] = json!(t);
                }
                // The form's hosts field (`data-list`): split into a list, left out when empty.
                if !hosts.is_empty() {
                    b["allow_hosts"] = json!(hosts);
                }
                ("POST", "/api/v1/workspaces".to_owned(), Some(b))
            }
            Input::RunTask { workspace, prompt } => {
                ("POST", "/api/v1/tasks".to_owned(), Some(json!({ "workspace": workspace, "prompt": prompt })))
            }
            Input::ListTasks { state } => ("GET", format!("/api/v1/tasks?state={}", crate::encode::enc(state)), None),
            Input::ListProposals { state } => {
                ("GET", format!("/api/v1/proposals?state={}", crate::encode::enc(state)), None)
            }
            Input::Approve { proposal, action } => (
                "POST",
                format!("/api/v1/proposals/{}/approve", crate::encode::enc(proposal)),
                Some(json!({ "action": action })),
            ),
            Input::Cancel { task } => {
                ("POST", format!("/api/v1/tasks/{}/cancel", crate::encode::enc(task)), Some(json!({})))
            }
        };
        let mut req = Request::builder()
            .method(method)
            .uri(&path)
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::ORIGIN, "http://127.0.0.1:8080")
            .header(header::COOKIE, &self.cookie);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let resp = self.web.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let error_of = |v: &Value| v.get("error").and_then(Value::as_str).map(str::to_owned);
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(error_of(&v).unwrap_or_else(|| text.into_owned()));
        }
        // `up` answers NDJSON: its last line is the result or the error.
        if let Some(last) = text.lines().rfind(|l| !l.trim().is_empty())
            && let Ok(v) = serde_json::from_str::<Value>(last)
            && let Some(e) = error_of(&v)
            && v.get("status").is_some()
        {
            return Err(e);
        }
        Ok(())
    }

    /// Sends `input` through `surface` and reads the outcome from core's state.
    async fn outcome(&self, surface: Surface, input: &Input) -> Outcome {
        let before: Vec<String> = self.task_ids().await;
        let sent = self.send(surface, input).await;
        match (input, sent) {
            (_, Err(e)) => Outcome::Refused(e),
            (Input::Create { hosts, .. }, Ok(())) => {
                let exists = self.core().status(WS).await.is_ok();
                assert!(exists, "{surface:?}: the workspace exists after a successful create");
                let mut stored = self.core().egress_view(WS).await.unwrap().hosts;
                let mut given = hosts.clone();
                stored.sort();
                given.sort();
                assert_eq!(stored, given, "{surface:?}: the workspace's own egress hosts");
                let new: Vec<_> = self
                    .core()
                    .tasks(&Default::default())
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|t| !before.contains(&t.id))
                    .collect();
                assert!(new.len() <= 1, "{surface:?}: at most one first task: {new:?}");
                Outcome::Created { first_task: new.first().map(|t| t.prompt.clone()) }
            }
            (_, Ok(())) => Outcome::Done,
        }
    }

    async fn task_ids(&self) -> Vec<String> {
        self.core().tasks(&Default::default()).await.unwrap().into_iter().map(|t| t.id).collect()
    }

    /// Back to no workspace (its tasks end cancelled; the history stays).
    async fn reset(&self) {
        if self.core().status(WS).await.is_ok() {
            self.core().delete(WS, false).await.expect("delete");
        }
    }
}

async fn login(app: &axum::Router) -> String {
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/login")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, "http://127.0.0.1:8080")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={TOKEN}")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    resp.headers()[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned()
}

const ALL: [Surface; 3] = [Surface::Cli, Surface::Mcp, Surface::Web];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_surface_ends_each_input_the_same_way() {
    let s = Surfaces::new().await;
    let source = s.world.source.display().to_string();
    let issue = "https://github.com/o/r/issues/7".to_owned();
    let issue_task =
        "Greet the reader\n\nAdd a greeting to README.md.\n\n(GitHub o/r#7: https://github.com/o/r/issues/7)";
    let created = |t: Option<&str>| Outcome::Created { first_task: t.map(str::to_owned) };
    let refused = |m: &str| Outcome::Refused(m.to_owned());

    // Creating workspaces: which first task each source starts is core's decision.
    let creates: Vec<(&str, Input, Outcome)> = vec![
        (
            "a GitHub issue brings its task",
            Input::Create { source: issue.clone(), task: None, hosts: vec![] },
            created(Some(issue_task)),
        ),
        (
            "a given task wins over the issue's",
            Input::Create { source: issue.clone(), task: Some("Only fix the typo".into()), hosts: vec![] },
            created(Some("Only fix the typo")),
        ),
        (
            "a local path with a task",
            Input::Create { source: source.clone(), task: Some("Add a file".into()), hosts: vec![] },
            created(Some("Add a file")),
        ),
        (
            "a blank task is none",
            Input::Create { source: source.clone(), task: Some("   ".into()), hosts: vec![] },
            created(None),
        ),
        ("no task, no issue: none", Input::Create { source: source.clone(), task: None, hosts: vec![] }, created(None)),
        (
            "an empty source is refused",
            Input::Create { source: String::new(), task: None, hosts: vec![] },
            refused("`source` is required: a local git repository, a git URL, or a GitHub issue/PR URL"),
        ),
        (
            "extra egress hosts",
            Input::Create {
                source: source.clone(),
                task: None,
                hosts: vec!["pypi.org".into(), "*.github.com:22".into()],
            },
            created(None),
        ),
        (
            "a bad egress host pattern is refused before anything is made",
            Input::Create { source: source.clone(), task: None, hosts: vec!["pypi.org".into(), "*.x".into()] },
            refused(&format!(
                "`*.x` is not a host pattern (`*.` needs a domain with a dot, e.g. *.example.org): {}",
                crate::config::HOST_PATTERN_GRAMMAR
            )),
        ),
    ];
    for (what, input, want) in &creates {
        for surface in ALL {
            let got = s.outcome(surface, input).await;
            assert_eq!(&got, want, "{what}, through {surface:?}");
            s.reset().await;
        }
    }

    // With a workspace: tasks, listings, approvals.
    s.world.agent.script(Turn::complete("first").writes("hello.txt", "hi\n"));
    let first = s.world.up().await;
    assert!(first.task.is_none());
    let t = s.core().run_task(WS, "write hello").await.unwrap();
    let t = wait_task(s.core(), &t.id, |t| t.state.is_final()).await;
    assert_eq!(t.state, TaskState::Completed, "{t:?}");
    let proposal = s.core().task_detail(&t.id).await.unwrap().proposal.expect("a proposal");
    let rows: Vec<(&str, Input, Outcome, &[Surface])> = vec![
        (
            "an empty prompt",
            Input::RunTask { workspace: WS.into(), prompt: " ".into() },
            refused("the prompt is empty: say what the agent should do"),
            &ALL,
        ),
        (
            "an unknown workspace",
            Input::RunTask { workspace: "nope".into(), prompt: "x".into() },
            refused("no workspace named `nope` (see `devaipod list`)"),
            &ALL,
        ),
        (
            "an unknown task state",
            Input::ListTasks { state: "weird".into() },
            refused("unknown task state `weird`: use queued, running, needs_input, completed, failed or cancelled"),
            &ALL,
        ),
        ("a known task state", Input::ListTasks { state: "completed".into() }, Outcome::Done, &ALL),
        (
            "an unknown proposal state",
            Input::ListProposals { state: "merged".into() },
            refused("unknown proposal state `merged`: use open, applied, pushed or rejected"),
            &ALL,
        ),
        (
            "cancelling an ended task",
            Input::Cancel { task: t.id.clone() },
            refused(&format!("task {} already ended (completed)", t.id)),
            &ALL,
        ),
        (
            // The CLI's flags cannot name an unknown action.
            "an unknown approve action",
            Input::Approve { proposal: proposal.clone(), action: "merge".into() },
            refused("unknown action `merge`: use apply, push or draft_pr"),
            &[Surface::Mcp, Surface::Web],
        ),
        (
            "draft_pr of a workspace without a GitHub repository",
            Input::Approve { proposal: proposal.clone(), action: "draft_pr".into() },
            refused(&format!(
                "{WS} does not work on a GitHub repository (its source is not a GitHub URL): use apply or push"
            )),
            &ALL,
        ),
    ];
    for (what, input, want, surfaces) in &rows {
        for surface in surfaces.iter().copied() {
            let got = s.outcome(surface, input).await;
            // The web API wraps a malformed body's serde message; the rest is core's, word for word.
            let got = match (surface, got) {
                (Surface::Web, Outcome::Refused(m)) => {
                    Outcome::Refused(m.strip_prefix("invalid request body: action: ").map(str::to_owned).unwrap_or(m))
                }
                (_, g) => g,
            };
            assert_eq!(&got, want, "{what}, through {surface:?}");
        }
    }
}

/// A workspace's own egress hosts change alike through the CLI, MCP and the API (core
/// parses and stores them; a bad pattern is refused in the same words everywhere).
#[tokio::test]
async fn egress_hosts_change_alike_through_every_surface() {
    let s = Surfaces::new().await;
    s.world.up().await;
    let cli = |args: &[&str]| {
        let args: Vec<String> = std::iter::once("devaipod").chain(args.iter().copied()).map(str::to_owned).collect();
        let client = s.client.clone();
        async move {
            let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
            match execute(cli.command, &client, true).await {
                Ok(code) if code == ExitCode::SUCCESS => Ok(()),
                Ok(code) => Err(format!("exit {code:?}")),
                Err(e) => Err(format!("{e:#}")),
            }
        }
    };
    let session = &s.mcp;
    let mcp = |args: Value| async move {
        let args = args.as_object().cloned().unwrap_or_default();
        let r = session
            .call_tool(CallToolRequestParams::new("workspace_egress").with_arguments(args))
            .await
            .map_err(|e| format!("protocol error: {e}"))?;
        let text: Vec<String> = r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
        if r.is_error == Some(true) { Err(text.join("\n")) } else { Ok(r.structured_content) }
    };
    let hosts = || async { s.core().egress_view(WS).await.unwrap().hosts };

    cli(&["egress", "allow", WS, "PyPI.org", "*.github.com"]).await.unwrap();
    assert_eq!(hosts().await, ["*.github.com", "pypi.org"], "stored in their canonical form");
    let shown = mcp(json!({ "workspace": WS, "remove": ["pypi.org"] })).await.unwrap().unwrap();
    assert_eq!(shown["hosts"], json!(["*.github.com"]));
    assert_eq!(shown["mode"], json!("allowlist"));
    let view = s.client.egress_set(WS, &["a.org:8443".to_owned()]).await.unwrap();
    assert_eq!(view.hosts, ["a.org:8443"]);
    let view = s.client.egress_remove(WS, "a.org:8443").await.unwrap();
    assert!(view.hosts.is_empty());
    cli(&["egress", "show", WS]).await.unwrap();

    let bad = format!(
        "`*.x` is not a host pattern (`*.` needs a domain with a dot, e.g. *.example.org): {}",
        crate::config::HOST_PATTERN_GRAMMAR
    );
    assert_eq!(cli(&["egress", "allow", WS, "*.x"]).await.unwrap_err(), bad);
    assert_eq!(mcp(json!({ "workspace": WS, "allow": ["*.x"] })).await.unwrap_err(), bad);
    assert_eq!(s.client.egress_allow(WS, &["*.x".to_owned()]).await.unwrap_err().to_string(), bad);
    let absent = "ws has no host pattern `x.org` of its own (it has: none)";
    assert_eq!(cli(&["egress", "remove", WS, "x.org"]).await.unwrap_err(), absent);
    assert_eq!(mcp(json!({ "workspace": WS, "remove": ["x.org"] })).await.unwrap_err(), absent);
    assert!(hosts().await.is_empty());
}
