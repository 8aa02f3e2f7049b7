//! A small typed client for podman's libpod REST API over its unix socket (pods are not in
//! the Docker-compatible API). Every call has a timeout; 404 and 409 become typed errors,
//! and every error carries podman's own reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, BodyStream, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt, UnixConnector};

use super::engine::EngineError;
use super::wire::ErrorBody;

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
        .map_err(|e| EngineError::Api {
            engine: crate::pods::engine::PODMAN,
            op: path.to_owned(),
            status: 0,
            message: e.to_string(),
        })?;
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
                .map_err(|e| EngineError::Api {
                    engine: crate::pods::engine::PODMAN,
                    op: op.to_owned(),
                    status: status.as_u16(),
                    message: e.to_string(),
                })?
                .to_bytes();
            check(op, status, bytes)
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| EngineError::Timeout {
            engine: crate::pods::engine::PODMAN,
            op: op.to_owned(),
            secs: timeout.as_secs(),
        })?
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, op: &str, path: &str) -> Result<T, EngineError> {
        let bytes = self.call(op, Method::GET, path, Body::Empty).await?;
        serde_json::from_slice(&bytes).map_err(|e| EngineError::Api {
            engine: crate::pods::engine::PODMAN,
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
        let resp = tokio::time::timeout(CALL_TIMEOUT, self.send(method, path, body)).await.map_err(|_| {
            EngineError::Timeout {
                engine: crate::pods::engine::PODMAN,
                op: op.to_owned(),
                secs: CALL_TIMEOUT.as_secs(),
            }
        })??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Err(status_error(op, status, &bytes));
        }
        let op = op.to_owned();
        let frames = BodyStream::new(resp.into_body());
        Ok(futures_util::stream::unfold(Some(frames), move |state| {
            let op = op.clone();
            async move {
                let mut frames = state?;
                loop {
                    return match tokio::time::timeout(idle, frames.next()).await {
                        Err(_) => Some((
                            Err(EngineError::Timeout { engine: crate::pods::engine::PODMAN, op, secs: idle.as_secs() }),
                            None,
                        )),
                        Ok(None) => None,
                        Ok(Some(Err(e))) => Some((
                            Err(EngineError::Api {
                                engine: crate::pods::engine::PODMAN,
                                op,
                                status: 200,
                                message: e.to_string(),
                            }),
                            None,
                        )),
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
    Err(status_error(op, status, &bytes))
}

/// The error of a call that podman answered with `status`, carrying podman's own reason
/// (or the status itself when the body gives none: a 304 has no body).
pub fn status_error(op: &str, status: StatusCode, body: &[u8]) -> EngineError {
    let message = ErrorBody::reason(body).unwrap_or_else(|| status.to_string());
    let op = op.to_owned();
    if (status.is_server_error() || status.is_client_error()) && ErrorBody::says_exists(body) {
        return EngineError::AlreadyExists { engine: crate::pods::engine::PODMAN, op, message };
    }
    match status {
        StatusCode::NOT_FOUND => EngineError::NotFound { engine: crate::pods::engine::PODMAN, op, message },
        StatusCode::CONFLICT => EngineError::Conflict { engine: crate::pods::engine::PODMAN, op, message },
        _ => EngineError::Api { engine: crate::pods::engine::PODMAN, op, status: status.as_u16(), message },
    }
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

    #[test]
    fn errors_carry_podmans_reason_and_are_typed_by_status() {
        let body = br#"{"cause":"no such pod","message":"no pod with name or ID p found: no such pod","response":404}"#;
        let e = status_error("stop pod p", StatusCode::NOT_FOUND, body);
        assert!(matches!(&e, EngineError::NotFound { op, .. } if op == "stop pod p"), "{e:?}");
        assert_eq!(e.to_string(), "podman could not stop pod p: no pod with name or ID p found: no such pod");

        let body = br#"{"cause":"container state improper","message":"container c is running","response":409}"#;
        let e = status_error("remove container c", StatusCode::CONFLICT, body);
        assert!(matches!(e, EngineError::Conflict { .. }), "{e:?}");
        assert_eq!(e.to_string(), "podman could not remove container c: container c is running", "no `already exists`");

        let body = br#"{"cause":"secret name in use","message":"s: secret name in use","response":500}"#;
        let e = status_error("create secret s", StatusCode::INTERNAL_SERVER_ERROR, body);
        assert!(matches!(e, EngineError::AlreadyExists { .. }), "{e:?}");
        assert_eq!(e.to_string(), "podman could not create secret s: s: secret name in use");
    }

    /// "Already exists" only when podman says so; every other conflict keeps its own kind
    /// and podman's words (answers of podman 4.3.1).
    #[test]
    fn a_conflict_means_already_exists_only_when_podman_says_so() {
        let rows: [(&str, u16, &str, bool); 7] = [
            (
                "create pod p",
                409,
                r#"{"cause":"pod already exists","message":"adding pod to state: name \"p\" is in use: pod already exists","response":409}"#,
                true,
            ),
            (
                "create volume v",
                409,
                r#"{"cause":"volume already exists","message":"volume with name v already exists: volume already exists","response":409}"#,
                true,
            ),
            (
                "create container c",
                500,
                r#"{"cause":"that name is already in use","message":"creating container storage: the container name \"c\" is already in use by abc. You have to remove that container to be able to reuse that name: that name is already in use","response":500}"#,
                true,
            ),
            (
                "create secret s",
                500,
                r#"{"cause":"secret name in use","message":"s: secret name in use","response":500}"#,
                true,
            ),
            (
                "remove volume v",
                409,
                r#"{"cause":"volume is being used","message":"volume v is being used by the following container(s): abc: volume is being used","response":409}"#,
                false,
            ),
            (
                "start pod p",
                409,
                r#"{"cause":"no such file or directory","message":"starting container abc: runc: exec: \"/nope\": stat /nope: no such file or directory","response":409}"#,
                false,
            ),
            (
                "remove container c",
                409,
                r#"{"cause":"container state improper","message":"container c is running","response":409}"#,
                false,
            ),
        ];
        for (op, status, body, exists) in rows {
            let e = status_error(op, StatusCode::from_u16(status).unwrap(), body.as_bytes());
            let said: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(e.to_string(), format!("podman could not {op}: {}", said["message"].as_str().unwrap()), "{op}");
            match (exists, status) {
                (true, _) => assert!(matches!(e, EngineError::AlreadyExists { .. }), "{op}: {e:?}"),
                (false, 409) => assert!(matches!(e, EngineError::Conflict { .. }), "{op}: {e:?}"),
                (false, _) => assert!(matches!(e, EngineError::Api { .. }), "{op}: {e:?}"),
            }
        }
    }

    #[test]
    fn an_answer_without_a_body_names_its_status() {
        let e = status_error("start pod p", StatusCode::NOT_MODIFIED, b"");
        assert!(matches!(e, EngineError::Api { status: 304, .. }), "{e:?}");
        assert_eq!(e.to_string(), "podman could not start pod p: 304 Not Modified");
    }
}
