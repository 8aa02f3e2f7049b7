//! The command line: parses arguments, calls `core`, prints. No policy lives here.

mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::config::{self, Config, InstanceId};
use crate::core::{ExecTarget, UpOutcome, UpRequest, Workspaces};
use crate::pods::Podman;
use crate::pods::engine::Output;
use crate::pods::podman::default_socket;

#[derive(Debug, Parser)]
#[command(
    name = "devaipod",
    version,
    about = "Run AI coding agents in sandboxed podman pods, one pod per workspace"
)]
pub struct Cli {
    /// Config file (default: $XDG_CONFIG_HOME/devaipod.toml or ~/.config/devaipod.toml).
    #[arg(long, global = true, env = "DEVAIPOD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a workspace from a local git repository or a git URL and start its pod.
    Up(UpArgs),
    /// List this instance's workspaces.
    List,
    /// Show one workspace: pod and container states, source, ports.
    Status { workspace: String },
    /// Run a command in a workspace's container; its exit code becomes devaipod's.
    Exec(ExecArgs),
    /// Print a container's logs.
    Logs {
        workspace: String,
        /// The agent container instead of the workspace container.
        #[arg(long)]
        agent: bool,
        /// Keep printing new output.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Stop a workspace's pod (volumes and containers stay).
    Stop { workspace: String },
    /// Start a stopped workspace's pod.
    Start { workspace: String },
    /// Remove a workspace: its pod, containers and volumes.
    Delete {
        workspace: String,
        /// Keep the volumes (the repositories and the agent's home).
        #[arg(long)]
        keep_volumes: bool,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// A local git repository or a git URL.
    pub source: String,
    /// Workspace name (default: from the repository's name, made unique).
    #[arg(long)]
    pub name: Option<String>,
    /// Image for both containers, instead of devcontainer.json's or the default.
    #[arg(long)]
    pub image: Option<String>,
    /// Which `.devcontainer/<name>/devcontainer.json` to use when there are several.
    #[arg(long)]
    pub devcontainer: Option<String>,
    /// Print the plan (pod, containers, mounts, env, security options) and create nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub workspace: String,
    /// Run in the agent container instead of the workspace container.
    #[arg(long)]
    pub agent: bool,
    /// Pass stdin to the command (on by default when stdin is not a terminal).
    #[arg(short, long)]
    pub interactive: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Loads the config: `--config`/`DEVAIPOD_CONFIG` must exist, the default location may not.
/// `DEVAIPOD_INSTANCE` overrides `instance`.
pub fn load_config(explicit: Option<&std::path::Path>) -> Result<Config> {
    let mut config = match explicit {
        Some(p) => config::load(p, true)?,
        None => match config::default_path() {
            Some(p) => config::load(&p, false)?,
            None => Config::default(),
        },
    };
    if let Some(i) = std::env::var("DEVAIPOD_INSTANCE")
        .ok()
        .filter(|s| !s.is_empty())
    {
        config.instance =
            InstanceId::try_from(i).map_err(|e| anyhow::anyhow!("DEVAIPOD_INSTANCE: {e}"))?;
    }
    Ok(config)
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let config = load_config(cli.config.as_deref())?;
    let engine = Podman::new(&default_socket())?;
    let ws = Workspaces::new(config, engine);
    let progress = output::StderrProgress;
    match cli.command {
        Command::Up(a) => {
            let req = UpRequest {
                source: a.source,
                name: a.name,
                image: a.image,
                devcontainer: a.devcontainer,
                dry_run: a.dry_run,
            };
            match ws.up(&req, &progress).await? {
                UpOutcome::Planned(plan) => output::plan(&plan, cli.json)?,
                UpOutcome::Created(status) => {
                    output::status(&status, cli.json)?;
                    if !cli.json {
                        eprintln!(
                            "\nready: `devaipod exec {0} -- bash` for a shell, `devaipod delete {0}` when done",
                            status.name
                        );
                    }
                }
            }
        }
        Command::List => output::list(&ws.list().await?, cli.json)?,
        Command::Status { workspace } => output::status(&ws.status(&workspace).await?, cli.json)?,
        Command::Exec(a) => return exec(&ws, a).await,
        Command::Logs {
            workspace,
            agent,
            follow,
            tail,
        } => {
            let target = if agent {
                ExecTarget::Agent
            } else {
                ExecTarget::Workspace
            };
            let mut stream = ws.logs(&workspace, target, follow, tail).await?;
            let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
            while let Some(chunk) = stream.next().await {
                match chunk.context("reading logs")? {
                    Output::Stdout(b) => out.write_all(&b).await?,
                    Output::Stderr(b) => err.write_all(&b).await?,
                }
                out.flush().await?;
            }
        }
        Command::Stop { workspace } => {
            ws.stop(&workspace).await?;
            output::done("stopped", &workspace, cli.json)?;
        }
        Command::Start { workspace } => {
            ws.start(&workspace).await?;
            output::done("started", &workspace, cli.json)?;
        }
        Command::Delete {
            workspace,
            keep_volumes,
        } => {
            ws.delete(&workspace, keep_volumes).await?;
            output::done("deleted", &workspace, cli.json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn exec(ws: &Workspaces<Podman>, a: ExecArgs) -> Result<ExitCode> {
    let target = if a.agent {
        ExecTarget::Agent
    } else {
        ExecTarget::Workspace
    };
    let attach_stdin = a.interactive || !std::io::stdin().is_terminal();
    let mut session = ws
        .exec(&a.workspace, target, a.command, attach_stdin, false)
        .await?;
    let mut input = session.input;
    let pump = attach_stdin.then(|| {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
            let _ = input.shutdown().await;
        })
    });
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some(chunk) = session.output.next().await {
        match chunk? {
            Output::Stdout(b) => {
                out.write_all(&b).await?;
                out.flush().await?;
            }
            Output::Stderr(b) => err.write_all(&b).await?,
        }
    }
    if let Some(p) = pump {
        p.abort();
    }
    let code = ws.exit_code(&session.id).await?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}
