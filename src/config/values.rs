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
        Ok(n @ 1..=8) => Ok(n),
        _ => Err(serde::de::Error::custom(format!("{n} is out of range: use 1 to 8"))),
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

pub(super) fn repo_template<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.contains("{repo}") {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!("`{s}` has no `{{repo}}` (e.g. https://github.com/{{repo}}.git)")))
    }
}
