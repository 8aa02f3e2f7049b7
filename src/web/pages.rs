//! The web UI's pages: server-rendered HTML over `core`, with `static/app.js` for live
//! updates (the same event bus as everything else, over `/api/v1/events`) and for actions
//! (which go through the JSON API). Sections marked `data-fragment` are re-rendered by the
//! same functions when an event arrives, so a task's end shows without a reload.

use std::fmt::Write;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{badge, diff, esc, level_badge, page, run_badge, seg, time};
use super::proxy::AgentProxies;
use super::session::{self, WebAuth};
use super::set_page::sets_section;
use crate::core::{
    Core, CoreError, ExecTarget, ProposalDetail, ProposalQuery, ProposalSummary, TaskQuery, WorkerTaskSummary,
};
use crate::pods::Engine;
use crate::store::ProposalState;

/// What the pages need: the core, the login, the agent-UI proxies.
pub struct WebState<E> {
    pub core: Arc<Core<E>>,
    pub auth: WebAuth,
    pub proxies: Arc<AgentProxies<E>>,
}

impl<E> Clone for WebState<E> {
    fn clone(&self) -> Self {
        WebState { core: self.core.clone(), auth: self.auth.clone(), proxies: self.proxies.clone() }
    }
}

pub(super) type S<E> = State<WebState<E>>;

/// A page that could not be made: the error's status and message, in the layout.
pub struct PageError(CoreError);

impl From<CoreError> for PageError {
    fn from(e: CoreError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = super::error::status_of(&self.0);
        let body = format!(
            r#"<h1>{}</h1><p class="error">{}</p><p><a href="/">Back to the workspaces</a></p>"#,
            status,
            esc(&self.0.to_string())
        );
        (status, Html(page("Error", &body))).into_response()
    }
}

pub(super) type P = Result<Response, PageError>;

pub(super) fn html(s: String) -> P {
    Ok(Html(s).into_response())
}

#[derive(Deserialize, Default)]
pub struct FragmentQuery {
    fragment: Option<String>,
}

// ---- login ----

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a local path (`/…`, not `//host`, no control characters or backslashes, which
/// browsers drop or fold into `/`) is followed after login.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.chars().any(|c| c == '\\' || c.is_control() || c.is_whitespace()) =>
        {
            n
        }
        _ => "/",
    }
}

fn login_form(next: &str, error: Option<&str>) -> String {
    let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e))).unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · devaipod</title><link rel="stylesheet" href="/static/app.css"></head>
<body class="login"><main><h1>devaipod</h1>
<form method="post" action="/login" class="card">
<label for="token">Login token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Log in</button>{error}
<p class="hint">Print it with <code>devaipod token</code>.</p>
</form></main></body></html>"#,
        next = esc(next)
    )
}

pub async fn login_page(Query(q): Query<NextQuery>) -> Html<String> {
    Html(login_form(safe_next(q.next.as_deref()), None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

pub async fn login<E: Engine>(State(st): S<E>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if headers.contains_key(header::ORIGIN) && !session::same_origin(&headers) {
        return session::cross_origin();
    }
    let next = safe_next(f.next.as_deref()).to_owned();
    if !st.auth.token_ok(&f.token) {
        let body = login_form(&next, Some("That is not the login token. Print it with `devaipod token`."));
        return (StatusCode::UNAUTHORIZED, Html(body)).into_response();
    }
    match st.auth.start_session().await {
        Ok(value) => {
            let mut resp = Redirect::to(&next).into_response();
            resp.headers_mut().insert(header::SET_COOKIE, session::set_cookie(Some(&value)));
            resp
        }
        Err(e) => PageError(CoreError::from(e)).into_response(),
    }
}

pub async fn logout<E: Engine>(State(st): S<E>, headers: HeaderMap) -> Response {
    if let Some(v) = session::cookie_value(&headers) {
        st.auth.end_session(&v).await;
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session::set_cookie(None));
    resp
}

// ---- static files ----

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("static/app.css"))
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("static/app.js"))
}

pub async fn shell_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../vendor/opencode-ui/shell.css"))
}

pub async fn shell_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../vendor/opencode-ui/shell.js"))
}

// ---- dashboard ----

async fn workspaces_table<E: Engine>(core: &Arc<Core<E>>) -> Result<String, CoreError> {
    let list = core.list_for_page().await?;
    let tasks = core.tasks(&TaskQuery::default()).await?;
    let open = core.open_proposals_by_workspace().await?;
    if list.is_empty() {
        return Ok(r#"<p class="empty">No workspaces yet: create one below.</p>"#.into());
    }
    let mut out = String::from(
        r#"<table class="list"><thead><tr><th>Workspace</th><th>Pod</th><th>Agent</th><th>Running task</th><th>Open proposals</th><th>Source</th></tr></thead><tbody>"#,
    );
    for w in &list {
        let running = tasks.iter().find(|t| t.workspace == w.name && !t.state.is_final());
        let running = running
            .map(|t| {
                format!(r#"{} <span class="muted">{}</span>"#, badge(t.state.as_str()), esc(&one_line(&t.prompt, 60)))
            })
            .unwrap_or_else(|| r#"<span class="muted">none</span>"#.into());
        let proposals = open.get(&w.name).copied().unwrap_or(0);
        let _ = write!(
            out,
            r#"<tr data-workspace="{name}"><td><a href="/workspaces/{href}">{name}</a></td><td>{pod}</td><td>{agent}</td><td>{running}</td><td>{proposals}</td><td class="muted">{source}</td></tr>"#,
            name = esc(&w.name),
            href = seg(&w.name),
            pod = run_badge(&w.status.to_lowercase()),
            agent = run_badge(w.agent.as_deref().unwrap_or("missing")),
            source = esc(w.source.as_deref().unwrap_or("-")),
        );
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

pub async fn dashboard<E: Engine>(State(st): S<E>, Query(q): Query<FragmentQuery>) -> P {
    let table = workspaces_table(&st.core).await?;
    if q.fragment.as_deref() == Some("workspaces") {
        return html(table);
    }
    let body = format!(
        r#"<div data-events="/api/v1/events"></div>
<h1>Workspaces</h1>
<section id="workspaces" data-fragment="/?fragment=workspaces">{table}</section>
<h2>Create a workspace</h2>
<form class="card" data-kind="create-workspace" data-api="/api/v1/workspaces">
<label for="source">Repository: a local path, a git URL, or a GitHub issue URL</label>
<input id="source" name="source" required placeholder="/home/me/src/project or https://github.com/owner/repo">
<div class="row"><span><label for="name">Name (optional)</label><input id="name" name="name" placeholder="from the repository"></span>
<span><label for="image">Image (optional)</label><input id="image" name="image" placeholder="devcontainer.json's or the default"></span></div>
<label for="task">First task (optional; a GitHub issue or PR brings its own)</label>
<textarea id="task" name="task" rows="2" placeholder="What the agent should do first"></textarea>
<label for="allow_hosts">Extra hosts the agent may reach (optional; e.g. <code>pypi.org *.github.com example.org:8443</code>)</label>
<input id="allow_hosts" name="allow_hosts" data-list placeholder="beyond [network] allow-hosts; separated by spaces or commas">
<label class="check"><input type="checkbox" name="read_only"> GitHub source: the agent may only read</label>
<button type="submit">Create</button>
<ol class="progress" aria-live="polite"></ol><p class="error" role="alert"></p>
</form>"#
    );
    html(page("Workspaces", &body))
}

pub(super) fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

// ---- workspace ----

/// The tasks table; `proposals` are the workspace's (each task links its own).
async fn tasks_section<E: Engine>(
    core: &Core<E>,
    name: &str,
    proposals: &[ProposalSummary],
) -> Result<String, CoreError> {
    let tasks = core.tasks(&TaskQuery { workspace: Some(name.to_owned()), state: None }).await?;
    if tasks.is_empty() {
        return Ok(r#"<p class="empty">No tasks yet.</p>"#.into());
    }
    let mut out = String::from(
        r#"<table class="list"><thead><tr><th>Task</th><th>State</th><th>Prompt</th><th>Outcome</th><th>Started</th></tr></thead><tbody>"#,
    );
    for t in tasks.iter().take(50) {
        let outcome = match (proposals.iter().find(|p| p.task_id == t.id), &t.error, &t.summary) {
            (Some(p), _, _) => format!(
                r#"<a href="/proposals/{}">proposal {}</a> {} <span class="muted">+{} −{}</span>"#,
                seg(&p.id),
                esc(&p.id),
                badge(p.state.as_str()),
                p.added,
                p.removed
            ),
            (None, Some(e), _) => format!(r#"<span class="error">{}</span>"#, esc(&one_line(e, 200))),
            (None, None, Some(s)) => esc(&one_line(s, 200)),
            _ => String::new(),
        };
        let cancel = if t.state.is_final() {
            String::new()
        } else {
            format!(
                r#" <form class="inline" data-kind="action" data-api="/api/v1/tasks/{}/cancel" data-confirm="Cancel this task?"><button type="submit" class="small">Cancel</button></form>"#,
                seg(&t.id)
            )
        };
        let _ = write!(
            out,
            r#"<tr data-task="{id}"><td><code>{id}</code></td><td class="state">{state}{cancel}</td><td>{prompt}</td><td>{outcome}{session}</td><td class="muted">{at}</td></tr>"#,
            id = esc(&t.id),
            session = match &t.session_id {
                Some(_) => format!(
                    r#" <a class="session" href="/workspaces/{}/agent?task={}">its session</a>"#,
                    seg(&t.workspace),
                    seg(&t.id)
                ),
                None => String::new(),
            },
            state = badge(t.state.as_str()),
            prompt = esc(&one_line(&t.prompt, 80)),
            at = time(t.created_at),
        );
        if t.workers > 0 {
            out.push_str(&workers_rows(&core.worker_tasks(&t.id).await?, t.workers));
        }
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

/// An owner task's worker tasks, under its row: each worker's state, prompt, and what its
/// owner decided of its proposal.
fn workers_rows(workers: &[WorkerTaskSummary], allowed: u32) -> String {
    if workers.is_empty() {
        return format!(
            r#"<tr class="workers"><td></td><td colspan="4" class="muted">may delegate to {allowed} worker(s); none yet</td></tr>"#
        );
    }
    let mut rows = String::new();
    for w in workers {
        let decided = match w.proposal_state {
            Some(ProposalState::Applied) => "accepted",
            Some(ProposalState::Rejected) => "rejected",
            Some(_) => "not decided",
            None => "",
        };
        let outcome = match (&w.proposal, &w.error, &w.summary) {
            (Some(p), _, _) => format!(
                r#"<a href="/proposals/{}">proposal {}</a> {} <span class="muted">+{} −{}</span>"#,
                seg(p),
                esc(p),
                badge(decided),
                w.added,
                w.removed
            ),
            (None, Some(e), _) => format!(r#"<span class="error">{}</span>"#, esc(&one_line(e, 200))),
            (None, None, Some(s)) => esc(&one_line(s, 200)),
            _ => String::new(),
        };
        let _ = write!(
            rows,
            r#"<tr class="worker" data-task="{id}"><td><span class="muted">└ worker {n}</span> <code>{id}</code></td><td class="state">{state}</td><td>{prompt}</td><td>{outcome}</td><td></td></tr>"#,
            id = esc(&w.id),
            n = w.worker,
            state = badge(w.state.as_str()),
            prompt = esc(&one_line(&w.prompt, 80)),
        );
    }
    rows
}

fn proposals_section(proposals: &[ProposalSummary]) -> String {
    if proposals.is_empty() {
        return r#"<p class="empty">No proposals yet.</p>"#.into();
    }
    let mut out = String::from(
        r#"<table class="list"><thead><tr><th>Proposal</th><th>State</th><th>Files</th><th>Lines</th><th>Summary</th></tr></thead><tbody>"#,
    );
    for p in proposals {
        let _ = write!(
            out,
            r#"<tr><td><a href="/proposals/{href}">{id}</a></td><td>{state}</td><td>{files}</td><td><span class="plus">+{a}</span> <span class="minus">−{r}</span></td><td>{summary}</td></tr>"#,
            href = seg(&p.id),
            id = esc(&p.id),
            state = badge(p.state.as_str()),
            files = p.files,
            a = p.added,
            r = p.removed,
            summary = esc(&one_line(&p.summary, 120)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub async fn workspace_page<E: Engine>(State(st): S<E>, Path(name): Path<String>, Query(q): Query<FragmentQuery>) -> P {
    let core = &st.core;
    if q.fragment.as_deref() == Some("status") {
        return html(status_section(core, &name).await?);
    }
    // The newest page: enough for a page (older ones stay listed by the API and the CLI).
    let query = ProposalQuery { workspace: Some(name.clone()), limit: Some(100), ..Default::default() };
    let all_proposals = core.proposals(&query).await?.proposals;
    match q.fragment.as_deref() {
        Some("tasks") => return html(tasks_section(core, &name, &all_proposals).await?),
        Some("proposals") => return html(proposals_section(&all_proposals)),
        Some("sets") => return html(sets_section(core, &name).await?),
        _ => {}
    }
    let status = status_section(core, &name).await?;
    let tasks = tasks_section(core, &name, &all_proposals).await?;
    let proposals = proposals_section(&all_proposals);
    let sets = sets_section(core, &name).await?;
    let logs = match core.logs_tail(&name, ExecTarget::Workspace, 40).await {
        Ok(l) if l.trim().is_empty() => "(no output yet)".to_owned(),
        Ok(l) => l,
        Err(e) => format!("({e})"),
    };
    let scopes = core.scope_view(&name).await.map(|v| v.scopes.join(", ")).unwrap_or_default();
    let (n, href) = (esc(&name), seg(&name));
    let body = format!(
        r#"<div data-events="/api/v1/events?workspace={href}"></div>
<h1>{n}</h1>
<section id="status" data-fragment="/workspaces/{href}?fragment=status">{status}</section>
<div class="actions">
<a class="button" href="/workspaces/{href}/agent">Open the agent's UI</a>
<form class="inline" data-kind="action" data-api="/api/v1/workspaces/{href}/stop" data-confirm="Stop {n}? Its containers stop; nothing is lost."><button type="submit">Stop</button></form>
<form class="inline" data-kind="action" data-api="/api/v1/workspaces/{href}/start"><button type="submit">Start</button></form>
<form class="inline" data-kind="action" data-method="DELETE" data-api="/api/v1/workspaces/{href}" data-confirm="Delete {n}? Its pod, containers and volumes are removed (proposals stay readable)." data-then="/"><button type="submit" class="danger">Delete</button></form>
<a href="/audit?workspace={href}">Gator audit log</a>
</div>
<p class="muted">Gator scopes: {scopes}</p>
<h2>Run a task</h2>
<form class="card" data-kind="run-task" data-api="/api/v1/tasks">
<input type="hidden" name="workspace" value="{n}">
<label for="prompt">What should the agent do?</label>
<textarea id="prompt" name="prompt" rows="3" required></textarea>{workers}{fanout}
<button type="submit">Run</button><p class="error" role="alert"></p>
</form>
<h2>Tasks</h2>
<section id="tasks" data-fragment="/workspaces/{href}?fragment=tasks">{tasks}</section>
<h2>Live progress</h2>
<ol id="live" class="live" aria-live="polite"><li class="muted">Events of this workspace appear here as they happen.</li></ol>
<h2>Proposals</h2>
<section id="proposals" data-fragment="/workspaces/{href}?fragment=proposals">{proposals}</section>
<h2>Proposal sets</h2>
<section id="sets" data-fragment="/workspaces/{href}?fragment=sets">{sets}</section>
<h2>Workspace container log (last 40 lines)</h2>
<pre class="log">{logs}</pre>"#,
        scopes = if scopes.is_empty() { "none".to_owned() } else { esc(&scopes) },
        logs = esc(&logs),
        workers = match core.config.orchestration.limit() {
            0 => String::new(),
            max => format!(
                r#"
<label for="workers">Worker agents it may delegate to (0 to {max})</label>
<input id="workers" name="workers" type="number" min="0" max="{max}" value="0">"#
            ),
        },
        fanout = fanout_fields(&core.config),
    );
    html(page(&name, &body))
}

/// The run-task form's fan-out fields: how many candidate agents (blank: one task, as
/// usual) and, where `[agent] models` names more models, which model each candidate uses.
fn fanout_fields(config: &crate::config::Config) -> String {
    let max = config.fanout.max_agents;
    let mut out = format!(
        r#"
<label for="agents">Candidate agents (optional, 1 to {max}: the prompt goes to that many agents at once, each in its own sandbox, and you choose among their proposals)</label>
<input id="agents" name="agents" type="number" min="1" max="{max}" placeholder="blank: one task, as usual">"#
    );
    if !config.agent.models.is_empty() {
        let allowed = config.agent.allowed_models();
        let _ = write!(
            out,
            r#"
<label for="models">Their models (optional: one per candidate, in order, separated by spaces or commas; blank: all use <code>{default}</code>)</label>
<input id="models" name="models" data-list placeholder="from: {list}">"#,
            default = esc(&config.agent.model),
            list = esc(&allowed.join(", ")),
        );
    }
    out
}

async fn status_section<E: Engine>(core: &Core<E>, name: &str) -> Result<String, CoreError> {
    let s = core.status(name).await?;
    Ok(format!(
        r#"<dl class="facts"><dt>Pod</dt><dd>{pod} {status}</dd><dt>Workspace container</dt><dd>{ws}</dd><dt>Agent</dt><dd>{agent}</dd><dt>Source</dt><dd>{source}</dd><dt>Folder</dt><dd><code>{folder}</code></dd></dl>"#,
        pod = esc(&s.pod),
        status = run_badge(&s.status.to_lowercase()),
        ws = run_badge(s.workspace.as_deref().unwrap_or("missing")),
        agent = run_badge(s.agent.as_deref().unwrap_or("missing")),
        source = esc(s.source.as_deref().unwrap_or("-")),
        folder = esc(s.workspace_folder.as_deref().unwrap_or("-")),
    ))
}

// ---- proposal ----

async fn proposal_meta<E: Engine>(core: &Core<E>, id: &str) -> Result<String, CoreError> {
    let ProposalDetail { proposal: p, approvals } = core.proposal_detail(id).await?;
    let mut out = format!(
        r#"<dl class="facts"><dt>State</dt><dd>{state}</dd><dt>Workspace</dt><dd><a href="/workspaces/{wsh}">{ws}</a></dd><dt>Branch</dt><dd><code>{branch}</code></dd><dt>Task</dt><dd><code>{task}</code></dd><dt>Lines</dt><dd><span class="plus">+{a}</span> <span class="minus">−{r}</span> in {files} file(s), {commits} commit(s)</dd></dl>"#,
        state = badge(p.state.as_str()),
        wsh = seg(&p.workspace),
        ws = esc(&p.workspace),
        branch = esc(&p.branch),
        task = esc(&p.task_id),
        a = p.added,
        r = p.removed,
        files = p.files.len(),
        commits = p.commits.len(),
    );
    for a in &approvals {
        let _ = write!(out, r#"<p class="approval">{} {}: {}</p>"#, badge(&a.action), time(a.at), esc(&a.detail));
    }
    if let Some(owner) = core.task(&p.task_id).await.ok().and_then(|(t, _)| t.parent) {
        let _ = write!(
            out,
            r#"<p class="muted">A worker's proposal: its owner task <code>{}</code> accepts or rejects it, and its own proposal is the one to review.</p>"#,
            esc(&owner)
        );
        return Ok(out);
    }
    if p.state == ProposalState::Open || p.state == ProposalState::Applied || p.state == ProposalState::Pushed {
        let idh = seg(&p.id);
        let done = |action: &str| approvals.iter().any(|a| a.action == action);
        let button = |action: &str, label: &str, confirm: &str| {
            if done(action) {
                String::new()
            } else {
                format!(
                    r#"<form class="inline" data-kind="action" data-api="/api/v1/proposals/{idh}/approve" data-confirm="{confirm}"><input type="hidden" name="action" value="{action}"><button type="submit">{label}</button></form>"#
                )
            }
        };
        out.push_str(r#"<div class="actions">"#);
        out.push_str(&button(
            "apply",
            "Approve: apply to the workspace",
            "Fetch this branch into the workspace's repository?",
        ));
        out.push_str(&button("push", "Approve: push", "Push this branch to the source's remote?"));
        out.push_str(&button("draft_pr", "Approve: draft PR", "Push and open a draft pull request?"));
        out.push_str("</div>");
        if p.state == ProposalState::Open {
            let _ = write!(
                out,
                r#"<form class="card" data-kind="action" data-api="/api/v1/proposals/{idh}/reject" data-confirm="Reject this proposal?">
<label for="feedback">Reject, with feedback for the agent (optional: it becomes a follow-up task)</label>
<textarea id="feedback" name="feedback" rows="2"></textarea><button type="submit" class="danger">Reject</button><p class="error" role="alert"></p></form>"#
            );
        }
    }
    Ok(out)
}

pub async fn proposal_page<E: Engine>(State(st): S<E>, Path(id): Path<String>, Query(q): Query<FragmentQuery>) -> P {
    let core = &st.core;
    if q.fragment.as_deref() == Some("meta") {
        return html(proposal_meta(core, &id).await?);
    }
    let p = core.proposal(&id).await?;
    let meta = proposal_meta(core, &id).await?;
    let text = core.diff(&id).await?;
    let mut files =
        String::from(r#"<table class="list files"><thead><tr><th>File</th><th>+</th><th>−</th></tr></thead><tbody>"#);
    for (i, f) in p.files.iter().enumerate() {
        let n = |v: Option<u64>| v.map_or("bin".to_owned(), |v| v.to_string());
        let _ = write!(
            files,
            r##"<tr><td><a href="#file-{}">{}</a></td><td class="plus">{}</td><td class="minus">{}</td></tr>"##,
            i + 1,
            esc(&f.path),
            n(f.added),
            n(f.removed)
        );
    }
    files.push_str("</tbody></table>");
    let summary =
        if p.summary.is_empty() { String::new() } else { format!(r#"<p class="summary">{}</p>"#, esc(&p.summary)) };
    let body = format!(
        r#"<div data-events="/api/v1/events?workspace={wsh}"></div>
<h1>Proposal {id}</h1>{summary}
<section id="proposal-meta" data-fragment="/proposals/{idh}?fragment=meta">{meta}</section>
<h2>Files</h2>{files}
<h2>Diff</h2><div class="diffs">{diff}</div>"#,
        wsh = seg(&p.workspace),
        id = esc(&p.id),
        idh = seg(&p.id),
        diff = diff(&text),
    );
    html(page(&format!("Proposal {}", p.id), &body))
}

// ---- audit ----

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    workspace: Option<String>,
}

pub async fn audit_page<E: Engine>(State(st): S<E>, Query(q): Query<AuditQuery>) -> P {
    let entries = st.core.audit_log(q.workspace.as_deref(), 500).await?;
    let mut rows = String::new();
    for e in &entries {
        let _ = write!(
            rows,
            r#"<tr><td class="muted">{at}</td><td><a href="/workspaces/{wsh}">{ws}</a></td><td>{decision}</td><td><code>{tool}</code></td><td>{target}</td><td>{reason}</td></tr>"#,
            at = time(e.at),
            wsh = seg(&e.workspace),
            ws = esc(&e.workspace),
            decision = badge(&e.decision),
            tool = esc(&e.tool),
            target = esc(&e.target),
            reason = esc(&e.reason),
        );
    }
    let title = match &q.workspace {
        Some(w) => format!("Gator audit log of {}", esc(w)),
        None => "Gator audit log".to_owned(),
    };
    let table = if entries.is_empty() {
        r#"<p class="empty">No gator calls yet.</p>"#.to_owned()
    } else {
        format!(
            r#"<table class="list"><thead><tr><th>Time (UTC)</th><th>Workspace</th><th>Decision</th><th>Tool</th><th>Target</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };
    html(page(
        "Audit log",
        &format!(
            "<h1>{title}</h1><p class=\"muted\">Every call an agent made through gator, allowed or not, newest first.</p>{table}"
        ),
    ))
}

// ---- doctor ----

#[derive(Deserialize, Default)]
pub struct DoctorQuery {
    workspace: Option<String>,
}

/// The doctor's checks as the daemon sees them (its environment, a helper container for the
/// LLM, or a workspace's agent with `?workspace=`), each with its fix.
pub async fn doctor_page<E: Engine>(State(st): S<E>, Query(q): Query<DoctorQuery>) -> P {
    use crate::core::doctor::{self, DaemonSeen, DoctorRequest};
    let report = st.core.doctor(&DoctorRequest { env: None, workspace: q.workspace.clone() }).await;
    let seen = DaemonSeen {
        version: &report.version,
        pid: report.pid,
        instance: &report.instance,
        config_file: report.config_file.as_deref(),
    };
    let mut checks = report.checks.clone();
    let log = st.core.paths.data.join("daemon.log");
    checks.push(doctor::judge::daemon(doctor::VERSION, report.config_file.as_deref(), Ok(seen), &log));
    doctor::sort(&mut checks);
    let mut rows = String::new();
    for c in &checks {
        let fix = c.fix.as_deref().map(|f| format!(r#"<div class="hint">fix: {}</div>"#, esc(f))).unwrap_or_default();
        let _ = write!(
            rows,
            r#"<tr><td>{level}</td><td><code>{id}</code></td><td>{summary}{fix}</td></tr>"#,
            level = level_badge(c.level.as_str()),
            id = esc(&c.id),
            summary = esc(&c.summary),
        );
    }
    let verdict = if doctor::healthy(&checks) {
        r#"<p class="summary">Nothing is in the way.</p>"#.to_owned()
    } else {
        r#"<p class="summary error">Something is in the way: see the errors below and their fixes.</p>"#.to_owned()
    };
    let about = match &q.workspace {
        Some(w) => format!("The LLM is probed from the agent of workspace <code>{}</code>.", esc(w)),
        None => "The LLM is probed from a throwaway container on the agents' network; add <code>?workspace=NAME</code> to ask a workspace's agent.".to_owned(),
    };
    html(page(
        "Doctor",
        &format!(
            r#"<h1>Doctor</h1><p class="muted">What the daemon finds about this machine, as <code>devaipod doctor</code> prints it. {about}</p>{verdict}<table class="list doctor"><thead><tr><th>Level</th><th>Check</th><th>Finding</th></tr></thead><tbody>{rows}</tbody></table>"#
        ),
    ))
}

// ---- agent UI ----

/// Our shell around the agent's own web UI: a bar (workspace, a link back, open
/// proposals) over the UI, which the daemon proxies on a port of its own (see `proxy.rs`).
#[derive(Debug, Deserialize)]
pub struct AgentPageQuery {
    /// Open the agent's UI on this task's session.
    pub task: Option<String>,
}

/// Where the agent's UI opens: the workspace's project (opencode names it by its
/// directory, base64url), on a session when one is given.
pub fn agent_ui_path(folder: Option<&str>, session: Option<&str>) -> String {
    match (folder, session) {
        (Some(f), Some(s)) => format!("/{}/session/{}", crate::encode::base64url(f.as_bytes()), seg(s)),
        (Some(f), None) => format!("/{}", crate::encode::base64url(f.as_bytes())),
        (None, _) => "/".to_owned(),
    }
}

pub async fn agent_page<E: Engine>(
    State(st): S<E>,
    Path(name): Path<String>,
    Query(q): Query<AgentPageQuery>,
    headers: HeaderMap,
) -> P {
    let port = st.proxies.ensure(&name).await?;
    let session = match &q.task {
        Some(id) => {
            let (task, _) = st.core.task(id).await?;
            if task.workspace != name {
                return Err(CoreError::TaskNotFound(id.clone()).into());
            }
            task.session_id
        }
        None => None,
    };
    let folder = st.core.status(&name).await?.workspace_folder;
    let landing = agent_ui_path(folder.as_deref(), session.as_deref());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let hostname = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let agent_origin = format!("http://{hostname}:{port}");
    let query =
        ProposalQuery { workspace: Some(name.clone()), state: Some("open".into()), limit: Some(20), offset: None };
    let open = st.core.proposals(&query).await?.proposals;
    let mut links = String::new();
    for p in &open {
        let _ = write!(links, r#"<a href="/proposals/{}">{}</a> "#, seg(&p.id), esc(&p.id));
    }
    if links.is_empty() {
        links = r#"<span class="muted">none open</span>"#.into();
    }
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{n} · agent · devaipod</title>
<link rel="stylesheet" href="/static/shell.css"><script src="/static/shell.js" defer></script></head>
<body><div class="devaipod-bar" data-workspace="{n}"><a href="/workspaces/{href}">← {n}</a><span class="title">agent of <b>{n}</b></span>
<span class="proposals">Proposals: {links}</span></div>
<iframe class="agent" src="{origin}{landing}" title="The agent's UI" sandbox="allow-scripts allow-same-origin allow-forms allow-popups allow-downloads allow-modals"></iframe></body></html>"#,
        n = esc(&name),
        href = seg(&name),
        origin = esc(&agent_origin),
        landing = esc(&landing),
    );
    let csp = format!("{}; frame-src {agent_origin}", super::session::CSP);
    let mut resp = Html(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod agent_ui_tests {
    use super::agent_ui_path;

    #[test]
    fn the_agents_ui_opens_on_the_project_and_on_a_tasks_session() {
        assert_eq!(agent_ui_path(Some("/workspaces/webui-src"), None), "/L3dvcmtzcGFjZXMvd2VidWktc3Jj");
        assert_eq!(
            agent_ui_path(Some("/workspaces/webui-src"), Some("ses_1a2b")),
            "/L3dvcmtzcGFjZXMvd2VidWktc3Jj/session/ses_1a2b"
        );
        assert_eq!(agent_ui_path(None, Some("ses_1")), "/");
    }
}
