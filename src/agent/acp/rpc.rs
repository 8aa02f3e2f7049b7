//! JSON-RPC 2.0 as ACP frames it on stdio: one JSON object per line. Pure: lines in,
//! messages out, and the lines to write.

use serde_json::{Value, json};

/// One message from the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to one of our requests.
    Response { id: u64, result: Result<Value, RpcError> },
    /// A request the agent asks us to answer (`session/request_permission`, `fs/*`, …).
    Request { id: Value, method: String, params: Value },
    /// A notification (`session/update`).
    Notification { method: String, params: Value },
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (JSON-RPC error {code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

/// The code of a method we do not serve.
pub const METHOD_NOT_FOUND: i64 = -32601;

/// Why a line is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON-RPC message: {0}")]
    NotRpc(String),
}

/// Parses one line the agent wrote. Blank lines are `Ok(None)`.
pub fn parse(line: &str) -> Result<Option<Incoming>, FrameError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(line).map_err(|e| FrameError::NotJson(e.to_string()))?;
    let short = || line.chars().take(120).collect::<String>();
    let method = v.get("method").and_then(Value::as_str).map(str::to_owned);
    let params = v.get("params").cloned().unwrap_or(Value::Null);
    match (v.get("id").filter(|i| !i.is_null()).cloned(), method) {
        (Some(id), Some(method)) => Ok(Some(Incoming::Request { id, method, params })),
        (None, Some(method)) => Ok(Some(Incoming::Notification { method, params })),
        (Some(id), None) => {
            // Our ids are numbers; an answer to anything else is not ours.
            let id = id.as_u64().ok_or_else(|| FrameError::NotRpc(short()))?;
            let result = match v.get("error").filter(|e| !e.is_null()) {
                Some(e) => Err(RpcError {
                    code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: e.get("message").and_then(Value::as_str).unwrap_or("error").to_owned(),
                }),
                None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
            };
            Ok(Some(Incoming::Response { id, result }))
        }
        (None, None) => Err(FrameError::NotRpc(short())),
    }
}

/// The line of a request.
pub fn request(id: u64, method: &str, params: &Value) -> String {
    line(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
}

/// The line of a notification.
pub fn notification(method: &str, params: &Value) -> String {
    line(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
}

/// The line of our answer to the agent's request `id`.
pub fn response(id: &Value, result: Result<Value, RpcError>) -> String {
    match result {
        Ok(result) => line(&json!({ "jsonrpc": "2.0", "id": id, "result": result })),
        Err(e) => line(&json!({ "jsonrpc": "2.0", "id": id, "error": { "code": e.code, "message": e.message } })),
    }
}

fn line(v: &Value) -> String {
    // serde_json never writes a raw newline inside a value: one object, one line.
    let mut s = v.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_lines_are_named() {
        let r =
            request(3, "session/prompt", &json!({ "sessionId": "s", "prompt": [{ "type": "text", "text": "a\nb" }] }));
        assert!(r.ends_with('\n') && r.matches('\n').count() == 1, "{r:?}");
        assert_eq!(
            parse(&r).unwrap(),
            Some(Incoming::Request {
                id: json!(3),
                method: "session/prompt".into(),
                params: json!({ "sessionId": "s", "prompt": [{ "type": "text", "text": "a\nb" }] })
            })
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"result":{"sessionId":"s1"}}"#).unwrap(),
            Some(Incoming::Response { id: 1, result: Ok(json!({ "sessionId": "s1" })) })
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32603,"message":"boom"}}"#).unwrap(),
            Some(Incoming::Response { id: 2, result: Err(RpcError { code: -32603, message: "boom".into() }) })
        );
        assert_eq!(
            parse(&notification("session/cancel", &json!({ "sessionId": "s" }))).unwrap(),
            Some(Incoming::Notification { method: "session/cancel".into(), params: json!({ "sessionId": "s" }) })
        );
        assert_eq!(parse("  \n").unwrap(), None);
        assert!(matches!(parse("[1,2"), Err(FrameError::NotJson(_))));
        assert!(matches!(parse(r#"{"jsonrpc":"2.0"}"#), Err(FrameError::NotRpc(_))));
        assert!(matches!(parse(r#"{"id":"x","result":1}"#), Err(FrameError::NotRpc(_))));
        let answer = response(&json!("p-1"), Err(RpcError { code: METHOD_NOT_FOUND, message: "no".into() }));
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap(),
            json!({ "jsonrpc": "2.0", "id": "p-1", "error": { "code": -32601, "message": "no" } })
        );
    }
}
