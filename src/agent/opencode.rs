//! opencode's HTTP API (as verified with opencode 1.18): sessions, `prompt_async`, the `/event`
//! SSE stream, `/session/status`, messages and abort. HTTP Basic auth, user `opencode`, with
//! the per-pod password. Every call has a timeout; the event stream has none (it is long-lived).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};

use super::sse::SseDecoder;
use super::{Agent, AgentError, AgentEvent, Outcome};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Opencode {
    base: String,
    password: String,
    http: reqwest::Client,
}

impl Opencode {
    /// A client for the opencode server at `base` (e.g. `http://127.0.0.1:41234`).
    pub fn new(base: String, password: String) -> Self {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Opencode { base, password, http }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).basic_auth("opencode", Some(&self.password))
    }

    async fn json(&self, what: &str, rb: reqwest::RequestBuilder) -> Result<Value, AgentError> {
        let resp = rb.timeout(CALL_TIMEOUT).send().await.map_err(|e| self.unreachable(e))?;
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
        AgentError::Unreachable { url: self.base.clone(), message: e.without_url().to_string() }
    }
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() > 300 { format!("{}…", &s[..s.floor_char_boundary(300)]) } else { s.to_owned() }
}

impl Agent for Opencode {
    async fn ready(&self) -> bool {
        self.json("list sessions", self.req(reqwest::Method::GET, "/session")).await.is_ok_and(|v| v.is_array())
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

    async fn prompt(&self, session: &str, text: &str) -> Result<(), AgentError> {
        let body = json!({ "parts": [{ "type": "text", "text": text }] });
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
        let v =
            self.json("read messages", self.req(reqwest::Method::GET, &format!("/session/{session}/message"))).await?;
        Ok(outcome_of(&v))
    }

    async fn abort(&self, session: &str) -> Result<(), AgentError> {
        self.json("abort the session", self.req(reqwest::Method::POST, &format!("/session/{session}/abort"))).await?;
        Ok(())
    }

    async fn events(&self) -> Result<BoxStream<'static, AgentEvent>, AgentError> {
        let resp = self.req(reqwest::Method::GET, "/event").send().await.map_err(|e| self.unreachable(e))?;
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
