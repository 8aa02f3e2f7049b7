//! `devaipod doctor`: is this machine ready to run agents, and what to change when not. The
//! probes here gather facts, each with a timeout — podman and its runtime, the base image,
//! opencode, the API key's source, gator's token, free disk, and the LLM endpoint as the
//! egress proxy reaches it — and `judge.rs` (pure) says what they mean. The
//! same probe guards a task's prompt ([`Core::llm_gate`]): a task whose agent cannot reach
//! its LLM fails within seconds, naming the URL and the setting.
//!
//! Agents reach their LLM only through the daemon's egress proxy, so the LLM is probed from
//! this host (`probe_from_host`, where the proxy connects from) when no workspace is asked
//! about; for a workspace, and before a task's prompt, devaipod's own binary (`devaipod
//! probe-llm`, hidden, mounted read-only into agent containers) asks from inside the agent
//! container, through its relay and the proxy, which marks the provider's URL and, when it
//! could not reach it, the cause on its answer.

pub mod judge;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use judge::{
    AgentBinary, Check, ConfigRead, DaemonSeen, EnvOwner, Gate, KeySource, Level, TokenSource, Via, bytes,
    explain_provider_error, healthy, restart_hint, sort, unreachable,
};

use super::{CallerEnv, Core, ExecTarget, Paths};
use crate::agent::llm::Probe;
use crate::config::{self, Config};
use crate::pods::Engine;
use crate::pods::plan::GATOR_BRIDGE;

/// How long the probe waits for the LLM endpoint (connect and answer).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole probe may take (exec or helper container included).
const PROBE_DEADLINE: Duration = Duration::from_secs(15);
/// How long an endpoint that answered (or a probe that could not tell) is not asked again
/// before a workspace's next task.
const GATE_TTL: Duration = Duration::from_secs(60);
/// Each of the doctor's podman questions.
const QUESTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What `doctor` is asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DoctorRequest {
    /// The caller's environment, against which `[agent] api-key-env` is checked (as `up`
    /// resolves it); absent: the daemon's. Used for this check only, never stored or shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<CallerEnv>,
    /// Probe the LLM from this workspace's agent instead of a helper container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// The daemon's report: who answered, and its checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// The daemon's version.
    pub version: String,
    pub pid: u32,
    pub instance: String,
    /// The config file the daemon read at its start (or would have: the default location).
    pub config_file: Option<String>,
    pub checks: Vec<Check>,
}

/// The version of this devaipod.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a doctor needs to know that is not in the config: where things are.
#[derive(Debug, Clone)]
pub struct Places<'a> {
    pub paths: &'a Paths,
    pub opencode_dir: &'a Path,
    /// The socket podman is reached at (for messages).
    pub socket: PathBuf,
}

/// Every check that needs no daemon (all but `daemon`), in order: what `doctor` finds with
/// `engine` and `config`. The config line judges `config.file` read again now. `env`: the
/// caller's environment (else this process's).
pub async fn checks<E: Engine>(
    engine: &E,
    config: &Config,
    places: &Places<'_>,
    env: Option<&CallerEnv>,
) -> Vec<Check> {
    let edit = config.where_to_edit();
    let mut out = vec![config_check(config, &restart_command(places.paths))];

    let info = question(engine.info()).await;
    out.extend(judge::podman(
        info.as_ref().map_err(String::as_str),
        &places.socket,
        &crate::pods::socket::start_hint(&places.socket),
    ));
    let image = question(engine.image_exists(&config.default_image)).await;
    out.push(judge::image(&config.default_image, image.as_ref().map(|b| *b).map_err(String::as_str), &edit));
    let opencode = places.opencode_dir.join("opencode");
    out.push(judge::opencode(&opencode, &agent_binary(places.opencode_dir).await));

    let key = key_source(engine, config, env).await;
    out.push(judge::api_key(&key, &edit));
    let probe = probe_from_host(engine, config, places.paths, env).await;
    out.push(judge::llm(&config.agent, &Via::Host, probe.as_ref().map_err(String::as_str), &key, &edit));
    out.push(judge::gator_token(&token_source(engine, config).await, &edit));
    out.push(judge::disk(
        &places.paths.data,
        free_space(&places.paths.data).as_ref().map(|n| *n).map_err(String::as_str),
    ));
    sort(&mut out);
    out
}

/// The `config` line: `config.file` read again now, and compared with what is in effect.
pub fn config_check(config: &Config, restart: &str) -> Check {
    let Some(path) = config.file.clone().or_else(config::default_path) else {
        return judge::config_file(&config.where_to_edit(), ConfigRead::Nowhere, restart);
    };
    let shown = path.display().to_string();
    if !path.exists() {
        return judge::config_file(&shown, ConfigRead::Missing, restart);
    }
    match config::load(&path, true) {
        Ok(mut now) => {
            // The instance may come from DEVAIPOD_INSTANCE, and the file name is not a key.
            now.instance = config.instance.clone();
            now.file = config.file.clone();
            judge::config_file(&shown, ConfigRead::Valid { current: now == *config }, restart)
        }
        Err(e) => judge::config_file(&shown, ConfigRead::Invalid(&e), restart),
    }
}

/// How to restart the daemon of `paths`, for messages.
fn restart_command(paths: &Paths) -> String {
    match std::fs::read_to_string(paths.pid_file()).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
        Some(pid) => restart_hint(pid),
        None => format!("`kill $(cat {})`", paths.pid_file().display()),
    }
}

/// A podman question with the doctor's timeout; its error as text.
async fn question<T, E, F>(f: F) -> Result<T, String>
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    match tokio::time::timeout(QUESTION_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", QUESTION_TIMEOUT.as_secs())),
    }
}

/// The opencode binary in `dir` and its version: from its npm package's `package.json`
/// (next to `bin/`), else `opencode --version` (with a timeout).
async fn agent_binary(dir: &Path) -> AgentBinary {
    let binary = dir.join("opencode");
    if !binary.is_file() {
        return AgentBinary::Missing;
    }
    let from_package = std::fs::read(dir.join("../package.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    if let Some(version) = from_package {
        return AgentBinary::Found { version: Some(version) };
    }
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.arg("--version").stdin(std::process::Stdio::null()).kill_on_drop(true);
    let version = match tokio::time::timeout(QUESTION_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|v| !v.is_empty() && v.len() < 100)
        }
        _ => None,
    };
    AgentBinary::Found { version }
}

/// Where `[agent]`'s key comes from, and whether it resolves there.
async fn key_source<E: Engine>(engine: &E, config: &Config, env: Option<&CallerEnv>) -> KeySource {
    match (&config.agent.api_key_secret, &config.agent.api_key_env) {
        (Some(name), _) => KeySource::Secret { name: name.clone(), exists: question(engine.secret_exists(name)).await },
        (None, Some(var)) => {
            let (value, owner) = match env {
                Some(e) => (e.0.get(var.as_str()).cloned(), EnvOwner::Caller),
                None => (std::env::var(var.as_str()).ok(), EnvOwner::Daemon),
            };
            KeySource::Env { var: var.to_string(), set: value.is_some_and(|v| !v.is_empty()), owner }
        }
        (None, None) => KeySource::None,
    }
}

/// The key's value, for a probe from a helper container (never shown).
fn key_value(config: &Config, env: Option<&CallerEnv>) -> Option<String> {
    let var = config.agent.api_key_env.as_ref()?;
    match env {
        Some(e) => e.0.get(var.as_str()).cloned(),
        None => std::env::var(var.as_str()).ok(),
    }
    .filter(|v| !v.is_empty())
}

/// Where gator's GitHub token comes from, and whether it is readable there (the daemon's
/// environment: gator runs in the daemon).
async fn token_source<E: Engine>(engine: &E, config: &Config) -> TokenSource {
    let t = &config.trusted;
    if let Some(var) = &t.github_token_env {
        let set = std::env::var(var.as_str()).is_ok_and(|v| !v.trim().is_empty());
        if set || (t.github_token_file.is_none() && t.github_token_secret.is_none()) {
            return TokenSource::Env { var: var.to_string(), set };
        }
    }
    if let Some(path) = &t.github_token_file {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
        let read = match std::fs::read_to_string(path) {
            Ok(v) if v.trim().is_empty() => Err("it is empty".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        return TokenSource::File { path: path.display().to_string(), read, mode };
    }
    match &t.github_token_secret {
        Some(name) => TokenSource::Secret { name: name.clone(), exists: question(engine.secret_exists(name)).await },
        None => TokenSource::None,
    }
}

/// Free bytes for an unprivileged user on the file system of `dir` (or of its nearest
/// existing parent: the data directory may not exist before the first daemon).
fn free_space(dir: &Path) -> Result<u64, String> {
    let existing = dir.ancestors().find(|d| d.exists()).ok_or_else(|| "no part of it exists".to_owned())?;
    let st = rustix::fs::statvfs(existing).map_err(|e| e.to_string())?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The probe's argv in a container: the devaipod binary mounted there.
fn probe_argv(base_url: Option<&str>) -> Vec<String> {
    let mut argv = vec![GATOR_BRIDGE.to_owned(), "probe-llm".to_owned()];
    if let Some(url) = base_url {
        argv.extend(["--base-url".to_owned(), url.to_owned()]);
    }
    argv.extend(["--timeout-secs".to_owned(), PROBE_TIMEOUT.as_secs().to_string()]);
    argv
}

/// Probes `config`'s LLM endpoint from this host, as the daemon's egress proxy reaches it
/// for every agent (agents have no network of their own): `host.containers.internal` and
/// `[network] hosts` at the daemon's own addresses, with the key the proxy would add (a
/// podman secret read through a throwaway container, or the caller's variable).
pub async fn probe_from_host<E: Engine>(
    engine: &E,
    config: &Config,
    paths: &Paths,
    env: Option<&CallerEnv>,
) -> Result<Probe, String> {
    let key = match (&config.agent.api_key_secret, key_value(config, env)) {
        (Some(secret), _) => {
            let read = super::read_secret(engine, config, paths, secret);
            Some(question(read).await.map_err(|e| format!("cannot read the key from podman secret `{secret}`: {e}"))?)
        }
        (None, value) => value,
    };
    let base = &config.agent.base_url;
    let host = reqwest::Url::parse(base).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let address = host.as_deref().and_then(|h| config.network.daemon_address(h, Some(h)));
    Ok(crate::agent::llm::probe_from_host(base, key.as_deref().map(str::trim), PROBE_TIMEOUT, address).await)
}

impl<E: Engine> Core<E> {
    /// The doctor's report as this daemon sees it: every check but `daemon` (which the
    /// caller makes from the report's `version` and `pid`).
    pub async fn doctor(&self, req: &DoctorRequest) -> DoctorReport {
        let places = Places { paths: &self.paths, opencode_dir: &self.opencode_dir, socket: self.engine_socket() };
        let mut checks = checks(&self.engine, &self.config, &places, req.env.as_ref()).await;
        if let Some(ws) = req.workspace.as_deref().filter(|w| !w.trim().is_empty()) {
            // Asked about a workspace: its agent's own view (through its relay and the
            // egress proxy) replaces this host's.
            let key = key_source(&self.engine, &self.config, req.env.as_ref()).await;
            let probe = self.probe_in_agent(ws).await;
            let line = judge::llm(
                &self.config.agent,
                &Via::Workspace(ws.to_owned()),
                probe.as_ref().map_err(String::as_str),
                &key,
                &self.config.where_to_edit(),
            );
            checks.retain(|c| c.id != "llm");
            checks.push(line);
            sort(&mut checks);
        }
        DoctorReport {
            version: VERSION.to_owned(),
            pid: std::process::id(),
            instance: self.instance().to_owned(),
            config_file: self.config.file.as_ref().map(|p| p.display().to_string()),
            checks,
        }
    }

    /// Where podman is reached, for messages.
    fn engine_socket(&self) -> PathBuf {
        crate::pods::podman::default_socket()
    }

    /// Asks the LLM endpoint from the workspace's agent container (its own configuration:
    /// the URL it was made with, its key).
    async fn probe_in_agent(&self, workspace: &str) -> Result<Probe, String> {
        let argv = probe_argv(None);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let ran = tokio::time::timeout(PROBE_DEADLINE, self.exec_capture(workspace, ExecTarget::Agent, &argv)).await;
        match ran {
            Ok(Ok((code, out, err))) => judge::read_probe(code, &out, err.as_bytes()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("the probe did not finish within {} s", PROBE_DEADLINE.as_secs())),
        }
    }

    /// Before a task's prompt goes to the agent: can the agent reach its LLM? `Err` is the
    /// task's failure message. An answer (or a probe that cannot tell) is remembered for the
    /// workspace for a minute, so tasks in a row ask once; a failure is not, so a fixed
    /// endpoint counts at once. Agents get the probe (devaipod's binary) with gator's
    /// bridge: without gator endpoints there is none to run.
    pub(super) async fn llm_gate(&self, workspace: &str) -> Result<(), String> {
        if self.endpoints().is_none() {
            return Ok(());
        }
        if self.llm_gates.get(workspace).is_some_and(|at| at.elapsed() < GATE_TTL) {
            return Ok(());
        }
        let probe = self.probe_in_agent(workspace).await;
        match judge::gate(probe.as_ref().map_err(String::as_str), &self.config) {
            Gate::Fail(message) => {
                self.llm_gates.remove(workspace);
                Err(message)
            }
            Gate::Unknown(why) => {
                tracing::info!("workspace {workspace}: the LLM probe could not tell ({why}); the task goes on");
                self.llm_gates.insert(workspace.to_owned(), Instant::now());
                Ok(())
            }
            Gate::Pass => {
                self.llm_gates.insert(workspace.to_owned(), Instant::now());
                Ok(())
            }
        }
    }
}
