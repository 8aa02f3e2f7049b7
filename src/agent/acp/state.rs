//! What the ACP bridge knows of its sessions, and how ACP's session updates become the
//! events and views of devaipod's agent API. Pure: the bridge feeds it what the agent says
//! and serves what it answers.
//!
//! The views are shaped as the subset of opencode's HTTP API that `agent::opencode` reads
//! (`/session/status`, `/session/{id}/message`, `/event`), so the daemon has one client for
//! both backends.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

/// One prompt and what the agent answered to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    pub prompt: String,
    /// The agent's text since its last tool call (what it said last).
    pub text: String,
    /// A tool call came after the text: the next text starts afresh.
    text_closed: bool,
    /// The agent said or did something in this turn.
    replied: bool,
    pub error: Option<String>,
    pub done: bool,
}

/// A tool call's last known state.
#[derive(Debug, Clone, PartialEq)]
struct ToolCall {
    tool: String,
    status: String,
    title: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Session {
    pub title: String,
    pub turns: Vec<Turn>,
    pub busy: bool,
    /// Replaying history (`session/load`): updates rebuild turns and send no events.
    pub loading: bool,
    tools: BTreeMap<String, ToolCall>,
    plans: u32,
}

/// Every session of the bridge's agent, in the order they were made.
#[derive(Debug, Default)]
pub struct Sessions {
    order: Vec<String>,
    map: BTreeMap<String, Session>,
}

/// An event of devaipod's agent API (opencode's bus shape), as JSON.
pub type Event = Value;

impl Sessions {
    pub fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<&Session> {
        self.map.get(id)
    }

    /// Adds a session the agent made (or is loading: `loading`).
    pub fn add(&mut self, id: &str, title: &str, loading: bool) {
        if !self.map.contains_key(id) {
            self.order.push(id.to_owned());
        }
        self.map.insert(id.to_owned(), Session { title: title.to_owned(), loading, ..Session::default() });
    }

    /// Forgets a session (a load that failed).
    pub fn remove(&mut self, id: &str) {
        self.map.remove(id);
        self.order.retain(|s| s != id);
    }

    /// A load finished: the replayed turns are history.
    pub fn loaded(&mut self, id: &str) {
        if let Some(s) = self.map.get_mut(id) {
            s.loading = false;
            for t in &mut s.turns {
                t.done = true;
            }
        }
    }

    /// A prompt was accepted: a new turn, busy. `None` when the session is unknown or busy.
    pub fn start_turn(&mut self, id: &str, prompt: &str) -> Result<Vec<Event>, TurnRefused> {
        let s = self.map.get_mut(id).ok_or(TurnRefused::Unknown)?;
        if s.busy {
            return Err(TurnRefused::Busy);
        }
        s.busy = true;
        s.turns.push(Turn { prompt: prompt.to_owned(), ..Turn::default() });
        Ok(vec![status(id, "busy")])
    }

    /// The prompt's answer: its `stopReason`, or why it failed.
    pub fn end_turn(&mut self, id: &str, result: Result<&Value, String>) -> Vec<Event> {
        let Some(s) = self.map.get_mut(id) else { return Vec::new() };
        let error = match result {
            Ok(v) => match v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn") {
                "cancelled" => Some("MessageAbortedError: the turn was cancelled".to_owned()),
                "refusal" => Some("the agent refused to go on with this prompt".to_owned()),
                _ => None,
            },
            Err(e) => Some(e),
        };
        s.busy = false;
        let mut events = Vec::new();
        if let Some(t) = s.turns.last_mut() {
            t.done = true;
            t.error = error.clone();
        }
        if let Some(e) = error {
            events.push(json!({ "type": "session.error", "properties": {
                "sessionID": id, "error": { "name": "AcpError", "data": { "message": e } } } }));
        }
        events.push(status(id, "idle"));
        events
    }

    /// One `session/update` notification's params → the events it makes.
    pub fn update(&mut self, params: &Value) -> Vec<Event> {
        let (Some(id), Some(update)) = (params.get("sessionId").and_then(Value::as_str), params.get("update")) else {
            return Vec::new();
        };
        let Some(s) = self.map.get_mut(id) else { return Vec::new() };
        let text = || update.pointer("/content/text").and_then(Value::as_str).unwrap_or_default();
        let mut events = Vec::new();
        match update.get("sessionUpdate").and_then(Value::as_str).unwrap_or_default() {
            "user_message_chunk" if s.loading => {
                // A replayed prompt: a new turn unless the last one is still this prompt.
                match s.turns.last_mut() {
                    Some(t) if !t.replied => t.prompt.push_str(text()),
                    _ => s.turns.push(Turn { prompt: text().to_owned(), ..Turn::default() }),
                }
            }
            "agent_message_chunk" => {
                if let Some(t) = s.turns.last_mut() {
                    t.replied = true;
                    if t.text_closed {
                        t.text.clear();
                        t.text_closed = false;
                    }
                    t.text.push_str(text());
                }
            }
            kind @ ("tool_call" | "tool_call_update") => {
                let Some(call) = update.get("toolCallId").and_then(Value::as_str) else { return events };
                if let Some(t) = s.turns.last_mut() {
                    t.replied = true;
                    t.text_closed = !t.text.is_empty();
                }
                let title = update.get("title").and_then(Value::as_str).map(str::to_owned);
                let status = update.get("status").and_then(Value::as_str).map(tool_status);
                let known = s.tools.get(call).cloned();
                let next = match (kind, known) {
                    (_, Some(k)) => ToolCall {
                        status: status.unwrap_or(k.status.clone()),
                        title: title.unwrap_or(k.title.clone()),
                        tool: k.tool,
                    },
                    (_, None) => {
                        let title = title.unwrap_or_default();
                        let kind = update.get("kind").and_then(Value::as_str).unwrap_or("other");
                        ToolCall { tool: tool_name(&title, kind), status: status.unwrap_or("pending".into()), title }
                    }
                };
                let changed = s.tools.get(call).is_none_or(|k| k.status != next.status);
                if changed && !s.loading {
                    events.push(tool_event(id, call, &next.tool, &next.status, &next.title));
                }
                s.tools.insert(call.to_owned(), next);
            }
            "plan" if !s.loading => {
                let entries = update.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
                let done =
                    entries.iter().filter(|e| e.get("status").and_then(Value::as_str) == Some("completed")).count();
                s.plans += 1;
                let title = format!("{done} of {} steps done", entries.len());
                events.push(tool_event(id, &format!("plan-{}", s.plans), "plan", "completed", &title));
            }
            _ => {}
        }
        events
    }

    /// `GET /session/status`: the busy sessions.
    pub fn status_view(&self) -> Value {
        let busy: serde_json::Map<String, Value> =
            self.map.iter().filter(|(_, s)| s.busy).map(|(id, _)| (id.clone(), json!({ "type": "busy" }))).collect();
        Value::Object(busy)
    }

    /// `GET /session`: every session, oldest first.
    pub fn list_view(&self) -> Value {
        Value::Array(
            self.order
                .iter()
                .filter_map(|id| self.map.get(id).map(|s| json!({ "id": id, "title": s.title })))
                .collect(),
        )
    }

    /// `GET /session/{id}/message`: one user and one assistant message per turn.
    pub fn messages_view(&self, id: &str) -> Option<Value> {
        let s = self.map.get(id)?;
        let mut out = Vec::new();
        for t in &s.turns {
            out.push(json!({ "info": { "role": "user" }, "parts": [{ "type": "text", "text": t.prompt }] }));
            let mut info =
                json!({ "role": "assistant", "time": { "completed": if t.done { json!(1) } else { Value::Null } } });
            if let Some(e) = &t.error {
                info["error"] = json!({ "name": "AcpError", "data": { "message": e } });
            }
            out.push(json!({ "info": info, "parts": [{ "type": "text", "text": t.text }] }));
        }
        Some(Value::Array(out))
    }
}

/// Why a prompt was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnRefused {
    Unknown,
    Busy,
}

fn status(id: &str, kind: &str) -> Event {
    json!({ "type": "session.status", "properties": { "sessionID": id, "status": { "type": kind } } })
}

pub(super) fn tool_event(session: &str, call: &str, tool: &str, status: &str, title: &str) -> Event {
    json!({ "type": "message.part.updated", "properties": { "part": {
        "id": call, "sessionID": session, "type": "tool", "tool": tool,
        "state": { "status": status, "title": title } } } })
}

/// ACP's tool call status in devaipod's words (opencode's).
fn tool_status(acp: &str) -> String {
    match acp {
        "in_progress" => "running",
        "failed" => "error",
        other => other,
    }
    .to_owned()
}

/// A tool call's name: its first title when that is one word (opencode names its tools so),
/// else ACP's kind of tool (`edit`, `execute`, `read`, …).
fn tool_name(title: &str, kind: &str) -> String {
    let word = !title.is_empty() && title.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if word { title.to_owned() } else { kind.to_owned() }
}

/// How a `session/request_permission` is answered: the sandbox is the boundary, so what
/// stays inside the workspace (and the agent's scratch places) is allowed; a tool call that
/// names a path outside is refused. Returns the chosen option's id, and whether it allows;
/// `None` when the agent offered no option of the kind chosen (the request is cancelled).
pub fn permission(params: &Value, workspace: &Path) -> (Option<String>, bool) {
    let call = params.get("toolCall").unwrap_or(&Value::Null);
    let mut paths: Vec<String> = call
        .get("locations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("path").and_then(Value::as_str).map(str::to_owned))
        .collect();
    for key in ["filePath", "filepath", "path"] {
        if let Some(p) = call.pointer(&format!("/rawInput/{key}")).and_then(Value::as_str) {
            paths.push(p.to_owned());
        }
    }
    let allow = paths.iter().all(|p| inside(Path::new(p), workspace));
    let kinds: &[&str] = if allow { &["allow_once", "allow_always"] } else { &["reject_once", "reject_always"] };
    let options = params.get("options").and_then(Value::as_array).cloned().unwrap_or_default();
    let chosen = kinds.iter().find_map(|k| {
        options
            .iter()
            .find(|o| o.get("kind").and_then(Value::as_str) == Some(k))
            .and_then(|o| o.get("optionId").and_then(Value::as_str).map(str::to_owned))
    });
    (chosen, allow)
}

/// Whether `path` (absolute, or relative to the workspace) stays in the workspace or the
/// container's scratch directory, without `..` steps.
fn inside(path: &Path, workspace: &Path) -> bool {
    use std::path::Component;
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return false;
    }
    !path.is_absolute() || path.starts_with(workspace) || path.starts_with("/tmp")
}

#[cfg(test)]
mod tests;
