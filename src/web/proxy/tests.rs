use super::*;

#[test]
fn credentials_and_hop_by_hop_headers_stay_behind() {
    for h in ["cookie", "authorization", "host", "connection", "origin"] {
        assert!(!forwarded_request_header(&HeaderName::from_static(h)), "{h}");
    }
    assert!(forwarded_request_header(&header::ACCEPT) && forwarded_request_header(&header::CONTENT_TYPE));
    for h in ["www-authenticate", "x-frame-options", "set-cookie", "transfer-encoding", "access-control-allow-origin"] {
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

// The WebSocket tunnel, in-process: a stand-in agent (a tungstenite server on 127.0.0.1),
// the proxy's own router on another port, and a tungstenite client as the browser.

mod websocket {
    use std::sync::Mutex;

    use axum::http::{HeaderMap, Uri};
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::handshake::server::{
        ErrorResponse, Request as WsRequest, Response as WsResponse,
    };
    use tokio_tungstenite::tungstenite::{self, Message};
    use tokio_tungstenite::{WebSocketStream, accept_hdr_async, client_async};

    use super::super::*;
    use crate::config::Config;
    use crate::core::Paths;
    use crate::pods::Podman;
    use crate::store::Store;

    const PASSWORD: &str = "pod-secret";
    /// `base64("opencode:pod-secret")`, spelled out so the test does not share the code's encoder.
    const AGENT_AUTH: &str = "Basic b3BlbmNvZGU6cG9kLXNlY3JldA==";
    const WAIT: Duration = Duration::from_secs(10);
    const PATH: &str = "/pty/abc/connect?directory=%2Fworkspaces%2Fx";

    /// The agent: records every handshake it reads, answers `refuse` instead of `101` when
    /// set, else picks the first offered subprotocol, greets and echoes.
    /// A stand-in for the agent behind its API socket (as the agent's relay serves it).
    struct Agent {
        endpoint: String,
        seen: Arc<Mutex<Vec<(Uri, HeaderMap)>>>,
        _dir: tempfile::TempDir,
    }

    impl Agent {
        async fn start(refuse: Option<StatusCode>) -> Agent {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("api.sock");
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            let endpoint = crate::agent::endpoint::unix(&socket);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let record = record.clone();
                    tokio::spawn(async move {
                        #[expect(clippy::result_large_err, reason = "tungstenite's Callback fixes the error type")]
                        let answer = move |req: &WsRequest, mut resp: WsResponse| {
                            record.lock().unwrap().push((req.uri().clone(), req.headers().clone()));
                            if let Some(status) = refuse {
                                let mut refusal = ErrorResponse::new(Some("refused by the agent".to_owned()));
                                *refusal.status_mut() = status;
                                refusal
                                    .headers_mut()
                                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                                return Err(refusal);
                            }
                            let offered = req.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
                            if let Some(first) = offered.and_then(|v| v.split(',').next()) {
                                resp.headers_mut().insert("sec-websocket-protocol", first.trim().parse().unwrap());
                            }
                            Ok(resp)
                        };
                        let Ok(mut ws) = accept_hdr_async(stream, answer).await else { return };
                        // Sent at once, so it may arrive with the 101 (bytes read ahead by the proxy).
                        if ws.send(Message::text("hello from the agent")).await.is_err() {
                            return;
                        }
                        while let Some(Ok(m)) = ws.next().await {
                            let reply = match m {
                                Message::Text(t) => Message::text(format!("echo: {}", t.as_str())),
                                Message::Binary(b) => Message::Binary(b),
                                Message::Close(_) => break,
                                _ => continue,
                            };
                            if ws.send(reply).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            Agent { endpoint, seen, _dir: dir }
        }

        fn seen(&self) -> Vec<(Uri, HeaderMap)> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// One workspace's proxy in front of `agent`, as `ensure` opens it (the agent's address
    /// already resolved, so no podman is asked), and a login session for it.
    struct Proxy {
        addr: SocketAddr,
        session: String,
        stop: CancellationToken,
        _dir: tempfile::TempDir,
    }

    async fn proxy(agent: &Agent) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { data: dir.path().join("data"), runtime: dir.path().join("run") };
        let engine = Podman::new(std::path::Path::new("/dev/null")).unwrap();
        let core = Core::new(Config::default(), engine, Store::open_in_memory().unwrap(), paths);
        let auth = WebAuth::new(Arc::new("t".repeat(64)), core.sessions());
        let session = auth.start_session().await.unwrap();
        let proxies = AgentProxies::new(core, auth, 8080, CancellationToken::new());
        let stop = CancellationToken::new();
        let route = crate::agent::endpoint::Route::open(&agent.endpoint, client_builder()).unwrap();
        let resolved = (Instant::now(), route, PASSWORD.to_owned());
        let target = Target {
            proxies,
            ws: "w".to_owned(),
            stop: stop.clone(),
            cached: Arc::new(tokio::sync::Mutex::new(Some(resolved))),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve(target, listener);
        Proxy { addr, session, stop, _dir: dir }
    }

    /// The browser: a WebSocket handshake to the proxy with the session cookie (unless
    /// `logged_in` is false), `origin` and two offered subprotocols.
    async fn browser(
        p: &Proxy,
        origin: Option<&str>,
        logged_in: bool,
    ) -> Result<(WebSocketStream<TcpStream>, tungstenite::handshake::client::Response), tungstenite::Error> {
        let mut req = format!("ws://{}{PATH}", p.addr).into_client_request().unwrap();
        let h = req.headers_mut();
        if logged_in {
            h.insert(header::COOKIE, format!("theme=dark; {}={}", session::COOKIE, p.session).parse().unwrap());
        }
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h.insert("sec-websocket-protocol", HeaderValue::from_static("terminal, other"));
        let stream = TcpStream::connect(p.addr).await.unwrap();
        tokio::time::timeout(WAIT, client_async(req, stream)).await.expect("the handshake does not hang")
    }

    fn own_origin(p: &Proxy) -> String {
        format!("http://{}", p.addr)
    }

    async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> String {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    fn refused_status(r: Result<impl std::fmt::Debug, tungstenite::Error>) -> (StatusCode, HeaderMap) {
        match r {
            Err(tungstenite::Error::Http(resp)) => (resp.status(), resp.headers().clone()),
            other => panic!("expected an HTTP refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn messages_cross_both_ways_with_the_agents_password_and_not_the_browsers_cookie() {
        let agent = Agent::start(None).await;
        let p = proxy(&agent).await;
        let (mut ws, resp) = browser(&p, Some(&own_origin(&p)), true).await.unwrap();
        // tungstenite checked Sec-WebSocket-Accept against its own key: it passed unchanged.
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()["sec-websocket-protocol"], "terminal");

        assert_eq!(next_text(&mut ws).await, "hello from the agent");
        ws.send(Message::text("ls -l")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "echo: ls -l");
        ws.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], &[0u8, 1, 2, 255]),
            other => panic!("expected the binary echo, got {other:?}"),
        }

        let seen = agent.seen();
        assert_eq!(seen.len(), 1);
        let (uri, h) = &seen[0];
        assert_eq!(uri.to_string(), PATH);
        assert_eq!(h[header::AUTHORIZATION], AGENT_AUTH);
        assert_eq!(h[header::HOST], "agent", "our Host, not the browser's");
        assert!(h.get(header::COOKIE).is_none(), "the browser's cookie reached the agent: {h:?}");
        assert!(h.get(header::ORIGIN).is_none());
        assert_eq!(h["sec-websocket-version"], "13");
        assert_eq!(h["sec-websocket-protocol"], "terminal, other");
        assert!(h.contains_key("sec-websocket-key"));
        ws.close(None).await.unwrap();
    }

    #[tokio::test]
    async fn a_cross_origin_handshake_is_refused_and_never_reaches_the_agent() {
        let agent = Agent::start(None).await;
        let p = proxy(&agent).await;
        for origin in [Some("http://evil.example"), Some("http://127.0.0.1:8080"), None] {
            let (status, _) = refused_status(browser(&p, origin, true).await);
            assert_eq!(status, StatusCode::FORBIDDEN, "{origin:?}");
        }
        assert!(agent.seen().is_empty());
    }

    #[tokio::test]
    async fn without_a_session_there_is_no_tunnel() {
        let agent = Agent::start(None).await;
        let p = proxy(&agent).await;
        let (status, _) = refused_status(browser(&p, Some(&own_origin(&p)), false).await);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(agent.seen().is_empty());
    }

    #[tokio::test]
    async fn the_agents_refusal_reaches_the_browser_with_its_status() {
        for refusal in [StatusCode::UNAUTHORIZED, StatusCode::NOT_FOUND] {
            let agent = Agent::start(Some(refusal)).await;
            let p = proxy(&agent).await;
            let (status, headers) = refused_status(browser(&p, Some(&own_origin(&p)), true).await);
            assert_eq!(status, refusal);
            // The browser is never asked for the agent's password.
            assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
            assert_eq!(agent.seen().len(), 1);
        }
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_a_bad_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let gone = tokio::net::UnixListener::bind(&socket).unwrap();
        let endpoint = crate::agent::endpoint::unix(&socket);
        let agent = Agent { endpoint, seen: Default::default(), _dir: dir };
        let p = proxy(&agent).await;
        drop(gone); // the agent's relay is gone: its socket answers nothing
        let (status, _) = refused_status(browser(&p, Some(&own_origin(&p)), true).await);
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn closing_the_workspaces_proxy_ends_its_websockets() {
        let agent = Agent::start(None).await;
        let p = proxy(&agent).await;
        let (mut ws, _) = browser(&p, Some(&own_origin(&p)), true).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "hello from the agent");
        p.stop.cancel();
        // The agent stays up and silent: only the proxy can end this connection.
        match tokio::time::timeout(WAIT, ws.next()).await.expect("the tunnel ends in time") {
            None | Some(Err(_)) => {}
            Some(Ok(m)) => panic!("expected the connection to end, got {m:?}"),
        }
    }
}
