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

/// The one choke point for agent-controlled text on its way to a terminal: every printer
/// of such text goes through [`visible`] (whole strings through [`clean`], streams through
/// [`Cleaner`]). Newline and tab pass; every other C0 control and DEL is shown as its
/// Unicode picture (ESC as `␛`, BEL as `␇`, CR as `␍`), every C1 control as `�`, so that
/// an escape sequence stays readable and never reaches the terminal.
pub fn visible(c: char) -> char {
    match c {
        '\n' | '\t' => c,
        '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
        '\u{7f}' => '\u{2421}',
        '\u{80}'..='\u{9f}' => '\u{fffd}',
        c => c,
    }
}

/// Agent text, for a terminal (see [`visible`]).
pub fn clean(text: &str) -> String {
    text.chars().map(visible).collect()
}

/// Agent bytes streamed to a terminal (logs, a diff): decoded as UTF-8 across chunk
/// boundaries (invalid bytes become `�`), each character through [`visible`].
#[derive(Debug, Default)]
pub struct Cleaner {
    /// The start of a character cut by the end of the last chunk.
    pending: Vec<u8>,
}

impl Cleaner {
    /// The clean text of `chunk` (a character it cuts comes with the next chunk).
    pub fn push(&mut self, chunk: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(chunk);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = bytes.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.extend(text.chars().map(visible));
                    return out;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.extend(std::str::from_utf8(good).unwrap_or_default().chars().map(visible));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{fffd}');
                            rest = &bad[n..];
                        }
                        None => {
                            self.pending = bad.to_vec(); // cut: the rest comes next
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        if std::mem::take(&mut self.pending).is_empty() { String::new() } else { "\u{fffd}".into() }
    }
}

/// `--raw` writes agent bytes as they are: never to a terminal.
pub fn refuse_raw_on_terminal(stdout_is_terminal: bool) -> Result<()> {
    if stdout_is_terminal {
        anyhow::bail!(
            "--raw prints the agent's bytes as they are, escape sequences included, and stdout is a terminal: pipe it or redirect it to a file (e.g. `devaipod diff <id> --raw > change.patch`)"
        );
    }
    Ok(())
}

/// A proposal's diff, for a terminal (see [`visible`]).
pub fn diff(diff: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(clean(diff).as_bytes())?;
    o.flush()?;
    Ok(())
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
    let workers = v["workers"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !workers.is_empty() {
        writeln!(o, "workers:")?;
    }
    for w in workers {
        let decided = match w["proposal_state"].as_str() {
            Some("applied") => "accepted",
            Some("rejected") => "rejected",
            Some(_) => "not decided",
            None => "",
        };
        let outcome = match (w["proposal"].as_str(), w["error"].as_str()) {
            (Some(p), _) => format!("proposal {p} {decided}, +{} -{}", w["added"], w["removed"]),
            (None, Some(e)) => one_line(e, 80),
            (None, None) => String::new(),
        };
        writeln!(
            o,
            "  worker {} {} {:<10} {}  {}",
            w["worker"],
            s(&w["id"]),
            s(&w["state"]),
            one_line(s(&w["prompt"]), 50),
            outcome
        )?;
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

/// Proposal sets, newest first.
pub fn sets(sets: &[crate::store::SetRecord], as_json: bool) -> Result<()> {
    if as_json {
        return json(&sets);
    }
    let mut o = std::io::stdout().lock();
    if sets.is_empty() {
        writeln!(o, "no proposal sets (start one with `devaipod run -w <workspace> --agents N -c \"…\"`)")?;
        return Ok(());
    }
    writeln!(o, "{:<10} {:<20} {:<10} {:<6} PROMPT", "ID", "WORKSPACE", "STATE", "ROUND")?;
    for s in sets {
        writeln!(
            o,
            "{:<10} {:<20} {:<10} {:<6} {}",
            s.id,
            s.workspace,
            s.state.as_str(),
            s.round,
            one_line(&clean(&s.prompt), 60)
        )?;
    }
    Ok(())
}

/// The warm pool: per image, its members.
pub fn pool(v: &crate::core::PoolView, as_json: bool) -> Result<()> {
    if as_json {
        return json(v);
    }
    let mut o = std::io::stdout().lock();
    if v.size == 0 && v.images.is_empty() {
        writeln!(o, "no pool: set [pool] size = N in devaipod.toml to keep N pods warm per image")?;
        return Ok(());
    }
    writeln!(o, "size       {} per image", v.size)?;
    for i in &v.images {
        writeln!(o, "\nimage      {}", i.image)?;
        writeln!(o, "warm       {} of {} ({} starting)", i.warm, v.size, i.starting)?;
        if let Some(e) = &i.last_error {
            writeln!(o, "failing    {}", clean(e))?;
        }
        for m in &i.members {
            let who = m.workspace.as_deref().map(|w| format!(" by {w}")).unwrap_or_default();
            let status = m.status.as_deref().unwrap_or("gone");
            writeln!(o, "  {:<24} {:<8} {}{who}", m.pod, status, m.state)?;
        }
    }
    Ok(())
}

/// A proposal set's comparison table, then each candidate's check output and reason.
pub fn set(v: &crate::core::SetView) -> Result<()> {
    let mut o = std::io::stdout().lock();
    let s = &v.set;
    writeln!(o, "set        {} ({}, round {})", s.id, s.state.as_str(), s.round)?;
    writeln!(o, "workspace  {}", s.workspace)?;
    writeln!(o, "prompt     {}", one_line(&clean(&s.prompt), 100))?;
    if let Some(check) = &s.check {
        writeln!(o, "check      {}", clean(check))?;
    }
    if let Some(n) = s.chosen {
        writeln!(o, "chosen     candidate {n}")?;
    }
    writeln!(o)?;
    writeln!(
        o,
        "{:<3} {:<16} {:<11} {:>6} {:>5} {:>7} {:>7} {:<14} PROPOSAL",
        "#", "MODEL", "STATE", "TIME", "FILES", "+", "-", "CHECK"
    )?;
    for c in &v.candidates {
        let check = match &c.check {
            Some(r) if r.passed() => format!("pass {}ms", r.duration_ms),
            Some(r) => match r.exit_code {
                Some(code) => format!("FAIL({code}) {}ms", r.duration_ms),
                None => "FAIL (no exit)".to_owned(),
            },
            None => "-".to_owned(),
        };
        writeln!(
            o,
            "{:<3} {:<16} {:<11} {:>6} {:>5} {:>7} {:>7} {:<14} {}",
            c.n,
            one_line(&clean(&c.model), 16),
            c.state,
            c.duration_secs.map(|d| format!("{d}s")).unwrap_or_else(|| "-".into()),
            c.files,
            format!("+{}", c.added),
            format!("-{}", c.removed),
            check,
            c.proposal.as_deref().unwrap_or("-"),
        )?;
    }
    for c in &v.candidates {
        if let Some(reason) = &c.reason {
            writeln!(o, "\ncandidate {} failed: {}", c.n, clean(reason))?;
        }
        if let Some(r) = c.check.as_ref().filter(|r| !r.passed()) {
            writeln!(
                o,
                "\ncandidate {} check{}:",
                c.n,
                r.error.as_deref().map(|e| format!(" ({})", clean(e))).unwrap_or_default()
            )?;
            for line in clean(&r.output).lines() {
                writeln!(o, "  | {line}")?;
            }
        }
    }
    if !s.state.is_closed() && v.candidates.iter().any(|c| c.proposal.is_some()) {
        writeln!(
            o,
            "\nchoose: `devaipod approve <proposal> --apply`; compare: `devaipod compare {} --diff A B`; more work: `devaipod reject {} -m \"…\"`",
            s.id, s.id
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_shown_never_sent() {
        let diff = "+title \u{1b}]0;pwned\u{7}\u{1b}[2J\r\n+bell\u{7}\tend\u{7f}\u{9b}31m\n+caf\u{e9}\n";
        let shown = clean(diff);
        assert_eq!(shown, "+title ␛]0;pwned␇␛[2J␍\n+bell␇\tend␡\u{fffd}31m\n+caf\u{e9}\n");
        assert!(shown.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'), "{shown:?}");
    }

    #[test]
    fn a_stream_is_cleaned_across_chunk_boundaries() {
        // "é" (C3 A9) and an ESC cut across chunks; an invalid byte; a cut at the very end.
        let mut c = Cleaner::default();
        let mut out = c.push(b"a\xc3");
        out += &c.push(b"\xa9\x1b");
        out += &c.push(b"[31m\xff\n\xe2\x82");
        out += &c.finish();
        assert_eq!(out, "a\u{e9}␛[31m\u{fffd}\n\u{fffd}");
    }

    #[test]
    fn raw_is_refused_on_a_terminal_only() {
        let e = refuse_raw_on_terminal(true).unwrap_err().to_string();
        assert!(e.contains("stdout is a terminal: pipe it or redirect it"), "{e}");
        assert!(refuse_raw_on_terminal(false).is_ok());
    }
}
