use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::core::{Core, Paths};
use crate::pods::Podman;
use crate::store::Store;

const TOKEN: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn core() -> Arc<Core<Podman>> {
    let dir = std::env::temp_dir().join("devaipod-web-test");
    let paths = Paths { data: dir.join("data"), runtime: dir.join("run") };
    // No podman is contacted: authentication answers first (the client only wants a path
    // that exists).
    let engine = Podman::new(std::path::Path::new("/dev/null")).unwrap();
    Core::new(Config::default(), engine, Store::open_in_memory().unwrap(), paths)
}

fn app() -> (Router, Vec<(&'static str, &'static str)>) {
    tcp_app(core(), TOKEN.to_owned(), 8080, Default::default())
}

/// A concrete path for a route pattern.
fn concrete(path: &str) -> String {
    path.replace("{name}", "x").replace("{id}", "x")
}

async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

async fn body(resp: Response<Body>) -> String {
    String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
}

fn req(method: &str, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path).header(header::HOST, "127.0.0.1:8080")
}

async fn logged_in(app: &Router) -> String {
    let resp = send(
        app,
        req("POST", "/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, "http://127.0.0.1:8080")
            .body(Body::from(format!("token={TOKEN}&next=%2Fworkspaces%2Fw")))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/workspaces/w");
    let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

/// The sweep walks the router's own route table: every route but the public ones answers
/// 401 (API) or a redirect to /login (pages) without credentials, and with wrong ones.
#[tokio::test]
async fn every_route_needs_credentials() {
    let (app, table) = app();
    assert!(table.len() > 30, "the table has the API, the pages and /mcp: {table:?}");
    assert!(table.contains(&("GET", "/sets/{id}")), "the sweep covers the proposal set's page");
    for (method, path) in &table {
        let m = axum::http::Method::from_bytes(method.as_bytes()).unwrap();
        if session::is_public(&m, path) {
            continue;
        }
        let path = concrete(path);
        for auth in [None, Some("Bearer wrong".to_owned()), Some(format!("Bearer {}", "b".repeat(64)))] {
            let mut r = req(method, &path).header(header::CONTENT_TYPE, "application/json");
            if let Some(a) = &auth {
                r = r.header(header::AUTHORIZATION, a);
            }
            let resp = send(&app, r.body(Body::from("{}")).unwrap()).await;
            let s = resp.status();
            let to_login =
                s == StatusCode::SEE_OTHER && resp.headers()[header::LOCATION].to_str().unwrap().starts_with("/login");
            assert!(s == StatusCode::UNAUTHORIZED || to_login, "{method} {path} with {auth:?}: {s}");
            if path.starts_with("/api/") || path.starts_with("/mcp") {
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: API clients get 401, not a redirect");
            }
        }
        // A forged session cookie is no better.
        let forged = req(method, &path).header(header::COOKIE, format!("{}={}", session::COOKIE, "f".repeat(64)));
        let s = send(&app, forged.body(Body::from("{}")).unwrap()).await.status();
        assert!(s == StatusCode::UNAUTHORIZED || s == StatusCode::SEE_OTHER, "{method} {path} forged cookie: {s}");
    }
    for public in ["/healthz", "/login", "/static/app.css"] {
        assert_eq!(
            send(&app, req("GET", public).body(Body::empty()).unwrap()).await.status(),
            StatusCode::OK,
            "{public}"
        );
    }
}

#[tokio::test]
async fn the_right_token_reaches_the_handlers_and_every_route_exists() {
    let (app, table) = app();
    let get = |path: &str| req("GET", path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    assert_eq!(
        send(&app, get("/api/v1/tasks/t-none").body(Body::empty()).unwrap()).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, get("/api/v1/proposals?state=weird").body(Body::empty()).unwrap()).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(send(&app, get("/api/v1/tasks").body(Body::empty()).unwrap()).await.status(), StatusCode::OK);
    for (method, path) in table.iter().filter(|(m, p)| !(*m == "POST" && (*p == "/login" || *p == "/logout"))) {
        let r = req(method, &concrete(path))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json");
        let s = send(&app, r.body(Body::from("{}")).unwrap()).await.status();
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(s != StatusCode::UNAUTHORIZED && s != StatusCode::SEE_OTHER, "{method} {path}: {s}");
    }
}

/// `devaipod kube`'s route: behind the token (the sweep above), a workspace that is not
/// there is 404, a query it does not know is 400.
#[tokio::test]
async fn the_kube_route_names_what_is_wrong() {
    let (app, _) = app();
    let get = |path: &str| {
        req("GET", path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}")).body(Body::empty()).unwrap()
    };
    let resp = send(&app, get("/api/v1/workspaces/none/kube?show_secrets=true")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(send(&app, get("/api/v1/workspaces/none/kube?secrets=1")).await.status(), StatusCode::BAD_REQUEST);
    let unauth = send(&app, req("GET", "/api/v1/workspaces/none/kube").body(Body::empty()).unwrap()).await;
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_makes_a_session_that_logout_ends() {
    let (app, _) = app();
    // A wrong token: 401, the form again, no cookie.
    let wrong = send(
        &app,
        req("POST", "/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("token=nope"))
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(!wrong.headers().contains_key(header::SET_COOKIE));

    let cookie = logged_in(&app).await;
    let page = send(&app, req("GET", "/audit").header(header::COOKIE, &cookie).body(Body::empty()).unwrap()).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!page.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "no CORS");

    // /mcp takes the bearer token only, not a browser session.
    let mcp = send(&app, req("POST", "/mcp").header(header::COOKIE, &cookie).body(Body::from("{}")).unwrap()).await;
    assert_eq!(mcp.status(), StatusCode::UNAUTHORIZED);

    let out = send(
        &app,
        req("POST", "/logout")
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, "http://127.0.0.1:8080")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    let after = send(&app, req("GET", "/audit").header(header::COOKIE, &cookie).body(Body::empty()).unwrap()).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "the old cookie is dead after logout");
}

#[tokio::test]
async fn cross_origin_state_changes_are_refused() {
    let (app, _) = app();
    let cookie = logged_in(&app).await;
    let post = |origin: Option<&str>| {
        let mut r = req("POST", "/api/v1/tasks")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        r.body(Body::from(r#"{"workspace":"nope","prompt":"x"}"#)).unwrap()
    };
    assert_eq!(send(&app, post(Some("http://evil.example"))).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(send(&app, post(Some("http://127.0.0.1:9999"))).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(send(&app, post(None)).await.status(), StatusCode::FORBIDDEN);
    // Same origin reaches the handler (which finds no such workspace).
    assert_eq!(send(&app, post(Some("http://127.0.0.1:8080"))).await.status(), StatusCode::NOT_FOUND);
    // A cross-origin login is refused too (no login CSRF).
    let login = send(
        &app,
        req("POST", "/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, "http://evil.example")
            .body(Body::from(format!("token={TOKEN}")))
            .unwrap(),
    )
    .await;
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    // `next` never leads off the site.
    let resp = send(
        &app,
        req("POST", "/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={TOKEN}&next=%2F%2Fevil.example")))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.headers()[header::LOCATION], "/");
    for next in ["%2F%09%2Fevil.example", "%2F%5C%2Fevil.example", "https%3A%2F%2Fevil.example", "%2F%20%2Fx"] {
        let resp = send(
            &app,
            req("POST", "/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={TOKEN}&next={next}")))
                .unwrap(),
        )
        .await;
        assert_eq!(resp.headers()[header::LOCATION], "/", "next={next}");
    }
}

/// Calls the unix-socket API (no credentials needed there) and returns the status and JSON.
async fn api(method: &str, path: &str, content_type: Option<&str>, body: &str) -> (StatusCode, serde_json::Value) {
    let app = unix_app(core());
    let mut r = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        r = r.header(header::CONTENT_TYPE, ct);
    }
    let resp = send(&app, r.body(Body::from(body.to_owned())).unwrap()).await;
    let status = resp.status();
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{method} {path}: every answer, refusals too, is JSON"
    );
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Malformed bodies and queries answer `{"error": …}` naming the field, like every other
/// refusal (not axum's plain text), with the status a client can act on.
#[tokio::test]
async fn bad_requests_answer_json_that_names_the_field() {
    const JSON: Option<&str> = Some("application/json");
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, StatusCode, &'a str);
    let cases: [Case; 12] = [
        (
            "POST",
            "/api/v1/workspaces",
            JSON,
            r#"{"source":"/x","dryrun":true}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `dryrun`",
        ),
        (
            "POST",
            "/api/v1/proposals/p-1/approve",
            JSON,
            r#"{"action":"merge"}"#,
            StatusCode::BAD_REQUEST,
            "action: unknown action `merge`: use apply, push or draft_pr",
        ),
        ("POST", "/api/v1/proposals/p-1/approve", JSON, "{}", StatusCode::BAD_REQUEST, "missing field `action`"),
        (
            "POST",
            "/api/v1/tasks",
            JSON,
            r#"{"workspace":5,"prompt":"x"}"#,
            StatusCode::BAD_REQUEST,
            "workspace: invalid type",
        ),
        (
            "POST",
            "/api/v1/workspaces",
            JSON,
            "{not json",
            StatusCode::BAD_REQUEST,
            "the request body is not valid JSON",
        ),
        (
            "POST",
            "/api/v1/tasks",
            None,
            r#"{"workspace":"w","prompt":"x"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send `Content-Type: application/json`",
        ),
        ("GET", "/api/v1/proposals?limit=many", None, "", StatusCode::BAD_REQUEST, "invalid query string: limit"),
        ("GET", "/api/v1/proposals?limit=0", None, "", StatusCode::BAD_REQUEST, "limit must be 1 to 500"),
        ("GET", "/api/v1/tasks?state=weird", None, "", StatusCode::BAD_REQUEST, "unknown task state `weird`"),
        (
            "PUT",
            "/api/v1/workspaces/w/egress",
            JSON,
            r#"{"hosts":"pypi.org"}"#,
            StatusCode::BAD_REQUEST,
            "hosts: invalid type",
        ),
        (
            "POST",
            "/api/v1/workspaces/w/egress",
            JSON,
            r#"{"host":["a.org"]}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `host`",
        ),
        ("DELETE", "/api/v1/workspaces/w/egress?hots=a.org", None, "", StatusCode::BAD_REQUEST, "unknown field `hots`"),
    ];
    for (method, path, ct, body, status, want) in cases {
        let (got, v) = api(method, path, ct, body).await;
        let error = v["error"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{method} {path} {body}: {v}");
        assert!(error.contains(want), "{method} {path} {body}: {error}");
    }
}

#[tokio::test]
async fn proposal_listings_are_pages() {
    let (status, v) = api("GET", "/api/v1/proposals?limit=10&offset=0", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, serde_json::json!({ "proposals": [], "total": 0, "next_offset": null }));
}

/// Conflicts with the current state are 409, upstream (GitHub) failures 502.
#[test]
fn errors_map_to_statuses_a_client_can_act_on() {
    use crate::core::CoreError;
    let table = [
        (CoreError::TaskEnded { id: "t".into(), state: "completed".into() }, StatusCode::CONFLICT),
        (CoreError::Conflict("branch moved".into()), StatusCode::CONFLICT),
        (
            CoreError::ProposalClosed { id: "p".into(), state: "approved (apply)".into(), hint: String::new() },
            StatusCode::CONFLICT,
        ),
        (CoreError::Github("rate limited".into()), StatusCode::BAD_GATEWAY),
        (CoreError::Invalid("bad".into()), StatusCode::BAD_REQUEST),
        (CoreError::TaskNotFound("t".into()), StatusCode::NOT_FOUND),
        (
            CoreError::Engine(crate::pods::EngineError::Conflict {
                engine: crate::pods::engine::PODMAN,
                op: "remove".into(),
                message: "in use".into(),
            }),
            StatusCode::CONFLICT,
        ),
        (
            CoreError::Engine(crate::pods::EngineError::Timeout {
                engine: crate::pods::engine::PODMAN,
                op: "stop".into(),
                secs: 5,
            }),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            CoreError::Engine(crate::pods::EngineError::Build { message: "exit 1".into() }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            CoreError::Lifecycle { phase: "postCreateCommand", command: "make".into(), code: Some(2) },
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            CoreError::Source(crate::core::source::SourceError::Timeout { url: "u".into(), secs: 300 }),
            StatusCode::GATEWAY_TIMEOUT,
        ),
        (CoreError::Source(crate::core::source::SourceError::Relative("r".into())), StatusCode::BAD_REQUEST),
    ];
    for (e, status) in table {
        assert_eq!(error::status_of(&e), status, "{e}");
    }
}

/// The handshake's route: versions, schema, pid; the same answer with or without a daemon
/// process behind the router (then it adds the executable's copy for agents).
#[tokio::test]
async fn the_version_route_reports_versions_and_the_process() {
    let (status, v) = api("GET", "/api/v1/version", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["api"], crate::client::version::API_VERSION);
    assert_eq!(v["schema"], crate::store::SCHEMA_VERSION);
    assert_eq!(v["pid"], std::process::id());
    assert_eq!((v["exe_replaced"].as_bool(), v["supervisor"].is_null()), (Some(false), true));

    let process = process::DaemonProcess::new(Some("/data/bin/devaipod-0123456789abcdef".into()));
    let app = with_process(unix_app(core()), &process);
    let resp = send(&app, Request::get("/api/v1/version").body(Body::empty()).unwrap()).await;
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v: crate::client::DaemonVersion = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v.bridge.as_deref(), Some("/data/bin/devaipod-0123456789abcdef"));
    assert_eq!(v.exe, std::env::current_exe().unwrap().display().to_string());
    assert!(!v.exe_replaced);
}

/// `POST /api/v1/shutdown` stops a daemon (202), refuses one a service manager runs (409,
/// saying how to restart it there), and a router without a daemon behind it (503).
#[tokio::test]
async fn the_shutdown_route_stops_only_a_daemon_no_one_else_runs() {
    let (status, v) = api("POST", "/api/v1/shutdown", Some("application/json"), "{}").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("this server is not a daemon that can be stopped"))
    );

    let post = || {
        Request::post("/api/v1/shutdown")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    let supervised = process::DaemonProcess::with_supervisor(
        None,
        Some(crate::client::Supervisor {
            name: "systemd unit devaipod.service".into(),
            restart: "systemctl --user restart devaipod.service".into(),
        }),
    );
    let resp = send(&with_process(unix_app(core()), &supervised), post()).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v["error"],
        "the daemon runs under systemd unit devaipod.service: restart it with `systemctl --user restart devaipod.service`"
    );
    let stopped = tokio::time::timeout(std::time::Duration::from_millis(50), supervised.stop_requested()).await;
    assert!(stopped.is_err(), "not asked to stop");

    let process = process::DaemonProcess::with_supervisor(None, None);
    let resp = send(&with_process(unix_app(core()), &process), post()).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    tokio::time::timeout(std::time::Duration::from_secs(1), process.stop_requested()).await.expect("asked to stop");
    // The request itself held the stop until it was answered; nothing is left.
    tokio::time::timeout(std::time::Duration::from_secs(1), process.work_done()).await.expect("no work left");
}

/// The doctor over the API (GET with the daemon's environment, POST with the caller's) and
/// as a page: the same checks, every problem with its fix. Here podman is absent.
#[tokio::test]
async fn the_doctor_answers_as_json_and_as_a_page() {
    let (app, _) = app();
    let bearer = format!("Bearer {TOKEN}");
    let body = |resp: Response<Body>| async move {
        assert_eq!(resp.status(), StatusCode::OK);
        String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap()
    };
    let get =
        send(&app, req("GET", "/api/v1/doctor").header(header::AUTHORIZATION, &bearer).body(Body::empty()).unwrap());
    let report: serde_json::Value = serde_json::from_str(&body(get.await).await).unwrap();
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    let podman = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == "podman").unwrap();
    assert_eq!(podman["level"], "error");
    assert!(podman["fix"].as_str().unwrap().contains("podman system service"), "{podman}");

    let post = req("POST", "/api/v1/doctor")
        .header(header::AUTHORIZATION, &bearer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"env": {"PATH": "/bin"}}"#))
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&body(send(&app, post).await).await).unwrap();
    assert_eq!(report["checks"].as_array().unwrap().iter().filter(|c| c["id"] == "llm").count(), 1);

    let cookie = logged_in(&app).await;
    let page =
        body(send(&app, req("GET", "/doctor").header(header::COOKIE, &cookie).body(Body::empty()).unwrap()).await)
            .await;
    assert!(page.contains("<h1>Doctor</h1>") && page.contains("Something is in the way"), "{page}");
    assert!(page.contains(r#"<span class="badge bad">error</span></td><td><code>podman</code>"#), "{page}");
    assert!(page.contains("fix: start it with scripts/setup.sh"), "{page}");
    assert!(page.contains("<code>daemon</code>"), "the page has the daemon's own line: {page}");
}

/// A proposal whose content (a file name and its lines) holds markup and escape sequences:
/// the proposal page shows them as text, sends no `<script>` and no control byte.
#[tokio::test]
async fn the_proposal_page_escapes_the_agents_markup_and_control_bytes() {
    use crate::core::testing::{Turn, WS, World, wait_end};
    let w = World::new().await;
    w.up().await;
    let hostile = "<script>alert(1)</script>\n\u{1b}]0;pwned\u{7}\u{1b}[2J\n";
    w.agent.script(Turn::complete("<b>done</b>").writes("<i>x</i>.txt", hostile));
    let task = w.core.run_task(WS, "write it").await.unwrap();
    let task = wait_end(&w.core, &task.id).await;
    let p = w.core.task_detail(&task.id).await.unwrap().proposal.expect("a proposal");
    let p = w.core.proposal(&p).await.unwrap();
    assert!(w.core.diff(&p.id).await.unwrap().contains("\u{1b}]0;pwned\u{7}"), "the diff holds the bytes");

    let (app, _) = tcp_app(w.core.clone(), TOKEN.to_owned(), 8080, Default::default());
    let cookie = logged_in(&app).await;
    let resp = send(
        &app,
        req("GET", &format!("/proposals/{}", p.id)).header(header::COOKIE, &cookie).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(page.contains("+&lt;script&gt;alert(1)&lt;/script&gt;"), "the line is shown as text");
    assert!(page.contains("&lt;i&gt;x&lt;/i&gt;.txt"), "the file name is shown as text");
    assert!(!page.contains("<script>alert") && !page.contains("<i>x</i>") && !page.contains("<b>done</b>"));
    assert!(!page.bytes().any(|b| b == 0x1b || b == 0x07), "no ESC or BEL reaches the browser");
}

/// A proposal set's page: a clear 404 for an unknown set; for a set whose candidates'
/// model names and check output hold markup and escape bytes, the table shows pass and
/// fail as text, and a diff that cannot be made is said in place.
#[tokio::test]
async fn the_set_page_shows_checks_as_text_and_unknown_sets_as_404() {
    use crate::store::{CheckResult, SetRecord, SetState};
    let store = Store::open_in_memory().unwrap();
    let dir = std::env::temp_dir().join("devaipod-web-test");
    let paths = Paths { data: dir.join("data"), runtime: dir.join("run") };
    let engine = Podman::new(std::path::Path::new("/dev/null")).unwrap();
    let core = Core::new(Config::default(), engine, store.clone(), paths);
    let set = SetRecord {
        id: "s-abcde".into(),
        workspace: "w".into(),
        prompt: "make <it> so".into(),
        base: "0123456789abcdef".into(),
        check: Some("test -f ok".into()),
        state: SetState::Complete,
        round: 1,
        chosen: None,
        created_at: 1_764_072_000,
        updated_at: 1_764_072_000,
    };
    store.insert_set(set, vec!["good".into(), "<img src=x>".into()]).await.unwrap();
    for (n, exit, output) in [(1, 0, ""), (2, 1, "<script>x</script>\n\u{1b}[2Jgone")] {
        let task = format!("t-{n}");
        store.set_candidate_task("s-abcde", n, &task).await.unwrap();
        let r = CheckResult { exit_code: Some(exit), duration_ms: 1500, output: output.into(), error: None };
        assert!(store.record_check("s-abcde", n, &task, &r).await.unwrap());
    }
    let (app, _) = tcp_app(core, TOKEN.to_owned(), 8080, Default::default());
    let cookie = logged_in(&app).await;
    let get = |path: &str| req("GET", path).header(header::COOKIE, &cookie).body(Body::empty()).unwrap();

    let resp = send(&app, get("/sets/s-none")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let page = body(resp).await;
    assert!(page.contains("no proposal set `s-none` (see `devaipod sets`)"), "{page}");

    let resp = send(&app, get("/sets/s-abcde")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body(resp).await;
    assert!(page.contains(r#"<section id="set" data-fragment="/sets/s-abcde?fragment=set">"#), "{page}");
    assert!(page.contains(r#"data-set-state="complete""#) && page.contains("make &lt;it&gt; so"), "{page}");
    assert!(page.contains(r#"<tr data-candidate="1"><td>1</td><td><code>good</code></td>"#), "{page}");
    assert!(page.contains(r#"<code>&lt;img src=x&gt;</code>"#), "{page}");
    assert!(page.contains(r#"<span class="badge good">pass</span> <span class="muted">exit 0 · 1.5 s</span>"#));
    assert!(page.contains(r#"<span class="badge bad">fail</span> <span class="muted">exit 1 · 1.5 s</span>"#));
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt;\n\u{fffd}[2Jgone"), "{page}");
    assert!(!page.contains("<img src=x>") && !page.contains("<script>x"));
    assert!(!page.bytes().any(|b| b == 0x1b), "no ESC reaches the browser");
    assert!(page.contains(r#"data-api="/api/v1/sets/s-abcde/cancel""#), "a set not closed can be cancelled");
    assert!(!page.contains("/approve"), "no candidate has a proposal to approve");

    let fragment = body(send(&app, get("/sets/s-abcde?fragment=set")).await).await;
    assert!(fragment.starts_with(r#"<dl class="facts" data-set-state="complete">"#), "{fragment}");
    assert!(!fragment.contains("<html"), "a fragment is not a page");

    let page = body(send(&app, get("/sets/s-abcde?a=1&b=2")).await).await;
    assert!(
        page.contains(r#"<p class="error">candidate 1 of set s-abcde left no proposal (it is waiting)</p>"#),
        "{page}"
    );
    let page = body(send(&app, get("/sets/s-abcde?diff=9")).await).await;
    assert!(page.contains("set s-abcde has no candidate 9: its candidates are 1 to 2"), "{page}");
}
