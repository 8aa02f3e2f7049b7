//! Printing: text for people, `--json` for scripts. Progress goes to stderr.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

pub fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Text from agents, for a terminal: control characters (escape sequences, carriage
/// returns) are shown as `�`, never sent to the terminal.
pub fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{fffd}' } else { c }).collect()
}

pub fn plan(plan: &Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(plan);
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "workspace {} (instance {})", s(&plan["name"]), s(&plan["instance"]))?;
    writeln!(o, "image     {}", plan["image"]["reference"].as_str().or(plan["image"]["tag"].as_str()).unwrap_or("-"))?;
    writeln!(o, "pod       {} (ports on 127.0.0.1: {})", s(&plan["pod"]["name"]), plan["pod"]["ports"])?;
    writeln!(o, "folder    {}", s(&plan["workspace_folder"]))?;
    for v in plan["volumes"].as_array().into_iter().flatten() {
        writeln!(o, "volume    {}", s(&v["name"]))?;
    }
    for c in [&plan["workspace"], &plan["agent"]] {
        writeln!(o, "container {} ({})", s(&c["name"]), s(&c["role"]))?;
        writeln!(
            o,
            "  user {}  caps -{} +{}  no-new-privileges {}  privileged {}",
            c["user"].as_str().unwrap_or("(image default)"),
            c["cap_drop"],
            c["cap_add"],
            c["no_new_privileges"],
            c["privileged"]
        )?;
        writeln!(o, "  command {}", c["command"])?;
        for m in c["mounts"].as_array().into_iter().flatten() {
            writeln!(o, "  mount {m}")?;
        }
        let keys = |v: &Value| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        let mut env = keys(&c["env"]);
        env.extend(keys(&c["trusted_env"]).into_iter().map(|k| format!("{k} (trusted)")));
        if let Some(m) = c["secret_env"].as_object() {
            env.extend(m.iter().map(|(k, v)| format!("{k} (secret {})", s(v))));
        }
        writeln!(o, "  env {}", env.join(" "))?;
    }
    for w in plan["warnings"].as_array().into_iter().flatten() {
        writeln!(o, "warning: {}", s(w))?;
    }
    writeln!(o, "(dry run: nothing was created; --json prints the full plan)")?;
    Ok(())
}

pub fn status(v: &Value) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "name       {}", s(&v["name"]))?;
    writeln!(o, "pod        {} ({})", s(&v["pod"]), s(&v["status"]))?;
    writeln!(o, "workspace  {}", v["workspace"].as_str().unwrap_or("missing"))?;
    writeln!(o, "agent      {}", v["agent"].as_str().unwrap_or("missing"))?;
    writeln!(o, "source     {}", s(&v["source"]))?;
    writeln!(o, "folder     {}", s(&v["workspace_folder"]))?;
    writeln!(o, "created    {}", s(&v["created"]))?;
    for p in v["ports"].as_array().into_iter().flatten() {
        writeln!(o, "port       {}:{} -> {}", s(&p["host_ip"]), p["host_port"], p["container_port"])?;
    }
    Ok(())
}

pub fn list(items: &Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(items);
    }
    let mut o = std::io::stdout().lock();
    let items = items.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        writeln!(o, "no workspaces (create one with `devaipod up <path or git URL>`)")?;
        return Ok(());
    }
    writeln!(o, "{:<24} {:<10} {:<10} {:<10} SOURCE", "NAME", "POD", "WORKSPACE", "AGENT")?;
    for w in &items {
        writeln!(
            o,
            "{:<24} {:<10} {:<10} {:<10} {}",
            s(&w["name"]),
            s(&w["status"]),
            w["workspace"].as_str().unwrap_or("missing"),
            w["agent"].as_str().unwrap_or("missing"),
            s(&w["source"])
        )?;
    }
    Ok(())
}

pub fn done(v: &Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(v);
    }
    println!("{} {}", s(&v["result"]), s(&v["workspace"]));
    Ok(())
}

/// The first line of agent or issue text, at most `max` characters, safe for a terminal.
fn one_line(text: &str, max: usize) -> String {
    let text = clean(text);
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

pub fn tasks(v: &Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(v);
    }
    let mut o = std::io::stdout().lock();
    let items = v.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        writeln!(o, "no tasks (start one with `devaipod run -w <workspace> -c \"…\"`)")?;
        return Ok(());
    }
    writeln!(o, "{:<14} {:<20} {:<12} PROMPT", "ID", "WORKSPACE", "STATE")?;
    for t in &items {
        writeln!(
            o,
            "{:<14} {:<20} {:<12} {}",
            s(&t["id"]),
            s(&t["workspace"]),
            s(&t["state"]),
            one_line(s(&t["prompt"]), 60)
        )?;
    }
    Ok(())
}

pub fn task(v: &Value, as_json: bool) -> Result<()> {
    if as_json {
        return json(v);
    }
    task_summary(v)?;
    let mut o = std::io::stdout().lock();
    writeln!(o, "events:")?;
    for e in v["events"].as_array().into_iter().flatten() {
        writeln!(o, "  [{}] {}", clean(s(&e["kind"])), clean(s(&e["message"])))?;
    }
    Ok(())
}

pub fn task_summary(v: &Value) -> Result<()> {
    let t = &v["task"];
    let mut o = std::io::stdout().lock();
    writeln!(o, "task       {}", s(&t["id"]))?;
    writeln!(o, "workspace  {}", s(&t["workspace"]))?;
    writeln!(o, "state      {}", s(&t["state"]))?;
    writeln!(o, "prompt     {}", one_line(s(&t["prompt"]), 100))?;
    if let Some(e) = t["error"].as_str() {
        writeln!(o, "error      {}", clean(e))?;
    }
    if let Some(sm) = t["summary"].as_str() {
        writeln!(o, "summary    {}", one_line(sm, 100))?;
    }
    if let Some(p) = v["proposal"].as_str() {
        writeln!(o, "proposal   {p} (see `devaipod diff {p}`, then `devaipod approve {p} --apply`)")?;
    }
    Ok(())
}

pub fn proposals(page: &crate::core::ProposalPage, as_json: bool) -> Result<()> {
    if as_json {
        return json(page);
    }
    let mut o = std::io::stdout().lock();
    if page.proposals.is_empty() {
        writeln!(o, "no proposals")?;
        return Ok(());
    }
    writeln!(
        o,
        "{:<14} {:<20} {:<9} {:>5} {:>7} {:>7}  SUMMARY",
        "ID", "WORKSPACE", "STATE", "FILES", "ADDED", "REMOVED"
    )?;
    for p in &page.proposals {
        writeln!(
            o,
            "{:<14} {:<20} {:<9} {:>5} {:>7} {:>7}  {}",
            clean(&p.id),
            clean(&p.workspace),
            p.state.as_str(),
            p.files,
            p.added,
            p.removed,
            clean(&one_line(&p.summary, 50))
        )?;
    }
    if let Some(next) = page.next_offset {
        eprintln!("({} of {}; the next page: --offset {next})", page.proposals.len(), page.total);
    }
    Ok(())
}

pub fn proposal(d: &crate::core::ProposalDetail) -> Result<()> {
    let p = &d.proposal;
    let mut o = std::io::stdout().lock();
    writeln!(o, "proposal   {}", clean(&p.id))?;
    writeln!(o, "workspace  {}", clean(&p.workspace))?;
    writeln!(o, "task       {}", clean(&p.task_id))?;
    writeln!(o, "branch     {}", clean(&p.branch))?;
    writeln!(o, "state      {}", p.state.as_str())?;
    writeln!(o, "lines      +{} -{}", p.added, p.removed)?;
    for (sha, subject) in &p.commits {
        writeln!(o, "commit     {} {}", clean(&sha[..sha.len().min(12)]), clean(&one_line(subject, 80)))?;
    }
    for f in &p.files {
        let n = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
        writeln!(o, "file       {} (+{} -{})", clean(&f.path), n(f.added), n(f.removed))?;
    }
    for a in &d.approvals {
        writeln!(o, "approved   {}: {}", a.action, clean(&a.detail))?;
    }
    if !p.summary.is_empty() {
        writeln!(o, "summary    {}", clean(&one_line(&p.summary, 200)))?;
    }
    Ok(())
}

pub fn scopes(v: &Value) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "workspace  {}", s(&v["workspace"]))?;
    writeln!(o, "github     {}", v["github_repo"].as_str().unwrap_or("(none: the source is not a GitHub URL)"))?;
    let list =
        |v: &Value| v.as_array().map(|a| a.iter().map(|x| s(x).to_owned()).collect::<Vec<_>>()).unwrap_or_default();
    let own = list(&v["scopes"]);
    let config = list(&v["from_config"]);
    if own.is_empty() && config.is_empty() {
        writeln!(o, "scopes     none: the agent sees no gator tools (grant with `devaipod gator add`)")?;
    }
    for scope in own {
        writeln!(o, "scope      {scope}")?;
    }
    for scope in config {
        writeln!(o, "scope      {scope} (from devaipod.toml)")?;
    }
    Ok(())
}

pub fn egress(v: &crate::core::EgressView) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "workspace  {}", clean(&v.workspace))?;
    let mode = match v.mode.as_str() {
        "open" => "open: any public host (never the host's or internal addresses)",
        _ => "allowlist: the LLM and the hosts below",
    };
    writeln!(o, "egress     {mode}")?;
    writeln!(o, "llm        {} (at http://127.0.0.1:3128/llm/ in the agent)", clean(&v.llm))?;
    if v.hosts.is_empty() && v.from_config.is_empty() {
        writeln!(o, "hosts      none (allow one with `devaipod egress allow {} HOST`)", clean(&v.workspace))?;
    }
    for h in &v.hosts {
        writeln!(o, "host       {}", clean(h))?;
    }
    for h in &v.from_config {
        writeln!(o, "host       {} (from devaipod.toml)", clean(h))?;
    }
    Ok(())
}

pub fn audit(v: &Value) -> Result<()> {
    let mut o = std::io::stdout().lock();
    let items = v.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        writeln!(o, "no gator calls yet")?;
        return Ok(());
    }
    writeln!(o, "{:<8} {:<20} {:<6} {:<24} {:<28} REASON", "ID", "WORKSPACE", "RESULT", "TOOL", "TARGET")?;
    for e in &items {
        writeln!(
            o,
            "{:<8} {:<20} {:<6} {:<24} {:<28} {}",
            e["id"],
            s(&e["workspace"]),
            s(&e["decision"]),
            clean(s(&e["tool"])),
            clean(s(&e["target"])),
            clean(&one_line(s(&e["reason"]), 200))
        )?;
    }
    Ok(())
}

/// The doctor's checks, one line each (level, check, finding), every fix below its line,
/// then a count.
pub fn doctor(checks: &[crate::core::doctor::Check]) -> Result<()> {
    use crate::core::doctor::Level;
    let mut o = std::io::stdout().lock();
    for c in checks {
        writeln!(o, "{:<8} {:<12} {}", c.level.as_str(), c.id, clean(&c.summary))?;
        if let Some(fix) = &c.fix {
            writeln!(o, "{:<21}fix: {}", "", clean(fix))?;
        }
    }
    let count = |l: Level| checks.iter().filter(|c| c.level == l).count();
    let (errors, warnings) = (count(Level::Error), count(Level::Warning));
    let plural = |n: usize, word: &str| if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") };
    if errors + warnings == 0 {
        writeln!(o, "all {} checks ok", checks.len())?;
    } else {
        writeln!(o, "{}, {}", plural(errors, "error"), plural(warnings, "warning"))?;
    }
    Ok(())
}
