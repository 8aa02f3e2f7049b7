//! The typed shape of `devaipod.toml`. Every section has `deny_unknown_fields` so that a
//! typo is an error, and every field has a default so that a missing key is not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::values::{EnvName, HostName, HostPattern, InstanceId, RepoPattern, SecretRef};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Image for workspaces whose repository has no devcontainer.json.
    pub default_image: String,
    /// Label value that separates this devaipod's pods from another's (and from test runs).
    pub instance: InstanceId,
    /// Environment for both containers (workspace and agent).
    pub env: EnvSection,
    /// Credentials for the human's side only; never given to an agent.
    pub trusted: Trusted,
    #[serde(rename = "service-gator")]
    pub service_gator: ServiceGator,
    pub orchestration: Orchestration,
    pub fanout: Fanout,
    /// Warm pods started ahead of `up`.
    pub pool: PoolSection,
    pub ssh: Ssh,
    pub network: Network,
    /// The coding agent and its LLM provider.
    pub agent: AgentConfig,
    /// `[agents.<name>]`: other agents a workspace may choose (`up --agent <name>`).
    pub agents: BTreeMap<String, AgentPreset>,
    /// How the CLI reaches a daemon that is not this user's local one (a daemon in a
    /// container, on another machine).
    pub client: ClientSection,
    /// The container engine the daemon runs pods on.
    pub engine: EngineSection,
    /// The file this config was read from, or would be (the default location when it does
    /// not exist); set by whoever loads it, for messages that name where to change a key.
    /// Not a key of the file.
    #[serde(skip)]
    pub file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_image: super::DEFAULT_IMAGE.to_owned(),
            instance: InstanceId::default(),
            env: EnvSection::default(),
            trusted: Trusted::default(),
            service_gator: ServiceGator::default(),
            orchestration: Orchestration::default(),
            fanout: Fanout::default(),
            pool: PoolSection::default(),
            ssh: Ssh::default(),
            network: Network::default(),
            agent: AgentConfig::default(),
            agents: BTreeMap::new(),
            client: ClientSection::default(),
            engine: EngineSection::default(),
            file: None,
        }
    }
}

impl Config {
    /// Where a key of this config is changed, for messages: the file it came from, else
    /// the default location.
    pub fn where_to_edit(&self) -> String {
        match self.file.clone().or_else(super::default_path) {
            Some(p) => p.display().to_string(),
            None => "devaipod.toml".to_owned(),
        }
    }
}

/// `[env]` and `[trusted.env]`: host variables passed through by name, plus fixed values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvSection {
    /// Names of host environment variables copied in when set on the host.
    pub allowlist: Vec<EnvName>,
    /// Fixed variables.
    pub vars: BTreeMap<EnvName, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Trusted {
    /// Environment for the workspace container only.
    pub env: EnvSection,
    /// `ENV=podman_secret_name`: podman secrets exposed as `ENV` in the workspace container.
    pub secrets: Vec<SecretRef>,
    /// Host environment variable with the GitHub token gator uses (never given to a pod).
    pub github_token_env: Option<EnvName>,
    /// File (mode 0600) with the GitHub token gator uses; read by the daemon only.
    pub github_token_file: Option<std::path::PathBuf>,
    /// Podman secret with the GitHub token; read by the daemon (never mounted into a pod).
    pub github_token_secret: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceGator {
    pub gh: ServiceGatorGh,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceGatorGh {
    /// Read access to every repository the token can see.
    pub read: bool,
    /// Per-repository permissions, keyed by `owner/repo` or `owner/*`.
    pub repos: BTreeMap<RepoPattern, RepoPermissions>,
    /// Host of GitHub URLs given as sources (`https://<host>/owner/repo[/issues/N]`).
    pub host: String,
    /// Base URL of the GitHub REST API.
    #[serde(deserialize_with = "super::values::http_url")]
    pub api_url: String,
    /// Where a repository's git remote is; `{repo}` stands for `owner/repo`.
    #[serde(deserialize_with = "super::values::repo_template")]
    pub git_url: String,
}

impl Default for ServiceGatorGh {
    fn default() -> Self {
        ServiceGatorGh {
            read: false,
            repos: BTreeMap::new(),
            host: "github.com".into(),
            api_url: "https://api.github.com".into(),
            git_url: "https://github.com/{repo}.git".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepoPermissions {
    pub read: bool,
    pub create_draft: bool,
    pub push_new_branch: bool,
    pub pending_review: bool,
    pub write: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Orchestration {
    /// `false` turns delegation off (as `max-workers = 0`).
    pub enabled: bool,
    /// Worker agents a task may delegate to at once, per workspace (0 to 8; 0: none).
    #[serde(deserialize_with = "super::values::workers")]
    pub max_workers: u8,
    /// A worker container with no task for this long is stopped (it starts again when
    /// needed).
    pub worker_idle_secs: u64,
    /// A worker's task fails when it has not finished in this time (and never outlives its
    /// owner's deadline).
    pub worker_timeout_secs: u64,
    /// What gator lets a worker do: `none`, `readonly` (read tools only; the default) or
    /// `inherit` (the workspace's scopes).
    pub worker_gator: WorkerGator,
    /// How deep delegation goes: 1, an owner's workers do not delegate (the only depth
    /// supported).
    #[serde(deserialize_with = "super::values::max_depth")]
    pub max_depth: u8,
}

impl Default for Orchestration {
    fn default() -> Self {
        Orchestration {
            enabled: true,
            max_workers: 2,
            worker_idle_secs: 300,
            worker_timeout_secs: 900,
            worker_gator: WorkerGator::Readonly,
            max_depth: 1,
        }
    }
}

impl Orchestration {
    /// How many workers a task may have (0 when delegation is off).
    pub fn limit(&self) -> u32 {
        if self.enabled { u32::from(self.max_workers) } else { 0 }
    }
}

/// `[fanout]`: one task given to several candidate agents at once (a proposal set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Fanout {
    /// The most candidates one set may have (1 to 16).
    #[serde(deserialize_with = "super::values::max_agents")]
    pub max_agents: u8,
    /// The most candidate containers running at once, over all sets of this daemon (1 to
    /// 16); the others wait their turn.
    #[serde(deserialize_with = "super::values::max_parallel")]
    pub max_parallel: u8,
    /// A command run in each candidate's sandbox (in its clone, with its walls) after it
    /// finished, e.g. `cargo test -q`: its exit code, duration and last lines show in the
    /// set.
    pub check: Option<String>,
    /// The check fails when it has not ended in this time.
    pub check_timeout_secs: u64,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout { max_agents: 4, max_parallel: 4, check: None, check_timeout_secs: 600 }
    }
}

/// `[pool]`: pods whose agent is already running, kept warm so that `up` takes one instead
/// of starting a pod (see docs/pool.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PoolSection {
    /// Members kept warm per image (0, the default: no pool; at most 16).
    #[serde(deserialize_with = "super::values::pool_size")]
    pub size: u8,
    /// The images members are made of (empty: `default-image`).
    pub images: Vec<String>,
}

impl PoolSection {
    /// The images a member is kept warm for (none when the pool is off).
    pub fn images<'a>(&'a self, default_image: &'a str) -> Vec<&'a str> {
        if self.size == 0 {
            return Vec::new();
        }
        let mut out: Vec<&str> = Vec::new();
        for i in self.images.iter().map(String::as_str).chain(self.images.is_empty().then_some(default_image)) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

/// `[orchestration] worker-gator`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerGator {
    None,
    #[default]
    Readonly,
    Inherit,
}

/// `[engine]`: where workspaces' pods run: podman (the default), or `kubernetes`, the
/// Kubernetes engine (`pods::kube::Kube`; docs/kubernetes.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineSection {
    pub kind: EngineKind,
    /// Kubernetes: the namespace of every object (default: the kubeconfig context's, or
    /// the ServiceAccount's in a cluster).
    pub namespace: Option<String>,
    /// Kubernetes: the kubeconfig context (default: the current one; none in a cluster).
    pub context: Option<String>,
    /// Kubernetes: the node every workspace Pod goes to (its `kubernetes.io/hostname`):
    /// the daemon's, where the agents' socket directories are. `DEVAIPOD_KUBE_NODE`
    /// overrides it (a Deployment sets it from `spec.nodeName`).
    pub node: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Podman,
    Kubernetes,
}

/// `[client]`: the daemon the CLI (and `devaipod mcp`) talks to. Unset, it is this user's
/// own daemon on its unix socket, started when none answers. With `url`, the daemon's TCP
/// API with its bearer token: never started, never restarted by the client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientSection {
    /// `http://host:port` (or `https://`) of the daemon's API. `DEVAIPOD_URL` overrides it.
    #[serde(deserialize_with = "super::values::daemon_url_opt")]
    pub url: Option<String>,
    /// A file holding the daemon's token (keep it 0600). `DEVAIPOD_TOKEN` overrides it.
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ssh {
    /// Serve ssh into workspaces.
    pub enabled: bool,
    /// Address of the ssh server; loopback unless you mean otherwise.
    #[serde(deserialize_with = "super::values::socket_addr")]
    pub listen: String,
    /// The public keys allowed in (OpenSSH `authorized_keys` format), read at each login;
    /// default `~/.ssh/authorized_keys` of the user running devaipod.
    pub authorized_keys: Option<std::path::PathBuf>,
    /// The private key `devaipod ssh-config` names as `IdentityFile` (and `devaipod ssh`
    /// passes with `-i`); default: none, ssh picks its own.
    pub identity_file: Option<std::path::PathBuf>,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh { enabled: true, listen: "127.0.0.1:2222".to_owned(), authorized_keys: None, identity_file: None }
    }
}

impl Ssh {
    /// The authorized keys file: the configured one, else `$HOME/.ssh/authorized_keys`.
    pub fn authorized_keys_path(&self) -> std::path::PathBuf {
        self.authorized_keys.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).unwrap_or_else(|| "/root".into());
            std::path::PathBuf::from(home).join(".ssh/authorized_keys")
        })
    }
}

/// `[network]`: what agents reach through devaipod's egress proxy (the only way out of
/// their network namespace). In both modes the proxy refuses loopback, private, link-local
/// and other internal addresses, except those of `hosts` and of `[agent] base-url`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Network {
    /// `allowlist` (default): the LLM endpoint and `allow-hosts` only; `open`: any public host.
    pub egress: NetworkEgress,
    /// Hosts every agent may reach: `host`, `host:port`, `*.domain`, `*.domain:port`.
    pub allow_hosts: Vec<HostPattern>,
    /// Names the proxy resolves to these addresses (before DNS); their addresses are
    /// exempt from the private-address rule.
    pub hosts: BTreeMap<HostName, std::net::IpAddr>,
    /// Ports of its own workspace container an agent may reach, through the egress proxy as
    /// `workspace:<port>` (published on 127.0.0.1 like `forwardPorts`).
    pub agent_ports: Vec<std::num::NonZeroU16>,
}

/// The name an agent reaches its own workspace container's `[network] agent-ports` by,
/// through the egress proxy.
pub const WORKSPACE_HOST: &str = "workspace";

/// The name containers use for this host. The daemon, on the host, reaches it at loopback.
pub const HOST_CONTAINERS_INTERNAL: &str = "host.containers.internal";

impl Network {
    /// The address the daemon (its egress proxy, the doctor) connects to for `host` instead
    /// of resolving it: the owner's `[network] hosts`, and `host.containers.internal`, when
    /// it is the LLM endpoint's host (`llm_host`), at this host's loopback. Lowercase names.
    pub fn daemon_address(&self, host: &str, llm_host: Option<&str>) -> Option<std::net::IpAddr> {
        let named = self.hosts.iter().find(|(name, _)| name.as_str() == host).map(|(_, ip)| *ip);
        named.or_else(|| {
            (host == HOST_CONTAINERS_INTERNAL && llm_host == Some(HOST_CONTAINERS_INTERNAL))
                .then_some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkEgress {
    Open,
    #[default]
    Allowlist,
}

/// `[agent]`: the LLM provider opencode uses (any OpenAI-compatible endpoint, reached from
/// inside the agent container) and task limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    /// The protocol devaipod speaks to the agent: opencode's HTTP API, or the Agent Client
    /// Protocol over the agent's stdio (see docs/agents.md).
    pub kind: AgentKind,
    /// For `kind = "acp"`: the agent's argv inside the agent container (`opencode` as the
    /// first word is the injected opencode). Empty: `["opencode", "acp"]`.
    pub command: Vec<String>,
    /// A host directory holding the agent, mounted read-only into the agent container at
    /// `/opt/devaipod/agent` (the image need not contain it).
    pub inject_dir: Option<std::path::PathBuf>,
    /// Base URL of an OpenAI-compatible API, as the agent container reaches it.
    #[serde(deserialize_with = "super::values::http_url")]
    pub base_url: String,
    pub model: String,
    /// Other models of the same provider a fan-out's candidates may use (`models` of
    /// `run_task`); `model` is always allowed.
    pub models: Vec<String>,
    /// Host environment variable holding the API key; given to the agent only.
    pub api_key_env: Option<EnvName>,
    /// Podman secret holding the API key; given to the agent only.
    pub api_key_secret: Option<String>,
    /// A task still running after this many seconds fails.
    pub task_timeout_secs: u64,
    /// How long to wait for the agent's API after the pod starts.
    pub ready_timeout_secs: u64,
    /// The most a task's collected work may weigh (the bundle that leaves the sandbox: its
    /// new content, uncompressed), in MiB; more fails the task.
    pub max_proposal_mb: u64,
}

/// Which protocol devaipod speaks to a workspace's agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// opencode's HTTP API (`opencode serve`).
    #[default]
    Opencode,
    /// The Agent Client Protocol: JSON-RPC over the agent process's stdio.
    Acp,
}

/// `[agents.<name>]`: an agent a workspace may choose instead of `[agent]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentPreset {
    pub kind: AgentKind,
    /// As `[agent] command`.
    pub command: Vec<String>,
    /// As `[agent] inject-dir`.
    pub inject_dir: Option<std::path::PathBuf>,
}

/// The agents every config knows, besides its `[agents.*]`.
pub const BUILTIN_AGENTS: [&str; 2] = ["opencode", "opencode-acp"];

impl AgentConfig {
    /// The ACP agent's argv: `command`, or `opencode acp` when it is empty.
    pub fn acp_command(&self) -> Vec<String> {
        if self.command.is_empty() { vec!["opencode".into(), "acp".into()] } else { self.command.clone() }
    }
}

impl Config {
    /// This config with the agent a workspace chose (`up --agent <name>`): `opencode` (HTTP),
    /// `opencode-acp`, or an `[agents.<name>]`; `None` keeps `[agent]`'s.
    pub fn with_agent(&self, choice: Option<&str>) -> Result<std::borrow::Cow<'_, Config>, String> {
        let Some(name) = choice.map(str::trim).filter(|n| !n.is_empty()) else {
            return Ok(std::borrow::Cow::Borrowed(self));
        };
        let preset = match (self.agents.get(name), name) {
            (Some(p), _) => p.clone(),
            (None, "opencode") => AgentPreset { kind: AgentKind::Opencode, ..AgentPreset::default() },
            (None, "opencode-acp") => AgentPreset { kind: AgentKind::Acp, ..AgentPreset::default() },
            (None, _) => {
                let mut known: Vec<&str> = BUILTIN_AGENTS.to_vec();
                known.extend(self.agents.keys().map(String::as_str).filter(|k| !BUILTIN_AGENTS.contains(k)));
                return Err(format!(
                    "no agent named `{name}`: choose one of {} (add others as [agents.{name}] in {})",
                    known.join(", "),
                    self.where_to_edit()
                ));
            }
        };
        let mut config = self.clone();
        config.agent.kind = preset.kind;
        config.agent.command = preset.command;
        config.agent.inject_dir = preset.inject_dir;
        Ok(std::borrow::Cow::Owned(config))
    }
}

impl AgentConfig {
    /// Every model a task may name: `model`, then `models`.
    pub fn allowed_models(&self) -> Vec<String> {
        let mut all = vec![self.model.clone()];
        all.extend(self.models.iter().filter(|m| **m != self.model).cloned());
        all
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            kind: AgentKind::Opencode,
            command: Vec::new(),
            inject_dir: None,
            base_url: "http://host.containers.internal:11434/v1".into(),
            model: "qwen2.5-coder".into(),
            models: Vec::new(),
            api_key_env: None,
            api_key_secret: None,
            task_timeout_secs: 1800,
            ready_timeout_secs: 120,
            max_proposal_mb: 1024,
        }
    }
}
