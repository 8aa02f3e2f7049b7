//! devaipod as an MCP server, driven by rmcp's client over both transports: every tool,
//! its error paths, the whole loop with the real agent and the scripted LLM, and the
//! HTTP endpoint's authentication and Host/Origin checks.

mod common;

use common::*;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ()>;

const TOOLS: [&str; 18] = [
    "approve",
    "cancel_proposal_set",
    "cancel_task",
    "create_workspace",
    "delete_workspace",
    "diff_candidates",
    "get_proposal",
    "get_proposal_set",
    "get_task",
    "get_workspace",
    "list_proposal_sets",
    "list_proposals",
    "list_tasks",
    "list_workspaces",
    "reject",
    "reject_proposal_set",
    "run_task",
    "workspace_egress",
];

async fn stdio_client(env: &TestEnv) -> Client {
    let cmd: tokio::process::Command = env.cmd(&["mcp"]).into();
    ().serve(TokioChildProcess::new(cmd).unwrap()).await.expect("stdio MCP session")
}

async fn http_client(env: &TestEnv) -> Client {
    env.ok(&["list"]); // the daemon runs
    let config = StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", env.daemon_addr()))
        .auth_header(env.token());
    ().serve(StreamableHttpClientTransport::from_config(config)).await.expect("HTTP MCP session")
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    c.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .expect("a tool result, not a protocol error")
}

fn ok(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.clone().expect("structuredContent")
}

fn err_text(r: &CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "{r:?}");
    serde_json::to_string(&r.content).unwrap()
}

async fn check_tools_and_errors(c: &Client) {
    let info = c.peer_info().expect("server info");
    let server = info.server_info.clone().expect("server info");
    assert_eq!(server.name, "devaipod");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    let tools = c.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for t in &tools {
        let out = serde_json::to_value(t.output_schema.as_ref().expect("an output schema")).unwrap();
        let props = out["properties"].as_object().map(|p| p.len()).unwrap_or(0);
        assert!(out["type"] == "object" && props > 0, "{}'s output schema lists its fields: {out}", t.name);
        let a = t.annotations.as_ref().unwrap_or_else(|| panic!("{} has annotations", t.name));
        assert!(
            a.read_only_hint.is_some() && a.destructive_hint.is_some() && a.idempotent_hint.is_some(),
            "{}",
            t.name
        );
    }
    let by = |n: &str| tools.iter().find(|t| t.name == n).unwrap();
    assert_eq!(by("list_workspaces").annotations.as_ref().unwrap().read_only_hint, Some(true));
    assert_eq!(by("delete_workspace").annotations.as_ref().unwrap().destructive_hint, Some(true));
    let run_schema = serde_json::to_value(&by("run_task").input_schema).unwrap();
    let required: Vec<&str> = run_schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(required.contains(&"workspace") && required.contains(&"prompt"), "{run_schema}");

    assert_eq!(ok(&call(c, "list_workspaces", json!({})).await), json!({ "workspaces": [] }));
    // Bad arguments are tool errors that say what to fix.
    for (tool, args, want) in [
        ("get_workspace", json!({ "name": "nope" }), "no workspace named `nope`"),
        ("get_workspace", json!({}), "`name` is required"),
        ("run_task", json!({ "workspace": "nope", "prompt": "x" }), "no workspace named `nope`"),
        ("run_task", json!({ "workspace": "nope" }), "the prompt is empty: say what the agent should do"),
        ("run_task", json!({ "workspace": "w", "prompt": "x", "wait_seconds": 100000 }), "wait_seconds is at most 600"),
        ("get_task", json!({ "id": "t-none" }), "no task `t-none`"),
        ("cancel_task", json!({ "id": "t-none" }), "no task `t-none`"),
        ("get_proposal", json!({ "id": "p-none" }), "no proposal `p-none`"),
        (
            "approve",
            json!({ "proposal": "p-none", "action": "merge" }),
            "unknown action `merge`: use apply, push or draft_pr",
        ),
        ("approve", json!({ "proposal": "p-none", "action": "apply" }), "no proposal `p-none`"),
        ("reject", json!({ "proposal": "p-none" }), "no proposal `p-none`"),
        ("list_proposals", json!({ "state": "weird" }), "unknown proposal state `weird`"),
        (
            "create_workspace",
            json!({ "source": "file:///definitely/not/a/repo.git" }),
            "cannot clone file:///definitely/not/a/repo.git",
        ),
        ("create_workspace", json!({ "source": "https://github.com/o/r/issues/1" }), "no GitHub token"),
        (
            "create_workspace",
            json!({ "source": "/tmp", "agent": "gpt-pilot" }),
            "no agent named `gpt-pilot`: choose one of opencode, opencode-acp",
        ),
        ("delete_workspace", json!({ "name": "nope" }), "no workspace named `nope`"),
        // Fan-out.
        ("run_task", json!({ "workspace": "nope", "prompt": "x", "agents": 2 }), "no workspace named `nope`"),
        ("run_task", json!({ "workspace": "w", "prompt": "x", "agents": 0 }), "agents: 0 is out of range: use 1 to"),
        (
            "run_task",
            json!({ "workspace": "w", "prompt": "x", "agents": 2, "workers": 1 }),
            "workers and agents do not go together",
        ),
        (
            "run_task",
            json!({ "workspace": "w", "prompt": "x", "agents": 1, "models": ["nope"] }),
            "model `nope` is not one of",
        ),
        ("get_proposal_set", json!({ "id": "s-none" }), "no proposal set `s-none`"),
        ("get_proposal_set", json!({}), "`id` is required"),
        ("diff_candidates", json!({ "id": "s-none", "a": 1, "b": 2 }), "no proposal set `s-none`"),
        ("reject_proposal_set", json!({ "id": "s-none", "feedback": "x" }), "no proposal set `s-none`"),
        ("cancel_proposal_set", json!({ "id": "s-none" }), "no proposal set `s-none`"),
    ] {
        let e = err_text(&call(c, tool, args.clone()).await);
        assert!(e.contains(want), "{tool} {args}: {e}");
    }
}

#[tokio::test]
async fn stdio_tools_and_their_errors() {
    let env = TestEnv::new("");
    let c = stdio_client(&env).await;
    check_tools_and_errors(&c).await;
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn http_tools_errors_and_the_whole_loop() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "write the greeting", "steps": [
            { "tool": "write", "args": { "filePath": "/workspaces/mcp/hello.txt", "content": "hi there\n".repeat(50) } },
            { "text": "Wrote hello.txt" }
        ]}
    ]}));
    let env = TestEnv::new(&llm.agent_config());
    let c = http_client(&env).await;
    check_tools_and_errors(&c).await;

    let repo = fixture_repo(env.dir.path(), "mcp", &[]);
    let w = ok(&call(&c, "create_workspace", json!({ "source": repo.to_str().unwrap(), "name": "mcp" })).await);
    assert_eq!(w["workspace"]["name"], "mcp");
    assert_eq!(w["workspace"]["agent"], "running");
    assert_eq!(ok(&call(&c, "get_workspace", json!({ "name": "mcp" })).await)["workspace"]["status"], "Running");
    assert_eq!(ok(&call(&c, "list_workspaces", json!({})).await)["workspaces"][0]["name"], "mcp");

    let e = err_text(&call(&c, "run_task", json!({ "workspace": "mcp", "prompt": "  " })).await);
    assert!(e.contains("the prompt is empty"), "{e}");
    let t = ok(&call(
        &c,
        "run_task",
        json!({ "workspace": "mcp", "prompt": "please write the greeting", "wait_seconds": 90 }),
    )
    .await);
    assert_eq!(t["task"]["state"], "completed", "{t:#}");
    let pid = t["proposal"].as_str().unwrap().to_owned();
    let id = t["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(ok(&call(&c, "get_task", json!({ "id": id })).await)["task"]["state"], "completed");
    assert_eq!(ok(&call(&c, "list_tasks", json!({ "workspace": "mcp" })).await)["tasks"].as_array().unwrap().len(), 1);
    let e = err_text(&call(&c, "cancel_task", json!({ "id": id })).await);
    assert!(e.contains("already ended (completed)"), "{e}");

    let ps = ok(&call(&c, "list_proposals", json!({ "workspace": "mcp", "state": "open" })).await);
    assert_eq!(ps["proposals"][0]["id"], pid.as_str());
    // The diff, in pages.
    let first = ok(&call(&c, "get_proposal", json!({ "id": pid, "diff_limit": 100 })).await);
    assert_eq!(first["proposal"]["files"][0]["path"], "hello.txt");
    assert_eq!(first["diff"].as_str().unwrap().chars().count(), 100);
    let total = first["diff_total"].as_u64().unwrap();
    assert!(total > 100);
    let next = first["next_diff_offset"].as_u64().unwrap();
    let rest = ok(&call(&c, "get_proposal", json!({ "id": pid, "diff_offset": next, "diff_limit": 200000 })).await);
    assert!(rest["next_diff_offset"].is_null());
    let whole = format!("{}{}", first["diff"].as_str().unwrap(), rest["diff"].as_str().unwrap());
    assert_eq!(whole.chars().count() as u64, total);
    assert!(whole.contains("+hi there"));
    let e = err_text(&call(&c, "get_proposal", json!({ "id": pid, "diff_offset": total + 1 })).await);
    assert!(e.contains("past the diff's end"), "{e}");

    let a = ok(&call(&c, "approve", json!({ "proposal": pid, "action": "apply" })).await);
    assert_eq!(a["proposal"]["state"], "applied");
    assert_eq!(
        env.ok(&["exec", "mcp", "--", "git", "show", &format!("devaipod/{id}:hello.txt")]).lines().next(),
        Some("hi there")
    );
    let e = err_text(&call(&c, "approve", json!({ "proposal": pid, "action": "apply" })).await);
    assert!(e.contains("already approved (apply)"), "{e}");
    let e = err_text(&call(&c, "reject", json!({ "proposal": pid, "feedback": "more" })).await);
    assert!(e.contains("cannot be rejected"), "{e}");

    // run_task without waiting returns at once; reject with feedback gives a follow-up.
    let quick = ok(&call(&c, "run_task", json!({ "workspace": "mcp", "prompt": "please write the greeting" })).await);
    assert!(matches!(quick["task"]["state"].as_str(), Some("queued" | "running")), "{quick:#}");

    assert_eq!(ok(&call(&c, "delete_workspace", json!({ "name": "mcp" })).await)["result"], "deleted");
    c.cancel().await.unwrap();
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn the_http_endpoint_checks_token_host_and_origin() {
    let env = TestEnv::new("");
    env.ok(&["list"]);
    let addr = env.daemon_addr();
    let token = env.token();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#;
    let post = |headers: &[&str]| {
        let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"];
        args.extend_from_slice(&[
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
        ]);
        for h in headers {
            args.extend_from_slice(&["-H", h]);
        }
        let url = format!("http://{addr}/mcp");
        args.extend_from_slice(&["-d", init, &url]);
        text(&std::process::Command::new("curl").args(&args).output().unwrap().stdout)
    };
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(post(&[]), "401", "no token");
    assert_eq!(post(&["Authorization: Bearer wrong"]), "401", "wrong token");
    assert_eq!(post(&[&bearer]), "200", "the right token");
    assert_eq!(post(&[&bearer, "Host: evil.example"]), "403", "a foreign Host");
    assert_eq!(post(&[&bearer, "Origin: http://evil.example"]), "403", "a foreign Origin");
    let own_origin = format!("Origin: http://127.0.0.1:{}", addr.rsplit(':').next().unwrap());
    assert_eq!(post(&[&bearer, &own_origin]), "200", "the daemon's own origin");
    let log = std::fs::read_to_string(env.dir.path().join("data/daemon.log")).unwrap();
    assert!(!log.contains(&token));
}
