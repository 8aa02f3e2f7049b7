//! Workspaces: `up` (source → checkout → devcontainer.json → plan → pod → agent ready),
//! `list`, `status`, `stop`, `start`, `delete`, `exec`, `logs`. A failed `up` removes what
//! it created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::lifecycle::{InContainer, run_on_host};
use super::source::{self, Source, strip_credentials};
use super::{BusEvent, Core, CoreError};
use crate::agent::opencode::Opencode;
use crate::agent::{Agent, config as agent_config};
use crate::devcontainer::{self, HostContext, Loaded, Vars};
use crate::gator::{self, GithubSource, ItemKind, Scope};
use crate::git::BareRepo;
use crate::pods::engine::{ExecSession, ExecSpec, Output, PodInfo, PublishedPort};
use crate::pods::naming::{self, Role, WorkspaceName};
use crate::pods::plan::{self, GatorMount, ImagePlan, PlanRequest, PodPlan, Redacted};
use crate::pods::{Engine, EngineError};
use crate::store::{WorkspaceRecord, now};

/// Receives progress of long steps (the CLI prints it on stderr).
pub trait Progress: Send + Sync {
    /// A step begins.
    fn step(&self, message: &str);
    /// Output of a step (build log, lifecycle command output).
    fn detail(&self, line: &str);
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct UpRequest {
    /// A local path or a git URL.
    pub source: String,
    pub name: Option<String>,
    pub image: Option<String>,
    /// `.devcontainer/<name>/devcontainer.json` to use when there are several.
    pub devcontainer: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// For a GitHub source: gator grants read only (no push, no draft PR).
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum UpOutcome {
    Planned(Box<PodPlan>),
    Created(Box<WorkspaceStatus>),
}

/// A workspace as `list` and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WorkspaceStatus {
    pub name: String,
    pub pod: String,
    /// The pod's status as podman reports it (Running, Exited, Degraded, …).
    pub status: String,
    pub workspace: Option<String>,
    pub agent: Option<String>,
    pub source: Option<String>,
    pub workspace_folder: Option<String>,
    pub created: String,
    /// Published ports (`status` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
    /// `up` of a GitHub issue or pull request URL: its title and body, as a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_task: Option<String>,
}

impl WorkspaceStatus {
    fn from_pod(p: PodInfo) -> Option<Self> {
        let name = p.labels.get(naming::LABEL_WORKSPACE)?.clone();
        let state = |role| p.containers.iter().find(|c| c.role == Some(role)).map(|c| c.state.to_lowercase());
        Some(WorkspaceStatus {
            workspace: state(Role::Workspace),
            agent: state(Role::Agent),
            source: p.labels.get(naming::LABEL_SOURCE).cloned(),
            workspace_folder: p.labels.get(naming::LABEL_FOLDER).cloned(),
            name,
            pod: p.name,
            status: p.status,
            created: p.created,
            ports: p.ports,
            issue_task: None,
        })
    }
}

/// Where `exec` runs: a container, as a user, in a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExecPlace {
    pub container: String,
    pub user: Option<String>,
    pub workdir: Option<String>,
}

impl ExecPlace {
    pub fn spec(&self, argv: Vec<String>, stdin: bool) -> ExecSpec {
        ExecSpec {
            argv,
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            env: BTreeMap::new(),
            stdin,
            tty: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecTarget {
    Workspace,
    Agent,
}

impl ExecTarget {
    fn role(self) -> Role {
        match self {
            ExecTarget::Workspace => Role::Workspace,
            ExecTarget::Agent => Role::Agent,
        }
    }
}

/// Host directory of the opencode binary: `DEVAIPOD_OPENCODE_DIR`, else where
/// `scripts/setup.sh` installs it under the cache directory.
pub fn opencode_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEVAIPOD_OPENCODE_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("devaipod/opencode/node_modules/opencode-linux-x64/bin")
}

/// What a failing `up` must remove.
#[derive(Default)]
struct Created {
    secrets: Vec<String>,
    volumes: Vec<String>,
    pod: Option<String>,
    image: Option<String>,
    repo: Option<PathBuf>,
    /// The workspace whose gator endpoint was opened.
    endpoint: Option<String>,
}

/// How old a cached workspace listing may be (changes by others show after this).
const LIST_FRESH: Duration = Duration::from_secs(1);
/// How old a listing a page may show while a fresh one is made in the background.
const LIST_STALE: Duration = Duration::from_secs(30);

/// What `up` puts into the pod.
struct Payload {
    workspace_tar: Vec<u8>,
    agent_tar: Vec<u8>,
    password: String,
}

/// A lifecycle command that runs longer than this fails `up`.
const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(1800);

impl<E: Engine> Core<E> {
    pub async fn up(self: &Arc<Self>, req: &UpRequest, progress: &dyn Progress) -> Result<UpOutcome, CoreError> {
        // A GitHub URL (repository, issue or pull request) is cloned from the repository's
        // remote; an issue's or PR's title and body become the task.
        let github = GithubSource::parse(&req.source, &self.config.service_gator.gh.host);
        let clone_from = match &github {
            Some(g) => gator::git_url(&self.config.service_gator.gh.git_url, &g.repo),
            None => req.source.clone(),
        };
        let issue_task = match &github {
            Some(GithubSource { repo, item: Some((kind, n)) }) => {
                progress.step(&format!("reading {repo}#{n} from GitHub"));
                let gh = self.github().await;
                let item = match kind {
                    ItemKind::Issue => gh.issue(repo, *n).await,
                    ItemKind::Pull => gh.pull(repo, *n).await,
                }
                .map_err(|e| CoreError::Invalid(format!("cannot read {repo}#{n}: {e}")))?;
                Some(format!(
                    "{}\n\n{}\n\n(GitHub {repo}#{n}: {})",
                    item["title"].as_str().unwrap_or_default(),
                    item["body"].as_str().unwrap_or_default(),
                    item["html_url"].as_str().unwrap_or_default()
                ))
            }
            _ => None,
        };
        let source = Source::parse(&clone_from)?;
        if req.read_only && github.is_none() {
            progress.step("warning: --read-only only limits GitHub sources; this source gets no GitHub scopes anyway");
        }
        let explicit = req.name.as_deref().map(WorkspaceName::new).transpose()?;
        if !req.dry_run {
            self.engine.ping().await?;
        }

        let tmp = tempfile::Builder::new()
            .prefix("devaipod-checkout-")
            .tempdir()
            .map_err(|e| CoreError::Io(format!("cannot create a temporary directory: {e}")))?;
        progress.step(&format!("cloning {}", source.label()));
        let checkout = source::checkout(&source, tmp.path()).await?;

        let host_env: BTreeMap<String, String> = std::env::vars().collect();
        let name = match explicit {
            Some(n) => n,
            None if req.dry_run => WorkspaceName::derive(&source.basename()),
            None => self.free_name(WorkspaceName::derive(&source.basename())).await?,
        };
        // `${localWorkspaceFolder}` is the user's folder for a local source (so that bind
        // mounts under it point at it), the checkout for a URL.
        let local_folder = match &source {
            Source::Local(p) => p.clone(),
            Source::Remote(_) => checkout.clone(),
        };
        let host = HostContext {
            env: host_env.clone(),
            local_workspace_folder: local_folder.to_string_lossy().into_owned(),
            devcontainer_id: devcontainer_id(self.instance(), &name),
        };
        let dc: Option<Loaded> = match devcontainer::discover(&checkout, req.devcontainer.as_deref())
            .map_err(devcontainer::DevContainerError::from)?
        {
            Some(path) => {
                progress.step(&format!("reading {}", path.strip_prefix(&checkout).unwrap_or(&path).display()));
                Some(devcontainer::load(&path, &host)?)
            }
            None => None,
        };
        let gator_mount = match self.endpoints() {
            Some(_) if !req.dry_run => Some(GatorMount {
                socket_dir: self.paths.runtime.join("gator").join(name.as_str()),
                bridge: std::env::current_exe()
                    .map_err(|e| CoreError::Io(format!("cannot find the devaipod binary for gator's bridge: {e}")))?,
            }),
            _ => None,
        };
        let plan_req = PlanRequest {
            name: name.clone(),
            instance: self.instance().to_owned(),
            source: if github.is_some() { strip_credentials(&req.source) } else { source.label() },
            image_override: req.image.clone(),
            host_env,
            opencode_dir: self.opencode_dir.clone(),
            checkout_dir: local_folder,
            agent_password: Redacted(random_hex(32)),
            gator: gator_mount,
        };
        let plan = plan::plan(&self.config, dc.as_ref(), &plan_req)?;
        self.no_own_directories(&plan)?;
        for w in &plan.warnings {
            progress.step(&format!("warning: {w}"));
        }
        if req.dry_run {
            return Ok(UpOutcome::Planned(Box::new(plan)));
        }

        self.preflight(&plan).await?;
        // The agent gets the committed state only: archive it before initializeCommand,
        // which may write host secrets into the checkout for the human's side.
        let agent_tar = archive(&checkout).await?;
        if let Some(cmd) = &plan.lifecycle.initialize {
            run_on_host("initializeCommand", cmd, &checkout, progress).await?;
        }
        let workspace_tar =
            if plan.lifecycle.initialize.is_some() { archive(&checkout).await? } else { agent_tar.clone() };
        let mut created = Created::default();
        if let (Some(endpoints), Some(_)) = (self.endpoints(), &plan_req.gator) {
            endpoints.open(name.as_str())?;
            created.endpoint = Some(name.to_string());
        }
        let payload = Payload { workspace_tar, agent_tar, password: plan_req.agent_password.0.clone() };
        let result = self.create(&plan, &checkout, payload, &mut created, progress).await;
        self.changed().await;
        if let Err(e) = result {
            progress.step(&format!("up failed; removing what it created for `{name}`"));
            self.rollback(&created).await;
            self.changed().await;
            return Err(e);
        }
        self.store
            .put_workspace(WorkspaceRecord {
                name: name.to_string(),
                source: clone_from.clone(),
                agent_password: plan_req.agent_password.0.clone(),
                created_at: now(),
                agent_head: source::head(&checkout).await,
            })
            .await?;
        if let Some(g) = &github {
            self.store.set_github_repo(name.as_str(), Some(&g.repo.to_string())).await?;
            self.store.add_scope(name.as_str(), &Scope::defaults_for(&g.repo, req.read_only).to_string()).await?;
        }
        self.publish(BusEvent {
            seq: 0,
            workspace: name.to_string(),
            task_id: None,
            kind: "workspace".into(),
            message: "created".into(),
            state: None,
        });
        let mut status = self.status(name.as_str()).await?;
        status.issue_task = issue_task;
        Ok(UpOutcome::Created(Box::new(status)))
    }

    /// The derived name, or `name-2`, `name-3`… when a pod of that name exists (of any
    /// instance): one listing, then a lookup per candidate.
    async fn free_name(&self, base: WorkspaceName) -> Result<WorkspaceName, CoreError> {
        let taken: Vec<String> = self.engine.list_pods(&[]).await?.into_iter().map(|p| p.name).collect();
        let free = |n: &WorkspaceName| !taken.contains(&n.pod());
        if free(&base) {
            return Ok(base);
        }
        (2..100).map(|n| base.with_suffix(n)).find(free).ok_or_else(|| CoreError::NameTaken(base.to_string()))
    }

    /// A repository's devcontainer.json may not bind-mount devaipod's own directories (the
    /// gator sockets of every pod, the token, the database) into its workspace container.
    fn no_own_directories(&self, plan: &PodPlan) -> Result<(), CoreError> {
        let own = [&self.paths.runtime, &self.paths.data];
        for m in plan.workspace.mounts.iter().chain(&plan.agent.mounts) {
            let plan::MountPlan::Bind { source, .. } = m else { continue };
            if plan.agent.mounts.contains(m) && source.starts_with(self.paths.runtime.join("gator")) {
                continue; // the agent's own gator directory, planned by devaipod
            }
            let source = std::fs::canonicalize(source).unwrap_or_else(|_| source.clone());
            let covers = |dir: &Path| {
                let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
                source.starts_with(&dir) || dir.starts_with(&source)
            };
            if let Some(dir) = own.iter().find(|d| covers(d)) {
                return Err(CoreError::Invalid(format!(
                    "devcontainer.json mounts {}, which holds devaipod's own state ({}): remove that mount",
                    source.display(),
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    /// Everything that can be checked before creating anything.
    async fn preflight(&self, plan: &PodPlan) -> Result<(), CoreError> {
        if self.engine.pod_exists(&plan.pod.name).await? {
            return Err(CoreError::NameTaken(plan.name.to_string()));
        }
        let leftover = self.engine.list_volumes(&[(naming::LABEL_WORKSPACE, plan.name.as_str())]).await?;
        if let Some(v) = leftover.iter().find(|v| plan.volumes.iter().any(|p| &p.name == *v)) {
            return Err(CoreError::VolumesLeft { name: plan.name.to_string(), volume: v.clone() });
        }
        if !self.opencode_dir.join("opencode").is_file() {
            return Err(CoreError::OpencodeMissing(self.opencode_dir.join("opencode").display().to_string()));
        }
        let needed = plan.workspace.secret_env.iter().chain(&plan.agent.secret_env);
        for (env, secret) in needed {
            if plan.secrets.iter().any(|s| &s.name == secret) {
                continue; // devaipod creates it
            }
            if !self.engine.secret_exists(secret).await? {
                return Err(CoreError::SecretMissing { secret: secret.clone(), env: env.clone() });
            }
        }
        Ok(())
    }

    async fn ensure_image(
        &self,
        plan: &PodPlan,
        created: &mut Created,
        progress: &dyn Progress,
    ) -> Result<(), CoreError> {
        match &plan.image {
            ImagePlan::Existing { reference } => {
                if self.engine.image_exists(reference).await? {
                    return Ok(());
                }
                progress.step(&format!("pulling {reference}"));
                self.engine.pull_image(reference).await.map_err(|e| match e {
                    EngineError::Pull { image, message } => CoreError::ImageMissing { image, reason: message },
                    other => other.into(),
                })
            }
            ImagePlan::Build(build) => {
                progress.step(&format!("building {} from {}", build.tag, build.dockerfile.display()));
                let labels = naming::labels(self.instance(), &plan.name, None);
                let detail = |line: &str| progress.detail(line);
                self.engine.build_image(build, &labels, &detail).await?;
                created.image = Some(build.tag.clone());
                Ok(())
            }
        }
    }

    async fn create(
        &self,
        plan: &PodPlan,
        checkout: &Path,
        payload: Payload,
        created: &mut Created,
        progress: &dyn Progress,
    ) -> Result<(), CoreError> {
        self.ensure_image(plan, created, progress).await?;
        progress.step(&format!("creating pod {}", plan.pod.name));
        for s in &plan.secrets {
            match self.engine.create_secret(s).await {
                // A stale secret of an earlier pod of this name (which no longer exists:
                // preflight checked) is replaced.
                Err(EngineError::Conflict { .. }) | Err(EngineError::Api { status: 500, .. }) => {
                    self.engine.remove_secret(&s.name).await?;
                    self.engine.create_secret(s).await?;
                }
                other => other?,
            }
            created.secrets.push(s.name.clone());
        }
        // Independent engine calls run concurrently; `created` records each that succeeded.
        let vols = futures_util::future::join_all(
            plan.volumes.iter().map(|v| async move { self.engine.create_volume(v).await.map(|()| v.name.clone()) }),
        )
        .await;
        let mut first_err = None;
        for v in vols {
            match v {
                Ok(name) => created.volumes.push(name),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if let Some(e) = first_err {
            return Err(e.into());
        }
        self.engine.create_pod(&plan.pod).await?;
        created.pod = Some(plan.pod.name.clone());
        tokio::try_join!(
            self.engine.create_container(&plan.pod.name, &plan.workspace),
            self.engine.create_container(&plan.pod.name, &plan.agent),
        )?;

        progress.step("copying the repository into the workspace");
        self.engine.start_pod(&plan.pod.name).await?;
        tokio::try_join!(
            self.engine.upload_archive(&plan.workspace.name, &plan.workspace_folder, payload.workspace_tar),
            self.engine.upload_archive(&plan.agent.name, &plan.workspace_folder, payload.agent_tar),
        )?;
        let repo = BareRepo::init(self.paths.repo(plan.name.as_str())).await?;
        created.repo = Some(repo.path.clone());
        repo.fetch_source(checkout).await?;

        // remoteEnv's `${containerEnv:…}` resolves against the running container's env.
        let l = &plan.lifecycle;
        let container_env = self.engine.container_env(&plan.workspace.name).await?;
        let no_env = BTreeMap::new();
        let vars = Vars {
            local_env: &no_env,
            local_workspace_folder: "",
            container_workspace_folder: Some(&plan.workspace_folder),
            devcontainer_id: "",
            container_env: Some(&container_env),
        };
        let runner = InContainer {
            engine: &self.engine,
            container: &plan.workspace.name,
            user: l.user.clone(),
            workdir: plan.workspace_folder.clone(),
            env: l.env.iter().filter_map(|(k, v)| Some((k.clone(), vars.substitute(v.as_ref()?)))).collect(),
            timeout: LIFECYCLE_TIMEOUT,
        };
        for (phase, cmd) in [
            ("onCreateCommand", &l.on_create),
            ("updateContentCommand", &l.update_content),
            ("postCreateCommand", &l.post_create),
            ("postStartCommand", &l.post_start),
        ] {
            if let Some(cmd) = cmd {
                runner.run(phase, cmd, progress).await?;
            }
        }

        progress.step("waiting for the agent's API");
        self.wait_for_agent(plan.name.as_str(), &plan.pod.name, &payload.password).await
    }

    /// Polls the agent's HTTP API (not a TCP probe) until it serves, with a deadline.
    async fn wait_for_agent(&self, name: &str, pod: &str, password: &str) -> Result<(), CoreError> {
        let deadline = Instant::now() + Duration::from_secs(self.config.agent.ready_timeout_secs);
        let mut delay = Duration::from_millis(100);
        loop {
            let info = self.engine.inspect_pod(pod).await?;
            let agent_running =
                info.containers.iter().any(|c| c.role == Some(Role::Agent) && c.state.eq_ignore_ascii_case("running"));
            if !agent_running {
                return Err(CoreError::NotRunning { name: name.into(), role: "agent", status: info.status });
            }
            if let Some(url) = agent_url(&info)
                && Opencode::new(url, password.to_owned()).ready().await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CoreError::AgentNotReady { name: name.into(), secs: self.config.agent.ready_timeout_secs });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn rollback(&self, created: &Created) {
        if let Some(pod) = &created.pod
            && let Err(e) = self.engine.remove_pod(pod).await
        {
            tracing::warn!("cleanup: cannot remove pod {pod}: {e}");
        }
        for v in &created.volumes {
            if let Err(e) = self.engine.remove_volume(v).await {
                tracing::warn!("cleanup: cannot remove volume {v}: {e}");
            }
        }
        for s in &created.secrets {
            if let Err(e) = self.engine.remove_secret(s).await {
                tracing::warn!("cleanup: cannot remove secret {s}: {e}");
            }
        }
        if let Some(image) = &created.image
            && let Err(e) = self.engine.remove_image(image).await
        {
            tracing::warn!("cleanup: cannot remove image {image}: {e}");
        }
        if let Some(repo) = &created.repo {
            let _ = tokio::fs::remove_dir_all(repo).await;
        }
        if let (Some(ws), Some(endpoints)) = (&created.endpoint, self.endpoints()) {
            endpoints.close(ws);
        }
    }

    /// All workspaces of this instance: one engine round trip.
    ///
    /// The answer is at most [`LIST_FRESH`] old: concurrent callers share one engine call,
    /// and devaipod's own changes (up, stop, start, delete) are visible at once.
    pub async fn list(&self) -> Result<Vec<WorkspaceStatus>, CoreError> {
        if let Some(list) = self.cached_list(LIST_FRESH) {
            return Ok(list);
        }
        let _one = self.list_call.lock().await;
        if let Some(list) = self.cached_list(LIST_FRESH) {
            return Ok(list); // made while this caller waited
        }
        let generation = self.list_generation.load(std::sync::atomic::Ordering::SeqCst);
        let pods = self.engine.list_pods(&[(naming::LABEL_INSTANCE, self.instance())]).await?;
        let mut out: Vec<WorkspaceStatus> = pods.into_iter().filter_map(WorkspaceStatus::from_pod).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if let Ok(mut cache) = self.list_cache.lock()
            && self.list_generation.load(std::sync::atomic::Ordering::SeqCst) == generation
        {
            *cache = Some((Instant::now(), out.clone()));
        }
        Ok(out)
    }

    /// The cached listing, if younger than `max_age`.
    fn cached_list(&self, max_age: Duration) -> Option<Vec<WorkspaceStatus>> {
        let cache = self.list_cache.lock().ok()?;
        cache.as_ref().filter(|(at, _)| at.elapsed() < max_age).map(|(_, list)| list.clone())
    }

    /// For pages: the shared listing, also when it is older than [`LIST_FRESH`] (up to
    /// [`LIST_STALE`]), while a fresh one is made in the background, so that a page waits
    /// for podman only when nothing is cached. Pages re-render on every event, so a change
    /// made elsewhere shows on the next render.
    pub async fn list_for_page(self: &Arc<Self>) -> Result<Vec<WorkspaceStatus>, CoreError> {
        let cached = self.list_cache.lock().ok().and_then(|c| c.clone());
        match cached {
            Some((at, list)) if at.elapsed() < LIST_FRESH => Ok(list),
            Some((at, list)) if at.elapsed() < LIST_STALE => {
                if !self.list_refreshing.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.list().await {
                            tracing::debug!("background listing failed: {e}");
                        }
                        me.list_refreshing.store(false, std::sync::atomic::Ordering::SeqCst);
                    });
                }
                Ok(list)
            }
            _ => self.list().await,
        }
    }

    /// Forgets the cached listing after a change made here.
    async fn changed(&self) {
        self.list_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut cache) = self.list_cache.lock() {
            *cache = None;
        }
    }

    /// The pod of workspace `name` of this instance, or `NotFound`.
    pub(super) async fn find(&self, name: &str) -> Result<PodInfo, CoreError> {
        let n = WorkspaceName::new(name).map_err(|_| CoreError::NotFound(name.to_owned()))?;
        let pods = self
            .engine
            .list_pods(&[(naming::LABEL_INSTANCE, self.instance()), (naming::LABEL_WORKSPACE, n.as_str())])
            .await?;
        pods.into_iter().next().ok_or_else(|| CoreError::NotFound(name.to_owned()))
    }

    pub async fn status(&self, name: &str) -> Result<WorkspaceStatus, CoreError> {
        let pod = self.find(name).await?;
        let pod = self.engine.inspect_pod(&pod.name).await?;
        WorkspaceStatus::from_pod(pod).ok_or_else(|| CoreError::NotFound(name.to_owned()))
    }

    /// The last `lines` lines of a container's output (stdout and stderr), for a page.
    pub async fn logs_tail(&self, name: &str, target: ExecTarget, lines: u32) -> Result<String, CoreError> {
        use futures_util::StreamExt;
        let container = WorkspaceName::new(name)?.container(target.role());
        let mut stream = self.engine.logs(&container, false, Some(lines));
        let mut out = Vec::new();
        let collect = async {
            while let Some(chunk) = stream.next().await {
                match chunk? {
                    Output::Stdout(b) | Output::Stderr(b) => out.extend_from_slice(&b),
                }
            }
            Ok::<_, EngineError>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), collect).await {
            Ok(r) => r?,
            Err(_) => out.extend_from_slice(b"\n(log reading timed out)"),
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Where the workspace's agent serves (its UI and API) and its password: for the
    /// daemon's agent-UI proxy, which injects the password so the browser never sees it.
    pub async fn agent_ui_target(&self, name: &str) -> Result<(String, String), CoreError> {
        let agent = self.agent(name).await?;
        Ok((agent.base_url().to_owned(), agent.password().to_owned()))
    }

    /// A client for the workspace's agent, once its API serves.
    pub(super) async fn agent(&self, name: &str) -> Result<Opencode, CoreError> {
        let record = self.store.workspace(name).await?.ok_or_else(|| CoreError::NotFound(name.to_owned()))?;
        let pod = match self.find(name).await {
            Err(CoreError::NotFound(_)) => return Err(CoreError::PodGone(name.to_owned())),
            other => other?,
        };
        let info = self.engine.inspect_pod(&pod.name).await?;
        let running =
            info.containers.iter().any(|c| c.role == Some(Role::Agent) && c.state.eq_ignore_ascii_case("running"));
        let url = agent_url(&info).filter(|_| running).ok_or_else(|| CoreError::NotRunning {
            name: name.to_owned(),
            role: "agent",
            status: info.status.clone(),
        })?;
        Ok(Opencode::new(url, record.agent_password))
    }

    pub async fn stop(&self, name: &str) -> Result<(), CoreError> {
        let pod = self.find(name).await?;
        let r = self.engine.stop_pod(&pod.name, 5).await;
        self.changed().await;
        Ok(r?)
    }

    /// Starts a stopped workspace and waits for its agent.
    pub async fn start(&self, name: &str) -> Result<(), CoreError> {
        let pod = self.find(name).await?;
        let r = self.engine.start_pod(&pod.name).await;
        self.changed().await;
        r?;
        let record = self.store.workspace(name).await?.ok_or_else(|| CoreError::NotFound(name.to_owned()))?;
        self.wait_for_agent(name, &pod.name, &record.agent_password).await
    }

    /// Removes the pod, its containers, its secrets, its built image and (unless
    /// `keep_volumes`) its volumes and repository. Only objects labelled with this instance
    /// and this workspace are touched. Running tasks are cancelled first.
    pub async fn delete(&self, name: &str, keep_volumes: bool) -> Result<(), CoreError> {
        let pod = self.find(name).await;
        let volumes = if keep_volumes {
            Vec::new()
        } else {
            self.engine
                .list_volumes(&[(naming::LABEL_INSTANCE, self.instance()), (naming::LABEL_WORKSPACE, name)])
                .await?
        };
        let record = self.store.workspace(name).await?;
        match pod {
            Ok(p) => {
                for t in self.store.tasks(Some(name)).await? {
                    if let Some(token) = self.running.get(&t.id) {
                        token.cancel();
                    }
                }
                let removed = self.engine.remove_pod(&p.name).await;
                self.changed().await; // also when removal failed half-way
                removed?
            }
            Err(CoreError::NotFound(_)) if !volumes.is_empty() || record.is_some() => {}
            Err(e) => return Err(e),
        }
        self.changed().await;
        for v in volumes {
            self.engine.remove_volume(&v).await?;
        }
        if let Ok(n) = WorkspaceName::new(name) {
            for secret in [format!("{}-agent-password", n.pod()), format!("{}-llm-key", n.pod())] {
                match self.engine.remove_secret(&secret).await {
                    Ok(()) | Err(EngineError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.engine.remove_image(&plan::build_tag(self.instance(), &n)).await {
                Ok(()) | Err(EngineError::NotFound { .. }) => {}
                Err(e) => tracing::warn!("cannot remove the built image of {name}: {e}"),
            }
        }
        if let Some(endpoints) = self.endpoints() {
            endpoints.close(name);
        }
        if !keep_volumes {
            // The daemon's repository stays: the workspace's proposals remain readable.
            self.store.delete_workspace(name).await?;
        }
        self.publish(BusEvent {
            seq: 0,
            workspace: name.to_owned(),
            task_id: None,
            kind: "workspace".into(),
            message: "deleted".into(),
            state: None,
        });
        Ok(())
    }

    /// Where commands run in a workspace's container: the running container, its user and
    /// the repository's folder.
    pub async fn exec_target(&self, name: &str, target: ExecTarget) -> Result<ExecPlace, CoreError> {
        let pod = self.find(name).await?;
        let role = target.role();
        let container = pod.containers.iter().find(|c| c.role == Some(role));
        let Some(container) = container.filter(|c| c.state.eq_ignore_ascii_case("running")) else {
            return Err(CoreError::NotRunning {
                name: name.to_owned(),
                role: role.as_str(),
                status: pod.status.clone(),
            });
        };
        let user = match role {
            Role::Agent => Some(plan::AGENT_USER.to_owned()),
            Role::Workspace => pod.labels.get(naming::LABEL_USER).cloned(),
        };
        Ok(ExecPlace {
            container: container.name.clone(),
            user,
            workdir: pod.labels.get(naming::LABEL_FOLDER).cloned(),
        })
    }

    /// Starts a command in a workspace's container; the caller pumps its streams and then
    /// asks the engine for the exit code.
    pub(super) async fn exec(
        &self,
        name: &str,
        target: ExecTarget,
        argv: Vec<String>,
    ) -> Result<ExecSession, CoreError> {
        let place = self.exec_target(name, target).await?;
        Ok(self.engine.exec(&place.container, &place.spec(argv, false)).await?)
    }

    /// Runs an argv in a workspace's container; returns (exit code, stdout, stderr).
    pub(super) async fn exec_capture(
        &self,
        name: &str,
        target: ExecTarget,
        argv: &[&str],
    ) -> Result<(i64, Vec<u8>, String), CoreError> {
        use futures_util::StreamExt;
        let mut s = self.exec(name, target, argv.iter().map(|s| s.to_string()).collect()).await?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = s.output.next().await {
            match chunk? {
                Output::Stdout(b) => out.extend_from_slice(&b),
                Output::Stderr(b) => err.extend_from_slice(&b),
            }
        }
        let code = self.engine.exec_exit_code(&s.id).await?;
        Ok((code, out, String::from_utf8_lossy(&err).into_owned()))
    }
}

/// `http://127.0.0.1:<port>` of the agent's published API port.
fn agent_url(info: &PodInfo) -> Option<String> {
    info.ports
        .iter()
        .find(|p| p.container_port == agent_config::PORT)
        .map(|p| format!("http://127.0.0.1:{}", p.host_port))
}

pub(super) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable id for `${devcontainerId}`: hex of sha256(instance, name), 32 characters.
fn devcontainer_id(instance: &str, name: &WorkspaceName) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{instance}\0{name}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A tar of the checkout (with its `.git`), paths relative to the repository root.
async fn archive(dir: &Path) -> Result<Vec<u8>, CoreError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        tar.append_dir_all(".", &dir).map_err(|e| CoreError::Io(format!("cannot archive {}: {e}", dir.display())))?;
        tar.into_inner().map_err(|e| CoreError::Io(e.to_string()))
    })
    .await
    .map_err(|e| CoreError::Io(e.to_string()))?
}
