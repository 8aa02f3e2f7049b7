//! The proxy's I/O: one HTTP/1.1 server per pod socket (hyper), every request routed by
//! `request::route`, decided by `policy`, and audited through `Core::audit` (tool `egress`,
//! target `host:port`): a refusal before the agent hears it, an allowed connection when it
//! ends, with its bytes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};
use tokio_util::sync::CancellationToken;

use super::policy::{self, Decision, Policy};
use super::request::{self, Route};
use crate::agent::llm as llm_probe;
use crate::core::{Core, Seat};
use crate::pods::Engine;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bounds of one pod's proxy.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections the pod may hold open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// The largest request head (request line and headers); larger is answered 431.
    pub max_head: usize,
    /// Time to send a request head (and between requests of a kept-alive connection).
    pub head_timeout: Duration,
    /// Resolving and connecting to an upstream.
    pub connect_timeout: Duration,
    /// An upstream's response head (forwards and the LLM).
    pub response_timeout: Duration,
    /// A tunnel or body with no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_head: 64 * 1024,
            head_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

struct Shared<E> {
    core: Weak<Core<E>>,
    workspace: String,
    /// Which of the workspace's agents the socket is (the owner or a worker).
    seat: Seat,
    limits: Limits,
    /// The client to the LLM provider (TLS with rustls; `[network] hosts` and
    /// `host.containers.internal` resolved as the policy says; no proxy of its own).
    llm: reqwest::Client,
    shutdown: CancellationToken,
}

/// Serves `workspace`'s egress socket until `shutdown`: identity is the listener (a
/// connection on it is that workspace's agent). The future holds the core weakly (it
/// ends, too, when the core is gone); spawn it.
pub fn serve<E: Engine + 'static>(
    listener: UnixListener,
    core: &Arc<Core<E>>,
    workspace: &str,
    seat: Seat,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    serve_with(listener, core, workspace, seat, Limits::default(), shutdown)
}

/// [`serve`] with other bounds (tests).
pub fn serve_with<E: Engine + 'static>(
    listener: UnixListener,
    core: &Arc<Core<E>>,
    workspace: &str,
    seat: Seat,
    limits: Limits,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let policy = Policy::new(workspace, &core.config.network, &core.config.agent.base_url, Vec::new());
    let mut llm = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(limits.connect_timeout)
        .read_timeout(limits.idle_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some((host, ip)) = policy.llm_host.as_ref().and_then(|h| Some((h, policy.mapped(h)?))) {
        llm = llm.resolve(host, SocketAddr::new(ip, 0));
    }
    let llm = llm.build();
    let core = Arc::downgrade(core);
    let workspace = workspace.to_owned();
    async move {
        let llm = match llm {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("egress: cannot make the LLM client for {workspace}: {e}");
                return;
            }
        };
        let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let shared =
            Arc::new(Shared { core, workspace: workspace.clone(), seat, limits, llm, shutdown: shutdown.clone() });
        accept_loop(listener, shared, connections, &workspace, shutdown).await
    }
}

async fn accept_loop<E: Engine + 'static>(
    listener: UnixListener,
    shared: Arc<Shared<E>>,
    connections: Arc<tokio::sync::Semaphore>,
    workspace: &str,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("egress: accept on {workspace}'s socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if shared.core.strong_count() == 0 {
            break;
        }
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!("egress: {workspace} holds too many connections; refusing one");
            tokio::spawn(async move {
                let mut stream = stream;
                let body = "too many connections at once\n";
                let answer = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(answer.as_bytes())).await;
            });
            continue;
        };
        let shared = shared.clone();
        // Held by the connection and by a tunnel made on it: a tunnel counts as a connection.
        let permit = Arc::new(permit);
        tokio::spawn(async move {
            let svc_shared = shared.clone();
            let svc_permit = permit.clone();
            let service = hyper::service::service_fn(move |req| {
                let (shared, permit) = (svc_shared.clone(), svc_permit.clone());
                async move { Ok::<_, Infallible>(handle(&shared, req, permit).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(shared.limits.head_timeout)
                .max_header_size(shared.limits.max_head)
                .max_buf_size(shared.limits.max_head.max(8192) + 1024)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = shared.shutdown.cancelled() => {}
                r = conn => if let Err(e) = r { tracing::debug!("egress: a connection of {}: {e}", shared.workspace) },
            }
        });
    }
}

/// A one-line plain-text answer.
fn answer(status: StatusCode, line: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{line}\n"))).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// What stops a connection before it is made: refused by policy (403, audited `deny`) or
/// failed once allowed (502, audited `error`).
enum Stop {
    Deny(String),
    Fail(String),
}

async fn handle<E: Engine + 'static>(
    shared: &Arc<Shared<E>>,
    req: Request<Incoming>,
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
) -> Response<Body> {
    let Some(core) = shared.core.upgrade() else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "devaipod is stopping");
    };
    let target = req.uri().to_string();
    let route = match request::route(req.method().as_str(), &target) {
        Ok(r) => r,
        Err(refusal) => return answer(status(refusal.status), &refusal.reason),
    };
    match route {
        Route::Connect { host, port } => tunnel(shared, &core, req, &host, port, permit).await,
        Route::Forward { host, port, path } => forward(shared, &core, req, &host, port, &path).await,
        Route::Llm { rest } => llm(shared, &core, req, &rest).await,
    }
}

impl<E: Engine + 'static> Shared<E> {
    async fn audit(&self, core: &Core<E>, target: &str, decision: &str, reason: &str) {
        if let Err(e) = core.audit_as(&self.workspace, self.seat, "egress", target, decision, reason).await {
            tracing::warn!("egress: cannot audit {decision} {target} of {}: {e}", self.workspace);
        }
    }

    /// The same, later (when a connection ends), without holding the core meanwhile.
    fn audit_later(self: &Arc<Self>, target: String, decision: &'static str, reason: String) {
        // A body dropped outside the runtime (at exit) has no one left to tell.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let shared = self.clone();
        runtime.spawn(async move {
            if let Some(core) = shared.core.upgrade() {
                shared.audit(&core, &target, decision, &reason).await;
            }
        });
    }

    /// Decides, resolves (the proxy resolves, never the agent), checks the addresses and
    /// connects; the reason it was allowed.
    async fn admit(&self, core: &Core<E>, host: &str, port: u16) -> Result<(TcpStream, String), Stop> {
        let own = core.egress_hosts(&self.workspace).await.map_err(|e| Stop::Fail(format!("the policy: {e}")))?;
        let policy = Policy::new(&self.workspace, &core.config.network, &core.config.agent.base_url, own);
        let why = match policy::decide(&policy, host, port) {
            Decision::Allow(why) => why,
            Decision::Deny(why) => return Err(Stop::Deny(why)),
        };
        if policy::norm(host) == crate::config::WORKSPACE_HOST {
            // An agent-port of its own workspace container: where the pod publishes it on
            // this host's loopback (rootful and rootless alike).
            let published = core.published_port(&self.workspace, port).await.map_err(|e| Stop::Fail(e.to_string()))?;
            let Some(hp) = published else {
                return Err(Stop::Fail(format!(
                    "the workspace does not publish port {port} (it was made before agent-ports named it: make it again)"
                )));
            };
            let a = SocketAddr::from(([127, 0, 0, 1], hp));
            return match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => Ok((s, why)),
                Ok(Err(e)) => Err(Stop::Fail(format!("cannot connect to {host}:{port}: {e}"))),
                Err(_) => {
                    Err(Stop::Fail(format!("connecting to {host}:{port} took over {:?}", self.limits.connect_timeout)))
                }
            };
        }
        let addrs: Vec<SocketAddr> = if let Some(ip) = policy.mapped(host) {
            vec![SocketAddr::new(ip, port)]
        } else if let Some(ip) = request::ip_literal(host) {
            vec![SocketAddr::new(ip, port)]
        } else {
            match tokio::time::timeout(self.limits.connect_timeout, tokio::net::lookup_host((host, port))).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => return Err(Stop::Fail(format!("cannot resolve {host}: {e}"))),
                Err(_) => {
                    return Err(Stop::Fail(format!("resolving {host} took over {:?}", self.limits.connect_timeout)));
                }
            }
        };
        let addrs = policy::usable(host, &addrs, policy.exempt(host)).map_err(Stop::Deny)?;
        let deadline = Instant::now() + self.limits.connect_timeout;
        let mut last = String::new();
        for a in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, TcpStream::connect(a)).await {
                Ok(Ok(s)) => return Ok((s, why)),
                Ok(Err(e)) => last = format!("cannot connect to {host}:{port} ({a}): {e}"),
                Err(_) => {
                    last = format!("connecting to {host}:{port} took over {:?}", self.limits.connect_timeout);
                    break;
                }
            }
        }
        Err(Stop::Fail(last))
    }

    /// Audits a stop and answers it.
    async fn stopped(&self, core: &Core<E>, target: &str, stop: Stop) -> Response<Body> {
        match stop {
            Stop::Deny(why) => {
                self.audit(core, target, "deny", &why).await;
                answer(StatusCode::FORBIDDEN, &format!("devaipod egress: {why}"))
            }
            Stop::Fail(why) => {
                self.audit(core, target, "error", &why).await;
                answer(StatusCode::BAD_GATEWAY, &format!("devaipod egress: {why}"))
            }
        }
    }
}

fn bytes_text(out: u64, inn: u64) -> String {
    format!("{out} B out, {inn} B in")
}

async fn tunnel<E: Engine + 'static>(
    shared: &Arc<Shared<E>>,
    core: &Core<E>,
    req: Request<Incoming>,
    host: &str,
    port: u16,
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
) -> Response<Body> {
    let target = format!("{host}:{port}");
    let (upstream, why) = match shared.admit(core, host, port).await {
        Ok(c) => c,
        Err(stop) => return shared.stopped(core, &target, stop).await,
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let (out, inn) =
                    pipe(TokioIo::new(upgraded), upstream, shared.limits.idle_timeout, shared.shutdown.clone()).await;
                shared.audit_later(target, "allow", format!("{why}; {}", bytes_text(out, inn)));
            }
            Err(e) => shared.audit_later(target, "error", format!("{why}; the agent's side of the tunnel: {e}")),
        }
    });
    Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed_unsync())
}

/// Copies both ways until both sides are done (or a side fails, or nothing moves either
/// way for `idle`); the bytes from `a` to `b` and from `b` to `a`.
async fn pipe<A, B>(a: A, b: B, idle: Duration, stop: CancellationToken) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let end = stop.child_token();
    let (out, inn) = tokio::join!(one_way(ar, bw, idle, start, &last, &end), one_way(br, aw, idle, start, &last, &end));
    (out, inn)
}

async fn one_way<R, W>(
    mut r: R,
    mut w: W,
    idle: Duration,
    start: Instant,
    last: &AtomicU64,
    end: &CancellationToken,
) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    let idle_ms = idle.as_millis() as u64;
    loop {
        let read = tokio::select! {
            _ = end.cancelled() => break,
            r = tokio::time::timeout(idle, r.read(&mut buf)) => r,
        };
        match read {
            // Quiet this way: end only when the other way was quiet as long.
            Err(_) => {
                let since = (start.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
                if since >= idle_ms {
                    end.cancel();
                    break;
                }
            }
            Ok(Ok(0)) => break,
            Ok(Err(_)) => {
                end.cancel();
                break;
            }
            Ok(Ok(n)) => {
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                match tokio::time::timeout(idle, w.write_all(&buf[..n])).await {
                    Ok(Ok(())) => total += n as u64,
                    _ => {
                        end.cancel();
                        break;
                    }
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), w.shutdown()).await;
    total
}

/// Counts the bytes of a connection's bodies and audits it when the response body is done
/// (or dropped: the agent went away).
struct Tally<E: Engine + 'static> {
    shared: Arc<Shared<E>>,
    target: String,
    why: String,
    out: Arc<AtomicU64>,
    inn: AtomicU64,
}

impl<E: Engine + 'static> Drop for Tally<E> {
    fn drop(&mut self) {
        let reason =
            format!("{}; {}", self.why, bytes_text(self.out.load(Ordering::Relaxed), self.inn.load(Ordering::Relaxed)));
        self.shared.audit_later(std::mem::take(&mut self.target), "allow", reason);
    }
}

/// A response body that counts into `tally` (and so audits when it ends).
fn counted<E, S, Er>(stream: S, tally: Tally<E>) -> Body
where
    E: Engine + 'static,
    S: futures_util::Stream<Item = Result<Bytes, Er>> + Send + 'static,
    Er: std::fmt::Display,
{
    let frames = stream.map(move |chunk| {
        let tally = &tally;
        match chunk {
            Ok(b) => {
                tally.inn.fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(Frame::data(b))
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// The agent's request body as a stream, counted into `out`.
fn request_stream(
    body: Incoming,
    out: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
    body.into_data_stream().map(move |chunk| match chunk {
        Ok(b) => {
            out.fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(b)
        }
        Err(e) => Err(Box::new(e) as BoxError),
    })
}

async fn forward<E: Engine + 'static>(
    shared: &Arc<Shared<E>>,
    core: &Core<E>,
    req: Request<Incoming>,
    host: &str,
    port: u16,
    path: &str,
) -> Response<Body> {
    let target = format!("{host}:{port}");
    let (upstream, why) = match shared.admit(core, host, port).await {
        Ok(c) => c,
        Err(stop) => return shared.stopped(core, &target, stop).await,
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
        Ok(x) => x,
        Err(e) => return shared.stopped(core, &target, Stop::Fail(format!("HTTP to {target}: {e}"))).await,
    };
    tokio::spawn(conn);
    let (parts, body) = req.into_parts();
    let out = Arc::new(AtomicU64::new(0));
    let mut up = Request::builder().method(parts.method.clone()).uri(path);
    for (name, value) in &parts.headers {
        if !request::is_hop_by_hop(name.as_str()) && name != header::HOST {
            up = up.header(name, value);
        }
    }
    let host_header = if port == 80 { host.to_owned() } else { target.clone() };
    up = up.header(header::HOST, host_header).header(header::CONNECTION, "close");
    let up = match up.body(agent_body(body, out.clone())) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("devaipod egress: {e}")),
    };
    let resp = match tokio::time::timeout(shared.limits.response_timeout, sender.send_request(up)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return shared.stopped(core, &target, Stop::Fail(format!("{target} did not answer: {e}"))).await,
        Err(_) => {
            let why = format!("{target} sent no answer in {:?}", shared.limits.response_timeout);
            return shared.stopped(core, &target, Stop::Fail(why)).await;
        }
    };
    let (parts, body) = resp.into_parts();
    let tally = Tally { shared: shared.clone(), target, why, out, inn: AtomicU64::new(0) };
    let mut r = Response::from_parts(parts, counted(body.into_data_stream(), tally));
    strip_hop_by_hop(r.headers_mut());
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The agent's body for hyper's client, counted.
fn agent_body(body: Incoming, out: Arc<AtomicU64>) -> Body {
    StreamBody::new(
        request_stream(body, out).map(|c| c.map(Frame::data).map_err(|e| std::io::Error::other(e.to_string()))),
    )
    .boxed_unsync()
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let names: Vec<_> = headers.keys().filter(|n| request::is_hop_by_hop(n.as_str())).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

async fn llm<E: Engine + 'static>(
    shared: &Arc<Shared<E>>,
    core: &Core<E>,
    req: Request<Incoming>,
    rest: &str,
) -> Response<Body> {
    let upstream = match core.llm_upstream(&shared.workspace).await {
        Ok(u) => u,
        Err(e) => {
            let target = llm_target(&core.config.agent.base_url);
            return shared.stopped(core, &target, Stop::Fail(format!("the LLM key: {e}"))).await;
        }
    };
    let url = request::llm_url(&upstream.base_url, rest);
    let target = llm_target(&upstream.base_url);
    let (parts, body) = req.into_parts();
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut rb = shared.llm.request(method.clone(), &url);
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if !request::is_hop_by_hop(n) && !request::is_credential(n) && name != header::HOST {
            rb = rb.header(n, value.as_bytes());
        }
    }
    if let Some(key) = &upstream.key {
        rb = rb.bearer_auth(key);
    }
    let out = Arc::new(AtomicU64::new(0));
    rb = rb.body(reqwest::Body::wrap_stream(request_stream(body, out.clone())));
    let path = rest.split('?').next().unwrap_or_default();
    // The probe of `devaipod doctor` and of a task's gate reads these headers: which URL was
    // asked, and that the provider (not the proxy) could not be reached.
    let mark = |mut r: Response<Body>, unreachable: Option<String>| {
        if let Ok(v) = HeaderValue::from_str(&upstream.base_url) {
            r.headers_mut().insert(llm_probe::UPSTREAM_HEADER, v);
        }
        if let Some(v) = unreachable.and_then(|u| HeaderValue::from_str(&u).ok()) {
            r.headers_mut().insert(llm_probe::UNREACHABLE_HEADER, v);
        }
        r
    };
    let resp = match tokio::time::timeout(shared.limits.response_timeout, rb.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let short = llm_probe::cause(&e, shared.limits.response_timeout);
            let why = format!("the LLM at {target} did not answer: {}", error_chain(&e));
            return mark(shared.stopped(core, &target, Stop::Fail(why)).await, Some(short));
        }
        Err(_) => {
            let short = format!("no answer within {} s", shared.limits.response_timeout.as_secs());
            let why = format!("the LLM at {target} sent no answer in {:?}", shared.limits.response_timeout);
            return mark(shared.stopped(core, &target, Stop::Fail(why)).await, Some(short));
        }
    };
    let code = resp.status();
    let why = format!("llm {method} {path}: {}", code.as_u16());
    let mut builder = Response::builder().status(code.as_u16());
    for (name, value) in resp.headers() {
        if !request::is_hop_by_hop(name.as_str()) && name != header::CONTENT_LENGTH {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
    }
    let tally = Tally { shared: shared.clone(), target, why, out, inn: AtomicU64::new(0) };
    let answered = builder
        .body(counted(resp.bytes_stream(), tally))
        .unwrap_or_else(|e| answer(StatusCode::BAD_GATEWAY, &format!("devaipod egress: {e}")));
    mark(answered, None)
}

/// `host:port` of a base URL, for the audit.
fn llm_target(base: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(u) => format!("{}:{}", u.host_str().unwrap_or("?"), u.port_or_known_default().unwrap_or(0)),
        Err(_) => base.to_owned(),
    }
}

/// An error and its causes in one line (reqwest's own message is often just "error
/// sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
