//! The LLM provider as the agent reaches it: [`probe`] asks an OpenAI-compatible endpoint
//! for its model list (`GET <base-url>/models`), with a short timeout, and reports what
//! happened as data ([`Probe`]). `devaipod probe-llm` runs it inside a container on the
//! agent's network path and prints the report as JSON; `core::doctor` judges it. Nothing
//! here decides whether the answer is good.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Set by devaipod's egress proxy on an answer of its LLM route: the provider's base URL
/// (`[agent] base-url`) the request went to. A probe through the proxy reports that URL.
pub const UPSTREAM_HEADER: &str = "x-devaipod-llm-upstream";
/// Set by the egress proxy when it could not reach the provider at all, with the cause in a
/// few words: the probe reports no answer, not the proxy's own 502.
pub const UNREACHABLE_HEADER: &str = "x-devaipod-llm-unreachable";

/// The longest model list read (a provider with thousands of models lists them in well under this).
const MAX_BODY: usize = 1 << 20;
/// At most this many model ids are kept.
const MAX_MODELS: usize = 1000;

/// What asking `<base_url>/models` came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The base URL asked (`[agent] base-url`, as the agent has it).
    pub base_url: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The model ids of an OpenAI-compatible `{"data": [{"id": …}]}` answer.
    pub models: Option<Vec<String>>,
    /// Why there was no answer (`connection refused`, `no answer within 5 s`, …).
    pub error: Option<String>,
    /// How long it took.
    pub millis: u64,
}

impl Probe {
    /// Whether anything answered at that address (any HTTP status).
    pub fn reached(&self) -> bool {
        self.status.is_some()
    }
}

/// `GET <base_url>/models` with `key` as the bearer token (as the agent sends it), within
/// `timeout` (connecting, answering and reading). Never fails: a failure is in the report.
pub async fn probe(base_url: &str, key: Option<&str>, timeout: Duration) -> Probe {
    probe_with(reqwest::Client::builder(), base_url, key, timeout).await
}

/// The same from this host, as devaipod's egress proxy reaches the provider: no proxy of
/// the environment, and the URL's host connected at `address` when one is given (the
/// daemon's own address for it, e.g. `host.containers.internal` at loopback).
pub async fn probe_from_host(
    base_url: &str,
    key: Option<&str>,
    timeout: Duration,
    address: Option<std::net::IpAddr>,
) -> Probe {
    let mut builder = reqwest::Client::builder().no_proxy();
    if let (Some(ip), Some(host)) =
        (address, reqwest::Url::parse(base_url).ok().and_then(|u| u.host_str().map(str::to_owned)))
    {
        builder = builder.resolve(&host, std::net::SocketAddr::new(ip, 0));
    }
    probe_with(builder, base_url, key, timeout).await
}

async fn probe_with(builder: reqwest::ClientBuilder, base_url: &str, key: Option<&str>, timeout: Duration) -> Probe {
    let started = Instant::now();
    let mut report = Probe { base_url: base_url.to_owned(), status: None, models: None, error: None, millis: 0 };
    let url = models_url(base_url);
    let client = match builder.timeout(timeout).connect_timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(format!("cannot make an HTTP client: {e}"));
            return report;
        }
    };
    let mut req = client.get(&url).header(reqwest::header::ACCEPT, "application/json");
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        req = req.bearer_auth(key);
    }
    match req.send().await {
        Ok(mut resp) => {
            let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(upstream) = header(UPSTREAM_HEADER) {
                report.base_url = upstream;
            }
            if let Some(why) = header(UNREACHABLE_HEADER) {
                report.error = Some(why);
                report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                return report;
            }
            report.status = Some(resp.status().as_u16());
            let mut body = Vec::new();
            let complete = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_BODY => body.extend_from_slice(&chunk),
                    Ok(Some(_)) | Err(_) => break false,
                    Ok(None) => break true,
                }
            };
            if complete && resp.status().is_success() {
                report.models = model_ids(&body);
            }
        }
        Err(e) => report.error = Some(cause(&e, timeout)),
    }
    report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

/// `<base>/models`, one slash between.
pub fn models_url(base_url: &str) -> String {
    format!("{}/models", base_url.trim_end_matches('/'))
}

/// The ids of an OpenAI-compatible model list.
fn model_ids(body: &[u8]) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = v.get("data")?.as_array()?;
    Some(data.iter().filter_map(|m| m.get("id")?.as_str().map(str::to_owned)).take(MAX_MODELS).collect())
}

/// Why a request got no answer, in a few words: the innermost cause (`connection refused`),
/// a name that does not resolve, or the timeout.
/// Why a request got no answer, in a few words (`connection refused`, `no answer within 5 s`).
pub fn cause(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs());
    }
    let mut innermost: &dyn std::error::Error = e;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    plain_cause(&innermost.to_string())
}

/// An OS or resolver message made short: `Connection refused (os error 111)` →
/// `connection refused`.
fn plain_cause(message: &str) -> String {
    let m = message.trim();
    let m = match m.find(" (os error") {
        Some(i) => &m[..i],
        None => m,
    };
    if m.contains("lookup address") || m.contains("Name or service not known") || m.contains("No address associated") {
        return "the host name does not resolve".to_owned();
    }
    let mut chars = m.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "no answer".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_and_causes_are_read_plainly() {
        assert_eq!(models_url("http://h:1/v1/"), "http://h:1/v1/models");
        assert_eq!(models_url("http://h:1/v1"), "http://h:1/v1/models");
        let body = br#"{"object":"list","data":[{"id":"a","object":"model"},{"id":"b"},{"x":1}]}"#;
        assert_eq!(model_ids(body), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(model_ids(b"<html>"), None);
        assert_eq!(model_ids(br#"{"models":[]}"#), None);
        assert_eq!(plain_cause("Connection refused (os error 111)"), "connection refused");
        assert_eq!(
            plain_cause("failed to lookup address information: Name or service not known"),
            "the host name does not resolve"
        );
        assert_eq!(plain_cause(""), "no answer");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_cause_and_a_server_is_a_status() {
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let p = probe(&format!("http://127.0.0.1:{port}/v1"), None, Duration::from_secs(2)).await;
        assert_eq!((p.status, p.error.as_deref()), (None, Some("connection refused")), "{p:?}");
        assert!(!p.reached());

        let app = axum::Router::new().route(
            "/v1/models",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                match headers.get("authorization").and_then(|h| h.to_str().ok()) {
                    Some("Bearer k1") => Ok(axum::Json(serde_json::json!({"data": [{"id": "m1"}]}))),
                    _ => Err(axum::http::StatusCode::UNAUTHORIZED),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let base = format!("http://{addr}/v1");
        let ok = probe(&base, Some("k1"), Duration::from_secs(2)).await;
        assert_eq!((ok.status, ok.models.clone(), ok.error.clone()), (Some(200), Some(vec!["m1".to_owned()]), None));
        let refused = probe(&base, Some("wrong"), Duration::from_secs(2)).await;
        assert_eq!((refused.status, refused.models), (Some(401), None));
        server.abort();
    }
}
