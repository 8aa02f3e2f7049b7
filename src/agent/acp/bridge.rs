//! The ACP bridge's I/O: it holds the one JSON-RPC connection to the agent over the agent
//! process's stdio, answers the agent's requests (permissions by policy, nothing else), and
//! serves devaipod's agent API on the pod's API socket for the daemon. The sessions' state
//! lives here, in the pod, so a restarted daemon finds it as it was.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::rpc::{self, Incoming, RpcError};
use super::state::{self, Sessions, TurnRefused};

/// The agent's first answer (`initialize`): it may start slowly (a Node program).
const INIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Making or loading a session (an MCP server starts with it).
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest a turn may run here; the daemon's task deadline cancels it long before.
const TURN_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Events kept for a slow reader of the event stream before it misses some.
const EVENT_BUFFER: usize = 1024;

/// What the bridge is started with.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The password of devaipod's agent API (HTTP Basic, user `opencode`).
    pub password: String,
    /// The workspace folder: the sessions' `cwd`, and what permissions allow.
    pub workspace: PathBuf,
    /// The gator MCP server's argv (the stdio bridge to the pod's gator socket).
    pub gator: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("the agent answered {method} with an error: {0}", method = .1)]
    Rpc(RpcError, String),
    #[error("the agent did not answer {0} within {1} s")]
    Timeout(String, u64),
    #[error("the agent's process has exited")]
    Gone,
}

/// The bridge: one per agent process.
pub struct Bridge {
    config: BridgeConfig,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>>,
    out: mpsc::UnboundedSender<String>,
    sessions: Mutex<Sessions>,
    events: broadcast::Sender<String>,
    initialized: AtomicBool,
    can_load: AtomicBool,
    loads: tokio::sync::Mutex<()>,
    permissions: AtomicU64,
}

impl Bridge {
    /// Starts the bridge over the agent's stdio: the writer, the reader, and `initialize`.
    /// The returned receiver yields an error if the agent cannot be initialized.
    pub fn start<W, R>(config: BridgeConfig, stdin: W, stdout: R) -> (Arc<Bridge>, oneshot::Receiver<String>)
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let (out, mut lines) = mpsc::unbounded_channel::<String>();
        let bridge = Arc::new(Bridge {
            config,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            out,
            sessions: Mutex::new(Sessions::default()),
            events: broadcast::channel(EVENT_BUFFER).0,
            initialized: AtomicBool::new(false),
            can_load: AtomicBool::new(false),
            loads: tokio::sync::Mutex::new(()),
            permissions: AtomicU64::new(0),
        });
        tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(line) = lines.recv().await {
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(read_loop(bridge.clone(), stdout));
        let (failed, failure) = oneshot::channel();
        let b = bridge.clone();
        tokio::spawn(async move {
            let params = json!({
                "protocolVersion": 1,
                "clientCapabilities": { "fs": { "readTextFile": false, "writeTextFile": false }, "terminal": false },
                "clientInfo": { "name": "devaipod", "version": env!("CARGO_PKG_VERSION") }
            });
            match b.call("initialize", params, INIT_TIMEOUT).await {
                Ok(v) => {
                    let load = v.pointer("/agentCapabilities/loadSession").and_then(Value::as_bool) == Some(true);
                    b.can_load.store(load, Ordering::SeqCst);
                    b.initialized.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    let _ = failed.send(format!("the ACP agent could not be initialized: {e}"));
                }
            }
        });
        (bridge, failure)
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, BridgeError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        if self.out.send(rpc::request(id, method, &params)).is_err() {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(BridgeError::Gone);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(BridgeError::Rpc(e, method.to_owned())),
            Ok(Err(_)) => Err(BridgeError::Gone),
            Err(_) => {
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                Err(BridgeError::Timeout(method.to_owned(), timeout.as_secs()))
            }
        }
    }

    fn publish(&self, events: Vec<state::Event>) {
        for e in events {
            let _ = self.events.send(e.to_string());
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The MCP servers every session is given: gator.
    fn mcp_servers(&self) -> Value {
        match self.config.gator.as_deref() {
            Some([command, args @ ..]) => json!([{ "name": "gator", "command": command, "args": args, "env": [] }]),
            _ => json!([]),
        }
    }

    /// Makes sure the session is known here: one this bridge made, or one the agent loads
    /// from its own store (after the pod's agent restarted), when it can. `Some`: the
    /// answer that says why not.
    async fn unknown(&self, id: &str) -> Option<Response> {
        if self.sessions().contains(id) {
            return None;
        }
        let _one_at_a_time = self.loads.lock().await;
        if self.sessions().contains(id) {
            return None;
        }
        if !self.can_load.load(Ordering::SeqCst) {
            return Some(fail(
                StatusCode::NOT_FOUND,
                format!(
                    "session {id} is not known to this ACP agent, and the agent cannot load sessions (it does not offer session/load): the session was lost when the agent restarted"
                ),
            ));
        }
        self.sessions().add(id, "", true);
        let params = json!({ "sessionId": id, "cwd": self.config.workspace, "mcpServers": self.mcp_servers() });
        match self.call("session/load", params, SESSION_TIMEOUT).await {
            Ok(_) => {
                self.sessions().loaded(id);
                None
            }
            Err(e) => {
                self.sessions().remove(id);
                Some(fail(StatusCode::NOT_FOUND, format!("session {id} could not be loaded: {e}")))
            }
        }
    }

    /// Answers one request of the agent.
    fn answer(&self, id: &Value, method: &str, params: &Value) {
        let result = match method {
            "session/request_permission" => {
                let (option, allowed) = state::permission(params, &self.config.workspace);
                let n = self.permissions.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(session) = params.get("sessionId").and_then(Value::as_str) {
                    let title = params.pointer("/toolCall/title").and_then(Value::as_str).unwrap_or_default();
                    let status = if allowed { "allowed" } else { "denied" };
                    self.publish(vec![state::tool_event(
                        session,
                        &format!("permission-{n}"),
                        "permission",
                        status,
                        title,
                    )]);
                }
                Ok(match option {
                    Some(option) => json!({ "outcome": { "outcome": "selected", "optionId": option } }),
                    None => json!({ "outcome": { "outcome": "cancelled" } }),
                })
            }
            other => Err(RpcError {
                code: rpc::METHOD_NOT_FOUND,
                message: format!("devaipod does not serve {other}: the agent works in its own sandbox"),
            }),
        };
        let _ = self.out.send(rpc::response(id, result));
    }
}

async fn read_loop<R: tokio::io::AsyncRead + Unpin>(bridge: Arc<Bridge>, stdout: R) {
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match rpc::parse(&line) {
            Ok(Some(Incoming::Response { id, result })) => {
                if let Some(tx) = bridge.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Ok(Some(Incoming::Request { id, method, params })) => bridge.answer(&id, &method, &params),
            Ok(Some(Incoming::Notification { method, params })) if method == "session/update" => {
                let events = bridge.sessions().update(&params);
                bridge.publish(events);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("agent-shim: a line from the ACP agent was skipped: {e}"),
        }
    }
    // The agent's output ended: nothing pending will be answered.
    bridge.pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

fn fail(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "name": "AcpBridgeError", "data": { "message": message } }))).into_response()
}

/// devaipod's agent API over the bridge (the routes `agent::opencode` uses), behind the
/// pod's password.
pub fn router(bridge: Arc<Bridge>) -> Router {
    Router::new()
        .route("/session", get(list).post(create))
        .route("/session/status", get(status))
        .route("/session/{id}/prompt_async", post(prompt))
        .route("/session/{id}/message", get(messages))
        .route("/session/{id}/abort", post(abort))
        .route("/event", get(events))
        .layer(axum::middleware::from_fn_with_state(bridge.clone(), auth))
        .with_state(bridge)
}

async fn auth(State(b): State<Arc<Bridge>>, req: Request, next: Next) -> Response {
    let want = format!("Basic {}", crate::encode::base64(format!("opencode:{}", b.config.password).as_bytes()));
    let given = req.headers().get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default();
    if b.config.password.is_empty() || !same(given, want.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, [("www-authenticate", "Basic")], "unauthorized").into_response();
    }
    next.run(req).await
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Some`: the answer while the agent is not initialized yet.
fn starting(b: &Bridge) -> Option<Response> {
    (!b.initialized.load(Ordering::SeqCst))
        .then(|| fail(StatusCode::SERVICE_UNAVAILABLE, "the ACP agent is starting".into()))
}

async fn list(State(b): State<Arc<Bridge>>) -> Response {
    if let Some(r) = starting(&b) {
        return r;
    }
    axum::Json(b.sessions().list_view()).into_response()
}

async fn create(State(b): State<Arc<Bridge>>, body: Option<axum::Json<Value>>) -> Response {
    if let Some(r) = starting(&b) {
        return r;
    }
    let title = body.as_ref().and_then(|j| j.get("title")).and_then(Value::as_str).unwrap_or_default().to_owned();
    let params = json!({ "cwd": b.config.workspace, "mcpServers": b.mcp_servers() });
    match b.call("session/new", params, SESSION_TIMEOUT).await {
        Ok(v) => match v.get("sessionId").and_then(Value::as_str) {
            Some(id) => {
                b.sessions().add(id, &title, false);
                axum::Json(json!({ "id": id, "title": title })).into_response()
            }
            None => fail(StatusCode::BAD_GATEWAY, "the agent's session/new answer has no sessionId".into()),
        },
        Err(e) => fail(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

async fn status(State(b): State<Arc<Bridge>>) -> Response {
    axum::Json(b.sessions().status_view()).into_response()
}

async fn prompt(
    State(b): State<Arc<Bridge>>,
    UrlPath(id): UrlPath<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(r) = starting(&b) {
        return r;
    }
    if body.get("model").is_some_and(|m| !m.is_null()) {
        return fail(
            StatusCode::BAD_REQUEST,
            "an ACP agent uses the model of its own configuration: a task cannot choose one (use the opencode backend for per-task models)".into(),
        );
    }
    let text: Vec<&str> = body
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    let text = text.join("\n");
    if let Some(r) = b.unknown(&id).await {
        return r;
    }
    let started = b.sessions().start_turn(&id, &text);
    match started {
        Ok(events) => b.publish(events),
        Err(TurnRefused::Busy) => return fail(StatusCode::CONFLICT, format!("session {id} is busy")),
        Err(TurnRefused::Unknown) => return fail(StatusCode::NOT_FOUND, format!("no session {id}")),
    }
    let params = json!({ "sessionId": id, "prompt": [{ "type": "text", "text": text }] });
    tokio::spawn(async move {
        let answer = b.call("session/prompt", params, TURN_LIMIT).await;
        let events = b.sessions().end_turn(&id, answer.as_ref().map_err(ToString::to_string));
        b.publish(events);
    });
    StatusCode::NO_CONTENT.into_response()
}

async fn messages(State(b): State<Arc<Bridge>>, UrlPath(id): UrlPath<String>) -> Response {
    if let Some(r) = b.unknown(&id).await {
        return r;
    }
    let view = b.sessions().messages_view(&id);
    match view {
        Some(v) => axum::Json(v).into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("no session {id}")),
    }
}

async fn abort(State(b): State<Arc<Bridge>>, UrlPath(id): UrlPath<String>) -> Response {
    if b.sessions().contains(&id) {
        let _ = b.out.send(rpc::notification("session/cancel", &json!({ "sessionId": id })));
    }
    axum::Json(json!(true)).into_response()
}

async fn events(State(b): State<Arc<Bridge>>) -> Response {
    let rx = b.events.subscribe();
    let hello = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(SseEvent::default().data(r#"{"type":"server.connected","properties":{}}"#))
    });
    let rest = tokio_stream_of(rx).map(|data| Ok::<_, std::convert::Infallible>(SseEvent::default().data(data)));
    Sse::new(hello.chain(rest)).keep_alive(KeepAlive::default()).into_response()
}

/// The broadcast as a stream (a reader that fell behind skips what it missed).
fn tokio_stream_of(rx: broadcast::Receiver<String>) -> impl futures_util::Stream<Item = String> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(s) => return Some((s, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests;
