//! The page of a proposal set (`/sets/{id}`): its candidates side by side (state, time,
//! lines, check result, summary, approve buttons), a candidate's diff and the diff between
//! two candidates, rejecting with feedback and cancelling. The header and the table are one
//! `data-fragment`, re-rendered when an event of the set's workspace arrives (the set's own
//! events and its candidates' task events), so a running set updates without a reload.
//! Also the workspace page's list of its sets.

use std::fmt::Write;

use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::html::{badge, diff, esc, page, seg, time};
use super::pages::{P, S, html, one_line};
use crate::core::{CandidateView, Core, CoreError, SetView};
use crate::pods::Engine;
use crate::store::{CheckResult, ProposalState, SetState};

#[derive(Deserialize, Default)]
pub struct SetPageQuery {
    fragment: Option<String>,
    /// Show this candidate's diff.
    diff: Option<u32>,
    /// Compare candidate `a`'s proposal with candidate `b`'s.
    a: Option<u32>,
    b: Option<u32>,
}

/// `12 s`, `3 min 05 s`, `1 h 02 min`.
fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
    }
}

fn millis(ms: u64) -> String {
    if ms < 10_000 { format!("{:.1} s", ms as f64 / 1000.0) } else { duration((ms / 1000) as i64) }
}

/// A check's result: pass or fail with its exit code and time, the last lines of its
/// output folded away (agent output: escaped).
fn check_cell(n: u32, check: Option<&CheckResult>, configured: bool) -> String {
    let Some(c) = check else {
        return if configured {
            r#"<span class="muted">not run yet</span>"#.into()
        } else {
            r#"<span class="muted">no check</span>"#.into()
        };
    };
    let verdict =
        if c.passed() { r#"<span class="badge good">pass</span>"# } else { r#"<span class="badge bad">fail</span>"# };
    let how = match (c.exit_code, &c.error) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(e)) => esc(e),
        (None, None) => "no exit code".into(),
    };
    let mut out = format!(r#"{verdict} <span class="muted">{how} · {}</span>"#, millis(c.duration_ms));
    if !c.output.is_empty() {
        let _ = write!(
            out,
            r#"<details id="check-{n}" class="check"><summary>last lines</summary><pre class="log">{}</pre></details>"#,
            esc(&c.output)
        );
    }
    out
}

/// The approve buttons of a candidate's open proposal (the JSON API, through app.js).
fn approve_buttons(n: u32, proposal: &str) -> String {
    let p = seg(proposal);
    let button = |action: &str, label: &str, confirm: &str| {
        format!(
            r#"<form class="inline" data-kind="action" data-api="/api/v1/proposals/{p}/approve" data-confirm="Candidate {n}: {confirm} The other candidates are not chosen."><input type="hidden" name="action" value="{action}"><button type="submit" class="small">{label}</button></form>"#
        )
    };
    [
        button("apply", "Approve: apply", "fetch its branch into the workspace's repository?"),
        button("push", "Approve: push", "push its branch to the source's remote?"),
        button("draft_pr", "Approve: draft PR", "push and open a draft pull request?"),
    ]
    .concat()
}

fn candidate_row(set: &SetView, c: &CandidateView) -> String {
    let s = &set.set;
    let idh = seg(&s.id);
    let mut outcome = String::new();
    if let Some(p) = &c.proposal {
        let state = c.proposal_state.map_or("", ProposalState::as_str);
        let _ = write!(
            outcome,
            r##"<a href="/proposals/{ph}">{pe}</a> {state} <a class="diff-link" href="/sets/{idh}?diff={n}#diff">diff</a>"##,
            ph = seg(p),
            pe = esc(p),
            state = badge(state),
            n = c.n,
        );
        if !s.state.is_closed() && c.proposal_state == Some(ProposalState::Open) {
            let _ = write!(outcome, r#"<div class="approve">{}</div>"#, approve_buttons(c.n, p));
        }
    }
    if let Some(r) = &c.reason {
        let _ = write!(outcome, r#"<div class="error">{}</div>"#, esc(&one_line(r, 300)));
    }
    if let Some(sm) = &c.summary {
        let _ = write!(outcome, r#"<div class="muted">{}</div>"#, esc(&one_line(sm, 300)));
    }
    if let Some(f) = &c.feedback {
        let _ = write!(outcome, r#"<div class="muted">next round's feedback: {}</div>"#, esc(&one_line(f, 200)));
    }
    let lines = if c.proposal.is_some() {
        format!(r#"<span class="plus">+{}</span> <span class="minus">−{}</span>"#, c.added, c.removed)
    } else {
        String::new()
    };
    format!(
        r#"<tr data-candidate="{n}"><td>{n}</td><td><code>{model}</code></td><td class="state">{state}</td><td class="muted">{time}</td><td>{files}</td><td>{lines}</td><td class="check">{check}</td><td>{outcome}</td></tr>"#,
        n = c.n,
        model = esc(&c.model),
        state = badge(&c.state),
        time = c.duration_secs.map(duration).unwrap_or_default(),
        files = if c.proposal.is_some() { c.files.to_string() } else { String::new() },
        check = check_cell(c.n, c.check.as_ref(), s.check.is_some()),
    )
}

/// The header (facts, cancel), the candidates' table and the rejection form: the part of
/// the page that follows the set live.
fn set_section(v: &SetView) -> String {
    let s = &v.set;
    let idh = seg(&s.id);
    let chosen = s.chosen.map(|n| format!("<dt>Chosen</dt><dd>candidate {n}</dd>")).unwrap_or_default();
    let mut out = format!(
        r#"<dl class="facts" data-set-state="{state_attr}"><dt>State</dt><dd>{state}</dd><dt>Workspace</dt><dd><a href="/workspaces/{wsh}">{ws}</a></dd><dt>Round</dt><dd>{round}</dd><dt>Base</dt><dd><code>{base}</code></dd><dt>Check</dt><dd>{check}</dd><dt>Created</dt><dd>{created} UTC</dd>{chosen}</dl>"#,
        state_attr = s.state.as_str(),
        state = badge(s.state.as_str()),
        wsh = seg(&s.workspace),
        ws = esc(&s.workspace),
        round = s.round,
        base = esc(&s.base.chars().take(12).collect::<String>()),
        check = match &s.check {
            Some(c) => format!("<code>{}</code>", esc(c)),
            None => r#"<span class="muted">none (<code>[fanout] check</code>)</span>"#.into(),
        },
        created = time(s.created_at),
    );
    if !s.state.is_closed() {
        let _ = write!(
            out,
            r#"<div class="actions"><form class="inline" data-kind="action" data-api="/api/v1/sets/{idh}/cancel" data-confirm="Cancel this proposal set? Unfinished candidates stop, every candidate's container is removed, and nothing of it can be approved."><button type="submit" class="danger">Cancel the set</button><span class="error" role="alert"></span></form></div>"#
        );
    }
    out.push_str(
        r#"<table class="list candidates"><thead><tr><th>#</th><th>Model</th><th>State</th><th>Time</th><th>Files</th><th>Lines</th><th>Check</th><th>Proposal, summary</th></tr></thead><tbody>"#,
    );
    for c in &v.candidates {
        out.push_str(&candidate_row(v, c));
    }
    out.push_str("</tbody></table>");
    let open: Vec<&CandidateView> =
        v.candidates.iter().filter(|c| c.proposal_state == Some(ProposalState::Open)).collect();
    if s.state == SetState::Complete && !open.is_empty() {
        let mut boxes = String::new();
        for c in &open {
            let _ = write!(
                boxes,
                r#"<label class="check"><input type="checkbox" name="candidates" value="{n}" data-collect> candidate {n}</label>"#,
                n = c.n
            );
        }
        let _ = write!(
            out,
            r#"<form class="card reject-set" data-kind="action" data-api="/api/v1/sets/{idh}/reject" data-confirm="Reject these proposals? With feedback, the candidates get another round; without, the set is closed.">
<label for="set-feedback">Reject all, with feedback (optional: without it the set is closed; with it each candidate gets another round in its own session)</label>
<textarea id="set-feedback" name="feedback" rows="2"></textarea>
<p class="hint">Only these candidates get the feedback (none ticked: every candidate with an open proposal):</p>{boxes}
<button type="submit" class="danger">Reject</button><p class="error" role="alert"></p></form>"#
        );
    }
    out
}

/// The diff asked for (`?diff=n`, or `?a=&b=`), or why there is none. Errors are shown in
/// place: the rest of the page stays usable.
async fn diff_section<E: Engine>(core: &Core<E>, v: &SetView, q: &SetPageQuery) -> String {
    let id = &v.set.id;
    if let (Some(a), Some(b)) = (q.a, q.b) {
        return match core.diff_candidates(id, a, b).await {
            Ok(text) if text.trim().is_empty() => {
                format!(r#"<h3>Candidate {a} → candidate {b}</h3><p class="empty">Their proposals are the same.</p>"#)
            }
            Ok(text) => format!(
                r#"<h3>Candidate {a} → candidate {b}</h3><p class="muted">What candidate {b}'s proposal has that candidate {a}'s has not (<span class="plus">+</span>), and the reverse (<span class="minus">−</span>).</p><div class="diffs">{}</div>"#,
                diff(&text)
            ),
            Err(e) => format!(r#"<p class="error">{}</p>"#, esc(&e.to_string())),
        };
    }
    let Some(n) = q.diff else { return String::new() };
    let Some(c) = v.candidates.iter().find(|c| c.n == n) else {
        return format!(
            r#"<p class="error">set {} has no candidate {n}: its candidates are 1 to {}</p>"#,
            esc(id),
            v.candidates.len()
        );
    };
    let Some(p) = &c.proposal else {
        return format!(r#"<p class="empty">Candidate {n} has no proposal (it is {}).</p>"#, esc(&c.state));
    };
    match core.diff(p).await {
        Ok(text) => format!(
            r#"<h3>Candidate {n} (<code>{model}</code>): proposal <a href="/proposals/{ph}">{pe}</a></h3><div class="diffs">{d}</div>"#,
            model = esc(&c.model),
            ph = seg(p),
            pe = esc(p),
            d = diff(&text),
        ),
        Err(e) => format!(r#"<p class="error">{}</p>"#, esc(&e.to_string())),
    }
}

/// The forms that pick a diff (plain GET forms: the page is rendered by the server).
fn compare_forms(v: &SetView, q: &SetPageQuery) -> String {
    let options = |selected: Option<u32>| {
        let mut out = String::new();
        for c in &v.candidates {
            let sel = if selected == Some(c.n) { " selected" } else { "" };
            let _ = write!(out, r#"<option value="{n}"{sel}>{n}: {model}</option>"#, n = c.n, model = esc(&c.model));
        }
        out
    };
    let idh = seg(&v.set.id);
    let (a, b) = (q.a.or(Some(1)), q.b.or(Some(2)));
    format!(
        r##"<div class="compare"><form method="get" action="/sets/{idh}#diff" class="card inline-form"><label for="diff-n">A candidate's diff</label><select id="diff-n" name="diff">{one}</select><button type="submit">Show</button></form>
<form method="get" action="/sets/{idh}#diff" class="card inline-form"><label for="diff-a">Candidate against candidate</label><select id="diff-a" name="a">{a}</select> → <select id="diff-b" name="b">{b}</select><button type="submit">Compare</button></form></div>"##,
        one = options(q.diff),
        a = options(a),
        b = options(b),
    )
}

pub async fn set_page<E: Engine>(State(st): S<E>, Path(id): Path<String>, Query(q): Query<SetPageQuery>) -> P {
    let core = &st.core;
    let v = core.set_view(&id).await?;
    if q.fragment.as_deref() == Some("set") {
        return html(set_section(&v));
    }
    let section = set_section(&v);
    let diffs = diff_section(core, &v, &q).await;
    let body = format!(
        r#"<div data-events="/api/v1/events?workspace={wsh}"></div>
<h1>Proposal set {ide}</h1>
<p class="summary">{prompt}</p>
<section id="set" data-fragment="/sets/{idh}?fragment=set">{section}</section>
<h2 id="diff">Diffs</h2>{forms}{diffs}
<h2>Live progress</h2>
<ol id="live" class="live" aria-live="polite"><li class="muted">Events of workspace {ws} appear here as they happen.</li></ol>"#,
        wsh = seg(&v.set.workspace),
        ws = esc(&v.set.workspace),
        ide = esc(&v.set.id),
        idh = seg(&v.set.id),
        prompt = esc(&v.set.prompt),
        forms = compare_forms(&v, &q),
    );
    html(page(&format!("Proposal set {}", v.set.id), &body))
}

/// The workspace page's list of its proposal sets, newest first (the latest 20).
pub async fn sets_section<E: Engine>(core: &Core<E>, workspace: &str) -> Result<String, CoreError> {
    let sets = core.sets(Some(workspace)).await?;
    if sets.is_empty() {
        return Ok(
            r#"<p class="empty">No proposal sets: give <b>Candidate agents</b> above to run one prompt in several agents.</p>"#
                .into(),
        );
    }
    let mut out = String::from(
        r#"<table class="list sets"><thead><tr><th>Set</th><th>State</th><th>Candidates</th><th>Prompt</th><th>Created</th></tr></thead><tbody>"#,
    );
    for s in sets.iter().take(20) {
        let v = core.set_view(&s.id).await?;
        let _ = write!(
            out,
            r#"<tr data-set="{ide}"><td><a href="/sets/{idh}">{ide}</a></td><td>{state}</td><td>{n}</td><td>{prompt}</td><td class="muted">{at}</td></tr>"#,
            ide = esc(&s.id),
            idh = seg(&s.id),
            state = badge(s.state.as_str()),
            n = v.candidates.len(),
            prompt = esc(&one_line(&s.prompt, 80)),
            at = time(s.created_at),
        );
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(65), "1 min 05 s");
        assert_eq!(duration(3725), "1 h 02 min");
        assert_eq!(duration(-3), "0 s");
        assert_eq!(millis(1234), "1.2 s");
        assert_eq!(millis(75_000), "1 min 15 s");
    }

    #[test]
    fn a_check_shows_pass_or_fail_and_its_output_as_text() {
        let failed = CheckResult {
            exit_code: Some(1),
            duration_ms: 420,
            output: "<b>boom</b>\n\u{1b}[31mred".into(),
            error: None,
        };
        let h = check_cell(2, Some(&failed), true);
        assert!(
            h.starts_with(r#"<span class="badge bad">fail</span> <span class="muted">exit 1 · 0.4 s</span>"#),
            "{h}"
        );
        assert!(h.contains(r#"<details id="check-2" class="check">"#), "{h}");
        assert!(h.contains("&lt;b&gt;boom&lt;/b&gt;\n\u{fffd}[31mred"), "{h}");
        let passed = CheckResult { exit_code: Some(0), duration_ms: 12_000, output: String::new(), error: None };
        let h = check_cell(1, Some(&passed), true);
        assert_eq!(h, r#"<span class="badge good">pass</span> <span class="muted">exit 0 · 12 s</span>"#);
        let timed_out =
            CheckResult { exit_code: None, duration_ms: 5, output: String::new(), error: Some("did <not> end".into()) };
        assert!(
            check_cell(1, Some(&timed_out), true).contains("fail</span> <span class=\"muted\">did &lt;not&gt; end")
        );
        assert_eq!(check_cell(1, None, true), r#"<span class="muted">not run yet</span>"#);
        assert_eq!(check_cell(1, None, false), r#"<span class="muted">no check</span>"#);
    }
}
