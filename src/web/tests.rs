use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::core::{Core, Paths};
use crate::pods::Podman;
use crate::store::Store;

fn core() -> Arc<Core<Podman>> {
    let dir = std::env::temp_dir().join("devaipod-web-test");
    let paths = Paths { data: dir.join("data"), runtime: dir.join("run") };
    // No podman is contacted: authentication answers first (the client only wants a path
    // that exists).
    let engine = Podman::new(std::path::Path::new("/dev/null")).unwrap();
    Core::new(Config::default(), engine, Store::open_in_memory().unwrap(), paths)
}

async fn status(app: &Router, method: &str, path: &str, token: Option<&str>) -> StatusCode {
    let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    app.clone().oneshot(req.body(Body::from("{}")).unwrap()).await.unwrap().status()
}

#[tokio::test]
async fn every_api_route_needs_the_token_over_tcp() {
    let app = tcp_app(core(), "a".repeat(64), 8080, Default::default());
    for (method, path) in API_ROUTES {
        assert_eq!(status(&app, method, path, None).await, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        assert_eq!(
            status(&app, method, path, Some("wrong")).await,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
        assert_eq!(
            status(&app, method, path, Some(&"b".repeat(64))).await,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    assert_eq!(status(&app, "GET", "/healthz", None).await, StatusCode::OK);
}

#[tokio::test]
async fn the_right_token_reaches_the_handlers() {
    let app = tcp_app(core(), "a".repeat(64), 8080, Default::default());
    let t = "a".repeat(64);
    assert_eq!(status(&app, "GET", "/api/v1/tasks/t-none", Some(&t)).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&app, "GET", "/api/v1/proposals?state=weird", Some(&t)).await, StatusCode::BAD_REQUEST);
    assert_eq!(status(&app, "GET", "/api/v1/tasks", Some(&t)).await, StatusCode::OK);
    // The route table and API_ROUTES agree: no listed route is unknown to the router.
    for (method, path) in API_ROUTES {
        let s = status(&app, method, path, Some(&t)).await;
        assert!(
            s != StatusCode::METHOD_NOT_ALLOWED && !(s == StatusCode::NOT_FOUND && path.ends_with("/x/exec")),
            "{method} {path}: {s}"
        );
    }
}
