//! What the doctor's findings mean: each probe's result → one [`Check`] (ok, warning or
//! error), every problem with its fix — a command, or the config key with an example. Also
//! the words of a task that cannot reach its LLM ([`gate`], [`unreachable`]) and of a
//! provider's refusal ([`explain_provider_error`]). Pure: no I/O; every sentence a user
//! reads about the setup is made here, once, for the CLI, the web page and the task driver.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::llm::{Probe, models_url};
use crate::config::{AgentConfig, Config, ConfigError};
use crate::pods::engine::EngineInfo;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Which: config, daemon, podman, runtime, image, opencode, api-key, llm, gator-token, disk.
    pub id: String,
    pub level: Level,
    /// What was found.
    pub summary: String,
    /// What to do (a command, or the config key with an example); set for every warning
    /// and error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(id: &str, summary: impl Into<String>) -> Check {
        Check { id: id.to_owned(), level: Level::Ok, summary: summary.into(), fix: None }
    }

    fn warning(id: &str, summary: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { id: id.to_owned(), level: Level::Warning, summary: summary.into(), fix: Some(fix.into()) }
    }

    fn error(id: &str, summary: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { id: id.to_owned(), level: Level::Error, summary: summary.into(), fix: Some(fix.into()) }
    }
}

/// The order lines are shown in.
pub const ORDER: &[&str] =
    &["config", "daemon", "podman", "runtime", "image", "opencode", "api-key", "llm", "gator-token", "disk"];

/// Sorts checks into [`ORDER`] (unknown ids last, in their order).
pub fn sort(checks: &mut [Check]) {
    checks.sort_by_key(|c| ORDER.iter().position(|id| *id == c.id).unwrap_or(ORDER.len()));
}

/// Whether nothing is an error: the exit code of `devaipod doctor` is 0 only then.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.level != Level::Error)
}

// ---- the config file ----

/// What reading the config file gave.
#[derive(Debug)]
pub enum ConfigRead<'a> {
    /// Read and valid; `current` is whether it says what is in effect (false: the file
    /// changed after the daemon read it).
    Valid {
        current: bool,
    },
    /// There is no file there: the defaults apply.
    Missing,
    Invalid(&'a ConfigError),
    /// No location at all (no `$HOME`, no `--config`).
    Nowhere,
}

/// `config`: the file, found and valid. `restart` is how to restart the daemon (for a file
/// changed since it started).
pub fn config_file(path: &str, read: ConfigRead<'_>, restart: &str) -> Check {
    const ID: &str = "config";
    match read {
        ConfigRead::Valid { current: true } => Check::ok(ID, format!("{path} is valid")),
        ConfigRead::Valid { current: false } => Check::warning(
            ID,
            format!("{path} changed after the daemon read it; the daemon still uses what it read then"),
            format!("restart the daemon to use the file: {restart}"),
        ),
        ConfigRead::Missing => Check::warning(
            ID,
            format!("no config file at {path}: the defaults apply (an LLM server on this host, port 11434)"),
            "write one with `devaipod init` (docs/configuration.md lists every key)",
        ),
        ConfigRead::Invalid(e @ ConfigError::Invalid { line, column, key, .. }) => Check::error(
            ID,
            e.to_string(),
            format!("edit line {line}, column {column} of {path} (`{key}`); docs/configuration.md lists every key"),
        ),
        ConfigRead::Invalid(e @ ConfigError::Read { .. }) => Check::error(
            ID,
            e.to_string(),
            format!("make {path} readable, or name another file with --config or DEVAIPOD_CONFIG"),
        ),
        ConfigRead::Nowhere => Check::warning(
            ID,
            "no config location: neither --config, DEVAIPOD_CONFIG nor $HOME is set",
            "pass --config FILE (or set HOME)",
        ),
    }
}

// ---- the daemon ----

/// What the daemon said about itself, for the `daemon` line.
#[derive(Debug, Clone, Copy)]
pub struct DaemonSeen<'a> {
    pub version: &'a str,
    pub pid: u32,
    pub instance: &'a str,
    /// The config file it read.
    pub config_file: Option<&'a str>,
}

/// `daemon`: running, which version, the same config file as this command. `Err` is why
/// none answers; `cli_config` is the file this command read.
pub fn daemon(cli_version: &str, cli_config: Option<&str>, seen: Result<DaemonSeen<'_>, &str>, log: &Path) -> Check {
    const ID: &str = "daemon";
    match seen {
        Ok(d) => {
            let restart = restart_hint(d.pid);
            if d.version != cli_version {
                return Check::warning(
                    ID,
                    format!("running (pid {}), version {}; this devaipod is {cli_version}", d.pid, d.version),
                    format!("restart it to run this version: {restart}"),
                );
            }
            if let (Some(theirs), Some(ours)) = (d.config_file, cli_config)
                && theirs != ours
            {
                return Check::warning(
                    ID,
                    format!("running (pid {}) with {theirs}; this command read {ours}", d.pid),
                    format!("restart it with this config: {restart}"),
                );
            }
            Check::ok(ID, format!("running (pid {}), version {}, instance {}", d.pid, d.version, d.instance))
        }
        Err(reason) => {
            let fix = if reason.contains("cannot listen on") {
                "another program uses that address: set DEVAIPOD_LISTEN=127.0.0.1:8081 (or `devaipod serve --listen …`)"
                    .to_owned()
            } else if reason.contains("config") {
                "fix the config file first (see `config`)".to_owned()
            } else {
                format!("see {}; `devaipod serve` runs it in the foreground and shows why it stops", log.display())
            };
            Check::error(ID, format!("not running: {reason}"), fix)
        }
    }
}

/// How to restart a daemon: stop it; the next command starts one with the current binary
/// and config.
pub fn restart_hint(pid: u32) -> String {
    format!("`kill {pid}` (the next devaipod command starts it again; running tasks are followed again)")
}

// ---- podman ----

/// `podman` and `runtime`: the engine answers, which version, rootful or rootless; its
/// runtime and cgroups.
/// `hint`: what to do when nothing answers at `socket` ([`crate::pods::socket::start_hint`]).
pub fn podman(info: Result<&EngineInfo, &str>, socket: &Path, hint: &str) -> Vec<Check> {
    match info {
        Ok(i) => {
            let mode = if i.rootless { "rootless" } else { "rootful" };
            let podman = Check::ok(
                "podman",
                format!("podman {} (API {}) at {}, {mode}", i.version, i.api_version, i.socket.display()),
            );
            let runtime = format!(
                "{} ({}), cgroups {} ({}), storage {}",
                i.runtime, i.runtime_version, i.cgroup_version, i.cgroup_manager, i.storage_driver
            );
            let runtime = if i.rootless && i.storage_driver == "vfs" {
                Check::warning(
                    "runtime",
                    format!("{runtime}: vfs copies every image layer, slowly"),
                    "set driver = \"overlay\" in ~/.config/containers/storage.conf (with fuse-overlayfs installed)",
                )
            } else {
                Check::ok("runtime", runtime)
            };
            vec![podman, runtime]
        }
        Err(reason) => vec![Check::error(
            "podman",
            format!("podman does not answer at {}: {}", socket.display(), first_line(reason)),
            hint,
        )],
    }
}

// ---- the base image ----

/// `image`: the image workspaces without a devcontainer.json use.
pub fn image(image: &str, present: Result<bool, &str>, config_path: &str) -> Check {
    const ID: &str = "image";
    match present {
        Ok(true) => Check::ok(ID, format!("{image} is here")),
        Ok(false) => Check::error(
            ID,
            format!("{image} is not here (repositories without a devcontainer.json use it)"),
            format!(
                "run scripts/setup.sh (it builds {}), or set default-image = \"<an image you have>\" in {config_path}",
                crate::config::DEFAULT_IMAGE
            ),
        ),
        Err(reason) => Check::warning(
            ID,
            format!("cannot tell whether {image} is here: {}", first_line(reason)),
            "see `podman` above",
        ),
    }
}

// ---- the agent ----

/// What was found of the agent's binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentBinary {
    /// There, with its version when it could be read.
    Found {
        version: Option<String>,
    },
    Missing,
}

/// `opencode`: the agent installed, and its version.
pub fn opencode(path: &Path, found: &AgentBinary) -> Check {
    const ID: &str = "opencode";
    match found {
        AgentBinary::Found { version: Some(v) } => Check::ok(ID, format!("opencode {v} at {}", path.display())),
        AgentBinary::Found { version: None } => {
            Check::ok(ID, format!("opencode at {} (its version could not be read)", path.display()))
        }
        AgentBinary::Missing => Check::error(
            ID,
            format!("opencode is not installed at {}", path.display()),
            "run scripts/setup.sh (it installs opencode into ~/.cache/devaipod/opencode), or set DEVAIPOD_OPENCODE_DIR to the directory holding the opencode binary",
        ),
    }
}

// ---- the API key ----

/// Whose environment `[agent] api-key-env` was looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvOwner {
    /// The caller's (the shell that runs the command): what `up` from there uses.
    Caller,
    /// The daemon's: what `up` from the web UI or MCP over HTTP uses.
    Daemon,
}

impl EnvOwner {
    fn words(self) -> &'static str {
        match self {
            EnvOwner::Caller => "this shell's environment",
            EnvOwner::Daemon => "the daemon's environment (used by the web UI and MCP over HTTP)",
        }
    }
}

/// What was found of the API key's source (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    None,
    /// `api-key-env`: whether it is set (non-empty) there.
    Env {
        var: String,
        set: bool,
        owner: EnvOwner,
    },
    /// `api-key-secret`: whether the podman secret exists (`Err`: podman could not say).
    Secret {
        name: String,
        exists: Result<bool, String>,
    },
}

/// `api-key`: the key's source resolves (the value is never shown).
pub fn api_key(source: &KeySource, config_path: &str) -> Check {
    const ID: &str = "api-key";
    match source {
        KeySource::None => Check::ok(ID, "none configured (a local server needs none; a hosted provider does)"),
        KeySource::Env { var, set: true, owner } => {
            Check::ok(ID, format!("{var} is set in {} (value not shown)", owner.words()))
        }
        KeySource::Env { var, set: false, owner } => Check::error(
            ID,
            format!("[agent] api-key-env names {var}, which is not set in {}", owner.words()),
            format!(
                "export {var}=<your key> in the shell you run devaipod from (or keep the key in a podman secret: `printf %s \"$KEY\" | podman secret create llm-key -` and api-key-secret = \"llm-key\" in {config_path})"
            ),
        ),
        KeySource::Secret { name, exists: Ok(true) } => {
            Check::ok(ID, format!("podman secret `{name}` exists (value not shown)"))
        }
        KeySource::Secret { name, exists: Ok(false) } => Check::error(
            ID,
            format!("[agent] api-key-secret names the podman secret `{name}`, which does not exist"),
            format!("create it: printf %s \"$KEY\" | podman secret create {name} -"),
        ),
        KeySource::Secret { name, exists: Err(reason) } => Check::warning(
            ID,
            format!("cannot tell whether the podman secret `{name}` exists: {}", first_line(reason)),
            "see `podman` above",
        ),
    }
}

// ---- the LLM endpoint ----

/// Where the LLM was probed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// This host, where the daemon's egress proxy connects to the provider from.
    Host,
    /// A workspace's agent container.
    Workspace(String),
}

impl Via {
    fn words(&self) -> String {
        match self {
            Via::Host => "this host (where devaipod's egress proxy connects from)".to_owned(),
            Via::Workspace(w) => format!("the agent of workspace `{w}`"),
        }
    }
}

/// `llm`: the endpoint reachable from the agent's side, the model offered, the key taken.
/// `probe` is `Err` when no probe could run.
pub fn llm(agent: &AgentConfig, via: &Via, probe: Result<&Probe, &str>, key: &KeySource, config_path: &str) -> Check {
    const ID: &str = "llm";
    let p = match probe {
        Ok(p) => p,
        Err(reason) => {
            return Check::warning(
                ID,
                format!("{} was not probed from {}: {}", agent.base_url, via.words(), first_line(reason)),
                "fix the problems above (podman, image), then run `devaipod doctor` again",
            );
        }
    };
    let url = &p.base_url;
    let Some(status) = p.status else {
        let cause = p.error.as_deref().unwrap_or("no answer");
        return Check::error(
            ID,
            format!("{url} cannot be reached from {} ({cause})", via.words()),
            unreachable_fix(url, config_path),
        );
    };
    let model = &agent.model;
    match status {
        200..=299 => match &p.models {
            Some(models) if models.iter().any(|m| m == model) => {
                Check::ok(ID, format!("{url} answers from {}; model `{model}` is offered", via.words()))
            }
            Some(models) if !models.is_empty() => Check::error(
                ID,
                format!("{url} does not offer model `{model}`; it offers {}", some_of(models)),
                format!("set [agent] model in {config_path}, e.g. model = \"{}\"", models[0]),
            ),
            _ => Check::ok(
                ID,
                format!("{url} answers from {}; it lists no models, so `{model}` is not checked", via.words()),
            ),
        },
        401 | 403 => {
            let fix = match key {
                KeySource::None => format!(
                    "this provider needs a key: set [agent] api-key-env = \"OPENAI_API_KEY\" (a variable holding it) or api-key-secret = \"<podman secret>\" in {config_path}"
                ),
                KeySource::Env { var, .. } => format!("check the key in {var} (see `api-key`)"),
                KeySource::Secret { name, .. } => {
                    format!("check the key in the podman secret `{name}` (see `api-key`)")
                }
            };
            Check::error(ID, format!("{url} refused the key ({status} to GET {})", models_url(url)), fix)
        }
        404 => Check::warning(
            ID,
            format!("{url} answers from {}, but has no {} (404)", via.words(), models_url(url)),
            format!(
                "check that [agent] base-url in {config_path} is the API's base (OpenAI-compatible ones usually end in /v1)"
            ),
        ),
        _ => Check::warning(
            ID,
            format!("{url} answered {status} to GET {}", models_url(url)),
            "the provider may be down or overloaded: try again, or check its status",
        ),
    }
}

/// What to do about an endpoint that does not answer, by where it points.
fn unreachable_fix(url: &str, config_path: &str) -> String {
    let host = host_of(url);
    let port = port_of(url);
    if ["localhost", "127.0.0.1", "::1", "[::1]", "host.containers.internal"].contains(&host) {
        // The daemon's egress proxy connects for the agents, from this host.
        format!(
            "start the LLM server on this host, listening on port {port} (127.0.0.1 is enough: devaipod's egress proxy connects from this host); or set [agent] base-url in {config_path}, e.g. base-url = \"https://api.openai.com/v1\""
        )
    } else {
        format!("check the address and the network, or set [agent] base-url in {config_path}")
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.starts_with('[') {
        return authority.split_once(']').map_or(authority, |(h, _)| h).trim_start_matches('[');
    }
    authority.split(':').next().unwrap_or(authority)
}

fn port_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => p.to_owned(),
        _ if url.starts_with("https://") => "443".to_owned(),
        _ => "80".to_owned(),
    }
}

/// A few of many names.
fn some_of(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    match names.len() - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

// ---- gator's token ----

/// What was found of gator's GitHub token source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    None,
    /// `github-token-env`: set (non-empty) in the daemon's environment.
    Env {
        var: String,
        set: bool,
    },
    /// `github-token-file`: readable and non-empty (`Err`: why not); `mode` its permission bits.
    File {
        path: String,
        read: Result<(), String>,
        mode: u32,
    },
    /// `github-token-secret`.
    Secret {
        name: String,
        exists: Result<bool, String>,
    },
}

/// `gator-token`: the GitHub token's source is readable (never shown).
pub fn gator_token(source: &TokenSource, config_path: &str) -> Check {
    const ID: &str = "gator-token";
    match source {
        TokenSource::None => {
            Check::ok(ID, "not configured: gator's GitHub tools are off ([trusted] github-token-env, -file or -secret)")
        }
        TokenSource::Env { var, set: true } => Check::ok(ID, format!("{var} is set in the daemon's environment")),
        TokenSource::Env { var, set: false } => Check::error(
            ID,
            format!("[trusted] github-token-env names {var}, which is not set in the daemon's environment"),
            format!(
                "export {var} before the daemon starts (restart it), or use github-token-file = \"<file, mode 0600>\" in {config_path}"
            ),
        ),
        TokenSource::File { path, read: Ok(()), mode } if mode & 0o077 != 0 => Check::warning(
            ID,
            format!("{path} is readable by others (mode {:o})", mode & 0o777),
            format!("chmod 600 {path}"),
        ),
        TokenSource::File { path, read: Ok(()), .. } => Check::ok(ID, format!("{path} is readable (value not shown)")),
        TokenSource::File { path, read: Err(why), .. } => Check::error(
            ID,
            format!("[trusted] github-token-file {path} cannot be read: {why}"),
            format!("write the token into {path} (mode 0600), or change [trusted] github-token-file in {config_path}"),
        ),
        TokenSource::Secret { name, exists: Ok(true) } => Check::ok(ID, format!("podman secret `{name}` exists")),
        TokenSource::Secret { name, exists: Ok(false) } => Check::error(
            ID,
            format!("[trusted] github-token-secret names the podman secret `{name}`, which does not exist"),
            format!("create it: printf %s \"$GH_TOKEN\" | podman secret create {name} -"),
        ),
        TokenSource::Secret { name, exists: Err(reason) } => Check::warning(
            ID,
            format!("cannot tell whether the podman secret `{name}` exists: {}", first_line(reason)),
            "see `podman` above",
        ),
    }
}

// ---- disk ----

/// Below this much free space in the data directory, `disk` is a warning.
pub const DISK_WARNING: u64 = 2 << 30;
/// Below this, an error.
pub const DISK_ERROR: u64 = 500 << 20;

/// `disk`: free space where repositories and the database live.
pub fn disk(dir: &Path, free: Result<u64, &str>) -> Check {
    const ID: &str = "disk";
    match free {
        Ok(n) if n < DISK_ERROR => Check::error(
            ID,
            format!("{} free in {}", bytes(n), dir.display()),
            "free some space (`podman system prune` removes unused images and containers)",
        ),
        Ok(n) if n < DISK_WARNING => Check::warning(
            ID,
            format!("only {} free in {}", bytes(n), dir.display()),
            "free some space (`podman system prune` removes unused images and containers)",
        ),
        Ok(n) => Check::ok(ID, format!("{} free in {}", bytes(n), dir.display())),
        Err(why) => Check::warning(
            ID,
            format!("cannot tell the free space in {}: {why}", dir.display()),
            "check that the data directory (DEVAIPOD_DATA_DIR) is on a mounted file system",
        ),
    }
}

/// `1.5 GiB`, `300 MiB`.
pub fn bytes(n: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if n >= 1 << 30 { format!("{:.1} GiB", n as f64 / GIB) } else { format!("{:.0} MiB", n as f64 / MIB) }
}

// ---- a task's LLM, before its prompt ----

/// Whether a task may go to its agent, by the probe from the agent's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The endpoint answered.
    Pass,
    /// The probe could not tell (it could not run): the task goes on.
    Unknown(String),
    /// Nothing answers: the task fails with this message.
    Fail(String),
}

/// Judges the pre-prompt probe: only an endpoint that certainly does not answer stops a
/// task; any HTTP answer (even 401 or 404) lets it go on, and the provider's own error then
/// says more.
pub fn gate(probe: Result<&Probe, &str>, config: &Config) -> Gate {
    match probe {
        Err(why) => Gate::Unknown(why.to_owned()),
        Ok(p) if p.reached() => Gate::Pass,
        Ok(p) => {
            Gate::Fail(unreachable(&p.base_url, p.error.as_deref().unwrap_or("no answer"), &config.where_to_edit()))
        }
    }
}

/// The failure of a task whose agent cannot reach its LLM: the same words for the CLI, MCP
/// and the web.
pub fn unreachable(url: &str, cause: &str, config_path: &str) -> String {
    format!("the agent cannot reach {url} ({cause}): set [agent] base-url in {config_path}, see devaipod doctor")
}

/// A provider's error as the agent reported it, with the setting to change: a refused key
/// (401, 403), an unknown model or path (404), no connection at all. Others are left as
/// they are.
pub fn explain_provider_error(error: &str, config: &Config) -> String {
    let path = config.where_to_edit();
    let agent = &config.agent;
    let status = error
        .strip_prefix("the LLM provider answered ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|code| code.trim().parse::<u16>().ok());
    match status {
        Some(401 | 403) => {
            let key = match (&agent.api_key_secret, &agent.api_key_env) {
                (Some(s), _) => format!("the key in the podman secret `{s}` ([agent] api-key-secret)"),
                (None, Some(v)) => format!("the key in {v} ([agent] api-key-env)"),
                (None, None) => "the key: none is configured; set [agent] api-key-env = \"OPENAI_API_KEY\"".to_owned(),
            };
            format!("{error}: the provider refused the key; check {key} in {path}, see devaipod doctor")
        }
        Some(404) => format!(
            "{error}: check [agent] model (\"{}\") and base-url (\"{}\") in {path}; devaipod doctor lists the models it offers",
            agent.model, agent.base_url
        ),
        _ if error.contains("Cannot connect to API") || error.contains("Unable to connect") => {
            unreachable(&agent.base_url, &format!("opencode: {error}"), &path)
        }
        _ => error.to_owned(),
    }
}

// ---- the probe's report ----

/// Reads what `devaipod probe-llm` printed (a JSON [`Probe`]); `Err` says why there is none
/// (an older binary in the container, a crash).
pub fn read_probe(exit_code: i64, stdout: &[u8], stderr: &[u8]) -> Result<Probe, String> {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    serde_json::from_str::<Probe>(last.trim()).map_err(|_| {
        let err = String::from_utf8_lossy(stderr);
        let why = first_line(err.trim());
        if why.is_empty() {
            format!("the probe printed no report (exit code {exit_code})")
        } else {
            format!("the probe printed no report (exit code {exit_code}): {why}")
        }
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default().trim()
}
