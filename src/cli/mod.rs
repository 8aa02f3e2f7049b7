//! The command line: parses arguments, talks to the daemon (through `crate::client`), prints
//! (`output.rs`). No policy lives here. `exec` and `logs` ask the daemon where to run and
//! then stream through podman themselves; they change no state.

mod doctor;
mod generate;
mod init;
mod interactive;
mod output;
mod systemd;
#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::client::{Client, UpProgress, UpResult};
use crate::config::{self, Config, InstanceId};
use crate::core::{ApproveAction, CallerEnv, ExecTarget, Paths, ProposalQuery, SetRequest, TaskQuery, UpRequest};
use crate::pods::engine::Output;
use crate::pods::podman::default_socket;
use crate::pods::{Engine, Podman};
use crate::store::{SetState, TaskState};

#[derive(Debug, Parser)]
#[command(name = "devaipod", version, about = "Run AI coding agents in sandboxed podman pods, one pod per workspace")]
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
    /// Run the daemon (API on a unix socket and on 127.0.0.1:8080). Other commands start it when needed.
    Serve {
        /// TCP address of the API.
        #[arg(long, env = "DEVAIPOD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Print the API token (for `Authorization: Bearer …` on the TCP API and /mcp).
    Token,
    /// Restart the daemon with this devaipod binary (after an upgrade): wait until no task is
    /// being delivered, stop it gracefully, start this binary; unfinished tasks resume.
    RestartDaemon,
    /// Serve MCP on stdin/stdout for an assistant or IDE (a client of the daemon).
    Mcp,
    /// Create a workspace from a local git repository, a git URL or a GitHub URL and start its pod.
    Up(UpArgs),
    /// Create a workspace (or use one, with -w), run a task in it and follow it until it ends.
    Run(RunArgs),
    /// List this instance's workspaces.
    List,
    /// Show one workspace: pod and container states, source, ports.
    Status { workspace: String },
    /// Run a command in a workspace's container; its exit code becomes devaipod's.
    Exec(ExecArgs),
    /// A login shell in the workspace folder, with a terminal; runs devcontainer.json's
    /// postAttachCommand first.
    Attach { workspace: String },
    /// SSH into a workspace through the daemon's SSH server (runs the system's `ssh` with
    /// the right port, user and pinned host key).
    Ssh {
        workspace: String,
        /// The agent's container (its confinement as it is) instead of the workspace's.
        #[arg(long)]
        agent: bool,
        /// A command instead of a login shell, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print `Host devaipod-<workspace>` entries for ~/.ssh/config (ssh, VS Code Remote-SSH, Zed).
    SshConfig,
    /// List the ports a workspace forwards (devcontainer.json's forwardPorts).
    Ports { workspace: String },
    /// Forward workspace ports to 127.0.0.1 until interrupted: PORT or LOCAL:PORT (default:
    /// every forwardPorts port).
    Forward {
        workspace: String,
        #[arg(value_name = "PORT|LOCAL:PORT")]
        ports: Vec<String>,
    },
    /// Print systemd unit files for the daemon: a service running this binary (--user, or
    /// --system), or with --quadlet the Quadlet files (devaipod.container + devaipod-state.volume)
    /// for the daemon in a container.
    Systemd(SystemdArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page devaipod(1) (roff: `devaipod man | man -l -`).
    Man,
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
        /// The bytes as they are, escape sequences included (refused when stdout is a
        /// terminal: pipe it or redirect it).
        #[arg(long)]
        raw: bool,
    },
    /// Stop a workspace's pod (volumes and containers stay).
    Stop { workspace: String },
    /// Start a stopped workspace's pod and wait for its agent.
    Start { workspace: String },
    /// Remove a workspace: its pod, containers, secrets, volumes and repository copy.
    Delete {
        workspace: String,
        /// Keep the volumes (the repositories and the agent's home).
        #[arg(long)]
        keep_volumes: bool,
    },
    /// List tasks, newest first.
    Tasks {
        #[arg(short, long)]
        workspace: Option<String>,
        /// queued, running, needs_input, completed, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show a task and its progress events.
    Task { id: String },
    /// Cancel a running task (its agent session is aborted), or a proposal set (s-…: its
    /// candidates are cancelled and their containers removed).
    Cancel { id: String },
    /// Show the warm pool (`[pool]` in devaipod.toml): per image, the pods kept started
    /// for `up` to take, and those being started.
    Pool,
    /// List proposal sets (fan-out: `devaipod run --agents N`), newest first.
    Sets {
        #[arg(short, long)]
        workspace: Option<String>,
    },
    /// Compare a proposal set's candidates: state, model, duration, files, +/-, the check's
    /// result and last lines; with --diff A B, the diff from candidate A's work to B's.
    Compare {
        id: String,
        /// The diff between two candidates (their numbers).
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        diff: Option<Vec<u32>>,
        /// Wait until every candidate has ended, printing each change.
        #[arg(long)]
        wait: bool,
    },
    /// List proposals, newest first.
    Proposals {
        #[arg(short, long)]
        workspace: Option<String>,
        /// open, applied, pushed or rejected.
        #[arg(long)]
        state: Option<String>,
        /// At most this many (default 50, at most 500).
        #[arg(long)]
        limit: Option<u32>,
        /// Skip this many (the next page).
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Show one proposal: its branch, commits, files with +/- and approvals.
    Proposal { id: String },
    /// Print a proposal's unified diff (control characters shown, never sent to the terminal).
    Diff {
        id: String,
        /// The agent's bytes as they are, escape sequences included (refused when stdout is
        /// a terminal: pipe it or redirect it, e.g. `> change.patch`).
        #[arg(long)]
        raw: bool,
    },
    /// Approve a proposal: --apply puts its branch into the workspace's repository, --push pushes it.
    Approve(ApproveArgs),
    /// Reject a proposal; with -m, the feedback goes to the same agent as a follow-up task.
    /// A proposal set (s-…): with -m, every candidate with an open proposal (or those given
    /// with --candidate) gets the feedback as its next round; without, the set is closed.
    Reject {
        id: String,
        #[arg(short = 'm', long = "message")]
        feedback: Option<String>,
        /// For a proposal set: only this candidate gets the feedback (repeatable).
        #[arg(long = "candidate", value_name = "N")]
        candidates: Vec<u32>,
    },
    /// What a workspace's agent may do through gator (GitHub, git push), and what it did.
    #[command(subcommand)]
    Gator(GatorCommand),
    /// Which hosts a workspace's agent may reach through the egress proxy (beyond the LLM).
    #[command(subcommand)]
    Egress(EgressCommand),
    /// Print a workspace as Kubernetes YAML: PersistentVolumeClaims, the workspace's Pod,
    /// the agent's Pod (hardened as in podman), a NetworkPolicy walling the agent in, and
    /// Secrets (referenced; printed only with --show-secrets). See docs/kubernetes.md.
    Kube(KubeArgs),
    /// (Run by the daemon through nsenter, inside a pod's namespaces) connect to
    /// 127.0.0.1:PORT and relay stdio to it: a rootless daemon's port forwards.
    #[command(hide = true)]
    TcpRelay {
        #[arg(long)]
        port: u16,
    },
    /// (Inside an agent container) pipe stdio to the pod's gator socket. Run by opencode.
    #[command(hide = true)]
    GatorBridge { socket: PathBuf },
    /// (An agent container's main process) run the agent; relay its API socket and its
    /// traffic out to the daemon's egress proxy.
    #[command(hide = true)]
    AgentShim {
        /// The API socket to serve.
        #[arg(long)]
        api: PathBuf,
        /// The agent's own address on loopback (an agent with an HTTP API).
        #[arg(long, required_unless_present = "acp")]
        to: Option<String>,
        /// The agent speaks the Agent Client Protocol on its stdio: bridge it.
        #[arg(long, conflicts_with = "to")]
        acp: bool,
        /// The pod's gator socket, given to an ACP agent as its MCP server `gator`.
        #[arg(long, requires = "acp")]
        gator: Option<PathBuf>,
        /// The loopback port the agent's traffic out is taken on.
        #[arg(long)]
        egress_port: u16,
        /// The daemon's egress proxy socket.
        #[arg(long)]
        egress: PathBuf,
        /// The agent's command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Check the setup: podman, image, opencode, config, daemon, API key, the LLM from the agents' network, disk.
    /// Exit code 0 only when nothing is an error.
    Doctor {
        /// Probe the LLM from this workspace's agent (default: a throwaway container on the same network).
        #[arg(short, long)]
        workspace: Option<String>,
    },
    /// Write the config file's [agent] section (flags, or questions in a terminal), after checking the LLM.
    Init(init::InitArgs),
    /// (Inside a container on the agents' network) ask the LLM endpoint for its models; prints JSON.
    #[command(hide = true)]
    ProbeLlm {
        /// Default: the URL in the agent's opencode configuration.
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
}

#[derive(Debug, Args)]
pub struct KubeArgs {
    pub workspace: String,
    /// `metadata.namespace` of every object (default: none, kubectl's current one).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Size each PersistentVolumeClaim requests.
    #[arg(long, value_name = "QUANTITY", default_value = "10Gi")]
    pub volume_size: String,
    /// Print the Secrets with their values (the agent's password, trusted variables)
    /// instead of only referencing them. Treat the output as a secret.
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Subcommand)]
pub enum EgressCommand {
    /// Show what a workspace's agent may reach: the mode, its own hosts, [network] allow-hosts.
    Show { workspace: String },
    /// Let the agent reach more hosts: host, host:port, *.domain or *.domain:port (no port:
    /// 80 and 443). Applies at once. The refusals are in `devaipod gator log`.
    Allow {
        workspace: String,
        #[arg(required = true, value_name = "PATTERN")]
        hosts: Vec<String>,
    },
    /// Take a host pattern off the workspace's own list.
    Remove {
        workspace: String,
        #[arg(value_name = "PATTERN")]
        host: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatorCommand {
    /// Show a workspace's scopes (its own and those from devaipod.toml).
    Show { workspace: String },
    /// Grant a scope: `github:owner/repo[:read,create-draft,push-new-branch,pending-review,write]`,
    /// `github:owner/*[:…]` or `readonly-all`.
    Add { workspace: String, scope: String },
    /// Take back a scope the workspace has.
    Remove { workspace: String, scope: String },
    /// The audit log of gator calls (allowed, denied, failed), newest first.
    Log {
        /// One workspace (default: all).
        workspace: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// A local git repository, a git URL, or a GitHub repository/issue/PR URL.
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
    /// For a GitHub source: the agent may only read (no push, no draft PR).
    #[arg(short = 'R', long)]
    pub read_only: bool,
    /// Also start a task with this prompt (without following it).
    #[arg(short = 'c', long = "command")]
    pub task: Option<String>,
    /// A host the agent may reach beyond [network] allow-hosts (repeatable): host,
    /// host:port, *.domain or *.domain:port. Change later with `devaipod egress`.
    #[arg(long = "allow-host", value_name = "PATTERN")]
    pub allow_hosts: Vec<String>,
    /// The agent to run instead of [agent]'s: opencode, opencode-acp, or an [agents.NAME]
    /// of the config (see docs/agents.md).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct SystemdArgs {
    /// A user unit (`systemctl --user`; the default when not root).
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// A system unit (the default as root).
    #[arg(long)]
    pub system: bool,
    /// Quadlet files for the daemon in a container (podman >= 4.4, rootful) instead.
    #[arg(long, conflicts_with = "user")]
    pub quadlet: bool,
    /// With --quadlet: the daemon's image.
    #[arg(long, default_value = "localhost/devaipod:latest", requires = "quadlet")]
    pub image: String,
    /// With --quadlet: a host directory of local repositories, mounted read-only at the
    /// same path (repeatable; default: $HOME).
    #[arg(long = "source", value_name = "DIR", requires = "quadlet")]
    pub sources: Vec<PathBuf>,
    /// With --quadlet: podman's storage root (`podman info --format '{{.Store.GraphRoot}}'`).
    #[arg(long, default_value = "/var/lib/containers/storage", requires = "quadlet")]
    pub graph_root: PathBuf,
    /// The API's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Write the files into this directory (e.g. /etc/containers/systemd or
    /// ~/.config/systemd/user) instead of printing them.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A local git repository, a git URL, or a GitHub issue/PR URL (omit with -w).
    #[arg(required_unless_present = "workspace")]
    pub source: Option<String>,
    /// Run in this existing workspace instead of creating one.
    #[arg(short, long, conflicts_with_all = ["source", "name", "image", "read_only"])]
    pub workspace: Option<String>,
    /// What the agent should do (default for a GitHub issue URL: the title and body).
    #[arg(short = 'c', long = "command")]
    pub task: Option<String>,
    /// For a GitHub source: the agent may only read (no push, no draft PR).
    #[arg(short = 'R', long)]
    pub read_only: bool,
    /// Workspace name (default: from the repository's name, made unique).
    #[arg(long)]
    pub name: Option<String>,
    /// Image for both containers, instead of devcontainer.json's or the default.
    #[arg(long)]
    pub image: Option<String>,
    /// Let the agent delegate parts of the task to up to N sandboxed worker agents
    /// (`[orchestration] max-workers` at most); their tasks show under the task.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub workers: u32,
    /// Fan-out: give the task to N candidate agents at once, each in its own sandbox, and
    /// compare their proposals (`[fanout] max-agents` at most).
    #[arg(long, value_name = "N", conflicts_with = "workers")]
    pub agents: Option<u32>,
    /// With --agents: the model of each candidate, in order (repeat it once per candidate;
    /// from `[agent] model` and `[agent] models`).
    #[arg(long = "model", value_name = "MODEL", requires = "agents")]
    pub models: Vec<String>,
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
    /// Give the command a terminal (this one, in raw mode, its size followed): `-it` for
    /// an interactive shell.
    #[arg(short, long)]
    pub tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["apply", "push", "draft_pr"])))]
pub struct ApproveArgs {
    pub id: String,
    /// Fetch the branch into the human's workspace repository.
    #[arg(long)]
    pub apply: bool,
    /// Push the branch to the source's remote.
    #[arg(long)]
    pub push: bool,
    /// Push and open a draft pull request (with gator).
    #[arg(long)]
    pub draft_pr: bool,
}

/// Loads the config: `--config`/`DEVAIPOD_CONFIG` must exist, the default location may not.
/// `DEVAIPOD_INSTANCE` overrides `instance`.
pub fn load_config(explicit: Option<&std::path::Path>) -> Result<Config> {
    let mut config = match config_location(explicit) {
        Some((p, must_exist)) => Config { file: Some(p.clone()), ..config::load(&p, must_exist)? },
        None => Config::default(),
    };
    if let Some(i) = instance_override()? {
        config.instance = i;
    }
    Ok(config)
}

/// The config file to read and whether it must exist: `--config`/`DEVAIPOD_CONFIG` must, the
/// default location may be missing.
pub fn config_location(explicit: Option<&std::path::Path>) -> Option<(PathBuf, bool)> {
    match explicit {
        Some(p) => Some((p.to_owned(), true)),
        None => config::default_path().map(|p| (p, false)),
    }
}

/// `DEVAIPOD_INSTANCE`, when set: it overrides the config's `instance`.
fn instance_override() -> Result<Option<InstanceId>> {
    match std::env::var("DEVAIPOD_INSTANCE").ok().filter(|s| !s.is_empty()) {
        Some(i) => Ok(Some(InstanceId::try_from(i).map_err(|e| anyhow::anyhow!("DEVAIPOD_INSTANCE: {e}"))?)),
        None => Ok(None),
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::GatorBridge { socket } => {
            crate::gator::bridge::run(&socket).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::ProbeLlm { base_url, timeout_secs } => return doctor::probe_llm(base_url, timeout_secs).await,
        Command::TcpRelay { port } => {
            crate::pods::interactive::tcp_relay(port).await.map_err(anyhow::Error::msg)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::AgentShim { api, to, acp, gator, egress_port, egress, command } => {
            let shim = crate::agent::shim::Shim { api, to, acp, gator, egress_port, egress, command };
            return crate::agent::shim::run(shim).await.context("agent-shim");
        }
        // These read the config file themselves: doctor reports a broken one, init writes it.
        Command::Doctor { workspace } => return doctor::run(cli.config.as_deref(), workspace, cli.json).await,
        Command::Completions { shell } => {
            generate::completions(shell, &mut std::io::stdout().lock())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            generate::man(&mut std::io::stdout().lock())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Init(args) => return init::run(cli.config.as_deref(), args, cli.json).await,
        _ => {}
    }
    let config = load_config(cli.config.as_deref())?;
    let paths = Paths::for_instance(config.instance.as_str()).map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Systemd(a) => systemd_files(a, &config, cli.config.as_deref(), cli.json),
        Command::Serve { listen } => {
            crate::daemon::run(config, &listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token => {
            let token = crate::web::auth::load_or_create(&paths.token())?;
            if cli.json {
                output::json(&json!({ "token": token }))?;
            } else {
                println!("{token}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::RestartDaemon => {
            local_only(
                &config,
                "restart-daemon",
                "restart that daemon where it runs (`podman restart devaipod` for the container, `systemctl restart` for a unit), or unset DEVAIPOD_URL to restart this host's own",
            )?;
            let r = Client::restart_daemon(&paths, cli.config.as_deref(), &|line| eprintln!("{line}")).await?;
            if cli.json {
                let stopped =
                    r.stopped.as_ref().map(|(pid, v)| json!({ "pid": pid, "version": v.as_ref().map(|v| &v.version) }));
                output::json(&json!({ "stopped": stopped, "started": r.started, "resumed": r.resumed }))?;
            } else {
                println!("{}", r.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SshConfig => {
            local_only(&config, "ssh-config", SSH_REMOTE)?;
            let client = connect(&config, &paths, cli.config.as_deref()).await?;
            interactive::ssh_config(&client, &config, &paths, cli.json).await
        }
        Command::Ssh { workspace, agent, command } => {
            local_only(&config, "ssh", SSH_REMOTE)?;
            let client = connect(&config, &paths, cli.config.as_deref()).await?;
            interactive::ssh(&client, &config, &paths, &workspace, agent, command).await
        }
        command => {
            if matches!(command, Command::Forward { .. }) {
                local_only(
                    &config,
                    "forward",
                    "it connects into the pod through this host's podman; run it on the daemon's host, or unset DEVAIPOD_URL",
                )?;
            }
            let client = connect(&config, &paths, cli.config.as_deref()).await?;
            if config.engine.kind == crate::config::EngineKind::Kubernetes
                && let Some(code) = on_kubernetes(&command, &config, &client).await?
            {
                return Ok(code);
            }
            execute(command, &client, cli.json).await
        }
    }
}

const SSH_REMOTE: &str = "its SSH server listens on the daemon's own loopback with a host key pinned in that daemon's data directory; run it on the daemon's host, or unset DEVAIPOD_URL";

/// A command that works with this host's own daemon only refuses a daemon elsewhere
/// (`[client] url`, `DEVAIPOD_URL`), saying what to do instead.
fn local_only(config: &Config, command: &str, instead: &str) -> Result<()> {
    if let Some(remote) = crate::client::Remote::from_env(&config.client)? {
        bail!(
            "`devaipod {command}` works with this host's own daemon only, and the CLI is pointed at {} ([client] url or DEVAIPOD_URL): {instead}",
            remote.url
        );
    }
    Ok(())
}

/// `devaipod logs`, on the daemon's engine.
async fn logs(
    c: &Client,
    engine: &impl Engine,
    workspace: &str,
    agent: bool,
    follow: bool,
    tail: Option<u32>,
    raw: bool,
) -> Result<()> {
    if raw {
        output::refuse_raw_on_terminal(std::io::stdout().is_terminal())?;
    }
    let status = c.workspace(workspace).await?; // exists in this instance
    // Its containers are named after its pod's objects (a former pool member's key).
    let objects = status.pod.strip_prefix(crate::pods::naming::PREFIX).filter(|o| *o != workspace);
    let name = crate::pods::naming::WorkspaceName::new(workspace)?.in_pool_member(objects.map(str::to_owned));
    let role = if agent { crate::pods::naming::Role::Agent } else { crate::pods::naming::Role::Workspace };
    let mut stream = engine.logs(&name.container(role), follow, tail);
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    // What the containers print is the agent's (or its tools'): cleaned unless --raw.
    let (mut clean_out, mut clean_err) = (output::Cleaner::default(), output::Cleaner::default());
    while let Some(chunk) = stream.next().await {
        match chunk.context("reading logs")? {
            Output::Stdout(b) if raw => out.write_all(&b).await?,
            Output::Stderr(b) if raw => err.write_all(&b).await?,
            Output::Stdout(b) => out.write_all(clean_out.push(&b).as_bytes()).await?,
            Output::Stderr(b) => err.write_all(clean_err.push(&b).as_bytes()).await?,
        }
        out.flush().await?;
    }
    out.write_all(clean_out.finish().as_bytes()).await?;
    err.write_all(clean_err.finish().as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// The commands that reach into a workspace's containers themselves, when the daemon's
/// workspaces run on Kubernetes: `exec` and `logs` through its API (this host's
/// kubeconfig), the rest refused with what to use instead. `None`: not one of them.
async fn on_kubernetes(command: &Command, config: &Config, c: &Client) -> Result<Option<ExitCode>> {
    let instead = |what: &str| -> Result<Option<ExitCode>> {
        bail!(
            "`devaipod {what}` needs podman, and the workspaces run on Kubernetes ([engine] kind = \"kubernetes\"): use `kubectl exec -it` / `kubectl port-forward` on the workspace's Pod (`devaipod status <workspace>` names it)"
        )
    };
    match command {
        Command::Exec(a) if a.tty => instead("exec -t"),
        Command::Attach { .. } => instead("attach"),
        Command::Forward { .. } => instead("forward"),
        Command::Exec(_) | Command::Logs { .. } => {
            let (ctx, ns) = (config.engine.context.as_deref(), config.engine.namespace.as_deref());
            let engine = crate::pods::kube::Kube::connect(ctx, ns).await?;
            match command {
                Command::Exec(a) => Ok(Some(
                    exec(
                        c,
                        &engine,
                        ExecArgs {
                            workspace: a.workspace.clone(),
                            agent: a.agent,
                            interactive: a.interactive,
                            tty: false,
                            command: a.command.clone(),
                        },
                    )
                    .await?,
                )),
                Command::Logs { workspace, agent, follow, tail, raw } => {
                    logs(c, &engine, workspace, *agent, *follow, *tail, *raw).await?;
                    Ok(Some(ExitCode::SUCCESS))
                }
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// `devaipod systemd`: the unit files, printed (`--json`: names and contents) or written.
fn systemd_files(a: SystemdArgs, config: &Config, file: Option<&std::path::Path>, json: bool) -> Result<ExitCode> {
    a.listen
        .parse::<std::net::SocketAddr>()
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}: give host:port, e.g. 127.0.0.1:8080", a.listen))?;
    let absolute = |p: &std::path::Path, what: &str| -> Result<PathBuf> {
        if p.is_absolute() {
            Ok(p.to_owned())
        } else {
            bail!("{what} {} is a relative path: give an absolute one", p.display())
        }
    };
    let config_file = match file {
        Some(f) => Some(std::path::absolute(f).with_context(|| format!("--config {}", f.display()))?),
        None => None,
    };
    let files: Vec<(String, String)> = if a.quadlet {
        let mut sources = Vec::new();
        for s in &a.sources {
            sources.push(absolute(s, "--source")?);
        }
        if a.sources.is_empty() {
            sources.extend(std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from));
        }
        let q = systemd::Quadlet {
            image: a.image,
            instance: config.instance.as_str().to_owned(),
            listen: a.listen,
            graph_root: absolute(&a.graph_root, "--graph-root")?,
            sources,
            config: config_file.or_else(|| config.file.clone().filter(|f| f.is_file())),
        };
        q.files().into_iter().map(|(n, c)| (n.to_owned(), c)).collect()
    } else {
        let scope = if a.system || (!a.user && crate::pods::podman::is_root()) {
            systemd::Scope::System
        } else {
            systemd::Scope::User
        };
        let exe = std::env::current_exe().context("cannot find the devaipod executable")?;
        let unit = systemd::HostUnit { scope, exe, listen: a.listen, config: config_file };
        vec![("devaipod.service".to_owned(), systemd::host_unit(&unit))]
    };
    if let Some(dir) = &a.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, content) in &files {
            let path = dir.join(name);
            std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if json {
        let list: Vec<_> = files.iter().map(|(n, c)| json!({ "name": n, "content": c })).collect();
        output::json(&json!({ "files": list }))?;
    } else if a.dir.is_none() {
        for (i, (name, content)) in files.iter().enumerate() {
            if files.len() > 1 {
                println!("{}# ==> {name} <==", if i > 0 { "\n" } else { "" });
            }
            print!("{content}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The daemon this command talks to: the one at `[client] url`/`DEVAIPOD_URL` over TCP
/// with its token, else this user's own on its unix socket (started when none answers).
async fn connect(config: &Config, paths: &Paths, file: Option<&std::path::Path>) -> Result<Client> {
    match crate::client::Remote::from_env(&config.client)? {
        Some(remote) => Ok(Client::connect_remote(&remote).await?),
        None => Ok(Client::connect(paths, file).await?),
    }
}

/// Runs one command against the daemon behind `c`: each command is one typed request (or a
/// few) of the client, printed. The caller's directory and environment go with `up`/`run`.
pub async fn execute(command: Command, c: &Client, json: bool) -> Result<ExitCode> {
    match command {
        Command::Serve { .. }
        | Command::Token
        | Command::GatorBridge { .. }
        | Command::AgentShim { .. }
        | Command::RestartDaemon
        | Command::ProbeLlm { .. }
        | Command::Doctor { .. }
        | Command::Completions { .. }
        | Command::TcpRelay { .. }
        | Command::Man
        | Command::Systemd(_)
        | Command::Ssh { .. }
        | Command::SshConfig
        | Command::Init(_) => {
            bail!("this command does not talk to the daemon through `execute`")
        }
        Command::Mcp => {
            crate::mcp::serve_stdio(c.clone()).await?;
        }
        Command::Up(a) => {
            let req = UpRequest {
                source: caller_source(&a.source)?,
                name: a.name,
                image: a.image,
                devcontainer: a.devcontainer,
                dry_run: a.dry_run,
                read_only: a.read_only,
                task: a.task,
                require_task: false,
                workers: 0,
                env: Some(CallerEnv::current()),
                allow_hosts: a.allow_hosts,
                agent: a.agent,
            };
            let created = match up(c, &req).await? {
                UpResult::Planned(plan) => {
                    output::plan(&plan, json)?;
                    return Ok(ExitCode::SUCCESS);
                }
                UpResult::Created(created) => created,
            };
            let name = created.workspace.name.clone();
            if let Some(e) = &created.first_task_error {
                eprintln!("warning: {}", output::clean(e));
            }
            if json {
                output::json(&json!({
                    "workspace": created.workspace,
                    "task": created.task,
                    "first_task_error": created.first_task_error,
                    "from_pool": created.from_pool,
                    "pool": created.pool,
                }))?;
            } else {
                output::status(&serde_json::to_value(&created.workspace)?)?;
                match (&created.from_pool, &created.pool) {
                    (true, _) => println!("pool       a warm pod was taken"),
                    (false, Some(why)) => println!("pool       made cold: {}", output::clean(why)),
                    (false, None) => {}
                }
                if let Some(t) = &created.task {
                    println!("task       {} (follow with `devaipod task {}`)", t.id, t.id);
                }
                eprintln!(
                    "\nready: `devaipod exec {name} -- git status`, `devaipod run -w {name} -c \"…\"`, `devaipod delete {name}`"
                );
            }
        }
        Command::Run(a) if a.agents.is_some() => {
            let prompt = a.task.clone().unwrap_or_default();
            if prompt.trim().is_empty() {
                bail!("-c is required with --agents: say what the candidates should do");
            }
            let workspace = match (a.workspace, a.source) {
                (Some(w), _) => w,
                (None, Some(source)) => {
                    let req = run_up(&source, a.name, a.image, a.read_only)?;
                    match up(c, &req).await? {
                        UpResult::Created(created) => created.workspace.name,
                        UpResult::Planned(_) => bail!("the daemon answered with a plan"),
                    }
                }
                (None, None) => bail!("give a source or -w <workspace>"),
            };
            let req = SetRequest { workspace, prompt, agents: a.agents.unwrap_or(0), models: a.models };
            let set = c.run_set(&req).await?;
            eprintln!(
                "==> proposal set {} in workspace {}: {} candidate(s)",
                set.set.id,
                set.set.workspace,
                set.candidates.len()
            );
            return compare(c, &set.set.id, true, json).await;
        }
        Command::Run(a) => {
            let task = match (a.workspace, a.source) {
                (Some(w), _) => c.run_task_with(&w, a.task.as_deref().unwrap_or_default(), a.workers).await?,
                (None, Some(source)) => {
                    let req = UpRequest {
                        task: a.task,
                        require_task: true,
                        workers: a.workers,
                        ..run_up(&source, a.name, a.image, a.read_only)?
                    };
                    match up(c, &req).await? {
                        UpResult::Created(created) => match (created.task, created.first_task_error) {
                            (Some(t), _) => t,
                            (None, e) => bail!(
                                "workspace `{}` is up, but {}",
                                created.workspace.name,
                                e.unwrap_or_else(|| "the daemon started no task".into())
                            ),
                        },
                        UpResult::Planned(_) => bail!("the daemon answered with a plan"),
                    }
                }
                (None, None) => bail!("give a source or -w <workspace>"),
            };
            eprintln!("==> task {} in workspace {}", task.id, task.workspace);
            return follow(c, &task.id, json).await;
        }
        Command::List => output::list(&serde_json::to_value(c.workspaces().await?)?, json)?,
        Command::Status { workspace } => {
            let v = serde_json::to_value(c.workspace(&workspace).await?)?;
            if json { output::json(&v)? } else { output::status(&v)? }
        }
        Command::Exec(a) => {
            let engine = Podman::new(&default_socket())?;
            if a.tty {
                let place = c.exec_place(&a.workspace, ExecTarget::of(a.agent)).await?;
                return Ok(interactive::exit_code(interactive::run_tty(&engine, &place, a.command).await?));
            }
            return exec(c, &engine, a).await;
        }
        Command::Attach { workspace } => return interactive::attach(c, &workspace).await,
        Command::Ports { workspace } => return interactive::ports(c, &workspace, json).await,
        Command::Forward { workspace, ports } => return interactive::forward(c, &workspace, &ports).await,
        Command::Logs { workspace, agent, follow, tail, raw } => {
            let engine = Podman::new(&default_socket())?;
            logs(c, &engine, &workspace, agent, follow, tail, raw).await?;
        }
        Command::Stop { workspace } => output::done(&serde_json::to_value(c.stop(&workspace).await?)?, json)?,
        Command::Start { workspace } => output::done(&serde_json::to_value(c.start(&workspace).await?)?, json)?,
        Command::Delete { workspace, keep_volumes } => {
            output::done(&serde_json::to_value(c.delete(&workspace, keep_volumes).await?)?, json)?
        }
        Command::Tasks { workspace, state } => {
            let tasks = c.tasks(&TaskQuery { workspace, state }).await?;
            output::tasks(&serde_json::to_value(tasks)?, json)?;
        }
        Command::Task { id } => output::task(&serde_json::to_value(c.task(&id).await?)?, json)?,
        Command::Cancel { id } if id.starts_with("s-") => {
            let set = c.cancel_set(&id).await?;
            if json { output::json(&set)? } else { println!("proposal set {} {}", set.set.id, set.set.state.as_str()) }
        }
        Command::Pool => output::pool(&c.pool().await?, json)?,
        Command::Sets { workspace } => {
            let sets = c.sets(workspace.as_deref()).await?;
            output::sets(&sets, json)?;
        }
        Command::Compare { id, diff: Some(ab), .. } => {
            let (a, b) = (ab.first().copied().unwrap_or(0), ab.get(1).copied().unwrap_or(0));
            let diff = c.diff_candidates(&id, a, b).await?;
            if json { output::json(&json!({ "set": id, "a": a, "b": b, "diff": diff }))? } else { output::diff(&diff)? }
        }
        Command::Compare { id, wait, .. } => return compare(c, &id, wait, json).await,
        Command::Cancel { id } => {
            let t = c.cancel_task(&id).await?;
            if json { output::json(&t)? } else { println!("task {} {}", t.id, t.state.as_str()) }
        }
        Command::Proposals { workspace, state, limit, offset } => {
            let page = c.proposals(&ProposalQuery { workspace, state, limit, offset }).await?;
            output::proposals(&page, json)?;
        }
        Command::Proposal { id } => {
            let p = c.proposal(&id).await?;
            if json { output::json(&p)? } else { output::proposal(&p)? }
        }
        Command::Diff { id, raw } => {
            if raw && !json {
                output::refuse_raw_on_terminal(std::io::stdout().is_terminal())?;
            }
            let diff = c.diff(&id).await?;
            if json {
                output::json(&json!({ "proposal": id, "diff": diff }))?
            } else if raw {
                std::io::Write::write_all(&mut std::io::stdout().lock(), diff.as_bytes())?
            } else {
                output::diff(&diff)?
            }
        }
        Command::Approve(a) => {
            let action = if a.apply {
                ApproveAction::Apply
            } else if a.push {
                ApproveAction::Push
            } else {
                ApproveAction::DraftPr
            };
            let p = c.approve(&a.id, action).await?;
            if json {
                output::json(&p)?
            } else {
                println!("proposal {} {} ({})", p.proposal.id, p.proposal.state.as_str(), p.proposal.branch);
                if let Some(last) = p.approvals.last() {
                    println!("{}", output::clean(&last.detail));
                }
            }
        }
        Command::Gator(g) => gator(c, g, json).await?,
        Command::Kube(a) => {
            let req = crate::core::kube::KubeRequest {
                namespace: a.namespace,
                volume_size: Some(a.volume_size),
                show_secrets: a.show_secrets,
            };
            let m = c.kube(&a.workspace, &req).await?;
            if json {
                output::json(&m)?;
            } else {
                let mut out = std::io::stdout().lock();
                std::io::Write::write_all(
                    &mut out,
                    crate::pods::kube::yaml::to_yaml(&m.comments(), &m.documents).as_bytes(),
                )?;
            }
        }
        Command::Egress(e) => {
            let view = match e {
                EgressCommand::Show { workspace } => c.egress(&workspace).await?,
                EgressCommand::Allow { workspace, hosts } => c.egress_allow(&workspace, &hosts).await?,
                EgressCommand::Remove { workspace, host } => c.egress_remove(&workspace, &host).await?,
            };
            if json {
                output::json(&view)?;
            } else {
                output::egress(&view)?;
            }
        }
        Command::Reject { id, feedback, candidates } if id.starts_with("s-") => {
            let r = c.reject_set(&id, feedback.as_deref(), &candidates).await?;
            if json {
                output::json(&r)?;
            } else if r.next_round.is_empty() {
                println!("proposal set {id} rejected");
            } else {
                let listed: Vec<String> = r.next_round.iter().map(u32::to_string).collect();
                println!(
                    "proposal set {id}: round {} with the feedback for candidate(s) {} (follow with `devaipod compare {id} --wait`)",
                    r.set.set.round,
                    listed.join(", ")
                );
            }
        }
        Command::Reject { id, candidates, .. } if !candidates.is_empty() => {
            bail!("--candidate is for a proposal set (s-…), not `{id}`")
        }
        Command::Reject { id, feedback, .. } => {
            let r = c.reject(&id, feedback.as_deref()).await?;
            if json {
                output::json(&r)?;
            } else {
                println!("proposal {id} rejected");
                if let Some(t) = &r.follow_up_task {
                    println!("feedback sent to the agent as task {} (follow with `devaipod task {}`)", t.id, t.id);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn gator(c: &Client, cmd: GatorCommand, json: bool) -> Result<()> {
    let view = match cmd {
        GatorCommand::Show { workspace } => c.scopes(&workspace).await?,
        GatorCommand::Add { workspace, scope } => c.add_scope(&workspace, &scope).await?,
        GatorCommand::Remove { workspace, scope } => c.remove_scope(&workspace, &scope).await?,
        GatorCommand::Log { workspace, limit } => {
            let v = serde_json::to_value(c.audit(workspace.as_deref(), limit).await?)?;
            return if json { output::json(&v) } else { output::audit(&v) };
        }
    };
    let view = serde_json::to_value(view)?;
    if json { output::json(&view) } else { output::scopes(&view) }
}

/// The source as the daemon needs it: a relative path made absolute against this shell's
/// directory (core's rule, `core::source::absolute`).
fn caller_source(source: &str) -> Result<String> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(crate::core::source::absolute(source, &cwd))
}

/// The `up` of `devaipod run <source>`.
fn run_up(source: &str, name: Option<String>, image: Option<String>, read_only: bool) -> Result<UpRequest> {
    Ok(UpRequest {
        source: caller_source(source)?,
        name,
        image,
        read_only,
        env: Some(CallerEnv::current()),
        ..Default::default()
    })
}

/// Creates a workspace, printing the daemon's progress on stderr.
async fn up(c: &Client, req: &UpRequest) -> Result<UpResult> {
    Ok(c.up(req, |line| match line {
        UpProgress::Step(p) => eprintln!("==> {}", output::clean(&p)),
        UpProgress::Detail(d) => eprintln!("    {}", output::clean(&d)),
    })
    .await?)
}

/// Shows a proposal set's table; with `wait`, first follows it until every candidate has
/// ended, printing each change. Exit code 1 when no candidate left a proposal.
async fn compare(c: &Client, id: &str, wait: bool, json: bool) -> Result<ExitCode> {
    let mut set = c.set(id).await?;
    let mut last = String::new();
    while wait && set.set.state == SetState::Running {
        let now: Vec<String> = set.candidates.iter().map(|c| format!("{} {}", c.n, c.state)).collect();
        let now = now.join(", ");
        if now != last {
            eprintln!("    candidates: {now}");
            last = now;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        set = c.set(id).await?;
    }
    if json {
        output::json(&set)?;
    } else {
        output::set(&set)?;
    }
    let any = set.candidates.iter().any(|c| c.proposal.is_some());
    Ok(if any || set.set.state == SetState::Running { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Follows a task's events until it ends; prints the outcome. Exit code 1 unless completed.
async fn follow(c: &Client, id: &str, json: bool) -> Result<ExitCode> {
    let detail = c
        .follow(id, |e| {
            let msg = output::clean(&e.message);
            match &e.state {
                Some(state) => eprintln!("==> {state}: {msg}"),
                None => eprintln!("    {msg}"),
            }
        })
        .await?;
    let completed = detail.task.state == TaskState::Completed;
    let v = serde_json::to_value(&detail)?;
    if json {
        output::json(&v)?;
    } else {
        output::task_summary(&v)?;
    }
    Ok(if completed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `devaipod exec` without a terminal, on the daemon's engine.
async fn exec(c: &Client, engine: &impl Engine, a: ExecArgs) -> Result<ExitCode> {
    let place = c.exec_place(&a.workspace, ExecTarget::of(a.agent)).await?;
    let attach_stdin = a.interactive || !std::io::stdin().is_terminal();
    let mut session = engine.exec(&place.container, &place.spec(a.command, attach_stdin)).await?;
    if attach_stdin {
        interactive::feed_stdin(session.input);
    }
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
    Ok(interactive::exit_code(engine.exec_exit_code(&session.id).await?))
}
