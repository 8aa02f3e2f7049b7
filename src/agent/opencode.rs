//! opencode's HTTP API (as verified with opencode 1.18): sessions, `prompt_async`, the `/event`
//! SSE stream, `/session/status`, messages and abort. HTTP Basic auth, user `opencode`, with
//! the per-pod password. Every call has a timeout sized to what it waits for; the event
//! stream's body has none (it is long-lived), its answer does.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};

use std::sync::Arc;

use super::endpoint;
use super::sse::SseDecoder;
use super::{Agent, AgentError, AgentEvent, Outcome};

/// A connection to the agent is on loopback (its published port): it is made at once or
/// refused at once.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One readiness probe. opencode accepts connections a moment before it serves, and a
/// request sent in that moment is never answered (verified: still waiting after 45 s); its
/// first real answer takes up to ~1.2 s. A probe is one attempt among many: the caller
/// retries under its own deadline.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Small calls (sessions, status, prompt delivery, abort): opencode answers in
/// milliseconds once it serves.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A session's messages, which grow with the session.
const MESSAGES_TIMEOUT: Duration = Duration::from_secs(30);
/// The event stream's answer (status and headers; opencode sends them at once).
const EVENTS_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client for opencode servers: loopback connect timeout, pooled connections.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build().unwrap_or_default()
}

/// A client for an opencode server behind the API socket `socket` (requests are written
/// against [`endpoint::UNIX_BASE`]).
pub fn unix_client(socket: &endpoint::SocketRef) -> reqwest::Client {
    reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).unix_socket(socket.path()).build().unwrap_or_default()
}

#[derive(Clone)]
pub struct Opencode {
    /// The URL requests are written against.
    base: String,
    /// The endpoint as core knows it (what errors name).
    endpoint: String,
    password: String,
    http: reqwest::Client,
    /// The API socket a unix client connects to, held open while the client lives.
    _socket: Option<Arc<endpoint::SocketRef>>,
    /// Why the endpoint cannot be reached at all (every call fails with it).
    broken: Option<String>,
    /// The project directory every request is for (`x-opencode-directory`), when it is not
    /// the one opencode was started in.
    directory: Option<String>,
}

impl Opencode {
    /// A client for the opencode server at `base` (e.g. `http://127.0.0.1:41234`).
    pub fn new(base: String, password: String) -> Self {
        Opencode::with_http(base, password, http_client())
    }

    /// The same over a shared HTTP client ([`http_client`]): its connections are reused
    /// from one call to the next, and it is built once (building one costs milliseconds).
    pub fn with_http(base: String, password: String, http: reqwest::Client) -> Self {
        Opencode { endpoint: base.clone(), base, password, http, _socket: None, broken: None, directory: None }
    }

    /// A client for the agent behind an API socket (`endpoint` is `unix:<path>`).
    pub fn over_socket(
        endpoint: String,
        password: String,
        http: reqwest::Client,
        socket: Arc<endpoint::SocketRef>,
    ) -> Self {
        Opencode {
            base: endpoint::UNIX_BASE.into(),
            endpoint,
            password,
            http,
            _socket: Some(socket),
            broken: None,
            directory: None,
        }
    }

    /// A client whose every call fails with `why` (its endpoint cannot be opened).
    pub fn unreachable_at(endpoint: String, why: String) -> Self {
        Opencode {
            base: endpoint::UNIX_BASE.into(),
            endpoint,
            password: String::new(),
            http: reqwest::Client::new(),
            _socket: None,
            broken: Some(why),
            directory: None,
        }
    }

    /// The same client, its requests for project `directory` (opencode serves every
    /// project directory a request names; a warm pool member's was started elsewhere).
    pub fn in_directory(self, directory: Option<String>) -> Self {
        Opencode { directory, ..self }
    }

    /// The endpoint this client reaches (`unix:<path>` or an HTTP base URL).
    pub fn base_url(&self) -> &str {
        &self.endpoint
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base)).basic_auth("opencode", Some(&self.password));
        match &self.directory {
            Some(d) => rb.header("x-opencode-directory", crate::encode::enc(d)),
            None => rb,
        }
    }

    async fn json(&self, what: &str, rb: reqwest::RequestBuilder) -> Result<Value, AgentError> {
        self.json_within(what, rb, CALL_TIMEOUT).await
    }

    /// A JSON call that takes at most `timeout`, body included.
    async fn json_within(
        &self,
        what: &str,
        rb: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        self.usable()?;
        let resp = rb.timeout(timeout).send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let is_json =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
        let body = resp.text().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(AgentError::Status { what: what.into(), status: status.as_u16(), body: truncate(&body) });
        }
        if !is_json {
            // opencode answers unknown paths with its web UI's HTML.
            return Err(AgentError::Protocol {
                what: what.into(),
                message: "not JSON (is this opencode's API?)".into(),
            });
        }
        serde_json::from_str(&body).map_err(|e| AgentError::Protocol { what: what.into(), message: e.to_string() })
    }

    fn unreachable(&self, e: reqwest::Error) -> AgentError {
        AgentError::Unreachable { url: self.endpoint.clone(), message: e.without_url().to_string() }
    }

    fn usable(&self) -> Result<(), AgentError> {
        match &self.broken {
            Some(why) => Err(AgentError::Unreachable { url: self.endpoint.clone(), message: why.clone() }),
            None => Ok(()),
        }
    }
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() > 300 { format!("{}…", &s[..s.floor_char_boundary(300)]) } else { s.to_owned() }
}

impl Agent for Opencode {
    async fn ready(&self) -> bool {
        self.json_within("list sessions", self.req(reqwest::Method::GET, "/session"), READY_TIMEOUT)
            .await
            .is_ok_and(|v| v.is_array())
    }

    async fn create_session(&self, title: &str) -> Result<String, AgentError> {
        let v = self
            .json("create a session", self.req(reqwest::Method::POST, "/session").json(&json!({ "title": title })))
            .await?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| AgentError::Protocol { what: "create a session".into(), message: "no id".into() })
    }

    async fn prompt(&self, session: &str, text: &str, model: Option<&str>) -> Result<(), AgentError> {
        let mut body = json!({ "parts": [{ "type": "text", "text": text }] });
        if let Some(m) = model {
            body["model"] = json!({ "providerID": super::config::PROVIDER, "modelID": m });
        }
        self.usable()?;
        let resp = self
            .req(reqwest::Method::POST, &format!("/session/{session}/prompt_async"))
            .json(&body)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(AgentError::Status { what: "deliver the prompt".into(), status: status.as_u16(), body: truncate(&body) })
    }

    async fn is_busy(&self, session: &str) -> Result<bool, AgentError> {
        let v = self.json("read session status", self.req(reqwest::Method::GET, "/session/status")).await?;
        Ok(v.get(session).and_then(|s| s.get("type")).and_then(Value::as_str).is_some_and(|t| t != "idle"))
    }

    async fn outcome(&self, session: &str) -> Result<Outcome, AgentError> {
        let rb = self.req(reqwest::Method::GET, &format!("/session/{session}/message"));
        let v = self.json_within("read messages", rb, MESSAGES_TIMEOUT).await?;
        Ok(outcome_of(&v))
    }

    async fn abort(&self, session: &str) -> Result<(), AgentError> {
        self.json("abort the session", self.req(reqwest::Method::POST, &format!("/session/{session}/abort"))).await?;
        Ok(())
    }

    async fn events(&self) -> Result<BoxStream<'static, AgentEvent>, AgentError> {
        // The answer is bounded; the stream that follows is not.
        self.usable()?;
        let resp = tokio::time::timeout(EVENTS_TIMEOUT, self.req(reqwest::Method::GET, "/event").send())
            .await
            .map_err(|_| AgentError::Unreachable {
                url: self.endpoint.clone(),
                message: format!("no answer to the event subscription within {} s", EVENTS_TIMEOUT.as_secs()),
            })?
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(AgentError::Status {
                what: "follow events".into(),
                status: resp.status().as_u16(),
                body: String::new(),
            });
        }
        let mut decoder = SseDecoder::default();
        let stream = resp.bytes_stream().take_while(|chunk| std::future::ready(chunk.is_ok())).flat_map(move |chunk| {
            let events: Vec<AgentEvent> = chunk
                .map(|b| decoder.feed(&b))
                .unwrap_or_default()
                .iter()
                .filter_map(|data| serde_json::from_str::<Value>(data).ok())
                .filter_map(|v| parse_event(&v))
                .collect();
            futures_util::stream::iter(events)
        });
        Ok(stream.boxed())
    }
}

/// One opencode bus event → an [`AgentEvent`], when it matters to a task.
pub fn parse_event(v: &Value) -> Option<AgentEvent> {
    let props = v.get("properties")?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match v.get("type")?.as_str()? {
        "session.status" => {
            let session = s(props, "sessionID")?;
            match props.get("status")?.get("type")?.as_str()? {
                "idle" => Some(AgentEvent::Idle { session }),
                _ => Some(AgentEvent::Busy { session }),
            }
        }
        "session.idle" => Some(AgentEvent::Idle { session: s(props, "sessionID")? }),
        "session.error" => {
            let session = s(props, "sessionID")?;
            Some(AgentEvent::Error { session, message: error_message(props.get("error")?) })
        }
        "message.part.updated" => {
            let part = props.get("part")?;
            if part.get("type")?.as_str()? != "tool" {
                return None;
            }
            let state = part.get("state")?;
            let status = s(state, "status")?;
            let title = s(state, "title").or_else(|| {
                let input = state.get("input")?;
                s(input, "description").or_else(|| s(input, "filePath")).or_else(|| s(input, "command"))
            });
            Some(AgentEvent::Tool {
                session: s(part, "sessionID")?,
                key: format!("{}:{status}", s(part, "id")?),
                tool: s(part, "tool")?,
                status,
                title: title.unwrap_or_default(),
            })
        }
        "permission.asked" | "permission.updated" | "question.asked" => Some(AgentEvent::NeedsInput {
            session: s(props, "sessionID")?,
            key: s(props, "id").unwrap_or_default(),
            what: s(props, "title").or_else(|| s(props, "permission")).unwrap_or_else(|| "input".into()),
        }),
        _ => None,
    }
}

/// A readable message of an opencode error object (`{name, data: {message}}`).
fn error_message(e: &Value) -> String {
    let name = e.get("name").and_then(Value::as_str).unwrap_or("error");
    let msg = e.get("data").and_then(|d| d.get("message")).and_then(Value::as_str);
    let status = e.get("data").and_then(|d| d.get("statusCode")).and_then(Value::as_u64);
    match (msg, status) {
        (Some(m), Some(code)) => format!("the LLM provider answered {code}: {m}"),
        (Some(m), None) => format!("{name}: {m}"),
        _ => name.to_owned(),
    }
}

pub fn outcome_of(messages: &Value) -> Outcome {
    let mut o = Outcome::default();
    for m in messages.as_array().into_iter().flatten() {
        let info = m.get("info").unwrap_or(&Value::Null);
        match info.get("role").and_then(Value::as_str) {
            Some("user") => {
                o.delivered = true;
                o.user_turns += 1;
                // A later turn replaces what an earlier one said.
                o.final_text = None;
                o.error = None;
                o.answered = false;
            }
            Some("assistant") => {
                o.error = info.get("error").filter(|e| !e.is_null()).map(error_message);
                o.answered = o.error.is_some() || info.pointer("/time/completed").is_some_and(|t| !t.is_null());
                let text: Vec<&str> = m
                    .get("parts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .filter(|t| !t.trim().is_empty())
                    .collect();
                if !text.is_empty() {
                    o.final_text = Some(text.join("\n"));
                }
            }
            _ => {}
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback server that accepts connections and never answers, as opencode does for a
    /// moment before it serves. Its connections stay open until the test ends.
    async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        (url, task)
    }

    /// Regression (#22): a readiness probe sent while opencode accepted but did not serve
    /// waited out the 30 s call timeout, so one `up` in four took 33 s. A probe gives up
    /// after [`READY_TIMEOUT`]; the event subscription's answer is bounded too.
    #[tokio::test]
    async fn a_probe_of_an_agent_that_accepts_but_never_answers_gives_up_quickly() {
        let (url, server) = silent_server().await;
        let agent = Opencode::new(url, "pw".into());
        let started = std::time::Instant::now();
        let probe = async {
            let ready = tokio::time::timeout(Duration::from_secs(10), agent.ready()).await;
            (ready, started.elapsed())
        };
        let subscribe = async {
            let events = tokio::time::timeout(Duration::from_secs(10), agent.events()).await;
            (events, started.elapsed())
        };
        let ((ready, probe_took), (events, subscribe_took)) = tokio::join!(probe, subscribe);
        assert_eq!(ready.ok(), Some(false), "the probe ended, unanswered");
        assert!(
            probe_took >= READY_TIMEOUT && probe_took < READY_TIMEOUT + Duration::from_secs(1),
            "the probe gave up after {probe_took:?}"
        );
        assert!(matches!(events, Ok(Err(AgentError::Unreachable { .. }))), "the subscription fails");
        assert!(subscribe_took < EVENTS_TIMEOUT + Duration::from_secs(1), "after {subscribe_took:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_probe_of_a_closed_port_fails_at_once() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let agent = Opencode::new(format!("http://127.0.0.1:{port}"), "pw".into());
        let started = std::time::Instant::now();
        assert!(!agent.ready().await);
        assert!(started.elapsed() < Duration::from_millis(500), "refused after {:?}", started.elapsed());
    }

    #[test]
    fn parses_the_events_a_task_needs() {
        let ev = |s: &str| parse_event(&serde_json::from_str(s).unwrap());
        assert_eq!(
            ev(r#"{"type":"session.status","properties":{"sessionID":"s1","status":{"type":"busy"}}}"#),
            Some(AgentEvent::Busy { session: "s1".into() })
        );
        assert_eq!(
            ev(r#"{"type":"session.idle","properties":{"sessionID":"s1"}}"#),
            Some(AgentEvent::Idle { session: "s1".into() })
        );
        assert_eq!(
            ev(
                r#"{"type":"session.error","properties":{"sessionID":"s1","error":{"name":"APIError","data":{"message":"model not allowed","statusCode":400}}}}"#
            ),
            Some(AgentEvent::Error {
                session: "s1".into(),
                message: "the LLM provider answered 400: model not allowed".into()
            })
        );
        assert_eq!(
            ev(
                r#"{"type":"message.part.updated","properties":{"part":{"id":"p1","sessionID":"s1","type":"tool","tool":"write","state":{"status":"completed","title":"hello.txt"}}}}"#
            ),
            Some(AgentEvent::Tool {
                session: "s1".into(),
                key: "p1:completed".into(),
                tool: "write".into(),
                status: "completed".into(),
                title: "hello.txt".into()
            })
        );
        assert_eq!(
            ev(
                r#"{"type":"message.part.updated","properties":{"part":{"id":"p2","sessionID":"s1","type":"tool","tool":"bash","state":{"status":"running","input":{"command":"make","description":"build it"}}}}}"#
            ),
            Some(AgentEvent::Tool {
                session: "s1".into(),
                key: "p2:running".into(),
                tool: "bash".into(),
                status: "running".into(),
                title: "build it".into()
            })
        );
        assert_eq!(
            ev(r#"{"type":"message.part.updated","properties":{"part":{"id":"p3","sessionID":"s1","type":"text"}}}"#),
            None
        );
        assert_eq!(ev(r#"{"type":"server.connected","properties":{}}"#), None);
    }

    #[test]
    fn outcome_reads_the_last_turn() {
        let msgs: Value = serde_json::from_str(
            r#"[{"info":{"role":"user"},"parts":[{"type":"text","text":"do"}]},
                {"info":{"role":"assistant"},"parts":[{"type":"tool"},{"type":"text","text":"Done: wrote a.txt"}]},
                {"info":{"role":"user"},"parts":[{"type":"text","text":"again"}]},
                {"info":{"role":"assistant","error":{"name":"APIError","data":{"message":"quota","statusCode":429}}},"parts":[]}]"#,
        )
        .unwrap();
        let o = outcome_of(&msgs);
        assert!(o.delivered);
        assert_eq!(o.user_turns, 2);
        assert_eq!(o.final_text, None);
        assert_eq!(o.error.as_deref(), Some("the LLM provider answered 429: quota"));
        assert!(o.answered);
        assert_eq!(outcome_of(&Value::Array(vec![])), Outcome::default());
    }
}
