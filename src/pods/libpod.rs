//! A small typed client for podman's libpod REST API over its unix socket (pods are not in
//! the Docker-compatible API). Every call has a timeout; 404 and 409 become typed errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, BodyStream, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt, UnixConnector};

use super::engine::EngineError;

const API: &str = "/v4.0.0/libpod";
/// Default deadline of one API call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Libpod {
    client: Client<UnixConnector, Full<Bytes>>,
    socket: PathBuf,
}

pub enum Body {
    Empty,
    Json(serde_json::Value),
    Tar(Vec<u8>),
    Raw(Vec<u8>),
}

impl Libpod {
    pub fn new(socket: &Path) -> Self {
        Libpod { client: Client::unix(), socket: socket.to_owned() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<hyper::Response<hyper::body::Incoming>, EngineError> {
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, &format!("{API}{path}")).into();
        let builder = Request::builder().method(method).uri(uri);
        let req = match body {
            Body::Empty => builder.body(Full::new(Bytes::new())),
            Body::Json(v) => builder
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))),
            Body::Tar(t) => builder.header("content-type", "application/x-tar").body(Full::new(Bytes::from(t))),
            Body::Raw(b) => builder.header("content-type", "application/octet-stream").body(Full::new(Bytes::from(b))),
        }
        .map_err(|e| EngineError::Api { op: path.to_owned(), status: 0, message: e.to_string() })?;
        self.client
            .request(req)
            .await
            .map_err(|e| EngineError::Unavailable { socket: self.socket.clone(), reason: error_chain(&e) })
    }

    /// One call: status checked, body returned. `op` names it in errors ("create pod x").
    pub async fn call(&self, op: &str, method: Method, path: &str, body: Body) -> Result<Bytes, EngineError> {
        self.call_with_timeout(op, method, path, body, CALL_TIMEOUT).await
    }

    pub async fn call_with_timeout(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<Bytes, EngineError> {
        let fut = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| EngineError::Api { op: op.to_owned(), status: status.as_u16(), message: e.to_string() })?
                .to_bytes();
            check(op, status, bytes)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| EngineError::Timeout { op: op.to_owned(), secs: timeout.as_secs() })?
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, op: &str, path: &str) -> Result<T, EngineError> {
        let bytes = self.call(op, Method::GET, path, Body::Empty).await?;
        serde_json::from_slice(&bytes).map_err(|e| EngineError::Api {
            op: op.to_owned(),
            status: 200,
            message: format!("unexpected answer: {e}"),
        })
    }

    /// A streaming call (build, pull): the status is checked, then the body's chunks are
    /// yielded as they come. `idle` bounds the wait for each chunk.
    pub async fn stream(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Body,
        idle: Duration,
    ) -> Result<impl Stream<Item = Result<Bytes, EngineError>> + Send + use<>, EngineError> {
        let resp = tokio::time::timeout(CALL_TIMEOUT, self.send(method, path, body))
            .await
            .map_err(|_| EngineError::Timeout { op: op.to_owned(), secs: CALL_TIMEOUT.as_secs() })??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Err(check(op, status, bytes).err().unwrap_or_else(|| EngineError::Api {
                op: op.to_owned(),
                status: status.as_u16(),
                message: "failed".into(),
            }));
        }
        let op = op.to_owned();
        let frames = BodyStream::new(resp.into_body());
        Ok(futures_util::stream::unfold(Some(frames), move |state| {
            let op = op.clone();
            async move {
                let mut frames = state?;
                loop {
                    return match tokio::time::timeout(idle, frames.next()).await {
                        Err(_) => Some((Err(EngineError::Timeout { op, secs: idle.as_secs() }), None)),
                        Ok(None) => None,
                        Ok(Some(Err(e))) => {
                            Some((Err(EngineError::Api { op, status: 200, message: e.to_string() }), None))
                        }
                        Ok(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => Some((Ok(data), Some(frames))),
                            Err(_) => continue, // trailers
                        },
                    };
                }
            }
        }))
    }
}

fn check(op: &str, status: StatusCode, bytes: Bytes) -> Result<Bytes, EngineError> {
    if status.is_success() {
        return Ok(bytes);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
    Err(match status {
        StatusCode::NOT_FOUND => EngineError::NotFound { what: format!("{op}: {message}") },
        StatusCode::CONFLICT => EngineError::Conflict { what: format!("{op}: {message}") },
        _ => EngineError::Api { op: op.to_owned(), status: status.as_u16(), message },
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

pub use crate::encode::enc;

/// `filters={"label":["k=v",…]}`, encoded.
pub fn label_filter(labels: &[(&str, &str)]) -> String {
    let list: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    enc(&serde_json::json!({ "label": list }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_components() {
        assert_eq!(label_filter(&[("io.x", "1")]), "%7B%22label%22%3A%5B%22io.x%3D1%22%5D%7D");
    }
}
