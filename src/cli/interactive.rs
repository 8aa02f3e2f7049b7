//! Terminals and editors: `exec -t` (a raw terminal, its size, the exit code), `attach`
//! (postAttachCommand, then a login shell in the workspace folder), `ssh` (the system's
//! OpenSSH client with the daemon's options), `ssh-config`, `ports` and `forward`. Like
//! `exec`, they ask the daemon where to run and then talk to podman themselves.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::client::Client;
use crate::config::Config;
use crate::core::{ExecPlace, ExecTarget, Paths};
use crate::pods::engine::Output;
use crate::pods::podman::default_socket;
use crate::pods::{Engine, Podman};
use crate::ssh::export::{self, Export};
use crate::ssh::target::Run;

/// The local terminal in raw mode while a remote terminal runs; restored when dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("cannot put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.saved);
    }
}

/// The local terminal's size (rows, columns), when stdin is one.
fn window_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdin()).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Runs `argv` at `place` with a terminal: the local one raw, its size followed, stdin
/// passed; returns the command's exit code.
pub async fn run_tty(engine: &Podman, place: &ExecPlace, argv: Vec<String>) -> Result<i64> {
    if !std::io::stdin().is_terminal() {
        bail!("-t needs a terminal on stdin (use -i to pass piped input without one)");
    }
    let mut spec = place.spec(argv, true);
    spec.tty = true;
    spec.env.insert("TERM".into(), std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()));
    let mut session = engine.exec(&place.container, &spec).await?;
    let raw = RawMode::enter()?;
    if let Some((rows, cols)) = window_size() {
        let _ = engine.resize_exec(&session.id, rows, cols).await;
    }
    feed_stdin(session.input);
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut out = tokio::io::stdout();
    loop {
        tokio::select! {
            chunk = session.output.next() => match chunk {
                Some(chunk) => {
                    match chunk? {
                        Output::Stdout(b) | Output::Stderr(b) => out.write_all(&b).await?,
                    }
                    out.flush().await?;
                }
                None => break,
            },
            _ = winch.recv() => {
                if let Some((rows, cols)) = window_size() {
                    let _ = engine.resize_exec(&session.id, rows, cols).await;
                }
            }
        }
    }
    drop(raw);
    Ok(engine.exec_exit_code(&session.id).await?)
}

/// Copies this process's stdin into a command's input, from a plain thread: a blocking
/// read of stdin must not hold the runtime at exit.
pub fn feed_stdin(mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>) {
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

pub fn exit_code(code: i64) -> ExitCode {
    ExitCode::from(if (0..=255).contains(&code) { code as u8 } else { 1 })
}

/// `devaipod attach`: the workspace's postAttachCommand (each of its commands once, its
/// output shown), then a login shell in the workspace folder (with a terminal when stdin
/// is one); the shell's exit code becomes devaipod's.
pub async fn attach(c: &Client, workspace: &str) -> Result<ExitCode> {
    let place = c.exec_place(workspace, ExecTarget::Workspace).await?;
    let engine = Podman::new(&default_socket())?;
    for argv in &place.post_attach {
        eprintln!("==> postAttachCommand: {}", argv.join(" "));
        let mut session = engine.exec(&place.container, &place.spec(argv.clone(), false)).await?;
        let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
        while let Some(chunk) = session.output.next().await {
            match chunk? {
                Output::Stdout(b) => out.write_all(&b).await?,
                Output::Stderr(b) => err.write_all(&b).await?,
            }
        }
        out.flush().await?;
        let code = engine.exec_exit_code(&session.id).await?;
        if code != 0 {
            eprintln!("==> postAttachCommand exited with {code}; attaching anyway");
        }
    }
    let code = if std::io::stdin().is_terminal() {
        run_tty(&engine, &place, Run::Shell.argv()).await?
    } else {
        let mut session = engine.exec(&place.container, &place.spec(Run::Shell.argv(), true)).await?;
        feed_stdin(session.input);
        let mut out = tokio::io::stdout();
        while let Some(chunk) = session.output.next().await {
            match chunk? {
                Output::Stdout(b) | Output::Stderr(b) => out.write_all(&b).await?,
            }
            out.flush().await?;
        }
        engine.exec_exit_code(&session.id).await?
    };
    Ok(exit_code(code))
}

/// Where the daemon's SSH server listens (the daemon writes it at start).
fn ssh_addr(paths: &Paths) -> Result<std::net::SocketAddr> {
    let file = crate::ssh::listen_file(paths);
    let text = std::fs::read_to_string(&file).map_err(|_| {
        anyhow::anyhow!(
            "the daemon serves no SSH: [ssh] enabled = false, or its address was taken (the daemon's log says which); see docs/ssh.md"
        )
    })?;
    text.trim().parse().with_context(|| format!("{} does not hold an address", file.display()))
}

fn export_of<'a>(config: &'a Config, known_hosts: &'a std::path::Path, addr: std::net::SocketAddr) -> Export<'a> {
    Export { instance: config.instance.as_str(), addr, known_hosts, identity_file: config.ssh.identity_file.as_deref() }
}

/// `devaipod ssh-config`: `Host` entries for every workspace.
pub async fn ssh_config(c: &Client, config: &Config, paths: &Paths, json: bool) -> Result<ExitCode> {
    let addr = ssh_addr(paths)?;
    let known_hosts = crate::ssh::known_hosts_file(&paths.data);
    let names: Vec<String> = c.workspaces().await?.into_iter().map(|w| w.name).collect();
    let e = export_of(config, &known_hosts, addr);
    if json {
        let hosts: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({ "host": export::host_name(n), "user": n, "agent_user": format!("{n}+agent") }))
            .collect();
        let options: BTreeMap<&str, String> = export::options(&e).into_iter().collect();
        super::output::json(&serde_json::json!({ "hosts": hosts, "options": options }))?;
    } else {
        print!("{}", export::render(&e, &names));
    }
    Ok(ExitCode::SUCCESS)
}

/// `devaipod ssh <ws> [-- cmd]`: the system's `ssh` with the daemon's options (its port,
/// the pinned host key, the configured identity); its exit code becomes devaipod's.
pub async fn ssh(
    c: &Client,
    config: &Config,
    paths: &Paths,
    workspace: &str,
    agent: bool,
    command: Vec<String>,
) -> Result<ExitCode> {
    // The workspace must exist: a clear message before ssh's own.
    c.workspace(workspace).await?;
    let addr = ssh_addr(paths)?;
    let known_hosts = crate::ssh::known_hosts_file(&paths.data);
    let e = export_of(config, &known_hosts, addr);
    let mut cmd = std::process::Command::new("ssh");
    for (k, v) in export::options(&e) {
        if k != "HostName" {
            cmd.arg("-o").arg(format!("{k}={}", v.trim_matches('"')));
        }
    }
    let user = if agent { format!("{workspace}+agent") } else { workspace.to_owned() };
    cmd.arg("-l").arg(user);
    if command.is_empty() && std::io::stdin().is_terminal() {
        cmd.arg("-t");
    }
    cmd.arg(export::options(&e)[0].1.clone());
    if !command.is_empty() {
        cmd.arg("--").args(&command);
    }
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await?
        .context("cannot run ssh: install OpenSSH's client (Debian: openssh-client)")?;
    Ok(exit_code(status.code().map(i64::from).unwrap_or(255)))
}

/// `devaipod ports <ws>`: the ports the workspace publishes (devcontainer.json's
/// `forwardPorts`, on the host's loopback).
pub async fn ports(c: &Client, workspace: &str, json: bool) -> Result<ExitCode> {
    let status = c.workspace(workspace).await?;
    if json {
        super::output::json(&serde_json::to_value(&status.ports)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if status.ports.is_empty() {
        println!("{workspace} forwards no ports (devcontainer.json's forwardPorts is empty)");
    }
    for p in &status.ports {
        println!(
            "{:>5}  published at {}:{}  (devaipod forward {workspace} {})",
            p.container_port, p.host_ip, p.host_port, p.container_port
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One port of `devaipod forward`: `PORT` (the same number on the host) or `LOCAL:PORT`.
pub fn parse_forward(spec: &str) -> Result<(u16, u16), String> {
    let number =
        |s: &str| s.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("`{spec}`: `{s}` is not a port"));
    match spec.split_once(':') {
        Some((local, remote)) => Ok((number(local)?, number(remote)?)),
        None => number(spec).map(|p| (p, p)),
    }
}

/// `devaipod forward <ws> [PORT|LOCAL:PORT…]`: listens on the host's 127.0.0.1 and joins
/// each connection to the port inside the workspace (the SSH server's forwarding path);
/// without ports, every port of `forwardPorts`. Runs until interrupted.
pub async fn forward(c: &Client, workspace: &str, specs: &[String]) -> Result<ExitCode> {
    let pairs: Vec<(u16, u16)> = if specs.is_empty() {
        let status = c.workspace(workspace).await?;
        if status.ports.is_empty() {
            bail!("{workspace} has no forwardPorts: name the ports, e.g. `devaipod forward {workspace} 8000`");
        }
        status.ports.iter().map(|p| (p.container_port, p.container_port)).collect()
    } else {
        specs.iter().map(|s| parse_forward(s)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?
    };
    let place = c.exec_place(workspace, ExecTarget::Workspace).await?;
    let engine = Arc::new(Podman::new(&default_socket())?);
    let mut servers = tokio::task::JoinSet::new();
    for (local, remote) in pairs {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local)).await.with_context(|| {
            format!("cannot listen on 127.0.0.1:{local}: choose another local port (LOCAL:{remote})")
        })?;
        eprintln!("forwarding 127.0.0.1:{local} → {workspace}:{remote}");
        servers.spawn(crate::ssh::forward::serve_local(engine.clone(), place.container.clone(), remote, listener));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        Some(r) = servers.join_next() => {
            r??;
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_ports_are_a_port_or_local_colon_port() {
        assert_eq!(parse_forward("8000"), Ok((8000, 8000)));
        assert_eq!(parse_forward("9000:8000"), Ok((9000, 8000)));
        assert!(parse_forward("0").unwrap_err().contains("is not a port"));
        assert!(parse_forward("x:80").is_err());
        assert!(parse_forward("70000").is_err());
    }
}
