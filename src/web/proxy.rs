//! The agent-UI proxy: opencode serves its own web UI with absolute paths, so each
//! workspace's UI gets a port of its own on 127.0.0.1, at whose root the daemon forwards
//! everything to that agent, adding the per-pod password (the browser never sees it).
//!
//! Cookies are not port-specific, and ports do not change the site, so the session made at
//! `/login` on the main port is sent here too: the proxy asks for the same login. A state
//! change must come from the proxy's own origin. Framing is allowed only by the main UI
//! (our shell, `vendor/opencode-ui/`). WebSockets (opencode's terminal) are tunnelled
//! after the agent accepted the handshake. This is a byte-level proxy: it knows nothing of
//! opencode's API (that stays in `agent/`).

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
use crate::core::{Core, CoreError};
use crate::pods::Engine;

/// How long a resolved agent address is reused (the UI loads many assets at once).
const TARGET_FRESH: Duration = Duration::from_secs(5);
/// Time to the answer's headers; bodies (event streams) may last.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(60);

pub struct AgentProxies<E> {
    core: Arc<Core<E>>,
    auth: WebAuth,
    /// The main listener's port: the only page allowed to frame an agent UI.
    main_port: u16,
    ports: DashMap<String, (u16, CancellationToken)>,
    opening: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    http: reqwest::Client,
}

impl<E: Engine + 'static> AgentProxies<E> {
    pub fn new(core: Arc<Core<E>>, auth: WebAuth, main_port: u16, shutdown: CancellationToken) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let proxies = Arc::new(AgentProxies {
            core: core.clone(),
            auth,
            main_port,
            ports: DashMap::new(),
            opening: tokio::sync::Mutex::new(()),
            shutdown,
            http,
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
        let token = self.shutdown.child_token();
        self.ports.insert(ws.to_owned(), (port, token.clone()));
        let state =
            Target { proxies: self.clone(), ws: ws.to_owned(), cached: Arc::new(tokio::sync::Mutex::new(None)) };
        let app = Router::new().fallback(forward::<E>).with_state(state);
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await });
            if let Err(e) = serve.await {
                tracing::warn!("agent UI proxy: {e}");
            }
        });
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
    cached: Arc<tokio::sync::Mutex<Option<(Instant, String, String)>>>,
}

impl<E> Clone for Target<E> {
    fn clone(&self) -> Self {
        Target { proxies: self.proxies.clone(), ws: self.ws.clone(), cached: self.cached.clone() }
    }
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
    let (base, password) = {
        let mut cached = t.cached.lock().await;
        match cached.as_ref() {
            Some((at, b, p)) if at.elapsed() < TARGET_FRESH => (b.clone(), p.clone()),
            _ => match t.proxies.core.agent_ui_target(&t.ws).await {
                Ok((b, p)) => {
                    *cached = Some((Instant::now(), b.clone(), p.clone()));
                    (b, p)
                }
                Err(e) => {
                    return plain(StatusCode::BAD_GATEWAY, &format!("The agent of {} is not reachable: {e}", t.ws));
                }
            },
        }
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if is_websocket(&headers) {
        let stop = t.proxies.ports.get(&t.ws).map(|e| e.1.clone()).unwrap_or_default();
        return tunnel(req, &base, &password, &path, stop).await;
    }
    let mut out =
        t.proxies.http.request(req.method().clone(), format!("{base}{path}")).basic_auth("opencode", Some(&password));
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

/// A WebSocket (opencode's terminal): the handshake is made with the agent (with its
/// password), its `101` is passed back, then bytes are copied both ways.
async fn tunnel(mut req: Request, base: &str, password: &str, path: &str, stop: CancellationToken) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A WebSocket is not bound by CORS: the handshake must come from the proxy's own page.
    if !session::same_origin(req.headers()) {
        return session::cross_origin();
    }
    let Some(authority) = base.strip_prefix("http://").map(str::to_owned) else {
        return plain(StatusCode::BAD_GATEWAY, "the agent's address is not plain http");
    };
    let auth = crate::encode::base64(format!("opencode:{password}").as_bytes());
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Basic {auth}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    );
    for (name, value) in req.headers() {
        if name.as_str().starts_with("sec-websocket-")
            && let Ok(v) = value.to_str()
        {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let handshake = async {
        let mut upstream = tokio::net::TcpStream::connect(&authority).await?;
        upstream.write_all(head.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = upstream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("the agent closed the connection"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err(std::io::Error::other("the agent's answer head is too long"));
            }
        };
        Ok::<_, std::io::Error>((upstream, buf, end))
    };
    let (upstream, buf, end) = match tokio::time::timeout(Duration::from_secs(30), handshake).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return plain(StatusCode::BAD_GATEWAY, &format!("The agent's WebSocket failed: {e}")),
        Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "The agent did not answer the WebSocket in time."),
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse::<u16>().ok()).unwrap_or(502);
    if status != 101 {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return plain(code, "The agent refused the WebSocket.");
    }
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "upgrade" || name == "connection" || name.starts_with("sec-websocket-") {
                resp = resp.header(name, value.trim());
            }
        }
    }
    let rest = buf[end..].to_vec();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut upstream = upstream;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = hyper_util::rt::TokioIo::new(upgraded);
                if !rest.is_empty() && client.write_all(&rest).await.is_err() {
                    return;
                }
                // Ends with either side, or when the workspace's proxy closes.
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                    _ = stop.cancelled() => {}
                }
            }
            Err(e) => tracing::debug!("agent UI proxy: the browser's WebSocket upgrade failed: {e}"),
        }
    });
    resp.body(Body::empty()).unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        for h in ["cookie", "authorization", "host", "connection", "origin"] {
            assert!(!forwarded_request_header(&HeaderName::from_static(h)), "{h}");
        }
        assert!(forwarded_request_header(&header::ACCEPT) && forwarded_request_header(&header::CONTENT_TYPE));
        for h in
            ["www-authenticate", "x-frame-options", "set-cookie", "transfer-encoding", "access-control-allow-origin"]
        {
            assert!(!forwarded_response_header(&HeaderName::from_static(h)), "{h}");
        }
        assert!(forwarded_response_header(&header::CONTENT_TYPE));
    }

    #[test]
    fn only_the_main_ui_may_frame_the_agent() {
        assert_eq!(
            frame_policy(None, 8080),
            "frame-ancestors http://127.0.0.1:8080 http://localhost:8080 http://[::1]:8080"
        );
        let p = frame_policy(Some("default-src 'self'; frame-ancestors 'none'"), 9);
        assert!(p.starts_with("default-src 'self'; frame-ancestors http://127.0.0.1:9"), "{p}");
        assert!(!p.contains("'none'"));
    }
}
