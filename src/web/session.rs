//! Who may use the TCP listener: a bearer token (scripts, MCP clients) or a browser
//! session made by logging in with that token. Pure checks (cookie parsing, origin rules,
//! public routes) are separate from the middleware, so they are unit-tested.
//!
//! - `/login`, `/healthz` and the login page's stylesheet are public; everything else needs
//!   credentials. A browser asking for a page without them is sent to `/login`; anything
//!   else gets `401`.
//! - The session cookie is random (256 bits), `HttpOnly`, `SameSite=Strict`; only its hash
//!   is stored. Sessions last [`SESSION_SECS`]; logout deletes it.
//! - A state change (any method but GET/HEAD/OPTIONS) with a cookie must come from the
//!   page's own origin (`Origin` equal to `http://<Host>`), else `403`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use dashmap::DashMap;
use sha2::Digest;

use super::auth::constant_time_eq;
use crate::store::{Sessions, now};

pub const COOKIE: &str = "devaipod_session";
/// How long a login lasts.
pub const SESSION_SECS: i64 = 12 * 3600;

/// Routes anyone may call.
pub fn is_public(method: &Method, path: &str) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    matches!(path, "/healthz" | "/static/app.css" if read) || (path == "/login" && (read || method == Method::POST))
}

/// The value of our cookie in a `Cookie` header.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE && !v.is_empty()).then(|| v.to_owned())
    })
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Whether a state-changing request comes from the page's own origin: `Origin` (which
/// browsers send on every POST, DELETE, fetch and form) must be `http://<Host>`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(h), Some(o)) => o == format!("http://{h}"),
        _ => false,
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn hash(value: &str) -> String {
    format!("{:x}", sha2::Sha256::digest(value.as_bytes()))
}

/// The `Set-Cookie` value for a new session, or (with `None`) one that clears it.
pub fn set_cookie(value: Option<&str>) -> HeaderValue {
    let s = match value {
        Some(v) => format!("{COOKIE}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}"),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The login token and the sessions it made.
#[derive(Clone)]
pub struct WebAuth {
    token: Arc<String>,
    store: Sessions,
    /// Hash → expiry, of sessions seen valid (the store stays the truth).
    cache: Arc<DashMap<String, i64>>,
}

impl WebAuth {
    pub fn new(token: Arc<String>, store: Sessions) -> WebAuth {
        WebAuth { token, store, cache: Arc::new(DashMap::new()) }
    }

    pub fn token_ok(&self, given: &str) -> bool {
        constant_time_eq(given.trim().as_bytes(), self.token.as_bytes())
    }

    /// A new session; returns the cookie value.
    pub async fn start_session(&self) -> Result<String, crate::store::StoreError> {
        let value = crate::core::random_token();
        let expires = now() + SESSION_SECS;
        self.store.insert(&hash(&value), expires).await?;
        self.cache.insert(hash(&value), expires);
        Ok(value)
    }

    pub async fn session_ok(&self, value: &str) -> bool {
        let h = hash(value);
        let expires = match self.cache.get(&h).map(|e| *e) {
            Some(e) => Some(e),
            None => self.store.expiry(&h).await.ok().flatten(),
        };
        match expires {
            Some(e) if e > now() => {
                self.cache.insert(h, e);
                true
            }
            Some(_) => {
                self.cache.remove(&h);
                let _ = self.store.delete(&h).await;
                false
            }
            None => false,
        }
    }

    pub async fn end_session(&self, value: &str) {
        let h = hash(value);
        self.cache.remove(&h);
        let _ = self.store.delete(&h).await;
    }

    /// Bearer token or a valid session cookie.
    pub async fn authenticated(&self, headers: &HeaderMap) -> Authn {
        if let Some(b) = bearer(headers) {
            return if self.token_ok(b) { Authn::Bearer } else { Authn::None };
        }
        match cookie_value(headers) {
            Some(c) if self.session_ok(&c).await => Authn::Session,
            _ => Authn::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authn {
    Bearer,
    Session,
    None,
}

/// The answer to a request without credentials: pages redirect to the login form.
pub fn unauthenticated(method: &Method, path: &str, headers: &HeaderMap) -> Response {
    let wants_html = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    let is_page = !path.starts_with("/api/") && !path.starts_with("/mcp");
    if method == Method::GET && (wants_html || is_page) {
        let next = if path == "/" { String::new() } else { format!("?next={}", crate::encode::enc(path)) };
        return Redirect::to(&format!("/login{next}")).into_response();
    }
    let body = axum::Json(serde_json::json!({
        "error": "not logged in: log in at /login, or send `Authorization: Bearer <token>` (see `devaipod token`)"
    }));
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
}

pub fn cross_origin() -> Response {
    let body = axum::Json(serde_json::json!({
        "error": "cross-origin request refused: state changes must come from devaipod's own pages"
    }));
    (StatusCode::FORBIDDEN, body).into_response()
}

/// The TCP listener's gate: public routes pass; `/mcp` takes the bearer token only;
/// everything else the token or a session (with same-origin state changes).
pub async fn require_auth(State(auth): State<WebAuth>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if is_public(&method, &path) {
        return next.run(req).await;
    }
    match auth.authenticated(req.headers()).await {
        Authn::Bearer => next.run(req).await,
        Authn::Session if path.starts_with("/mcp") => unauthenticated(&method, &path, req.headers()),
        Authn::Session if !is_safe(&method) && !same_origin(req.headers()) => cross_origin(),
        Authn::Session => next.run(req).await,
        Authn::None => unauthenticated(&method, &path, req.headers()),
    }
}

/// Headers every TCP answer carries: a strict Content-Security-Policy (pages may set their
/// own, e.g. to frame the agent UI), no sniffing, no referrer, no framing by others.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // `same-origin`, not `no-referrer`: with the latter browsers send `Origin: null` on form posts.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn public_routes_are_few() {
        assert!(is_public(&Method::GET, "/login") && is_public(&Method::POST, "/login"));
        assert!(is_public(&Method::GET, "/healthz") && is_public(&Method::GET, "/static/app.css"));
        for (m, p) in [
            (Method::GET, "/"),
            (Method::GET, "/static/app.js"),
            (Method::POST, "/healthz"),
            (Method::DELETE, "/login"),
            (Method::GET, "/login/x"),
            (Method::GET, "/api/v1/workspaces"),
        ] {
            assert!(!is_public(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value(&headers(&[("cookie", "a=1; devaipod_session=abc; b=2")])), Some("abc".into()));
        assert_eq!(cookie_value(&headers(&[("cookie", "a=1"), ("cookie", "devaipod_session=x")])), Some("x".into()));
        assert_eq!(cookie_value(&headers(&[("cookie", "devaipod_session=")])), None);
        assert_eq!(cookie_value(&headers(&[("cookie", "xdevaipod_session=abc")])), None);
        assert_eq!(cookie_value(&headers(&[])), None);
    }

    #[test]
    fn origin_rules() {
        let h = |o: &str| headers(&[("host", "127.0.0.1:8080"), ("origin", o)]);
        assert!(same_origin(&h("http://127.0.0.1:8080")));
        assert!(!same_origin(&h("http://evil.example")));
        assert!(!same_origin(&h("http://127.0.0.1:8081")));
        assert!(!same_origin(&h("null")));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")])), "no Origin: refused");
    }

    #[tokio::test]
    async fn sessions_expire_and_end() {
        let store = crate::store::Store::open_in_memory().unwrap().sessions();
        let auth = WebAuth::new(Arc::new("t".repeat(64)), store.clone());
        assert!(auth.token_ok(&"t".repeat(64)) && !auth.token_ok("t") && !auth.token_ok(&"u".repeat(64)));
        let v = auth.start_session().await.unwrap();
        assert!(auth.session_ok(&v).await);
        assert!(!auth.session_ok("forged").await);
        assert!(!auth.session_ok(&v[..v.len() - 1]).await);
        // Expired in the store (and in the cache): refused and removed.
        store.insert(&hash("old"), now() - 1).await.unwrap();
        assert!(!auth.session_ok("old").await);
        assert_eq!(store.expiry(&hash("old")).await.unwrap(), None);
        auth.cache.insert(hash(&v), now() - 1);
        assert!(!auth.session_ok(&v).await, "an expired cached session is refused");
        let w = auth.start_session().await.unwrap();
        auth.end_session(&w).await;
        assert!(!auth.session_ok(&w).await, "logged out");
        // A new auth (a restarted daemon) still knows live sessions: they are in the store.
        let z = auth.start_session().await.unwrap();
        let again = WebAuth::new(Arc::new("t".repeat(64)), store);
        assert!(again.session_ok(&z).await);
    }
}
