//! How the client reaches the daemon's JSON API: over the daemon's unix socket (the CLI,
//! `devaipod mcp` on stdio), over its TCP API with the bearer token (`[client] url`,
//! `DEVAIPOD_URL`: a daemon in a container or elsewhere), or in process through the
//! daemon's own router (`/mcp` inside the daemon). Either way the same requests reach the
//! same handlers.

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

/// The daemon's TCP API (`http://host:port`, or `https://`), every request with its bearer
/// token. The token is never put in a URL or an error.
pub struct Tcp {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Time to connect to a daemon's TCP API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Tcp {
    /// `base` as [`crate::config::daemon_url`] returns it.
    pub fn new(base: &str, token: &str) -> Result<Tcp, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Unreachable { at: base.to_owned(), reason: e.to_string() })?;
        Ok(Tcp { http, base: base.to_owned(), token: token.to_owned() })
    }

    pub fn url(&self) -> &str {
        &self.base
    }
}

impl Transport for Tcp {
    fn send<'a>(
        &'a self,
        method: Method,
        path: &'a str,
        body: Option<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Response<Body>, ClientError>> {
        Box::pin(async move {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header("content-type", "application/json");
            if let Some(b) = body {
                req = req.body(b);
            }
            let resp = match tokio::time::timeout(HEADERS_TIMEOUT, req.send()).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    // reqwest's own text names the URL, never the token.
                    let reason = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                    return Err(ClientError::Unreachable { at: self.base.clone(), reason });
                }
                Err(_) => {
                    return Err(ClientError::Timeout { path: path.to_owned(), secs: HEADERS_TIMEOUT.as_secs() });
                }
            };
            let mut out = Response::builder().status(resp.status().as_u16());
            for (k, v) in resp.headers() {
                out = out.header(k.as_str(), v.as_bytes());
            }
            out.body(Body::from_stream(resp.bytes_stream()))
                .map_err(|e| ClientError::Protocol { path: path.to_owned(), reason: e.to_string() })
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
