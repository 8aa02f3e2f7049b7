//! The bridge against a scripted ACP agent in the same process (its stdio a pair of pipes),
//! reached as the daemon reaches it: `agent::opencode` over the API socket.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::*;
use crate::agent::opencode::Opencode;
use crate::agent::{Agent, AgentEvent, endpoint};

/// A fake ACP agent: answers initialize, session/new, session/load (replaying one turn),
/// and session/prompt (a tool call that asks a permission for `path`, then text), records
/// what it was sent. `cancel` makes a prompt wait for session/cancel.
async fn fake_agent(
    from_bridge: tokio::io::DuplexStream,
    mut to_bridge: tokio::io::DuplexStream,
    seen: Arc<Mutex<Vec<Value>>>,
    load: bool,
) {
    let mut lines = BufReader::new(from_bridge).lines();
    let mut waiting_cancel: Option<Value> = None;
    let mut waiting_permission: Option<(Value, String)> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let msg: Value = serde_json::from_str(&line).unwrap();
        seen.lock().unwrap().push(msg.clone());
        let send = |v: Value| format!("{v}\n");
        let mut out = String::new();
        let update = |sid: &str, u: Value| {
            send(json!({ "jsonrpc": "2.0", "method": "session/update", "params": { "sessionId": sid, "update": u } }))
        };
        match (msg.get("method").and_then(Value::as_str), msg.get("id").cloned()) {
            (Some("initialize"), Some(id)) => {
                out += &send(json!({ "jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": 1, "agentCapabilities": { "loadSession": load } } }))
            }
            (Some("session/new"), Some(id)) => {
                out += &send(json!({ "jsonrpc": "2.0", "id": id, "result": { "sessionId": "sess-1" } }))
            }
            (Some("session/load"), Some(id)) => {
                let sid = msg["params"]["sessionId"].as_str().unwrap().to_owned();
                out += &update(
                    &sid,
                    json!({ "sessionUpdate": "user_message_chunk", "content": { "type": "text", "text": "old prompt" } }),
                );
                out += &update(
                    &sid,
                    json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "text", "text": "old answer" } }),
                );
                out += &send(json!({ "jsonrpc": "2.0", "id": id, "result": null }));
            }
            (Some("session/prompt"), Some(id)) => {
                let sid = msg["params"]["sessionId"].as_str().unwrap().to_owned();
                let text = msg["params"]["prompt"][0]["text"].as_str().unwrap().to_owned();
                if text == "wait" {
                    waiting_cancel = Some(id);
                } else {
                    out += &update(
                        &sid,
                        json!({ "sessionUpdate": "tool_call", "toolCallId": "t1", "title": "write", "kind": "edit", "status": "pending" }),
                    );
                    out += &send(
                        json!({ "jsonrpc": "2.0", "id": 900, "method": "session/request_permission", "params": {
                        "sessionId": sid, "toolCall": { "toolCallId": "t1", "title": text, "locations": [{ "path": text }] },
                        "options": [{ "optionId": "yes", "kind": "allow_once" }, { "optionId": "no", "kind": "reject_once" }] } }),
                    );
                    out += &send(
                        json!({ "jsonrpc": "2.0", "id": 901, "method": "fs/read_text_file", "params": { "path": "/etc/passwd" } }),
                    );
                    waiting_permission = Some((id, sid));
                }
            }
            (None, Some(pid)) if pid == json!(900) => {
                let (id, sid) = waiting_permission.take().unwrap();
                let allowed = msg["result"]["outcome"]["optionId"] == "yes";
                let status = if allowed { "completed" } else { "failed" };
                out += &update(
                    &sid,
                    json!({ "sessionUpdate": "tool_call_update", "toolCallId": "t1", "status": status, "title": "a.txt" }),
                );
                out += &update(
                    &sid,
                    json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "text", "text": format!("done: {status}") } }),
                );
                out += &send(json!({ "jsonrpc": "2.0", "id": id, "result": { "stopReason": "end_turn" } }));
            }
            (Some("session/cancel"), None) => {
                if let Some(id) = waiting_cancel.take() {
                    out += &send(json!({ "jsonrpc": "2.0", "id": id, "result": { "stopReason": "cancelled" } }));
                }
            }
            _ => {}
        }
        if !out.is_empty() {
            to_bridge.write_all(out.as_bytes()).await.unwrap();
        }
    }
}

struct Setup {
    agent: Opencode,
    seen: Arc<Mutex<Vec<Value>>>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(load: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (bridge_in, agent_out) = tokio::io::duplex(1 << 16);
    let (agent_in, bridge_out) = tokio::io::duplex(1 << 16);
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_agent(agent_in, agent_out, seen.clone(), load));
    let config = BridgeConfig {
        password: "pod-secret".into(),
        workspace: PathBuf::from("/workspaces/app"),
        gator: Some(vec!["/opt/g/devaipod".into(), "gator-bridge".into(), "/run/g.sock".into()]),
    };
    let (bridge, _failed) = Bridge::start(config, bridge_out, bridge_in);
    let socket = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move { axum::serve(listener, router(bridge)).await });
    let sref = Arc::new(endpoint::SocketRef::open(&socket).unwrap());
    let client = crate::agent::opencode::unix_client(&sref);
    let agent = Opencode::over_socket(endpoint::unix(&socket), "pod-secret".into(), client, sref);
    Setup { agent, seen, socket, _dir: dir }
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen")
}

#[tokio::test]
async fn a_task_runs_through_the_bridge_as_through_opencode() {
    let s = setup(true).await;
    until("ready", async || s.agent.ready().await.then_some(())).await;
    let mut events = s.agent.events().await.unwrap();
    let id = s.agent.create_session("task t-1").await.unwrap();
    assert_eq!(id, "sess-1");
    let new = s.seen.lock().unwrap().iter().find(|m| m["method"] == "session/new").cloned().unwrap();
    assert_eq!(new["params"]["cwd"], "/workspaces/app");
    assert_eq!(
        new["params"]["mcpServers"],
        json!([{ "name": "gator", "command": "/opt/g/devaipod", "args": ["gator-bridge", "/run/g.sock"], "env": [] }]),
        "gator is the session's MCP server"
    );

    s.agent.prompt(&id, "/workspaces/app/a.txt", None).await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        let idle = matches!(e, AgentEvent::Idle { .. });
        got.push(e);
        if idle {
            break;
        }
    }
    let keys: Vec<String> = got
        .iter()
        .map(|e| match e {
            AgentEvent::Tool { tool, status, .. } => format!("{tool} {status}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        [
            "Busy { session: \"sess-1\" }",
            "write pending",
            "permission allowed",
            "write completed",
            "Idle { session: \"sess-1\" }"
        ]
    );
    let o = s.agent.outcome(&id).await.unwrap();
    assert_eq!((o.delivered, o.answered, o.final_text.as_deref()), (true, true, Some("done: completed")));
    assert!(!s.agent.is_busy(&id).await.unwrap());
    // The agent's other requests are refused, with a reason.
    let refused =
        until("the fs request's answer", async || s.seen.lock().unwrap().iter().find(|m| m["id"] == 901).cloned())
            .await;
    assert_eq!(refused["error"]["code"], rpc::METHOD_NOT_FOUND);

    // A path outside the workspace is refused by policy.
    s.agent.prompt(&id, "/etc/shadow", None).await.unwrap();
    let o = until("the second turn", async || {
        let o = s.agent.outcome(&id).await.unwrap();
        (o.user_turns == 2 && o.answered).then_some(o)
    })
    .await;
    assert_eq!(o.final_text.as_deref(), Some("done: failed"));

    // Cancel: the turn ends cancelled, as an error of the turn.
    s.agent.prompt(&id, "wait", None).await.unwrap();
    assert!(s.agent.is_busy(&id).await.unwrap());
    let e = s.agent.prompt(&id, "again", None).await.unwrap_err();
    assert!(e.to_string().contains("busy"), "{e}");
    s.agent.abort(&id).await.unwrap();
    let o = until("the cancel", async || {
        let o = s.agent.outcome(&id).await.unwrap();
        o.answered.then_some(o)
    })
    .await;
    assert!(o.error.as_deref().is_some_and(|e| e.contains("cancelled")), "{o:?}");

    // A per-task model is refused clearly.
    let e = s.agent.prompt(&id, "x", Some("other-model")).await.unwrap_err();
    assert!(e.to_string().contains("cannot choose one"), "{e}");
}

#[tokio::test]
async fn an_unknown_session_is_loaded_when_the_agent_can_and_refused_when_not() {
    let s = setup(true).await;
    until("ready", async || s.agent.ready().await.then_some(())).await;
    let o = s.agent.outcome("older").await.unwrap();
    assert_eq!((o.user_turns, o.answered, o.final_text.as_deref()), (1, true, Some("old answer")));
    let load = s.seen.lock().unwrap().iter().find(|m| m["method"] == "session/load").cloned().unwrap();
    assert_eq!(load["params"]["sessionId"], "older");
    assert_eq!(load["params"]["mcpServers"][0]["name"], "gator");

    let s = setup(false).await;
    until("ready", async || s.agent.ready().await.then_some(())).await;
    let e = s.agent.outcome("older").await.unwrap_err();
    assert!(e.to_string().contains("cannot load sessions"), "{e}");
}

#[tokio::test]
async fn every_route_needs_the_pods_password() {
    let s = setup(true).await;
    let sref = endpoint::SocketRef::open(&s.socket).unwrap();
    let http = crate::agent::opencode::unix_client(&sref);
    for (method, path) in [
        (reqwest::Method::GET, "/session"),
        (reqwest::Method::POST, "/session"),
        (reqwest::Method::GET, "/session/status"),
        (reqwest::Method::POST, "/session/s/prompt_async"),
        (reqwest::Method::GET, "/session/s/message"),
        (reqwest::Method::POST, "/session/s/abort"),
        (reqwest::Method::GET, "/event"),
    ] {
        let url = format!("{}{path}", endpoint::UNIX_BASE);
        let none = http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{method} {path}");
        let wrong = http.request(method.clone(), &url).basic_auth("opencode", Some("nope")).send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{method} {path}");
    }
    let right = http.get(format!("{}/session/status", endpoint::UNIX_BASE)).basic_auth("opencode", Some("pod-secret"));
    assert_eq!(right.send().await.unwrap().status(), 200);
}
