//! The command line: parses arguments, talks to the daemon (`client.rs`), prints
//! (`output.rs`). No policy lives here. `exec` and `logs` ask the daemon where to run and
//! then stream through podman themselves; they change no state.

pub mod client;
mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::config::{self, Config, InstanceId};
use crate::core::{ExecPlace, Paths};
use crate::pods::engine::Output;
use crate::pods::podman::default_socket;
use crate::pods::{Engine, Podman};
use client::{Client, enc};

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
    /// Serve MCP on stdin/stdout for an assistant or IDE (a client of the daemon).
    Mcp,
    /// Create a workspace from a local git repository or a git URL and start its pod.
    Up(UpArgs),
    /// Create a workspace (or use one, with -w), run a task in it and follow it until it ends.
    Run(RunArgs),
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
    },
    /// Show a task and its progress events.
    Task { id: String },
    /// Cancel a running task (its agent session is aborted).
    Cancel { id: String },
    /// List proposals, newest first.
    Proposals {
        #[arg(short, long)]
        workspace: Option<String>,
        /// open, applied, pushed or rejected.
        #[arg(long)]
        state: Option<String>,
    },
    /// Print a proposal's unified diff.
    Diff { id: String },
    /// Approve a proposal: --apply puts its branch into the workspace's repository, --push pushes it.
    Approve(ApproveArgs),
    /// Reject a proposal; with -m, the feedback goes to the same agent as a follow-up task.
    Reject {
        id: String,
        #[arg(short = 'm', long = "message")]
        feedback: Option<String>,
    },
    /// What a workspace's agent may do through gator (GitHub, git push), and what it did.
    #[command(subcommand)]
    Gator(GatorCommand),
    /// (Inside an agent container) pipe stdio to the pod's gator socket. Run by opencode.
    #[command(hide = true)]
    GatorBridge { socket: PathBuf },
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
    /// For a GitHub source: the agent may only read (no push, no draft PR).
    #[arg(short = 'R', long)]
    pub read_only: bool,
    /// Also start a task with this prompt (without following it).
    #[arg(short = 'c', long = "command")]
    pub task: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A local git repository, a git URL, or a GitHub issue/PR URL (omit with -w).
    #[arg(required_unless_present = "workspace")]
    pub source: Option<String>,
    /// Run in this existing workspace instead of creating one.
    #[arg(short, long, conflicts_with = "source")]
    pub workspace: Option<String>,
    /// What the agent should do (default for a GitHub issue URL: the issue's title and body).
    #[arg(short = 'c', long = "command")]
    pub task: Option<String>,
    /// For a GitHub source: the agent may only read (no push, no draft PR).
    #[arg(short = 'R', long)]
    pub read_only: bool,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub image: Option<String>,
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
    let mut config = match explicit {
        Some(p) => config::load(p, true)?,
        None => match config::default_path() {
            Some(p) => config::load(&p, false)?,
            None => Config::default(),
        },
    };
    if let Some(i) = std::env::var("DEVAIPOD_INSTANCE").ok().filter(|s| !s.is_empty()) {
        config.instance = InstanceId::try_from(i).map_err(|e| anyhow::anyhow!("DEVAIPOD_INSTANCE: {e}"))?;
    }
    Ok(config)
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::GatorBridge { socket } = &cli.command {
        crate::gator::bridge::run(socket).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = load_config(cli.config.as_deref())?;
    let paths = Paths::for_instance(config.instance.as_str());
    let json = cli.json;
    let connect = || Client::connect(&paths, cli.config.as_deref());
    match cli.command {
        Command::Serve { listen } => {
            crate::daemon::run(config, &listen).await?;
        }
        Command::Token => {
            let token = crate::web::auth::load_or_create(&paths.token())?;
            if json {
                output::json(&json!({ "token": token }))?;
            } else {
                println!("{token}");
            }
        }
        Command::Mcp => {
            let c = connect().await?;
            crate::mcp::serve_stdio(crate::mcp::Backend::Remote(std::sync::Arc::new(c))).await?;
        }
        Command::Up(a) => {
            let c = connect().await?;
            let body = json!({ "source": absolute_source(&a.source), "name": a.name, "image": a.image, "devcontainer": a.devcontainer, "dry_run": a.dry_run, "read_only": a.read_only });
            let result = up(&c, &body).await?;
            if a.dry_run {
                output::plan(&result, json)?;
                return Ok(ExitCode::SUCCESS);
            }
            let name = result["name"].as_str().unwrap_or_default().to_owned();
            let task = match a.task {
                Some(prompt) => Some(c.post("/api/v1/tasks", &json!({ "workspace": name, "prompt": prompt })).await?),
                None => None,
            };
            if json {
                output::json(&json!({ "workspace": result, "task": task }))?;
            } else {
                output::status(&result)?;
                if let Some(t) = task {
                    println!(
                        "task       {} (follow with `devaipod task {}`)",
                        t["id"].as_str().unwrap_or(""),
                        t["id"].as_str().unwrap_or("")
                    );
                }
                eprintln!(
                    "\nready: `devaipod exec {name} -- git status`, `devaipod run -w {name} -c \"…\"`, `devaipod delete {name}`"
                );
            }
        }
        Command::Run(a) => {
            let c = connect().await?;
            let (workspace, prompt) = match (a.workspace, a.source) {
                (Some(w), _) => (w, a.task),
                (None, Some(source)) => {
                    if a.task.is_none() && !looks_like_issue(&source) {
                        bail!("give the task with -c \"…\" (only a GitHub issue or PR URL brings its own)");
                    }
                    let body = json!({ "source": absolute_source(&source), "name": a.name, "image": a.image, "read_only": a.read_only });
                    let r = up(&c, &body).await?;
                    let name = r["name"].as_str().unwrap_or_default().to_owned();
                    (name, a.task.or_else(|| r["issue_task"].as_str().map(str::to_owned)))
                }
                (None, None) => bail!("give a source or -w <workspace>"),
            };
            let Some(prompt) = prompt else {
                bail!("give the task with -c \"…\" (the source brought no issue to work on)");
            };
            let task = c.post("/api/v1/tasks", &json!({ "workspace": workspace, "prompt": prompt })).await?;
            let id = task["id"].as_str().unwrap_or_default().to_owned();
            eprintln!("==> task {id} in workspace {workspace}");
            return follow(&c, &id, json).await;
        }
        Command::List => output::list(&connect().await?.get("/api/v1/workspaces").await?, json)?,
        Command::Status { workspace } => {
            let v = connect().await?.get(&format!("/api/v1/workspaces/{}", enc(&workspace))).await?;
            if json { output::json(&v)? } else { output::status(&v)? }
        }
        Command::Exec(a) => return exec(&connect().await?, a).await,
        Command::Logs { workspace, agent, follow, tail } => {
            let c = connect().await?;
            c.get(&format!("/api/v1/workspaces/{}", enc(&workspace))).await?; // exists in this instance
            let name = crate::pods::naming::WorkspaceName::new(&workspace)?;
            let role = if agent { crate::pods::naming::Role::Agent } else { crate::pods::naming::Role::Workspace };
            let engine = Podman::new(&default_socket())?;
            let mut stream = engine.logs(&name.container(role), follow, tail);
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
            let v = connect().await?.post(&format!("/api/v1/workspaces/{}/stop", enc(&workspace)), &json!({})).await?;
            output::done(&v, json)?;
        }
        Command::Start { workspace } => {
            let v = connect().await?.post(&format!("/api/v1/workspaces/{}/start", enc(&workspace)), &json!({})).await?;
            output::done(&v, json)?;
        }
        Command::Delete { workspace, keep_volumes } => {
            let path = format!("/api/v1/workspaces/{}?keep_volumes={keep_volumes}", enc(&workspace));
            let v = connect().await?.call(Method::DELETE, &path, None).await?;
            output::done(&v, json)?;
        }
        Command::Tasks { workspace } => {
            let q = workspace.map(|w| format!("?workspace={}", enc(&w))).unwrap_or_default();
            output::tasks(&connect().await?.get(&format!("/api/v1/tasks{q}")).await?, json)?;
        }
        Command::Task { id } => {
            output::task(&connect().await?.get(&format!("/api/v1/tasks/{}", enc(&id))).await?, json)?
        }
        Command::Cancel { id } => {
            let v = connect().await?.post(&format!("/api/v1/tasks/{}/cancel", enc(&id)), &json!({})).await?;
            if json { output::json(&v)? } else { println!("task {} {}", id, v["state"].as_str().unwrap_or("")) }
        }
        Command::Proposals { workspace, state } => {
            let mut q = Vec::new();
            if let Some(w) = workspace {
                q.push(format!("workspace={}", enc(&w)));
            }
            if let Some(s) = state {
                q.push(format!("state={}", enc(&s)));
            }
            let q = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
            output::proposals(&connect().await?.get(&format!("/api/v1/proposals{q}")).await?, json)?;
        }
        Command::Diff { id } => {
            let diff =
                connect().await?.text(Method::GET, &format!("/api/v1/proposals/{}/diff", enc(&id)), None).await?;
            if json { output::json(&json!({ "proposal": id, "diff": diff }))? } else { print!("{diff}") }
        }
        Command::Approve(a) => {
            let action = if a.apply {
                "apply"
            } else if a.push {
                "push"
            } else {
                "draft_pr"
            };
            let v = connect()
                .await?
                .post(&format!("/api/v1/proposals/{}/approve", enc(&a.id)), &json!({ "action": action }))
                .await?;
            if json {
                output::json(&v)?
            } else {
                println!(
                    "proposal {} {} ({})",
                    a.id,
                    v["state"].as_str().unwrap_or(""),
                    v["branch"].as_str().unwrap_or("")
                )
            }
        }
        Command::Gator(g) => gator(&connect().await?, g, json).await?,
        Command::GatorBridge { .. } => unreachable!("handled before the config is loaded"),
        Command::Reject { id, feedback } => {
            let v = connect()
                .await?
                .post(&format!("/api/v1/proposals/{}/reject", enc(&id)), &json!({ "feedback": feedback }))
                .await?;
            if json {
                output::json(&v)?;
            } else {
                println!("proposal {id} rejected");
                if let Some(t) = v["follow_up_task"]["id"].as_str() {
                    println!("feedback sent to the agent as task {t} (follow with `devaipod task {t}`)");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn gator(c: &Client, cmd: GatorCommand, json: bool) -> Result<()> {
    let scopes = |ws: &str| format!("/api/v1/workspaces/{}/scopes", enc(ws));
    let view = match cmd {
        GatorCommand::Show { workspace } => c.get(&scopes(&workspace)).await?,
        GatorCommand::Add { workspace, scope } => c.post(&scopes(&workspace), &json!({ "scope": scope })).await?,
        GatorCommand::Remove { workspace, scope } => {
            c.post(&format!("{}/remove", scopes(&workspace)), &json!({ "scope": scope })).await?
        }
        GatorCommand::Log { workspace, limit } => {
            let mut path = format!("/api/v1/audit?limit={limit}");
            if let Some(ws) = workspace {
                path.push_str(&format!("&workspace={}", enc(&ws)));
            }
            let v = c.get(&path).await?;
            return if json { output::json(&v) } else { output::audit(&v) };
        }
    };
    if json { output::json(&view) } else { output::scopes(&view) }
}

/// `…/issues/N` or `…/pull/N`: a source that brings its task (checked again by the daemon).
fn looks_like_issue(source: &str) -> bool {
    let parts: Vec<&str> = source.trim_end_matches('/').rsplit('/').take(2).collect();
    matches!(parts.as_slice(), [n, "issues" | "pull"] if n.parse::<u64>().is_ok())
}

/// A local source as an absolute path (the daemon has its own working directory); URLs as given.
fn absolute_source(s: &str) -> String {
    if crate::core::source::is_url(s) {
        return s.to_owned();
    }
    std::path::absolute(std::path::Path::new(s)).map(|a| a.display().to_string()).unwrap_or_else(|_| s.to_owned())
}

/// Creates a workspace, printing the daemon's progress on stderr; returns the result.
async fn up(c: &Client, body: &Value) -> Result<Value> {
    let mut result = None;
    c.lines(Method::POST, "/api/v1/workspaces", Some(body), |v| {
        if let Some(p) = v.get("progress").and_then(Value::as_str) {
            eprintln!("==> {p}");
        } else if let Some(d) = v.get("detail").and_then(Value::as_str) {
            eprintln!("    {d}");
        } else {
            result = Some(v);
            return false;
        }
        true
    })
    .await?;
    let v = result.context("the daemon ended the answer before `up` finished")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("{e}");
    }
    Ok(v["result"].clone())
}

/// Follows a task's events until it ends; prints the outcome. Exit code 1 unless completed.
async fn follow(c: &Client, id: &str, json: bool) -> Result<ExitCode> {
    c.lines(Method::GET, &format!("/api/v1/events?task={}", enc(id)), None, |e| {
        let msg = output::clean(e["message"].as_str().unwrap_or_default());
        match e["state"].as_str() {
            Some(state) => {
                eprintln!("==> {state}: {msg}");
                !matches!(state, "completed" | "failed" | "cancelled")
            }
            None => {
                eprintln!("    {msg}");
                true
            }
        }
    })
    .await?;
    let v = c.get(&format!("/api/v1/tasks/{}", enc(id))).await?;
    if json {
        output::json(&v)?;
    } else {
        output::task_summary(&v)?;
    }
    Ok(if v["task"]["state"] == "completed" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn exec(c: &Client, a: ExecArgs) -> Result<ExitCode> {
    let target = if a.agent { "agent" } else { "workspace" };
    let place: ExecPlace = serde_json::from_value(
        c.get(&format!("/api/v1/workspaces/{}/exec?target={target}", enc(&a.workspace))).await?,
    )?;
    let attach_stdin = a.interactive || !std::io::stdin().is_terminal();
    let engine = Podman::new(&default_socket())?;
    let mut session = engine.exec(&place.container, &place.spec(a.command, attach_stdin)).await?;
    let mut input = session.input;
    if attach_stdin {
        // A plain thread: a blocking read of stdin must not hold the runtime at exit.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 16 * 1024];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if input.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = input.shutdown().await;
        });
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
    let code = engine.exec_exit_code(&session.id).await?;
    Ok(ExitCode::from(if (0..=255).contains(&code) { code as u8 } else { 1 }))
}
