//! `devaipod doctor` and the hidden `devaipod probe-llm`. The checks and their words are
//! core's (`core::doctor`): this reads the config file, reaches the daemon (starting it, as
//! any command does), asks it for its checks, and prints them. When no daemon can be
//! reached, the same checks run here, with the caller's podman. Exit code 0 only when no
//! check is an error.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::client::{self, Client, UnixSocket};
use crate::config::{self, Config, ConfigError};
use crate::core::doctor::{self, Check, DaemonSeen, DoctorReport, DoctorRequest, Places};
use crate::core::{CallerEnv, Paths};
use crate::pods::Podman;
use crate::pods::podman::default_socket;

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Output {
    /// No check is an error.
    ok: bool,
    /// This devaipod's version.
    version: String,
    /// The daemon that answered (absent: none did; the checks ran here).
    daemon: Option<Daemon>,
    checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
struct Daemon {
    version: String,
    pid: u32,
    instance: String,
}

/// The config as this command reads it, and whether the file is valid.
fn read_config(explicit: Option<&Path>) -> Result<(Config, Option<ConfigError>)> {
    let location = super::config_location(explicit);
    let mut broken = None;
    let mut config = match &location {
        Some((path, must_exist)) => match config::load(path, *must_exist) {
            Ok(c) => c,
            Err(e) => {
                broken = Some(e);
                Config::default()
            }
        },
        None => Config::default(),
    };
    config.file = location.map(|(p, _)| p);
    if let Some(i) = super::instance_override()? {
        config.instance = i;
    }
    Ok((config, broken))
}

pub async fn run(explicit: Option<&Path>, workspace: Option<String>, as_json: bool) -> Result<ExitCode> {
    let (config, broken) = read_config(explicit)?;
    let paths = Paths::for_instance(config.instance.as_str()).map_err(anyhow::Error::msg)?;
    let req = DoctorRequest { env: Some(CallerEnv::current()), workspace };
    let cli_file = config.file.as_ref().map(|p| p.display().to_string());
    let log = paths.data.join("daemon.log");

    // The daemon as any command reaches it; with a broken config it would not start, so
    // only one that runs already is asked.
    // A daemon elsewhere (`[client] url`, `DEVAIPOD_URL`) is asked over TCP: its report is
    // of its host.
    let remote = client::Remote::from_env(&config.client);
    let client = match (&broken, remote) {
        (_, Err(e)) => Err(e.to_string()),
        (_, Ok(Some(remote))) => Client::connect_remote(&remote).await.map_err(|e| e.to_string()),
        (None, Ok(None)) => Client::connect(&paths, explicit).await.map_err(|e| e.to_string()),
        (Some(_), Ok(None)) if client::healthy(&paths.socket()).await => {
            Ok(Client::new(Arc::new(UnixSocket::new(&paths.socket()))))
        }
        (Some(_), Ok(None)) => Err("not started: the config file has an error (see `config`)".to_owned()),
    };
    let report: Result<DoctorReport, String> = match client {
        Ok(c) => c.doctor(&req).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };

    let (mut checks, daemon) = match report {
        Ok(r) => {
            let seen = DaemonSeen {
                version: &r.version,
                pid: r.pid,
                instance: &r.instance,
                config_file: r.config_file.as_deref(),
            };
            let line = doctor::judge::daemon(doctor::VERSION, cli_file.as_deref(), Ok(seen), &log);
            let mut checks = r.checks.clone();
            checks.push(line);
            (checks, Some(Daemon { version: r.version, pid: r.pid, instance: r.instance }))
        }
        Err(reason) => {
            let line = doctor::judge::daemon(doctor::VERSION, cli_file.as_deref(), Err(&reason), &log);
            let mut checks = local_checks(&config, &paths, &req).await?;
            if broken.is_some() {
                // Judged against the defaults, these would mislead: the file is what to fix.
                checks.retain(|c| !["api-key", "llm", "gator-token"].contains(&c.id.as_str()));
            }
            checks.push(line);
            (checks, None)
        }
    };
    doctor::sort(&mut checks);
    let ok = doctor::healthy(&checks);
    if as_json {
        super::output::json(&Output { ok, version: doctor::VERSION.to_owned(), daemon, checks })?;
    } else {
        super::output::doctor(&checks)?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The checks without a daemon, with this process's podman.
async fn local_checks(config: &Config, paths: &Paths, req: &DoctorRequest) -> Result<Vec<Check>> {
    let socket = default_socket();
    let engine = Podman::new(&socket)?;
    let places = Places { paths, opencode_dir: &crate::core::opencode_dir(), socket };
    Ok(doctor::checks(&engine, config, &places, req.env.as_ref()).await)
}

/// `devaipod probe-llm` (inside a container on the agent's network path): asks the LLM
/// endpoint for its models and prints the report as one JSON line. The URL is `--base-url`,
/// else the one in the agent's opencode configuration; the key is the agent's.
pub async fn probe_llm(base_url: Option<String>, timeout_secs: u64) -> Result<ExitCode> {
    let base_url = base_url
        .or_else(|| std::env::var("OPENCODE_CONFIG_CONTENT").ok().and_then(|c| crate::agent::config::base_url_of(&c)));
    let Some(url) = base_url else {
        // No report: whoever runs the probe cannot tell, rather than "unreachable".
        eprintln!("no base URL: pass --base-url (or run in an agent container)");
        return Ok(ExitCode::from(2));
    };
    let key = std::env::var(crate::agent::config::API_KEY_ENV).ok();
    let report = crate::agent::llm::probe(&url, key.as_deref(), Duration::from_secs(timeout_secs.clamp(1, 60))).await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}
