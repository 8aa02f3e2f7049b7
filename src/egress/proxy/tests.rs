//! The proxy over a real socket and a core over the fakes, with upstream servers on
//! 127.0.0.1 standing in (through `[network] hosts`) for allowed hosts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{Limits, serve_with};
use crate::config::{Config, HostPattern, NetworkEgress};
use crate::core::testing::{Steps, WS, World};
use crate::core::{CallerEnv, Core, UpOutcome, UpRequest};
use crate::store::AuditEntry;

const KEY_ENV: &str = "DEVAIPOD_TEST_LLM_KEY";
const REAL_KEY: &str = "sk-real-0123456789";

struct Proxy {
    socket: PathBuf,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn start(core: &Arc<Core<crate::core::testing::FakeEngine>>, limits: Limits) -> Proxy {
    let dir = tempfile::tempdir().expect("a directory");
    let socket = dir.path().join("egress.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let stop = CancellationToken::new();
    tokio::spawn(serve_with(listener, core, WS, crate::core::Seat::Owner, limits, stop.clone()));
    Proxy { socket, stop, _dir: dir }
}

fn hosts<'a>(names: &'a [&'a str]) -> impl Fn(&mut Config) + 'a {
    move |c: &mut Config| {
        for n in names {
            c.network.hosts.insert(n.to_string().try_into().unwrap(), "127.0.0.1".parse().unwrap());
        }
    }
}

/// An upstream that echoes what it reads; counts its connections.
async fn echo_server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, accepted)
}

/// Reads a request head (and a body of its content-length) from `s`.
async fn read_request(s: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the request ended early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

/// Sends `request` on a new connection to the proxy and reads until it closes.
async fn exchange(proxy: &Proxy, request: &[u8]) -> String {
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => panic!("{e} after {}", String::from_utf8_lossy(&out)),
            Err(_) => panic!("no end of the answer: {}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `s` until `needle` arrives; what was read.
async fn read_until(s: &mut UnixStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` in: {}", String::from_utf8_lossy(&out)))
            .unwrap();
        assert!(n > 0, "closed before `{needle}`: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn egress_rows(rows: Vec<AuditEntry>) -> Vec<(String, String, String)> {
    let mut v: Vec<_> =
        rows.into_iter().filter(|e| e.tool == "egress").map(|e| (e.decision, e.target, e.reason)).collect();
    v.reverse();
    v
}

/// The egress audit rows of the workspace, oldest first, once there are `n`.
async fn audit_rows(core: &Core<crate::core::testing::FakeEngine>, n: usize) -> Vec<(String, String, String)> {
    for _ in 0..200 {
        let rows = egress_rows(core.audit_log(Some(WS), 100).await.unwrap());
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} audit rows: {:?}", egress_rows(core.audit_log(Some(WS), 100).await.unwrap()));
}

async fn connect_through(proxy: &Proxy, target: &str) -> (UnixStream, String) {
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_until(&mut s, "\r\n\r\n").await;
    (s, head)
}

#[tokio::test]
async fn a_connect_to_an_allowed_name_is_tunnelled_and_audited_with_its_bytes() {
    let (port, _) = echo_server().await;
    let w = World::with_config(|c| {
        hosts(&["api.allowed.test"])(c);
        c.network.allow_hosts = vec![HostPattern::parse(&format!("*.allowed.test:{port}")).unwrap()];
    })
    .await;
    let proxy = start(&w.core, Limits::default());
    let (mut s, head) = connect_through(&proxy, &format!("api.allowed.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"ping through").await.unwrap();
    let mut got = [0u8; 12];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping through");
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let rows = audit_rows(&w.core, 1).await;
    assert_eq!(
        rows,
        [(
            "allow".to_owned(),
            format!("api.allowed.test:{port}"),
            format!("allow-hosts *.allowed.test:{port}; 12 B out, 12 B in")
        )]
    );
}

#[tokio::test]
async fn a_host_off_the_list_is_refused_and_audited_before_the_answer() {
    let (port, accepted) = echo_server().await;
    let w = World::with_config(hosts(&["other.test"])).await;
    let proxy = start(&w.core, Limits::default());
    let (_s, head) = connect_through(&proxy, &format!("other.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // Written before the answer: no waiting.
    let rows = egress_rows(w.core.audit_log(Some(WS), 10).await.unwrap());
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (decision, target, reason) = &rows[0];
    assert_eq!((decision.as_str(), target.as_str()), ("deny", format!("other.test:{port}").as_str()));
    assert_eq!(
        reason,
        &format!(
            "other.test:{port} is not in [network] allow-hosts nor ws's own (the owner can open it: devaipod egress allow ws other.test:{port})"
        )
    );
    let answer = exchange(
        &proxy,
        format!("GET http://other.test:{port}/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("devaipod egress: other.test"), "{answer}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test]
async fn loopback_is_refused_in_open_mode_too_unless_the_owner_mapped_the_name() {
    let (port, accepted) = echo_server().await;
    let w = World::with_config(|c| {
        c.network.egress = NetworkEgress::Open;
        hosts(&["mapped.test"])(c);
    })
    .await;
    let proxy = start(&w.core, Limits::default());
    for target in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
        let (_s, head) = connect_through(&proxy, &target).await;
        assert!(head.starts_with("HTTP/1.1 403") && head.contains("loopback address"), "{target}: {head}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection reached the host");
    let rows = egress_rows(w.core.audit_log(Some(WS), 10).await.unwrap());
    assert!(rows.iter().all(|(d, _, r)| d == "deny" && r.contains("a loopback address")), "{rows:?}");
    assert_eq!(rows.len(), 3);

    let (mut s, head) = connect_through(&proxy, &format!("mapped.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn plain_http_is_forwarded_in_origin_form_with_connection_close() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let got = read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello").await.unwrap();
        let _ = tx.send(got);
    });
    let w = World::with_config(|c| {
        hosts(&["web.test"])(c);
        c.network.allow_hosts = vec![HostPattern::parse(&format!("web.test:{port}")).unwrap()];
    })
    .await;
    let proxy = start(&w.core, Limits::default());
    let answer = exchange(
        &proxy,
        format!(
            "POST http://web.test:{port}/a/b?c=1 HTTP/1.1\r\nHost: web.test:{port}\r\nProxy-Authorization: Basic eA==\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc"
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"), "{answer}");
    let (head, body) = rx.await.unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("POST /a/b?c=1 HTTP/1.1\r\n"), "{head}");
    assert!(lower.contains(&format!("host: web.test:{port}\r\n")) && lower.contains("connection: close\r\n"), "{head}");
    assert!(!lower.contains("proxy-authorization") && !lower.contains("keep-alive"), "{head}");
    assert_eq!(body, b"abc");
    let rows = audit_rows(&w.core, 1).await;
    assert_eq!(rows[0].2, format!("allow-hosts web.test:{port}; 3 B out, 5 B in"));
}

/// A fake OpenAI-compatible server: records the request, answers SSE in two chunks, the
/// second only once `release` fires.
async fn llm_server() -> (u16, tokio::sync::mpsc::Receiver<(String, Vec<u8>)>, tokio::sync::mpsc::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (seen_tx, seen) = tokio::sync::mpsc::channel(4);
    let (release, mut released) = tokio::sync::mpsc::channel::<()>(4);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let got = read_request(&mut s).await;
            let _ = seen_tx.send(got).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            let first = b"data: {\"n\":1}\n\n";
            s.write_all(format!("{:x}\r\n", first.len()).as_bytes()).await.unwrap();
            s.write_all(first).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
            s.flush().await.unwrap();
            released.recv().await;
            let last = b"data: [DONE]\n\n";
            s.write_all(format!("{:x}\r\n", last.len()).as_bytes()).await.unwrap();
            s.write_all(last).await.unwrap();
            s.write_all(b"\r\n0\r\n\r\n").await.unwrap();
        }
    });
    (port, seen, release)
}

#[tokio::test]
async fn the_llm_route_streams_with_the_real_key_whatever_the_agent_sent() {
    let (port, mut seen, release) = llm_server().await;
    let w = World::with_config(|c| {
        c.agent.base_url = format!("http://127.0.0.1:{port}/v1");
        c.agent.api_key_env = Some(KEY_ENV.to_owned().try_into().unwrap());
    })
    .await;
    let env = CallerEnv([(KEY_ENV.to_owned(), REAL_KEY.to_owned())].into());
    let req = UpRequest { env: Some(env), ..w.request() };
    assert!(matches!(w.core.up(&req, &Steps::default()).await, Ok(UpOutcome::Created(_))));

    for core in [w.core.clone(), w.restart()] {
        // The first core remembers the key from `up`; a restarted one reads the secret.
        let proxy = start(&core, Limits::default());
        let body = br#"{"model":"m","stream":true}"#;
        let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
        s.write_all(
            format!(
                "POST /llm/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:3128\r\nAuthorization: Bearer placeholder\r\nx-api-key: placeholder\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.write_all(body).await.unwrap();
        let (head, got_body) = seen.recv().await.unwrap();
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(lower.contains(&format!("authorization: bearer {}\r\n", REAL_KEY.to_ascii_lowercase())), "{head}");
        assert!(!lower.contains("placeholder") && !lower.contains("x-api-key"), "{head}");
        assert!(lower.contains("content-type: application/json"), "{head}");
        assert_eq!(got_body, body);
        // The first event arrives while the provider has not finished.
        let first = read_until(&mut s, "data: {\"n\":1}").await;
        assert!(first.starts_with("HTTP/1.1 200") && first.contains("text/event-stream"), "{first}");
        assert!(!first.contains("[DONE]"));
        release.send(()).await.unwrap();
        read_until(&mut s, "data: [DONE]").await;
        drop(s);
        let rows = audit_rows(&core, 1).await;
        let (decision, target, reason) = rows.last().unwrap();
        assert_eq!((decision.as_str(), target.as_str()), ("allow", format!("127.0.0.1:{port}").as_str()));
        assert!(reason.starts_with(&format!("llm POST /chat/completions: 200; {} B out, ", body.len())), "{reason}");
        assert!(!reason.contains(REAL_KEY));
    }
}

#[tokio::test]
async fn a_workspace_own_host_changes_the_decision_at_once() {
    let (port, _) = echo_server().await;
    let w = World::with_config(hosts(&["extra.test"])).await;
    w.up().await;
    let proxy = start(&w.core, Limits::default());
    let target = format!("extra.test:{port}");
    let (_s, head) = connect_through(&proxy, &target).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let view = w.core.egress_allow(WS, std::slice::from_ref(&target)).await.unwrap();
    assert_eq!(view.hosts, std::slice::from_ref(&target));
    let (_s, head) = connect_through(&proxy, &target).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    w.core.egress_remove(WS, &target).await.unwrap();
    let (_s, head) = connect_through(&proxy, &target).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let e = w.core.egress_allow(WS, &["*.x".to_owned()]).await.unwrap_err().to_string();
    assert!(e.starts_with("`*.x` is not a host pattern"), "{e}");
}

#[tokio::test]
async fn malformed_oversize_and_unknown_requests_are_refused_in_one_line() {
    let w = World::new().await;
    let proxy = start(&w.core, Limits::default());
    let big = format!("GET http://a.test/ HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let answer = exchange(&proxy, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
    let answer = exchange(&proxy, b"NONSENSE\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = exchange(&proxy, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404") && answer.ends_with("not `/`\n"), "{answer}");
    let answer = exchange(&proxy, b"GET https://a.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("CONNECT"), "{answer}");
}

#[tokio::test]
async fn a_pod_gets_a_bounded_number_of_connections() {
    let w = World::new().await;
    let proxy = start(&w.core, Limits { max_connections: 1, ..Limits::default() });
    let _held = UnixStream::connect(&proxy.socket).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = exchange(&proxy, b"").await;
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("too many connections"), "{answer}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_head_timeout() {
    let w = World::new().await;
    let proxy = start(&w.core, Limits { head_timeout: Duration::from_millis(200), ..Limits::default() });
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(b"GET http://a.test/ HTTP/1.1\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("closed in time").unwrap();
}

#[tokio::test]
async fn a_key_that_cannot_be_read_fails_the_llm_route_with_502_and_is_not_read_again_at_once() {
    let (port, _seen, _release) = llm_server().await;
    let w = World::with_config(|c| {
        c.agent.base_url = format!("http://127.0.0.1:{port}/v1");
        c.agent.api_key_secret = Some("missing-llm-key".into());
    })
    .await;
    let proxy = start(&w.core, Limits::default());
    let request = b"GET /llm/models HTTP/1.1\r\nHost: 127.0.0.1:3128\r\nConnection: close\r\n\r\n";
    for _ in 0..2 {
        let answer = exchange(&proxy, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 502")
                && answer.contains("cannot read the LLM key from podman secret missing-llm-key"),
            "{answer}"
        );
    }
    let reads = w.engine.calls().iter().filter(|c| c.starts_with("secret_value")).count();
    assert_eq!(reads, 1, "the failure is remembered");
    let rows = egress_rows(w.core.audit_log(Some(WS), 10).await.unwrap());
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|(d, t, _)| d == "error" && t == &format!("127.0.0.1:{port}")), "{rows:?}");
}

/// Several LLM requests ride one agent connection (the provider closes each of its own).
#[tokio::test]
async fn one_agent_connection_carries_several_llm_requests() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = l.accept().await {
            n += 1;
            let (head, _) = read_request(&mut s).await;
            assert!(head.starts_with("GET /v1/models HTTP/1.1"), "{head}");
            let body = format!("{{\"n\":{n}}}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    let w = World::with_config(|c| c.agent.base_url = format!("http://127.0.0.1:{port}/v1")).await;
    let proxy = start(&w.core, Limits::default());
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    for n in 1..=2 {
        s.write_all(b"GET /llm/models HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n").await.unwrap();
        let answer = read_until(&mut s, &format!("{{\"n\":{n}}}")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(!answer.to_ascii_lowercase().contains("connection: close"), "the agent's connection stays: {answer}");
    }
    let rows = audit_rows(&w.core, 2).await;
    assert!(
        rows.iter().all(|(d, _, r)| d == "allow" && r.starts_with("llm GET /models: 200; 0 B out, 7 B in")),
        "{rows:?}"
    );
}

/// A tunnel holds its connection's place: the limit counts open tunnels.
#[tokio::test]
async fn an_open_tunnel_counts_against_the_connection_limit() {
    let (port, _) = echo_server().await;
    let w = World::with_config(|c| {
        hosts(&["echo.test"])(c);
        c.network.allow_hosts = vec![HostPattern::parse(&format!("echo.test:{port}")).unwrap()];
    })
    .await;
    let proxy = start(&w.core, Limits { max_connections: 1, ..Limits::default() });
    let (mut tunnel, head) = connect_through(&proxy, &format!("echo.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = exchange(&proxy, b"").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).await.unwrap();
    drop(tunnel);
    audit_rows(&w.core, 1).await;
    let answer = exchange(&proxy, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "the place is free again: {answer}");
}
