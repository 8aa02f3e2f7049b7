//! One session channel: its requests (pty, env, then exec, shell or the sftp subsystem),
//! the command in the container, and the bytes both ways with backpressure — output waits
//! for the client's window, the client's input waits for the command's stdin — then the
//! exit status. Every session is audited when it starts and when it ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;

use super::target::{self, Run, Target};
use crate::core::Core;
use crate::pods::Engine;
use crate::pods::engine::Output;

/// Who a session is: the SSH user's target and the key that logged in.
#[derive(Debug, Clone)]
pub struct Who {
    pub target: Target,
    pub fingerprint: String,
    pub peer: String,
}

/// A terminal the client asked for.
#[derive(Debug, Clone)]
struct Pty {
    term: String,
    cols: u16,
    rows: u16,
}

/// Drives a session channel to its end.
pub async fn drive<E: Engine>(core: Arc<Core<E>>, who: Who, channel: Channel<Msg>) {
    let (mut rx, tx) = channel.split();
    let (mut pty, mut env) = (None::<Pty>, BTreeMap::new());
    let run = loop {
        match rx.wait().await {
            Some(ChannelMsg::RequestPty { term, col_width, row_height, .. }) => {
                pty = Some(Pty { term, cols: clamp(col_width), rows: clamp(row_height) });
            }
            Some(ChannelMsg::SetEnv { variable_name, variable_value, .. }) => {
                if target::env_name_ok(&variable_name) {
                    env.insert(variable_name, variable_value);
                }
            }
            Some(ChannelMsg::Exec { command, .. }) => {
                break Run::Command(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestShell { .. }) => break Run::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. }) => match Run::subsystem(&name) {
                Some(run) => break run,
                None => {
                    let msg = format!("devaipod: subsystem `{name}` is not served (only sftp)\r\n");
                    let _ = tx.extended_data_bytes(1, msg.into_bytes()).await;
                    let _ = tx.exit_status(255).await;
                    let _ = tx.close().await;
                    return;
                }
            },
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let what = match &run {
        Run::Command(line) => format!("exec `{}`", short(line)),
        Run::Shell => format!("shell{}", if pty.is_some() { " with a terminal" } else { "" }),
        Run::Sftp => "sftp".to_owned(),
    };
    let target_text = format!("{} {what}", who.target.label());
    audit(&core, &who, &target_text, "allow", format!("session opened by {} from {}", who.fingerprint, who.peer)).await;
    let started = Instant::now();
    let ended = run_in_container(&core, &who.target, run, pty, env, &mut rx, &tx).await;
    let secs = started.elapsed().as_secs_f64();
    let (status, decision, reason) = match ended {
        Ok(Ended::Exited(code)) => {
            (Some(code), "allow", format!("session of {} ended after {secs:.1} s, exit {code}", who.fingerprint))
        }
        Ok(Ended::ClientLeft) => {
            (None, "allow", format!("session of {} ended after {secs:.1} s: the client left", who.fingerprint))
        }
        Err(message) => {
            let _ = tx.extended_data_bytes(1, format!("devaipod: {message}\r\n").into_bytes()).await;
            (Some(255), "error", format!("session of {} refused: {message}", who.fingerprint))
        }
    };
    audit(&core, &who, &target_text, decision, reason).await;
    if let Some(code) = status {
        let _ = tx.exit_status(code).await;
    }
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

enum Ended {
    Exited(u32),
    ClientLeft,
}

async fn run_in_container<E: Engine>(
    core: &Core<E>,
    target: &Target,
    run: Run,
    pty: Option<Pty>,
    client_env: BTreeMap<String, String>,
    rx: &mut russh::ChannelReadHalf,
    tx: &russh::ChannelWriteHalf<Msg>,
) -> Result<Ended, String> {
    let place = core.exec_target(&target.workspace, target.exec_target()).await.map_err(|e| e.to_string())?;
    let mut spec = place.spec(run.argv(), true);
    spec.env.extend(client_env);
    if let Some(p) = &pty {
        spec.tty = true;
        spec.env.insert("TERM".into(), p.term.clone());
    }
    let engine = &core.engine;
    let mut session = engine.exec(&place.container, &spec).await.map_err(|e| e.to_string())?;
    if let Some(p) = &pty
        && let Err(e) = engine.resize_exec(&session.id, p.rows, p.cols).await
    {
        tracing::debug!("ssh: first terminal size: {e}");
    }
    let id = session.id.clone();
    let mut input = session.input;
    let pump = async {
        let (mut out, mut err) = (tx.make_writer(), tx.make_writer_ext(Some(1)));
        while let Some(chunk) = session.output.next().await {
            let written = match chunk.map_err(|e| e.to_string())? {
                Output::Stdout(b) => out.write_all(&b).await,
                Output::Stderr(b) => err.write_all(&b).await,
            };
            if written.is_err() {
                // The client is gone; its side of the channel says so below.
                return Ok(None);
            }
        }
        let _ = out.flush().await;
        let _ = err.flush().await;
        engine.exec_exit_code(&id).await.map(Some).map_err(|e| e.to_string())
    };
    let feed = async {
        let mut open = true;
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) if open => {
                    // Awaited: a command that does not read holds the client's input back.
                    if input.write_all(&data).await.is_err() {
                        open = false;
                    }
                }
                Some(ChannelMsg::Eof) if open => {
                    let _ = input.shutdown().await;
                    open = false;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    if let Err(e) = engine.resize_exec(&id, clamp(row_height), clamp(col_width)).await {
                        tracing::debug!("ssh: window change: {e}");
                    }
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(n) = target::signal_number(sig_name(&signal))
                        && let Err(e) = engine.signal_exec(&id, n).await
                    {
                        tracing::debug!("ssh: signal: {e}");
                    }
                }
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            }
        }
    };
    tokio::select! {
        code = pump => Ok(match code? {
            Some(code) => Ended::Exited(target::exit_status(code)),
            None => Ended::ClientLeft,
        }),
        () = feed => {
            // The client closed the channel: the command gets a hangup, as from sshd.
            let _ = engine.signal_exec(&id, 1).await;
            Ok(Ended::ClientLeft)
        }
    }
}

fn sig_name(sig: &Sig) -> &str {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(s) => s,
    }
}

fn clamp(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX).max(1)
}

/// A command line as it reads in an audit row: one line, at most 200 characters.
fn short(line: &str) -> String {
    let one: String = line.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    if line.chars().count() > 200 { format!("{one}…") } else { one }
}

pub async fn audit<E: Engine>(core: &Core<E>, who: &Who, target: &str, decision: &str, reason: String) {
    if let Err(e) = core.audit(&who.target.workspace, "ssh", target, decision, &reason).await {
        tracing::warn!("ssh: cannot write the audit row ({target}: {reason}): {e}");
    }
}
