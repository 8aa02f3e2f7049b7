//! What an agent's request asks the proxy for: its method and target (as the request line
//! has them) → a [`Route`], or a [`Refusal`] with a status and a one-line reason. And the
//! LLM route's URL and header rules. Pure.

use super::AGENT_PORT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `CONNECT host:port`: a tunnel (HTTPS and anything else over TCP).
    Connect { host: String, port: u16 },
    /// `GET http://host[:port]/path`: forwarded as `path` (origin-form) to `host:port`.
    Forward { host: String, port: u16, path: String },
    /// `/llm/…` (origin-form, or absolute to the agent's own `127.0.0.1:3128`): to the LLM
    /// provider; `rest` is what follows `/llm` (path and query), appended to the base URL.
    Llm { rest: String },
}

/// A request the proxy does not serve: the status and the reason the agent reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

fn refuse(status: u16, reason: String) -> Refusal {
    Refusal { status, reason }
}

/// The route of a request with `method` and request target `target`.
pub fn route(method: &str, target: &str) -> Result<Route, Refusal> {
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = host_port(target, None)
            .ok_or_else(|| refuse(400, format!("CONNECT needs host:port, not `{}`", shown(target))))?;
        return Ok(Route::Connect { host, port });
    }
    if target.starts_with('/') {
        return match llm_rest(target) {
            Some(rest) => Ok(Route::Llm { rest }),
            None => Err(refuse(
                404,
                format!(
                    "this is devaipod's egress proxy: it serves /llm/… (the LLM), http:// URLs and CONNECT, not `{}`",
                    shown(target)
                ),
            )),
        };
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(refuse(400, "https:// goes through CONNECT (set HTTPS_PROXY), not as a URL to the proxy".into()));
    }
    if !lower.starts_with("http://") {
        return Err(refuse(400, format!("not a request target the proxy serves: `{}`", shown(target))));
    }
    let rest = &target["http://".len()..];
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.contains('@') {
        return Err(refuse(400, "credentials in a URL are not passed on".into()));
    }
    let (host, port) =
        host_port(authority, Some(80)).ok_or_else(|| refuse(400, format!("no valid host in `{}`", shown(target))))?;
    let path = path.split('#').next().unwrap_or_default();
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    if (host == "127.0.0.1" || host == "localhost")
        && port == AGENT_PORT
        && let Some(rest) = llm_rest(&path)
    {
        return Ok(Route::Llm { rest });
    }
    Ok(Route::Forward { host, port, path })
}

/// What follows `/llm` in `/llm`, `/llm/…` or `/llm?…`.
fn llm_rest(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/llm")?;
    (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')).then(|| rest.to_owned())
}

/// `host:port`, `[v6]:port`, or (with a default) `host`: the host lowercase, a port 1-65535.
pub fn host_port(s: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (v6, after) = r.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (s.to_ascii_lowercase(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0)?,
        None => default_port?,
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    (host.starts_with('[') || name_ok).then_some((host, port))
}

/// The address a host of a route names, without the brackets of an IPv6 literal.
pub fn ip_literal(host: &str) -> Option<std::net::IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// The provider URL of an LLM request: the base URL (`[agent] base-url`) and what followed
/// `/llm`.
pub fn llm_url(base: &str, rest: &str) -> String {
    format!("{}{rest}", base.trim_end_matches('/'))
}

/// Headers of one hop only, never passed on (RFC 9110 §7.6.1, and the proxy's own).
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Credentials an agent may send to the LLM route: always removed (the proxy adds the key).
pub fn is_credential(name: &str) -> bool {
    ["authorization", "api-key", "x-api-key"].iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// A target as it may appear in a reason: at most 200 characters, no control characters.
fn shown(target: &str) -> String {
    target.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(h: &str, p: u16) -> Result<Route, Refusal> {
        Ok(Route::Connect { host: h.into(), port: p })
    }
    fn forward(h: &str, p: u16, path: &str) -> Result<Route, Refusal> {
        Ok(Route::Forward { host: h.into(), port: p, path: path.into() })
    }
    fn llm(rest: &str) -> Result<Route, Refusal> {
        Ok(Route::Llm { rest: rest.into() })
    }
    fn no(status: u16, reason: &str) -> Result<Route, Refusal> {
        Err(Refusal { status, reason: reason.into() })
    }

    #[test]
    fn requests_become_routes() {
        let cases: Vec<(&str, &str, Result<Route, Refusal>)> = vec![
            ("CONNECT", "example.org:443", connect("example.org", 443)),
            ("CONNECT", "Example.ORG:8443", connect("example.org", 8443)),
            ("CONNECT", "[2001:db8::1]:443", connect("[2001:db8::1]", 443)),
            ("CONNECT", "10.0.0.1:22", connect("10.0.0.1", 22)),
            ("CONNECT", "example.org", no(400, "CONNECT needs host:port, not `example.org`")),
            ("CONNECT", "example.org:0", no(400, "CONNECT needs host:port, not `example.org:0`")),
            ("CONNECT", "example.org:99999", no(400, "CONNECT needs host:port, not `example.org:99999`")),
            ("CONNECT", "exa mple.org:443", no(400, "CONNECT needs host:port, not `exa mple.org:443`")),
            ("CONNECT", ":443", no(400, "CONNECT needs host:port, not `:443`")),
            ("GET", "http://example.org/a/b?c=1", forward("example.org", 80, "/a/b?c=1")),
            ("GET", "http://example.org:8080", forward("example.org", 8080, "/")),
            ("GET", "HTTP://Example.org?q", forward("example.org", 80, "/?q")),
            ("POST", "http://example.org/x#frag", forward("example.org", 80, "/x")),
            ("GET", "http://user:pw@example.org/", no(400, "credentials in a URL are not passed on")),
            (
                "GET",
                "https://example.org/",
                no(400, "https:// goes through CONNECT (set HTTPS_PROXY), not as a URL to the proxy"),
            ),
            ("GET", "ftp://example.org/", no(400, "not a request target the proxy serves: `ftp://example.org/`")),
            ("GET", "*", no(400, "not a request target the proxy serves: `*`")),
            ("POST", "/llm/chat/completions", llm("/chat/completions")),
            ("GET", "/llm/models?x=1", llm("/models?x=1")),
            ("GET", "/llm", llm("")),
            ("POST", "http://127.0.0.1:3128/llm/chat/completions", llm("/chat/completions")),
            ("POST", "http://localhost:3128/llm/chat/completions", llm("/chat/completions")),
            ("GET", "http://127.0.0.1:3128/other", forward("127.0.0.1", 3128, "/other")),
            ("GET", "http://127.0.0.1:8080/llm/x", forward("127.0.0.1", 8080, "/llm/x")),
            (
                "GET",
                "/llmx",
                no(
                    404,
                    "this is devaipod's egress proxy: it serves /llm/… (the LLM), http:// URLs and CONNECT, not `/llmx`",
                ),
            ),
            (
                "GET",
                "/",
                no(
                    404,
                    "this is devaipod's egress proxy: it serves /llm/… (the LLM), http:// URLs and CONNECT, not `/`",
                ),
            ),
        ];
        for (method, target, want) in cases {
            assert_eq!(route(method, target), want, "{method} {target}");
        }
        let long = format!("/{}\x07", "a".repeat(300));
        let r = route("GET", &long).unwrap_err();
        assert!(r.reason.len() < 320 && !r.reason.contains('\x07'), "{}", r.reason);
    }

    #[test]
    fn the_llm_url_appends_the_rest_to_the_base() {
        assert_eq!(llm_url("https://api.example/v1", "/chat/completions"), "https://api.example/v1/chat/completions");
        assert_eq!(llm_url("https://api.example/v1/", "/models?a=b"), "https://api.example/v1/models?a=b");
        assert_eq!(llm_url("http://127.0.0.1:9/v1", ""), "http://127.0.0.1:9/v1");
    }

    #[test]
    fn credentials_and_hop_headers_never_pass() {
        for h in ["Authorization", "api-key", "X-API-Key"] {
            assert!(is_credential(h), "{h}");
        }
        for h in ["Connection", "proxy-authorization", "Transfer-Encoding", "upgrade", "Keep-Alive"] {
            assert!(is_hop_by_hop(h), "{h}");
        }
        for h in ["content-type", "accept", "x-request-id", "authorization-extra"] {
            assert!(!is_credential(h) && !is_hop_by_hop(h), "{h}");
        }
        assert_eq!(ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(ip_literal("127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip_literal("example.org"), None);
    }
}
