//! How the client reaches the daemon's JSON API: over the daemon's unix socket (the CLI,
//! `devaipod mcp` on stdio), or in process through the daemon's own router (`/mcp` inside
//! the daemon). Either way the same requests reach the same handlers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::Full;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client as HyperClient;
use hyperlocal::{UnixClientExt, UnixConnector};
use tower::ServiceExt;

use super::ClientError;

/// Time to an answer's headers (bodies, like event streams, may last).
pub const HEADERS_TIMEOUT: Duration = Duration::from_secs(60);

pub trait Transport: Send + Sync {
    /// Sends one request (a JSON body when given) and returns the answer once its headers
    /// arrived.
    fn send<'a>(
        &'a self,
        method: Method,
        path: &'a str,
        body: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Response<Body>, ClientError>>;
}

/// The daemon's unix socket.
pub struct UnixSocket {
    http: HyperClient<UnixConnector, Full<Bytes>>,
    socket: PathBuf,
}

impl UnixSocket {
    pub fn new(socket: &Path) -> UnixSocket {
        UnixSocket { http: HyperClient::unix(), socket: socket.to_owned() }
    }

    pub fn path(&self) -> &Path {
        &self.socket
    }
}

impl Transport for UnixSocket {
    fn send<'a>(
        &'a self,
        method: Method,
        path: &'a str,
        body: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Response<Body>, ClientError>> {
        Box::pin(async move {
            let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, path).into();
            let req = request(method, uri, body.map(Bytes::from).map(Full::new).unwrap_or_default())?;
            let unreachable =
                |reason: String| ClientError::Unreachable { at: self.socket.display().to_string(), reason };
            match tokio::time::timeout(HEADERS_TIMEOUT, self.http.request(req)).await {
                Ok(Ok(resp)) => Ok(resp.map(Body::new)),
                Ok(Err(e)) => Err(unreachable(e.to_string())),
                Err(_) => Err(ClientError::Timeout { path: path.to_owned(), secs: HEADERS_TIMEOUT.as_secs() }),
            }
        })
    }
}

/// The daemon's own (unix-socket, unauthenticated) router, called in process.
impl Transport for axum::Router {
    fn send<'a>(
        &'a self,
        method: Method,
        path: &'a str,
        body: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Response<Body>, ClientError>> {
        Box::pin(async move {
            let uri: hyper::Uri = path.parse().map_err(|e| ClientError::Protocol {
                path: path.to_owned(),
                reason: format!("not a request path: {e}"),
            })?;
            let req = request(method, uri, body.map(Body::from).unwrap_or_else(Body::empty))?;
            match self.clone().oneshot(req).await {
                Ok(resp) => Ok(resp),
                Err(never) => match never {},
            }
        })
    }
}

fn request<B>(method: Method, uri: hyper::Uri, body: B) -> Result<Request<B>, ClientError> {
    let path = uri.to_string();
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| ClientError::Protocol { path, reason: e.to_string() })
}
