//! The agent-UI proxy: opencode serves its own web UI with absolute paths, so each
//! workspace's UI gets a port of its own on 127.0.0.1, at whose root the daemon forwards
//! everything to that agent, adding the per-pod password (the browser never sees it).
//!
//! Cookies are not port-specific, and ports do not change the site, so the session made at
//! `/login` on the main port is sent here too: the proxy asks for the same login. A state
//! change must come from the proxy's own origin. Framing is allowed only by the main UI
//! (our shell, `vendor/opencode-ui/`). WebSockets (opencode's terminal) are same-origin
//! only; the handshake is made with the agent by hyper's HTTP/1.1 client, the browser gets
//! its `101` only after the agent's, then the two upgraded connections are joined until
//! either side or the workspace's proxy closes. This is a byte-level proxy: it knows
//! nothing of opencode's API (that stays in `agent/`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use futures_util::TryStreamExt;
use tokio_util::sync::CancellationToken;

use super::session::{self, Authn, WebAuth};
use crate::agent::endpoint::Route;
use crate::core::{Core, CoreError};
use crate::pods::Engine;

/// How long a resolved agent address is reused (the UI loads many assets at once).
const TARGET_FRESH: Duration = Duration::from_secs(5);
/// Time to the answer's headers; bodies (event streams) may last.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
/// Time to open a connection to the agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the agent to accept or refuse a WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct AgentProxies<E> {
    core: Arc<Core<E>>,
    auth: WebAuth,
    /// The main listener's port: the only page allowed to frame an agent UI.
    main_port: u16,
    ports: DashMap<String, (u16, CancellationToken)>,
    opening: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
}

/// The client the proxy reaches an agent with: no redirects followed (the browser sees them).
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).redirect(reqwest::redirect::Policy::none())
}

impl<E: Engine + 'static> AgentProxies<E> {
    pub fn new(core: Arc<Core<E>>, auth: WebAuth, main_port: u16, shutdown: CancellationToken) -> Arc<Self> {
        let proxies = Arc::new(AgentProxies {
            core: core.clone(),
            auth,
            main_port,
            ports: DashMap::new(),
            opening: tokio::sync::Mutex::new(()),
            shutdown,
        });
        // A deleted workspace's proxy goes with it.
        let weak = Arc::downgrade(&proxies);
        let mut events = core.subscribe();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) if e.kind == "workspace" && e.message == "deleted" => match weak.upgrade() {
                        Some(p) => p.close(&e.workspace),
                        None => break,
                    },
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        });
        proxies
    }

    /// The port of the workspace's agent UI, opening it on first use.
    pub async fn ensure(self: &Arc<Self>, ws: &str) -> Result<u16, CoreError> {
        // The workspace must exist and its agent serve.
        self.core.agent_ui_target(ws).await?;
        let _one = self.opening.lock().await;
        if let Some(e) = self.ports.get(ws) {
            return Ok(e.0);
        }
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| CoreError::Io(format!("cannot open the agent UI port: {e}")))?;
        let port = listener.local_addr().map_err(|e| CoreError::Io(e.to_string()))?.port();
        let stop = self.shutdown.child_token();
        self.ports.insert(ws.to_owned(), (port, stop.clone()));
        let target =
            Target { proxies: self.clone(), ws: ws.to_owned(), stop, cached: Arc::new(tokio::sync::Mutex::new(None)) };
        serve(target, listener);
        Ok(port)
    }

    pub fn close(&self, ws: &str) {
        if let Some((_, (_, token))) = self.ports.remove(ws) {
            token.cancel();
        }
    }

    /// The workspaces with an open proxy and their ports.
    pub fn ports(&self) -> Vec<(String, u16)> {
        self.ports.iter().map(|e| (e.key().clone(), e.value().0)).collect()
    }
}

struct Target<E> {
    proxies: Arc<AgentProxies<E>>,
    ws: String,
    /// Cancelled when the workspace's proxy is closed: ends its listener and its WebSockets.
    stop: CancellationToken,
    /// The agent's route (its API socket, held open) and password, and when they were looked up.
    cached: Arc<tokio::sync::Mutex<Option<(Instant, Route, String)>>>,
}

impl<E> Clone for Target<E> {
    fn clone(&self) -> Self {
        Target {
            proxies: self.proxies.clone(),
            ws: self.ws.clone(),
            stop: self.stop.clone(),
            cached: self.cached.clone(),
        }
    }
}

/// Serves one workspace's proxy on `listener` until its `stop`.
fn serve<E: Engine + 'static>(target: Target<E>, listener: tokio::net::TcpListener) {
    let stop = target.stop.clone();
    let app = Router::new().fallback(forward::<E>).with_state(target);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
            tracing::warn!("agent UI proxy: {e}");
        }
    });
}

/// Request headers not forwarded: hop-by-hop ones, and our credentials (the agent gets
/// its own password instead).
fn forwarded_request_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "cookie"
            | "authorization"
            | "origin"
            | "referer"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// Answer headers not passed back: hop-by-hop ones, a Basic-auth challenge (the browser
/// must never be asked for the agent's password), and framing rules (ours replace them).
fn forwarded_response_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "trailer"
            | "upgrade"
            | "www-authenticate"
            | "x-frame-options"
            | "set-cookie"
            | "content-length"
    ) && !name.as_str().starts_with("access-control-")
}

/// The agent's Content-Security-Policy with `frame-ancestors` replaced by the main UI.
pub fn frame_policy(agent_csp: Option<&str>, main_port: u16) -> String {
    let ours =
        format!("frame-ancestors http://127.0.0.1:{main_port} http://localhost:{main_port} http://[::1]:{main_port}");
    let kept: Vec<&str> = agent_csp
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.starts_with("frame-ancestors"))
        .collect();
    if kept.is_empty() { ours } else { format!("{}; {ours}", kept.join("; ")) }
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text.to_owned()).into_response()
}

async fn forward<E: Engine + 'static>(State(t): State<Target<E>>, req: Request) -> Response {
    let headers = req.headers().clone();
    match t.proxies.auth.authenticated(&headers).await {
        Authn::None => {
            return plain(
                StatusCode::UNAUTHORIZED,
                "Not logged in: log in to devaipod's web UI first (the same browser session opens the agent's UI).",
            );
        }
        _ if !matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD)
            && !session::same_origin(&headers) =>
        {
            return session::cross_origin();
        }
        _ => {}
    }
    let (route, password) = {
        let mut cached = t.cached.lock().await;
        match cached.as_ref() {
            Some((at, r, p)) if at.elapsed() < TARGET_FRESH => (r.clone(), p.clone()),
            _ => {
                let opened = match t.proxies.core.agent_ui_target(&t.ws).await {
                    Ok((endpoint, p)) => {
                        Route::open(&endpoint, client_builder()).map(|r| (r, p)).map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                match opened {
                    Ok((r, p)) => {
                        *cached = Some((Instant::now(), r.clone(), p.clone()));
                        (r, p)
                    }
                    Err(e) => {
                        return plain(StatusCode::BAD_GATEWAY, &format!("The agent of {} is not reachable: {e}", t.ws));
                    }
                }
            }
        }
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if is_websocket(&headers) {
        return tunnel(req, &route, &password, &path, t.stop.clone()).await;
    }
    let mut out = route
        .http
        .request(req.method().clone(), format!("{}{path}", route.base))
        .basic_auth("opencode", Some(&password));
    for (name, value) in headers.iter().filter(|(n, _)| forwarded_request_header(n)) {
        out = out.header(name, value);
    }
    let body = req.into_body().into_data_stream().map_err(std::io::Error::other);
    let out = out.body(reqwest::Body::wrap_stream(body));
    let resp = match tokio::time::timeout(HEADERS_TIMEOUT, out.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return plain(StatusCode::BAD_GATEWAY, &format!("The agent did not answer: {e}")),
        Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "The agent did not answer in time."),
    };
    let mut builder = Response::builder().status(resp.status().as_u16());
    let agent_csp =
        resp.headers().get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(h) = builder.headers_mut() {
        for (name, value) in resp.headers().iter().filter(|(n, _)| forwarded_response_header(n)) {
            h.append(name.clone(), value.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&frame_policy(agent_csp.as_deref(), t.proxies.main_port)) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    builder
        .body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, &e.to_string()))
}

fn is_websocket(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The `Authorization` value that opens the agent (user `opencode`, the pod's password).
fn agent_authorization(password: &str) -> String {
    format!("Basic {}", crate::encode::base64(format!("opencode:{password}").as_bytes()))
}

/// The agent's side of a WebSocket handshake: the browser's headers (those
/// [`forwarded_request_header`] lets through, so the `Sec-WebSocket-*` ones but not its
/// cookie) with the agent's password and our own `Host`, `Connection` and `Upgrade`.
fn upgrade_request(
    browser: &axum::http::HeaderMap,
    authority: &str,
    password: &str,
    path: &str,
) -> Result<hyper::Request<http_body_util::Empty<bytes::Bytes>>, axum::http::Error> {
    let mut out = hyper::Request::get(path)
        .header(header::HOST, authority)
        .header(header::AUTHORIZATION, agent_authorization(password))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket");
    for (name, value) in browser.iter().filter(|(n, _)| forwarded_request_header(n)) {
        out = out.header(name, value);
    }
    out.body(http_body_util::Empty::new())
}

/// How the agent answered a WebSocket handshake.
enum Handshake {
    /// `101`: its answer's headers and the connection, now a WebSocket.
    Accepted(axum::http::HeaderMap, hyper::upgrade::Upgraded),
    Refused(StatusCode),
}

/// Sends the handshake over `io` with hyper's HTTP/1.1 client and, on `101`, takes the
/// connection over (with any bytes the agent sent after its answer).
async fn handshake_with_agent<IO>(
    io: IO,
    req: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<Handshake, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    let mut conn = std::pin::pin!(conn.with_upgrades());
    let mut send = std::pin::pin!(sender.send_request(req));
    let (mut resp, conn_ended) = tokio::select! {
        r = &mut send => (r?, false),
        // On a `101` the connection ends as soon as it has read the answer (handing its
        // socket to the upgrade); if it ended without one, the request fails.
        r = &mut conn => {
            r?;
            (send.await?, true)
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Handshake::Refused(resp.status()));
    }
    let headers = std::mem::take(resp.headers_mut());
    let upgrade = hyper::upgrade::on(&mut resp);
    if !conn_ended {
        conn.await?;
    }
    Ok(Handshake::Accepted(headers, upgrade.await?))
}

/// Opens the connection to the agent (`connect`, within [`CONNECT_TIMEOUT`]) and makes the
/// handshake over it (within [`HANDSHAKE_TIMEOUT`]); a connection that fails is the
/// browser's answer.
async fn connect_and_handshake<IO>(
    connect: impl std::future::Future<Output = std::io::Result<IO>>,
    upstream: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<Result<Result<Handshake, hyper::Error>, tokio::time::error::Elapsed>, Response>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(io)) => Ok(tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_with_agent(io, upstream)).await),
        Ok(Err(e)) => Err(plain(StatusCode::BAD_GATEWAY, &format!("The agent is not reachable: {e}"))),
        Err(_) => Err(plain(StatusCode::GATEWAY_TIMEOUT, "The agent did not accept the connection in time.")),
    }
}

/// A WebSocket (opencode's terminal). The handshake is made with the agent first (with its
/// password); only its `101` gives the browser a `101` (with the agent's `Sec-WebSocket-*`
/// answer), a refusal gives the browser the agent's status. Then both upgraded connections
/// are joined until either side closes or the workspace's proxy is closed (`stop`).
async fn tunnel(mut req: Request, route: &Route, password: &str, path: &str, stop: CancellationToken) -> Response {
    // A WebSocket is not bound by CORS: the handshake must come from the proxy's own page.
    if !session::same_origin(req.headers()) {
        return session::cross_origin();
    }
    let upstream = match upgrade_request(req.headers(), &route.authority, password, path) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("Cannot forward this WebSocket: {e}")),
    };
    let answered = match route.socket() {
        Some(socket) => connect_and_handshake(socket.connect(), upstream).await,
        None => connect_and_handshake(tokio::net::TcpStream::connect(&route.authority), upstream).await,
    };
    let answered = match answered {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    let (headers, agent) = match answered {
        Ok(Ok(Handshake::Accepted(headers, agent))) => (headers, agent),
        Ok(Ok(Handshake::Refused(status))) => {
            // Its error status; anything else would tell the browser nothing true.
            let status =
                if status.is_client_error() || status.is_server_error() { status } else { StatusCode::BAD_GATEWAY };
            return plain(status, "The agent refused the WebSocket.");
        }
        Ok(Err(e)) => return plain(StatusCode::BAD_GATEWAY, &format!("The agent's WebSocket failed: {e}")),
        Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "The agent did not answer the WebSocket in time."),
    };
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket");
    if let Some(h) = resp.headers_mut() {
        for (name, value) in headers.iter().filter(|(n, _)| n.as_str().starts_with("sec-websocket-")) {
            h.append(name.clone(), value.clone());
        }
    }
    let browser = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let browser = tokio::select! {
            r = browser => match r {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!("agent UI proxy: the browser's WebSocket upgrade failed: {e}");
                    return;
                }
            },
            _ = stop.cancelled() => return,
        };
        let mut browser = hyper_util::rt::TokioIo::new(browser);
        let mut agent = hyper_util::rt::TokioIo::new(agent);
        // Ends with either side, or when the workspace's proxy closes (both sockets dropped).
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut browser, &mut agent) => {
                if let Err(e) = r {
                    tracing::debug!("agent UI proxy: WebSocket ended: {e}");
                }
            }
            _ = stop.cancelled() => {}
        }
    });
    resp.body(Body::empty()).unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, &e.to_string()))
}

#[cfg(test)]
mod tests;
