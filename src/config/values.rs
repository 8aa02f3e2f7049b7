//! Validated scalar values of the config. Each checks itself while deserializing, so a
//! bad value is reported with the line and key it came from.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A POSIX environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut chars = s.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(EnvName(s))
        } else {
            Err(format!(
                "`{s}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
            ))
        }
    }
}

impl From<EnvName> for String {
    fn from(n: EnvName) -> String {
        n.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `ENV=podman_secret_name` from `[trusted] secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretRef {
    pub env: EnvName,
    pub secret: String,
}

impl TryFrom<String> for SecretRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let Some((env, secret)) = s.split_once('=') else {
            return Err(format!("`{s}` must have the form ENV=podman_secret_name"));
        };
        let env = EnvName::try_from(env.to_owned())?;
        let valid_secret = !secret.is_empty() && secret.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid_secret {
            return Err(format!("`{secret}` is not a podman secret name (letters, digits, `.`, `_`, `-`)"));
        }
        Ok(SecretRef { env, secret: secret.to_owned() })
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> String {
        format!("{}={}", r.env, r.secret)
    }
}

/// RFC 1123 label: 1–63 of `[a-z0-9-]`, not starting or ending with `-`. Instance ids are
/// such labels, and so are workspace names (`pods::naming` builds on this check).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The per-instance label value (`io.devaipod.instance`): a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for InstanceId {
    fn default() -> Self {
        InstanceId("default".to_owned())
    }
}

impl TryFrom<String> for InstanceId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if is_dns_label(&s) {
            Ok(InstanceId(s))
        } else {
            Err(format!(
                "`{s}` is not a valid instance id (lowercase letters, digits and `-`, at most 63, not starting or ending with `-`)"
            ))
        }
    }
}

impl From<InstanceId> for String {
    fn from(i: InstanceId) -> String {
        i.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `owner/repo` or `owner/*` as a key of `[service-gator.gh.repos]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoPattern {
    pub owner: String,
    /// `None` for `owner/*`.
    pub repo: Option<String>,
}

impl TryFrom<String> for RepoPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let part_ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        match s.split_once('/') {
            Some((owner, "*")) if part_ok(owner) => Ok(RepoPattern { owner: owner.to_owned(), repo: None }),
            Some((owner, repo)) if part_ok(owner) && part_ok(repo) => {
                Ok(RepoPattern { owner: owner.to_owned(), repo: Some(repo.to_owned()) })
            }
            _ => Err(format!("`{s}` is not `owner/repo` or `owner/*`")),
        }
    }
}

impl From<RepoPattern> for String {
    fn from(p: RepoPattern) -> String {
        format!("{}/{}", p.owner, p.repo.as_deref().unwrap_or("*"))
    }
}

pub(super) fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)?;
    match u8::try_from(n) {
        Ok(n @ 0..=8) => Ok(n),
        _ => Err(serde::de::Error::custom(format!("{n} is out of range: use 0 (no workers) to 8"))),
    }
}

pub(super) fn max_agents<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)?;
    match u8::try_from(n) {
        Ok(n @ 1..=16) => Ok(n),
        _ => Err(serde::de::Error::custom(format!("{n} is out of range: use 1 to 16 candidates"))),
    }
}

pub(super) fn max_parallel<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)?;
    match u8::try_from(n) {
        Ok(n @ 1..=16) => Ok(n),
        _ => Err(serde::de::Error::custom(format!("{n} is out of range: use 1 to 16 containers at once"))),
    }
}

pub(super) fn pool_size<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)?;
    match u8::try_from(n) {
        Ok(n @ 0..=16) => Ok(n),
        _ => Err(serde::de::Error::custom(format!("{n} is out of range: use 0 (no pool) to 16 members per image"))),
    }
}

pub(super) fn max_depth<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    match i64::deserialize(d)? {
        1 => Ok(1),
        n => Err(serde::de::Error::custom(format!("{n} is not supported: workers do not delegate further (use 1)"))),
    }
}

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<std::net::SocketAddr>()
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an address like 127.0.0.1:2222")))?;
    Ok(s)
}

pub(super) fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = (s.starts_with("http://") || s.starts_with("https://")) && s.len() > "https://".len();
    if ok { Ok(s) } else { Err(serde::de::Error::custom(format!("`{s}` is not an http:// or https:// URL"))) }
}

/// `[client] url`: see [`daemon_url`].
pub(super) fn daemon_url_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    daemon_url(&s).map(Some).map_err(serde::de::Error::custom)
}

/// The URL of a daemon's TCP API: `http://host:port` or `https://host:port`, nothing after
/// the authority but an optional `/`. Returned without that slash.
pub fn daemon_url(s: &str) -> Result<String, String> {
    let bad =
        |why: &str| format!("`{s}` is not a daemon URL ({why}): give http://host:port, e.g. http://127.0.0.1:8080");
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| bad("not http:// or https://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("only scheme, host and port: no path, query or user"));
    }
    let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("the host or the port is missing or wrong"));
    }
    Ok(s.strip_suffix('/').unwrap_or(s).to_owned())
}

pub(super) fn repo_template<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.contains("{repo}") {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!("`{s}` has no `{{repo}}` (e.g. https://github.com/{{repo}}.git)")))
    }
}

/// An entry of `[network] allow-hosts` (and of a workspace's own egress list): `host`,
/// `host:port`, `*.domain` (its subdomains, not the domain itself) or `*.domain:port`. A
/// host is a DNS name or an IPv4 literal (an IPv6 literal in brackets); names compare
/// without case. Without a port, 80 and 443 are meant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern {
    /// Lowercase; for `*.domain`, the domain.
    pub host: String,
    /// `*.domain`: subdomains of `host` only.
    pub wildcard: bool,
    /// `None`: ports 80 and 443.
    pub port: Option<u16>,
}

/// What every refusal of a host pattern says after naming the entry.
pub const HOST_PATTERN_GRAMMAR: &str = "use host, host:port, *.domain or *.domain:port (e.g. pypi.org, example.org:8443, *.github.com); without a port, 80 and 443";

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let bad = |why: &str| format!("`{s}` is not a host pattern ({why}): {HOST_PATTERN_GRAMMAR}");
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        if t.contains("://") || t.contains('/') {
            return Err(bad("a URL or path: give the host only"));
        }
        let (wildcard, rest) = match t.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, t),
        };
        // `[v6]` or `[v6]:port`; otherwise the last `:` separates the port.
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (v6, after) = r.split_once(']').ok_or_else(|| bad("an unclosed `[`"))?;
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address in brackets"));
            }
            match after {
                "" => (format!("[{}]", v6.to_ascii_lowercase()), None),
                p => (
                    format!("[{}]", v6.to_ascii_lowercase()),
                    Some(p.strip_prefix(':').ok_or_else(|| bad("text after `]`"))?),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (rest.to_ascii_lowercase(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad(&format!("port `{p}` is not 1 to 65535"))),
            },
        };
        if host.contains('*') {
            return Err(bad("`*` only as the first label, `*.domain`"));
        }
        let ip = host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok();
        if wildcard && ip {
            return Err(bad("`*.` goes before a domain name, not an address"));
        }
        if !ip {
            let labels_ok = host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            if !labels_ok {
                return Err(bad("not a DNS name"));
            }
            if wildcard && !host.contains('.') {
                return Err(bad("`*.` needs a domain with a dot, e.g. *.example.org"));
            }
        }
        Ok(HostPattern { host, wildcard, port })
    }

    /// Whether a connection to `host` (a name, an IPv4 literal or `[v6]`) on `port` is one
    /// this pattern names.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        if !port_ok {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HostPattern::parse(&s)
    }
}

impl From<HostPattern> for String {
    fn from(p: HostPattern) -> String {
        p.to_string()
    }
}

/// A key of `[network] hosts`: a DNS name (lowercased).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match HostPattern::parse(&s) {
            Ok(p)
                if !p.wildcard
                    && p.port.is_none()
                    && !p.host.starts_with('[')
                    && p.host.parse::<std::net::Ipv4Addr>().is_err() =>
            {
                Ok(HostName(p.host))
            }
            _ => Err(format!("`{s}` is not a host name (a DNS name without port or `*`, e.g. api.example.org)")),
        }
    }
}

impl From<HostName> for String {
    fn from(h: HostName) -> String {
        h.0
    }
}
