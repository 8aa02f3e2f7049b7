//! `up`: source → checkout → devcontainer.json → plan → pod → agent ready. A failed `up`
//! removes what it created (`rollback`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::core::lifecycle::{InContainer, run_on_host};
use crate::core::source::{self, Source, SourceKind, strip_credentials};
use crate::core::{BusEvent, Core, CoreError};
use crate::devcontainer::features::build::{self as feature_build, Users};
use crate::devcontainer::features::fetch::{self, FetchContext};
use crate::devcontainer::{self, HostContext, Loaded, Vars};
use crate::git::BareRepo;
use crate::github::{self, GithubSource, ItemKind, Scope};
use crate::pods::naming::{self, WorkspaceName};
use crate::pods::plan::{self, ImagePlan, PlanRequest, PodPlan, Redacted};
use crate::pods::seccomp;
use crate::pods::{Engine, EngineError};
use crate::store::{WorkspaceRecord, now};

/// What a failing `up` must remove.
#[derive(Default)]
struct Made {
    secrets: Vec<String>,
    volumes: Vec<String>,
    pod: Option<String>,
    image: Option<String>,
    /// Images built for compose services.
    images: Vec<String>,
    repo: Option<PathBuf>,
    /// The workspace whose gator endpoint was opened.
    endpoint: Option<String>,
}

/// What `up` puts into the pod.
struct Payload {
    workspace_tar: Vec<u8>,
    agent_tar: Vec<u8>,
    password: String,
}

/// A lifecycle command that runs longer than this fails `up`.
const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a new readiness probe starts while the agent has not answered.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// The most one readiness probe may take, whatever the backend does (opencode's own probe
/// gives up after `agent::opencode::READY_TIMEOUT`, the same).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes in flight at once (hung ones are dropped at [`PROBE_TIMEOUT`]).
const PROBES_IN_FLIGHT: usize = 8;
/// How often the agent's container is checked while waiting for its API.
const CHECK_RUNNING_EVERY: Duration = Duration::from_millis(500);

impl<E: Engine> Core<E> {
    pub async fn up(self: &Arc<Self>, req: &UpRequest, progress: &dyn Progress) -> Result<UpOutcome, CoreError> {
        // A blank optional field is an absent one, whichever surface sent it.
        let req = &req.normalized();
        if req.source.trim().is_empty() {
            return Err(CoreError::Invalid(
                "`source` is required: a local git repository, a git URL, or a GitHub issue/PR URL".into(),
            ));
        }
        // Checked before anything is made: a bad host pattern names itself and the grammar.
        let allow_hosts: Vec<String> =
            crate::core::parse_host_patterns(&req.allow_hosts)?.iter().map(ToString::to_string).collect();
        // The agent the workspace chose (`--agent`), checked before anything is made.
        let config = self.config.with_agent(req.agent.as_deref()).map_err(CoreError::Invalid)?;
        // A GitHub URL (repository, issue or pull request) is cloned from the repository's
        // remote; an issue's or PR's title and body become the first task unless one is given.
        let kind = SourceKind::classify(&req.source, &self.config.service_gator.gh.host);
        self.check_workers(req.workers)?;
        let given_task = req.task.as_deref().filter(|t| !t.trim().is_empty());
        if req.require_task && given_task.is_none() && !kind.brings_task() {
            return Err(CoreError::Invalid(
                "give the task (-c \"…\"): only a GitHub issue or pull request URL brings its own".into(),
            ));
        }
        let github = match &kind {
            SourceKind::Github(g) => Some(g.clone()),
            _ => None,
        };
        let clone_from = match &github {
            Some(g) => github::git_url(&self.config.service_gator.gh.git_url, &g.repo),
            None => req.source.clone(),
        };
        let issue_task = match &github {
            // Read on `--dry-run` too: the dry run checks that the issue can be read.
            Some(GithubSource { repo, item: Some((kind, n)) }) if given_task.is_none() => {
                progress.step(&format!("reading {repo}#{n} from GitHub"));
                let gh = self.github().await;
                let item = match kind {
                    ItemKind::Issue => gh.issue(repo, *n).await,
                    ItemKind::Pull => gh.pull(repo, *n).await,
                }
                .map_err(|e| CoreError::Github(format!("cannot read {repo}#{n}: {e}")))?;
                Some(format!(
                    "{}\n\n{}\n\n(GitHub {repo}#{n}: {})",
                    item["title"].as_str().unwrap_or_default(),
                    item["body"].as_str().unwrap_or_default(),
                    item["html_url"].as_str().unwrap_or_default()
                ))
            }
            _ => None,
        };
        let first_task = given_task.map(str::to_owned).or(issue_task);
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

        let host_env: BTreeMap<String, String> = match &req.env {
            Some(env) => env.0.clone(),
            None => std::env::vars().collect(),
        };
        let name = match explicit {
            Some(n) => n,
            None if req.dry_run => WorkspaceName::derive(&source.basename()),
            None => self.free_name(WorkspaceName::derive(&source.basename())).await?,
        };
        // No other `up` makes this name meanwhile (a pooled one is not a podman pod of it).
        let _making = if req.dry_run { None } else { Some(self.reserve_name(name.as_str())?) };
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
                let text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
                let names = local_env_names(&text);
                if !names.is_empty() {
                    progress.step(&format!(
                        "devcontainer.json reads these variables of your environment (${{localEnv:…}}): {}",
                        names.join(", ")
                    ));
                }
                let mut loaded = devcontainer::load(&path, &host)?;
                // The compose files (not with --image, which replaces the whole project).
                if loaded.config.docker_compose_file.is_some() && req.image.is_none() {
                    progress.step("reading the compose files");
                    let (host, checkout) = (host.clone(), checkout.clone());
                    loaded = tokio::task::spawn_blocking(move || {
                        devcontainer::load_compose(&mut loaded, &host, &checkout).map(|()| loaded)
                    })
                    .await
                    .map_err(|e| CoreError::Io(e.to_string()))??;
                }
                if !loaded.config.features.is_empty() {
                    progress.step(&format!("fetching {} feature(s)", loaded.config.features.len()));
                    let ctx = FetchContext {
                        cache_dir: self.paths.data.join("features"),
                        auth_files: fetch::default_auth_files(&host_env),
                    };
                    let resolved = fetch::resolve(&loaded.config, loaded.dir(), &ctx, &host).await.map_err(|e| {
                        // A feature added by another's dependsOn has no line of its own.
                        let line = devcontainer::line_of_key(&text, &["features", &e.id]).unwrap_or(1);
                        CoreError::Invalid(format!("{}:{line}: field `features`: {e}", path.display()))
                    })?;
                    for w in &resolved.warnings {
                        progress.step(&format!("warning: {w}"));
                    }
                    loaded.features = resolved.features;
                }
                Some(loaded)
            }
            None => None,
        };
        let sandbox = self.sandbox_mounts(name.as_str())?;
        let plan_req = PlanRequest {
            name: name.clone(),
            instance: self.instance().to_owned(),
            source: if github.is_some() { strip_credentials(&req.source) } else { source.label() },
            image_override: req.image.clone(),
            host_env,
            opencode_dir: self.opencode_dir.clone(),
            checkout_dir: local_folder,
            agent_password: Redacted(random_hex(32)),
            sandbox,
        };
        let plan = plan::plan(&config, dc.as_ref(), &plan_req)?;
        self.no_own_directories(&plan)?;
        for w in &plan.warnings {
            progress.step(&format!("warning: {w}"));
        }
        if req.dry_run {
            return Ok(UpOutcome::Planned(Box::new(plan)));
        }

        self.preflight(&plan, progress).await?;
        // The agent gets the committed state only: archive it before initializeCommand,
        // which may write host secrets into the checkout for the human's side.
        let agent_tar = archive(&checkout, None).await?;
        // A pool member's agent clone volume holds the repository in a folder of its own.
        let member_tar = match plan::pool::folder_name(&plan.workspace_folder) {
            Some(folder) if self.config.pool.size > 0 => Some(archive(&checkout, Some(folder)).await?),
            _ => None,
        };
        if let Some(cmd) = &plan.lifecycle.initialize {
            run_on_host("initializeCommand", cmd, &checkout, progress).await?;
        }
        let workspace_tar =
            if plan.lifecycle.initialize.is_some() { archive(&checkout, None).await? } else { agent_tar.clone() };
        self.agent_seccomp().await?;
        // A warm pool member when one fits (see `pool.rs`); else the workspace is made cold.
        // From the claim on, a failure before the workspace is bound destroys the member.
        let mut pool_note = None;
        let mut taken = match self.take_member(&config, &plan, dc.as_ref(), &plan_req).await {
            Ok(t) => t,
            Err(why) => {
                progress.step(&format!("not from the pool: {why}"));
                pool_note = Some(why);
                None
            }
        };
        let mut image = None;
        // A deleted workspace's repository stays (its proposals remain readable): only one
        // this `up` made is removed when the member fails.
        let repo_existed = self.paths.repo(name.as_str()).exists();
        if let (Some(t), Some(member_tar)) = (&taken, member_tar) {
            progress.step(&format!("taking the warm pod {} from the pool", t.plan.pod.name));
            let payload = Payload {
                workspace_tar: workspace_tar.clone(),
                agent_tar: member_tar,
                password: t.member.password.clone(),
            };
            match self.create_in_member(t, &checkout, payload, progress).await {
                Ok(i) => image = Some(i),
                Err(e) => {
                    progress.step(&format!(
                        "the warm pod {} could not take the repository ({e}); making the workspace cold",
                        t.plan.pod.name
                    ));
                    self.destroy_member(&t.member.key, Some(name.as_str())).await;
                    if !repo_existed {
                        let _ = tokio::fs::remove_dir_all(self.paths.repo(name.as_str())).await;
                    }
                    self.wake_pool();
                    pool_note = Some(format!("the warm pod failed: {e}"));
                }
            }
            self.changed().await;
        }
        if image.is_none()
            && let Some(t) = taken.take()
            && pool_note.is_none()
        {
            // Claimed, but no archive for its folder (not reached: `unfit` checks the folder).
            self.destroy_member(&t.member.key, None).await;
        }
        let image = match image {
            Some(image) => image,
            None => {
                let mut created = Made { endpoint: Some(name.to_string()), ..Made::default() };
                self.open_agent_dir(name.as_str())?;
                if let Some(endpoints) = self.endpoints() {
                    endpoints.open(name.as_str())?;
                }
                let payload = Payload { workspace_tar, agent_tar, password: plan_req.agent_password.0.clone() };
                let result = self.create(&plan, &checkout, payload, &mut created, progress).await;
                self.changed().await;
                match result {
                    Ok(image) => image,
                    Err(e) => {
                        progress.step(&format!("up failed; removing what it created for `{name}`"));
                        self.rollback(&created).await;
                        self.changed().await;
                        return Err(e);
                    }
                }
            }
        };
        // The plan the workspace was made from: a member's key names its objects.
        let made = taken.as_ref().map_or(&plan, |t| &t.plan);
        // Its workers are made from the agent container's plan (the image it runs: with
        // devcontainer features, the derived one).
        let agent = plan::ContainerPlan { image, ..made.agent.clone() };
        if let Err(e) = self.keep_agent_plan(name.as_str(), &agent).await {
            progress.step(&format!("warning: {e}"));
        }
        let kube = crate::pods::kube::KubePlan::of(made, &agent.image);
        if let Err(e) = self.keep_kube_plan(name.as_str(), &kube).await {
            progress.step(&format!("warning: {e}"));
        }
        let record = WorkspaceRecord {
            name: name.to_string(),
            source: clone_from.clone(),
            agent_password: taken.as_ref().map_or(&plan_req.agent_password.0, |t| &t.member.password).clone(),
            created_at: now(),
            agent_head: source::head(&checkout).await,
        };
        match &taken {
            Some(t) => {
                if let Err(e) = self.bind_taken(t, record).await {
                    self.destroy_member(&t.member.key, Some(name.as_str())).await;
                    return Err(e);
                }
            }
            None => self.store.put_workspace(record).await?,
        }
        if !allow_hosts.is_empty() {
            self.store.add_egress_hosts(name.as_str(), &allow_hosts).await?;
        }
        // The key from the caller's environment: the egress proxy needs no podman read for it.
        if let Some(key) = made.secrets.iter().find(|s| s.name == plan::llm_key_secret(&made.name)) {
            self.remember_llm_key(name.as_str(), &key.value.0);
        }
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
        let workspace = self.status(name.as_str()).await?;
        // The workspace is made whatever happens to its first task: a task that cannot start
        // is said in the result (and in progress), not turned into a failed `up`.
        let (task, first_task_error) = match first_task {
            Some(prompt) => {
                progress.step("starting the first task");
                match self.run_task_with(name.as_str(), &prompt, req.workers).await {
                    Ok(t) => (Some(t), None),
                    Err(e) => {
                        let reason = format!("the first task did not start: {e}");
                        progress.step(&format!("warning: {reason}"));
                        (None, Some(reason))
                    }
                }
            }
            None => (None, None),
        };
        Ok(UpOutcome::Created(Box::new(Created {
            workspace,
            task,
            first_task_error,
            from_pool: taken.is_some(),
            pool: pool_note,
        })))
    }

    /// The derived name, or `name-2`, `name-3`… when a pod of that name exists (of any
    /// instance): one listing, then a lookup per candidate.
    async fn free_name(&self, base: WorkspaceName) -> Result<WorkspaceName, CoreError> {
        let taken: Vec<String> = self.engine.list_pods(&[]).await?.into_iter().map(|p| p.name).collect();
        // A deleted workspace's pod still being removed does not take its name: `up` waits.
        // A workspace in a former pool member's pod has its name too.
        let free = |n: &WorkspaceName| {
            (!taken.contains(&n.pod()) || self.being_removed(n.as_str()))
                && !self.pool_bound(n.as_str())
                && !self.name_reserved(n.as_str())
        };
        if free(&base) {
            return Ok(base);
        }
        (2..100).map(|n| base.with_suffix(n)).find(free).ok_or_else(|| CoreError::NameTaken(base.to_string()))
    }

    /// A repository's devcontainer.json may not bind-mount devaipod's own directories (the
    /// gator sockets of every pod, the token, the database) into its workspace container.
    fn no_own_directories(&self, plan: &PodPlan) -> Result<(), CoreError> {
        let own = [&self.paths.runtime, &self.paths.data];
        let mounts =
            plan.workspace.mounts.iter().map(|m| (false, m)).chain(plan.agent.mounts.iter().map(|m| (true, m)));
        for (agents, m) in mounts {
            let plan::MountPlan::Bind { source, .. } = m else { continue };
            let bridge =
                matches!(m, plan::MountPlan::Bind { target, readonly: true, .. } if target == plan::GATOR_BRIDGE);
            // The daemon in a container keeps opencode in its data directory (`daemon/exe.rs`).
            let opencode = matches!(m, plan::MountPlan::Bind { source, target, readonly: true }
                if target == plan::INJECT_DIR && *source == self.opencode_dir);
            let own_dir = *source == self.paths.pod_sockets(plan.name.as_str())
                || *source == self.paths.agent_dir(plan.name.as_str())
                || opencode;
            // Only the agent's own list: the same mount asked for the workspace container is refused.
            if agents && (own_dir || bridge) {
                continue; // the agent's own socket directories and bridge, planned by devaipod
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
    async fn preflight(&self, plan: &PodPlan, progress: &dyn Progress) -> Result<(), CoreError> {
        let name = plan.name.as_str();
        if self.being_removed(name) {
            progress.step(&format!("waiting for the deleted workspace `{name}` to be removed"));
            if !self.removal_finished(name).await {
                return Err(CoreError::Conflict(format!(
                    "the deleted workspace `{name}` is still being removed after {} s; try again later, or choose another --name",
                    removal::REMOVAL_WAIT.as_secs()
                )));
            }
        }
        if self.pool_bound(name) || self.engine.pod_exists(&plan.pod.name).await? {
            return Err(CoreError::NameTaken(plan.name.to_string()));
        }
        let leftover = self.engine.list_volumes(&[(naming::LABEL_WORKSPACE, plan.name.as_str())]).await?;
        if let Some(v) = leftover.iter().find(|v| plan.volumes.iter().any(|p| &p.name == *v)) {
            return Err(CoreError::VolumesLeft { name: plan.name.to_string(), volume: v.clone() });
        }
        let cdi_dirs: Vec<&Path> = crate::pods::cdi::SPEC_DIRS.iter().map(Path::new).collect();
        crate::pods::cdi::check(&plan.workspace.devices, &cdi_dirs).await.map_err(CoreError::Invalid)?;
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

    /// The image both containers run: the plan's, with its features installed on top (one
    /// derived image, reused while nothing that goes into it changes).
    async fn ensure_image(
        &self,
        plan: &PodPlan,
        created: &mut Made,
        progress: &dyn Progress,
    ) -> Result<String, CoreError> {
        self.ensure_base_image(plan, created, progress).await?;
        let base = plan.image.reference();
        if plan.features.is_empty() {
            return Ok(base.to_owned());
        }
        let facts = self.engine.image_facts(base).await?;
        let users = Users::of(plan.workspace.user.as_deref(), plan.lifecycle.user.as_deref(), facts.user.as_deref());
        let ordered: Vec<_> = plan.features.iter().collect();
        let derived = feature_build::derive(self.instance(), base, &facts.id, facts.user.as_deref(), &users, &ordered)
            .map_err(CoreError::Invalid)?;
        if self.engine.image_exists(&derived.tag).await? {
            progress.step(&format!("features already installed in {}", derived.tag));
            return Ok(derived.tag);
        }
        let ids: Vec<&str> = plan.features.iter().map(|f| f.id.as_str()).collect();
        progress.step(&format!("installing features {} into {}", ids.join(", "), derived.tag));
        let ctx = tempfile::Builder::new()
            .prefix("features-")
            .tempdir_in(&self.paths.data)
            .map_err(|e| CoreError::Io(format!("cannot create the features' build context: {e}")))?;
        let (d, dir) = (derived.clone(), ctx.path().to_owned());
        tokio::task::spawn_blocking(move || feature_build::write_context(&d, &dir))
            .await
            .map_err(|e| CoreError::Io(e.to_string()))?
            .map_err(CoreError::Io)?;
        let build = plan::BuildPlan {
            context_dir: ctx.path().to_owned(),
            dockerfile: ctx.path().join("Containerfile"),
            args: BTreeMap::new(),
            target: None,
            tag: derived.tag.clone(),
        };
        let labels = naming::labels(self.instance(), &plan.name, None);
        let detail = |line: &str| progress.detail(line);
        self.engine.build_image(&build, &labels, &detail).await?;
        Ok(derived.tag)
    }

    async fn ensure_base_image(
        &self,
        plan: &PodPlan,
        created: &mut Made,
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
        created: &mut Made,
        progress: &dyn Progress,
    ) -> Result<String, CoreError> {
        let image = self.ensure_image(plan, created, progress).await?;
        self.ensure_service_images(plan, &mut created.images, progress).await?;
        let (mut workspace, mut agent) = (plan.workspace.clone(), plan.agent.clone());
        workspace.image = image.clone();
        agent.image = image.clone();
        progress.step(&format!("creating pod {}", plan.pod.name));
        for s in &plan.secrets {
            match self.engine.create_secret(s).await {
                // A stale secret of an earlier pod of this name (which no longer exists:
                // preflight checked) is replaced.
                Err(e @ EngineError::AlreadyExists { .. }) => {
                    match self.engine.remove_secret(&s.name).await {
                        Ok(()) => self.engine.create_secret(s).await?,
                        // There was none: the failure was another, and is the one to report.
                        Err(EngineError::NotFound { .. }) => return Err(e.into()),
                        Err(other) => return Err(other.into()),
                    }
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
        let services = plan.compose.iter().flat_map(|c| &c.services);
        tokio::try_join!(
            self.engine.create_container(&plan.pod.name, &workspace),
            self.engine.create_container(&plan.pod.name, &agent),
            futures_util::future::try_join_all(
                services.map(|s| self.engine.create_container(&plan.pod.name, &s.container))
            ),
        )?;

        match &plan.compose {
            // Services first, in depends_on order, each after what it waits for.
            Some(compose) => self.start_in_order(plan, compose, progress).await?,
            None => self.engine.start_pod(&plan.pod.name).await?,
        }
        progress.step("copying the repository into the workspace");
        tokio::try_join!(
            self.engine.upload_archive(&plan.workspace.name, &plan.workspace_folder, payload.workspace_tar),
            self.engine.upload_archive(&plan.agent.name, &plan.workspace_folder, payload.agent_tar),
        )?;
        let repo = BareRepo::init(self.paths.repo(plan.name.as_str())).await?;
        created.repo = Some(repo.path.clone());
        repo.fetch_source(checkout).await?;
        self.run_lifecycle(plan, progress).await?;
        progress.step("waiting for the agent's API");
        self.wait_for_agent(plan.name.as_str(), Seat::Owner, &plan.pod.name, &payload.password).await?;
        Ok(image)
    }

    /// Puts the workspace into the pool member it claimed (see `pool.rs`): the repository
    /// in the agent's clone (in its folder of the member's clone volume), then at once the
    /// agent answering for that folder (opencode opens a project on its first request for
    /// it) and the workspace side: its container made in the member's pod, the repository
    /// copied in and fetched by the daemon, the lifecycle commands. Returns the image. The
    /// caller destroys the member on failure.
    async fn create_in_member(
        &self,
        taken: &crate::core::pool::Taken,
        checkout: &Path,
        payload: Payload,
        progress: &dyn Progress,
    ) -> Result<String, CoreError> {
        let plan = &taken.plan;
        self.fill_member(taken).await?;
        // The agent's clone first: its agent (running already) then opens the repository's
        // folder while the workspace side is made.
        progress.step("copying the repository into the agent's clone");
        self.engine.upload_archive(&plan.agent.name, plan::pool::POOL_FOLDER, payload.agent_tar).await?;
        progress.step("pointing the agent at the repository");
        let agent = self.wait_for_agent(plan.name.as_str(), Seat::Owner, &plan.pod.name, &payload.password);
        let workspace = async {
            let mut workspace = plan.workspace.clone();
            workspace.image = plan.image.reference().to_owned();
            let container = async {
                progress.step(&format!("making the workspace container in {}", plan.pod.name));
                self.engine.create_container(&plan.pod.name, &workspace).await?;
                self.engine.start_container(&workspace.name).await?;
                self.engine.upload_archive(&workspace.name, &plan.workspace_folder, payload.workspace_tar).await?;
                Ok::<_, CoreError>(())
            };
            let repo = async {
                let repo = BareRepo::init(self.paths.repo(plan.name.as_str())).await?;
                repo.fetch_source(checkout).await?;
                Ok::<_, CoreError>(())
            };
            tokio::try_join!(container, repo)?;
            self.run_lifecycle(plan, progress).await
        };
        tokio::try_join!(agent, workspace)?;
        Ok(plan.image.reference().to_owned())
    }

    /// devcontainer.json's lifecycle commands after the repository is in (onCreate,
    /// updateContent, postCreate, postStart), in the workspace container.
    async fn run_lifecycle(&self, plan: &PodPlan, progress: &dyn Progress) -> Result<(), CoreError> {
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
            for cmd in cmd {
                runner.run(phase, cmd, progress).await?;
            }
        }
        Ok(())
    }

    /// Waits until the agent's HTTP API serves (not a TCP probe: opencode accepts
    /// connections before it serves), within `[agent] ready-timeout-secs`.
    ///
    /// Probes are hedged: a new one starts every [`PROBE_EVERY`] while earlier ones are
    /// still in flight, each bounded by [`PROBE_TIMEOUT`], and the first answer wins. A
    /// request opencode accepted too early is never answered; it costs one interval, not
    /// a timeout. The agent's container is checked every [`CHECK_RUNNING_EVERY`]: an agent
    /// that exited fails at once.
    pub(in crate::core) async fn wait_for_agent(
        &self,
        name: &str,
        seat: Seat,
        pod: &str,
        password: &str,
    ) -> Result<(), CoreError> {
        use futures_util::StreamExt;
        let secs = self.config.agent.ready_timeout_secs;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut probes = futures_util::stream::FuturesUnordered::new();
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The agent's API socket appears when its relay starts: each probe opens it anew.
        let key = seat.key(name);
        let url = self.agent_url(name, seat);
        let workspace_name = self.ws_name(name).map_err(|_| CoreError::NotFound(name.to_owned()))?;
        let mut seen_running = false;
        let mut checked: Option<tokio::time::Instant> = None;
        // An agent that runs already (a warm pool member's) answers the first probe: it
        // goes out at once, beside the first look at the container.
        let probe = |agent: Arc<dyn crate::agent::DynAgent>| async move {
            tokio::time::timeout(PROBE_TIMEOUT, agent.ready()).await
        };
        probes.push(probe(self.agents.connect(&url, password)));
        let mut tried = false;
        loop {
            tokio::select! {
                Some(answered) = probes.next() => {
                    if matches!(answered, Ok(true)) {
                        self.agent_at.insert(key, (url, password.to_owned()));
                        return Ok(());
                    }
                }
                _ = tick.tick() => {
                    if checked.is_none_or(|at| at.elapsed() >= CHECK_RUNNING_EVERY) {
                        let info = self.engine.inspect_pod(pod).await?;
                        let running = info
                            .containers
                            .iter()
                            .any(|c| seat.is(c, &workspace_name) && c.state.eq_ignore_ascii_case("running"));
                        if !running {
                            return Err(CoreError::NotRunning { name: name.into(), role: seat.role(), status: info.status });
                        }
                        checked = Some(tokio::time::Instant::now());
                        seen_running = true;
                    }
                    // At least one probe, however short the deadline.
                    if tokio::time::Instant::now() >= deadline && (tried || !seen_running) {
                        return Err(CoreError::AgentNotReady { name: name.into(), secs });
                    }
                    if seen_running && probes.len() < PROBES_IN_FLIGHT {
                        probes.push(probe(self.agents.connect(&url, password)));
                        tried = true;
                    }
                }
            }
        }
    }

    async fn rollback(&self, created: &Made) {
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
        for image in created.image.iter().chain(&created.images) {
            if let Err(e) = self.engine.remove_image(image).await {
                tracing::warn!("cleanup: cannot remove image {image}: {e}");
            }
        }
        if let Some(repo) = &created.repo {
            let _ = tokio::fs::remove_dir_all(repo).await;
        }
        if let Some(ws) = &created.endpoint {
            if let Some(endpoints) = self.endpoints() {
                endpoints.close(ws);
            }
            self.close_agent_dir(ws);
        }
    }

    /// The directory the agent's relay serves its API socket in. The agent's user (a
    /// subordinate uid under rootless podman) must create the socket: the directory is open
    /// to all, and reachable only through the runtime directory (0700) and the agent's mount.
    fn open_agent_dir(&self, ws: &str) -> Result<(), CoreError> {
        let _ = std::fs::remove_dir_all(self.paths.agent_dir(ws)); // what an earlier pod of this name left
        self.ensure_agent_dir(ws)
    }

    /// The same, kept as it is when it exists: `start` after a reboot (the runtime
    /// directory is gone, and the agent container's bind mount needs it).
    pub(in crate::core) fn ensure_agent_dir(&self, ws: &str) -> Result<(), CoreError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |e: std::io::Error| CoreError::Io(format!("the agent's socket directory of {ws}: {e}"));
        let dir = self.paths.agent_dir(ws);
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)
    }

    /// Removes the API socket directories of the workspace's agent and its workers.
    pub(in crate::core) fn close_agent_dir(&self, ws: &str) {
        let _ = std::fs::remove_dir_all(self.paths.agent_dir(ws));
        let workers = format!("{ws}{}", Seat::WORKER_SEPARATOR);
        if let Ok(entries) = std::fs::read_dir(self.paths.runtime.join("agent")) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&workers) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Writes the agent containers' seccomp profile (podman's default without user
    /// namespaces) when it is missing or podman's default changed.
    pub(in crate::core) async fn agent_seccomp(&self) -> Result<(), CoreError> {
        let target = self.paths.agent_seccomp();
        let job = tokio::task::spawn_blocking(move || {
            let found = seccomp::DEFAULT_PROFILES.iter().find_map(|p| std::fs::read_to_string(p).ok());
            let Some(default) = found else {
                return Err(CoreError::Invalid(format!(
                    "podman's default seccomp profile is not at {}: devaipod builds the agents' profile from it (install containers-common)",
                    seccomp::DEFAULT_PROFILES.join(" or ")
                )));
            };
            let profile = seccomp::without_user_namespaces(&default).map_err(|e| CoreError::Invalid(e.to_string()))?;
            if std::fs::read_to_string(&target).ok().as_deref() == Some(profile.as_str()) {
                return Ok(());
            }
            let io = |e: std::io::Error| CoreError::Io(format!("write {}: {e}", target.display()));
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let tmp = target.with_extension("json.tmp");
            std::fs::write(&tmp, &profile).map_err(io)?;
            std::fs::rename(&tmp, &target).map_err(io)
        });
        job.await.map_err(|e| CoreError::Io(e.to_string()))?
    }
}

/// A stable id for `${devcontainerId}`: hex of sha256(instance, name), 32 characters.
fn devcontainer_id(instance: &str, name: &WorkspaceName) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{instance}\0{name}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A tar of the checkout (with its `.git`), paths relative to the repository root, or
/// under `folder`.
async fn archive(dir: &Path, folder: Option<&str>) -> Result<Vec<u8>, CoreError> {
    let dir = dir.to_owned();
    let folder = folder.unwrap_or(".").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        tar.append_dir_all(&folder, &dir)
            .map_err(|e| CoreError::Io(format!("cannot archive {}: {e}", dir.display())))?;
        tar.into_inner().map_err(|e| CoreError::Io(e.to_string()))
    })
    .await
    .map_err(|e| CoreError::Io(e.to_string()))?
}

/// The names a devcontainer.json reads with `${localEnv:NAME}` (or `${localEnv:NAME:default}`),
/// sorted, once each.
fn local_env_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split("${localEnv:")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_env_names_are_found_once_each() {
        let text = r#"{ "a": "${localEnv:HOME}/x", "b": "${localEnv:TOKEN:none}", "c": "${localEnv:HOME}", "d": "${localEnv:}" }"#;
        assert_eq!(super::local_env_names(text), ["HOME", "TOKEN"]);
        assert!(super::local_env_names("{}").is_empty());
    }
}
