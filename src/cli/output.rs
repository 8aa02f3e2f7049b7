//! Printing: text for people, `--json` for scripts. Progress goes to stderr.

use std::io::Write;

use anyhow::Result;

use crate::core::{Progress, WorkspaceStatus};
use crate::pods::plan::PodPlan;

pub struct StderrProgress;

impl Progress for StderrProgress {
    fn step(&self, message: &str) {
        eprintln!("==> {message}");
    }
    fn detail(&self, line: &str) {
        eprintln!("    {line}");
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub fn plan(plan: &PodPlan, as_json: bool) -> Result<()> {
    if as_json {
        return json(plan);
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "workspace {} (instance {})", plan.name, plan.instance)?;
    writeln!(o, "image     {}", plan.image.reference())?;
    writeln!(
        o,
        "pod       {} (hostname {}, ports on 127.0.0.1: {:?})",
        plan.pod.name, plan.pod.hostname, plan.pod.ports
    )?;
    writeln!(o, "folder    {}", plan.workspace_folder)?;
    for v in &plan.volumes {
        writeln!(o, "volume    {}", v.name)?;
    }
    for c in [&plan.workspace, &plan.agent] {
        writeln!(o, "container {} ({})", c.name, c.role.as_str())?;
        writeln!(
            o,
            "  user {}  caps -{:?} +{:?}  no-new-privileges {}  privileged {}",
            c.user.as_deref().unwrap_or("(image default)"),
            c.cap_drop,
            c.cap_add,
            c.no_new_privileges,
            c.privileged
        )?;
        for m in &c.mounts {
            writeln!(o, "  mount {}", serde_json::to_string(m)?)?;
        }
        let mut env: Vec<String> = c.env.keys().cloned().collect();
        env.extend(c.trusted_env.keys().map(|k| format!("{k} (trusted)")));
        env.extend(
            c.secret_env
                .iter()
                .map(|(k, s)| format!("{k} (secret {s})")),
        );
        writeln!(o, "  env {}", env.join(" "))?;
    }
    for w in &plan.warnings {
        writeln!(o, "warning: {w}")?;
    }
    writeln!(
        o,
        "(dry run: nothing was created; --json prints the full plan)"
    )?;
    Ok(())
}

pub fn status(s: &WorkspaceStatus, as_json: bool) -> Result<()> {
    if as_json {
        return json(s);
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "name       {}", s.name)?;
    writeln!(o, "pod        {} ({})", s.pod, s.status)?;
    writeln!(
        o,
        "workspace  {}",
        s.workspace.as_deref().unwrap_or("missing")
    )?;
    writeln!(o, "agent      {}", s.agent.as_deref().unwrap_or("missing"))?;
    writeln!(o, "source     {}", s.source.as_deref().unwrap_or("-"))?;
    writeln!(
        o,
        "folder     {}",
        s.workspace_folder.as_deref().unwrap_or("-")
    )?;
    writeln!(o, "created    {}", s.created)?;
    for p in &s.ports {
        writeln!(
            o,
            "port       {}:{} -> {}",
            p.host_ip, p.host_port, p.container_port
        )?;
    }
    Ok(())
}

pub fn list(items: &[WorkspaceStatus], as_json: bool) -> Result<()> {
    if as_json {
        return json(&items);
    }
    let mut o = std::io::stdout().lock();
    if items.is_empty() {
        writeln!(
            o,
            "no workspaces (create one with `devaipod up <path or git URL>`)"
        )?;
        return Ok(());
    }
    writeln!(
        o,
        "{:<24} {:<10} {:<10} {:<10} SOURCE",
        "NAME", "POD", "WORKSPACE", "AGENT"
    )?;
    for s in items {
        writeln!(
            o,
            "{:<24} {:<10} {:<10} {:<10} {}",
            s.name,
            s.status,
            s.workspace.as_deref().unwrap_or("missing"),
            s.agent.as_deref().unwrap_or("missing"),
            s.source.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

pub fn done(what: &str, name: &str, as_json: bool) -> Result<()> {
    if as_json {
        return json(&serde_json::json!({ "workspace": name, "result": what }));
    }
    println!("{what} {name}");
    Ok(())
}
