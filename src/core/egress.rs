//! Egress policy in core: the hosts a workspace's agent may reach beyond `[network]
//! allow-hosts` (stored per workspace, changed through every surface), and the LLM upstream
//! the egress proxy forwards the agent's `/llm/…` requests to, with the workspace's key.
//! The grammar of a host pattern is `config::HostPattern`; deciding one connection is the
//! proxy's (`egress::policy::decide`), over what this returns.

use serde::Serialize;

use super::{Core, CoreError};
use crate::config::{HostPattern, NetworkEgress};
use crate::pods::Engine;

/// What a workspace's agent may reach, as `devaipod egress show` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EgressView {
    pub workspace: String,
    /// `allowlist` (the LLM endpoint and the hosts below) or `open` (any public host).
    pub mode: String,
    /// This workspace's own host patterns (given at `up` or with `egress allow`).
    pub hosts: Vec<String>,
    /// Host patterns every workspace has: `[network] allow-hosts` in devaipod.toml.
    pub from_config: Vec<String>,
    /// The LLM endpoint (`[agent] base-url`), always reachable at `http://127.0.0.1:3128/llm/`.
    pub llm: String,
}

/// Where the proxy sends the agent's `/llm/…` requests, and the key it adds. `Debug` never
/// shows the key.
#[derive(Clone)]
pub struct LlmUpstream {
    /// `[agent] base-url`, e.g. `https://api.example/v1`.
    pub base_url: String,
    /// The workspace's LLM key, if it has one.
    pub key: Option<String>,
}

impl std::fmt::Debug for LlmUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmUpstream")
            .field("base_url", &self.base_url)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How long a failed read of a workspace's LLM key is remembered.
const KEY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Parses host patterns given by a caller; the error names the bad one and the grammar.
pub fn parse_host_patterns(patterns: &[String]) -> Result<Vec<HostPattern>, CoreError> {
    patterns.iter().map(|p| HostPattern::parse(p).map_err(CoreError::Invalid)).collect()
}

impl<E: Engine> Core<E> {
    pub async fn egress_view(&self, ws: &str) -> Result<EgressView, CoreError> {
        self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        Ok(EgressView {
            workspace: ws.to_owned(),
            mode: match self.config.network.egress {
                NetworkEgress::Open => "open",
                NetworkEgress::Allowlist => "allowlist",
            }
            .to_owned(),
            hosts: self.store.egress_hosts(ws).await?,
            from_config: self.config.network.allow_hosts.iter().map(ToString::to_string).collect(),
            llm: self.config.agent.base_url.clone(),
        })
    }

    /// Adds host patterns to the workspace's own list (those it has already stay).
    pub async fn egress_allow(&self, ws: &str, patterns: &[String]) -> Result<EgressView, CoreError> {
        self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        let parsed = parse_host_patterns(patterns)?;
        if parsed.is_empty() {
            return Err(CoreError::Invalid("give at least one host pattern (e.g. pypi.org, *.github.com)".into()));
        }
        let canonical: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        self.store.add_egress_hosts(ws, &canonical).await?;
        self.egress_view(ws).await
    }

    /// Replaces the workspace's own list (empty: only `[network] allow-hosts` and the LLM).
    pub async fn egress_set(&self, ws: &str, patterns: &[String]) -> Result<EgressView, CoreError> {
        self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        let canonical: Vec<String> = parse_host_patterns(patterns)?.iter().map(ToString::to_string).collect();
        self.store.set_egress_hosts(ws, &canonical).await?;
        self.egress_view(ws).await
    }

    /// Takes a pattern off the workspace's own list.
    pub async fn egress_remove(&self, ws: &str, pattern: &str) -> Result<EgressView, CoreError> {
        self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        let parsed = HostPattern::parse(pattern).map_err(CoreError::Invalid)?;
        if !self.store.remove_egress_host(ws, &parsed.to_string()).await? {
            let have = self.store.egress_hosts(ws).await?;
            let from_config = self.config.network.allow_hosts.contains(&parsed);
            return Err(CoreError::Invalid(format!(
                "{ws} has no host pattern `{parsed}` of its own (it has: {}){}",
                if have.is_empty() { "none".to_owned() } else { have.join(", ") },
                if from_config {
                    format!("; `{parsed}` is in [network] allow-hosts of {}", self.config.where_to_edit())
                } else {
                    String::new()
                }
            )));
        }
        self.egress_view(ws).await
    }

    /// The workspace's own host patterns, for the proxy's decision (read at each request,
    /// so a change applies at once). A stored pattern that no longer parses allows nothing.
    pub async fn egress_hosts(&self, ws: &str) -> Result<Vec<HostPattern>, CoreError> {
        Ok(self.store.egress_hosts(ws).await?.iter().filter_map(|p| HostPattern::parse(p).ok()).collect())
    }

    /// Where the workspace's LLM requests go, and the key the proxy adds: the workspace's
    /// own secret `devaipod-<ws>-llm-key` (made at `up` from `[agent] api-key-env`) if it
    /// exists, else `[agent] api-key-secret`, else none. Read once through the engine, then
    /// kept in memory (and `up` remembers a key it had from the caller's environment).
    pub async fn llm_upstream(&self, ws: &str) -> Result<LlmUpstream, CoreError> {
        let base_url = self.config.agent.base_url.clone();
        // Known (a key, or none at all): no podman call on an agent's request.
        if let Some(key) = self.llm_keys.get(ws) {
            return Ok(LlmUpstream { base_url, key: key.clone() });
        }
        let own = self.ws_name(ws).map(|n| format!("{}-llm-key", n.pod()))?;
        let secret =
            if self.engine.secret_exists(&own).await? { Some(own) } else { self.config.agent.api_key_secret.clone() };
        let Some(secret) = secret else {
            self.llm_keys.insert(ws.to_owned(), None);
            return Ok(LlmUpstream { base_url, key: None });
        };
        // After a failure, a minute before podman is asked again (each read runs a container).
        if let Some(failed) = self.llm_key_failures.get(ws)
            && failed.0.elapsed() < KEY_RETRY_AFTER
        {
            return Err(CoreError::Io(failed.1.clone()));
        }
        match super::read_secret(&self.engine, &self.config, &self.paths, &secret).await {
            Ok(key) => {
                self.llm_key_failures.remove(ws);
                self.llm_keys.insert(ws.to_owned(), Some(key.clone()));
                Ok(LlmUpstream { base_url, key: Some(key) })
            }
            Err(e) => {
                let why = format!("cannot read the LLM key from podman secret {secret}: {e}");
                self.llm_key_failures.insert(ws.to_owned(), (std::time::Instant::now(), why.clone()));
                Err(CoreError::Io(why))
            }
        }
    }

    /// Keeps the LLM key `up` had from the caller's environment (no podman read later).
    pub(super) fn remember_llm_key(&self, ws: &str, key: &str) {
        self.llm_keys.insert(ws.to_owned(), Some(key.to_owned()));
    }

    pub(super) fn forget_llm_key(&self, ws: &str) {
        self.llm_keys.remove(ws);
        self.llm_key_failures.remove(ws);
    }
}
