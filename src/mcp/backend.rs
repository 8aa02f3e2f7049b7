//! Where MCP tool calls go: the daemon's own JSON API, in process (`/mcp` inside the
//! daemon) or over the daemon's unix socket (`devaipod mcp` on stdio). Either way the tools
//! are thin adapters over the same API and core: one core, many faces.

use std::sync::Arc;

use axum::body::Body;
use futures_util::StreamExt;
use http_body_util::BodyStream;
use hyper::{Method, Request};
use serde_json::Value;
use tower::ServiceExt;

use crate::cli::client::Client;

#[derive(Clone)]
pub enum Backend {
    /// The daemon's unauthenticated (unix-socket) router, called in process.
    Local(axum::Router),
    /// A daemon reached over its unix socket.
    Remote(Arc<Client>),
}

impl Backend {
    /// One call; a non-2xx answer is `Err(message for the user)`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        match self {
            Backend::Remote(c) => c.call(method, path, body.as_ref()).await.map_err(|e| format!("{e:#}")),
            Backend::Local(router) => {
                let text = self.local_text(router, method, path, body).await?;
                serde_json::from_str(&text).map_err(|e| format!("the daemon's answer to {path} is not JSON: {e}"))
            }
        }
    }

    pub async fn text(&self, method: Method, path: &str) -> Result<String, String> {
        match self {
            Backend::Remote(c) => c.text(method, path, None).await.map_err(|e| format!("{e:#}")),
            Backend::Local(router) => self.local_text(router, method, path, None).await,
        }
    }

    async fn local_text(
        &self,
        router: &axum::Router,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String, String> {
        let resp = router.clone().oneshot(request(method, path, body)?).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if status.is_success() { Ok(text) } else { Err(error_message(&text)) }
    }

    /// A streamed answer (NDJSON), line by line; `on` returns false to stop.
    pub async fn lines(&self, path: &str, body: Value, mut on: impl FnMut(Value) -> bool + Send) -> Result<(), String> {
        match self {
            Backend::Remote(c) => c.lines(Method::POST, path, Some(&body), on).await.map_err(|e| format!("{e:#}")),
            Backend::Local(router) => {
                let resp = router
                    .clone()
                    .oneshot(request(Method::POST, path, Some(body))?)
                    .await
                    .map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap_or_default();
                    return Err(error_message(&String::from_utf8_lossy(&bytes)));
                }
                let mut stream = BodyStream::new(resp.into_body());
                let mut buf = String::new();
                while let Some(frame) = stream.next().await {
                    let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else { continue };
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(pos) = buf.find('\n') {
                        let line: String = buf.drain(..=pos).collect();
                        if let Ok(v) = serde_json::from_str::<Value>(line.trim())
                            && !on(v)
                        {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

fn request(method: Method, path: &str, body: Option<Value>) -> Result<Request<Body>, String> {
    let b = Request::builder().method(method).uri(path).header("content-type", "application/json");
    let body = match body {
        Some(v) => Body::from(serde_json::to_vec(&v).map_err(|e| e.to_string())?),
        None => Body::empty(),
    };
    b.body(body).map_err(|e| e.to_string())
}

fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned())
}
