//! Workspaces: `up` (source → checkout → devcontainer.json → plan → pod), `list`, `status`,
//! `stop`, `start`, `delete`, `exec`, `logs`. A failed `up` removes what it created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::stream::BoxStream;
use serde::Serialize;

use super::CoreError;
use super::lifecycle::{InContainer, run_on_host};
use super::source::{self, Source};
use crate::config::Config;
use crate::devcontainer::{self, HostContext, Loaded};
use crate::pods::engine::{ExecSession, ExecSpec, Output, PodInfo, PublishedPort};
use crate::pods::naming::{self, Role, WorkspaceName};
use crate::pods::plan::{self, ImagePlan, PlanRequest, PodPlan};
use crate::pods::{Engine, EngineError};

/// Receives progress of long steps (the CLI prints it on stderr).
pub trait Progress: Send + Sync {
    /// A step begins.
    fn step(&self, message: &str);
    /// Output of a step (build log, lifecycle command output).
    fn detail(&self, line: &str);
}

#[derive(Debug, Clone, Default)]
pub struct UpRequest {
    /// A local path or a git URL.
    pub source: String,
    pub name: Option<String>,
    pub image: Option<String>,
    /// `.devcontainer/<name>/devcontainer.json` to use when there are several.
    pub devcontainer: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug)]
pub enum UpOutcome {
    Planned(Box<PodPlan>),
    Created(Box<WorkspaceStatus>),
}

/// A workspace as `list` and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
}

impl WorkspaceStatus {
    fn from_pod(p: PodInfo) -> Option<Self> {
        let name = p.labels.get(naming::LABEL_WORKSPACE)?.clone();
        let state = |role| {
            p.containers
                .iter()
                .find(|c| c.role == Some(role))
                .map(|c| c.state.to_lowercase())
        };
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
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecTarget {
    Workspace,
    Agent,
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

pub struct Workspaces<E> {
    pub config: Config,
    pub engine: E,
    pub opencode_dir: PathBuf,
}

/// What a failing `up` must remove.
#[derive(Default)]
struct Created {
    volumes: Vec<String>,
    pod: Option<String>,
}

impl<E: Engine> Workspaces<E> {
    pub fn new(config: Config, engine: E) -> Self {
        Workspaces {
            config,
            engine,
            opencode_dir: opencode_dir(),
        }
    }

    fn instance(&self) -> &str {
        self.config.instance.as_str()
    }

    pub async fn up(
        &self,
        req: &UpRequest,
        progress: &dyn Progress,
    ) -> Result<UpOutcome, CoreError> {
        let source = Source::parse(&req.source)?;
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
            None => {
                self.free_name(WorkspaceName::derive(&source.basename()))
                    .await?
            }
        };
        let host = HostContext {
            env: host_env.clone(),
            local_workspace_folder: checkout.to_string_lossy().into_owned(),
            devcontainer_id: devcontainer_id(self.instance(), &name),
        };
        let dc: Option<Loaded> =
            match devcontainer::discover(&checkout, req.devcontainer.as_deref())
                .map_err(devcontainer::DevContainerError::from)?
            {
                Some(path) => {
                    progress.step(&format!(
                        "reading {}",
                        path.strip_prefix(&checkout).unwrap_or(&path).display()
                    ));
                    Some(devcontainer::load(&path, &host)?)
                }
                None => None,
            };
        let plan_req = PlanRequest {
            name: name.clone(),
            instance: self.instance().to_owned(),
            source: source.label(),
            image_override: req.image.clone(),
            host_env,
            opencode_dir: self.opencode_dir.clone(),
            checkout_dir: checkout.clone(),
        };
        let plan = plan::plan(&self.config, dc.as_ref(), &plan_req)?;
        for w in &plan.warnings {
            progress.step(&format!("warning: {w}"));
        }
        if req.dry_run {
            return Ok(UpOutcome::Planned(Box::new(plan)));
        }

        self.preflight(&plan).await?;
        if let Some(cmd) = &plan.lifecycle.initialize {
            run_on_host("initializeCommand", cmd, &checkout, progress).await?;
        }
        let mut created = Created::default();
        match self.create(&plan, &checkout, &mut created, progress).await {
            Ok(()) => {}
            Err(e) => {
                progress.step(&format!("up failed; removing what it created for `{name}`"));
                self.rollback(&created).await;
                return Err(e);
            }
        }
        let pod = self.engine.inspect_pod(&plan.pod.name).await?;
        let status =
            WorkspaceStatus::from_pod(pod).ok_or_else(|| CoreError::NotFound(name.to_string()))?;
        Ok(UpOutcome::Created(Box::new(status)))
    }

    /// The derived name, or `name-2`, `name-3`… when a pod of that name exists (of any instance).
    async fn free_name(&self, base: WorkspaceName) -> Result<WorkspaceName, CoreError> {
        if !self.engine.pod_exists(&base.pod()).await? {
            return Ok(base);
        }
        for n in 2..100 {
            let candidate = base.with_suffix(n);
            if !self.engine.pod_exists(&candidate.pod()).await? {
                return Ok(candidate);
            }
        }
        Err(CoreError::NameTaken(base.to_string()))
    }

    /// Everything that can be checked before creating anything.
    async fn preflight(&self, plan: &PodPlan) -> Result<(), CoreError> {
        if self.engine.pod_exists(&plan.pod.name).await? {
            return Err(CoreError::NameTaken(plan.name.to_string()));
        }
        if !self.opencode_dir.join("opencode").is_file() {
            return Err(CoreError::OpencodeMissing(
                self.opencode_dir.join("opencode").display().to_string(),
            ));
        }
        for (env, secret) in &plan.workspace.secret_env {
            if !self.engine.secret_exists(secret).await? {
                return Err(CoreError::SecretMissing {
                    secret: secret.clone(),
                    env: env.clone(),
                });
            }
        }
        Ok(())
    }

    async fn ensure_image(&self, plan: &PodPlan, progress: &dyn Progress) -> Result<(), CoreError> {
        match &plan.image {
            ImagePlan::Existing { reference } => {
                if self.engine.image_exists(reference).await? {
                    return Ok(());
                }
                progress.step(&format!("pulling {reference}"));
                self.engine
                    .pull_image(reference)
                    .await
                    .map_err(|e| match e {
                        EngineError::Pull { image, message } => CoreError::ImageMissing {
                            image,
                            reason: message,
                        },
                        other => other.into(),
                    })
            }
            ImagePlan::Build(build) => {
                progress.step(&format!(
                    "building {} from {}",
                    build.tag,
                    build.dockerfile.display()
                ));
                let labels = naming::labels(self.instance(), &plan.name, None);
                let detail = |line: &str| progress.detail(line);
                Ok(self.engine.build_image(build, &labels, &detail).await?)
            }
        }
    }

    async fn create(
        &self,
        plan: &PodPlan,
        checkout: &Path,
        created: &mut Created,
        progress: &dyn Progress,
    ) -> Result<(), CoreError> {
        self.ensure_image(plan, progress).await?;
        progress.step(&format!("creating pod {}", plan.pod.name));
        // Independent engine calls run concurrently; `created` records each as it succeeds.
        let vols =
            futures_util::future::join_all(plan.volumes.iter().map(|v| async move {
                self.engine.create_volume(v).await.map(|()| v.name.clone())
            }))
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
        let dir = checkout.to_owned();
        let archive = tokio::task::spawn_blocking(move || repo_archive(&dir));
        tokio::try_join!(
            self.engine
                .create_container(&plan.pod.name, &plan.workspace),
            self.engine.create_container(&plan.pod.name, &plan.agent),
        )?;

        progress.step("copying the repository into the workspace");
        self.engine.start_pod(&plan.pod.name).await?;
        let tar = archive.await.map_err(|e| CoreError::Io(e.to_string()))??;
        tokio::try_join!(
            self.engine
                .upload_archive(&plan.workspace.name, &plan.workspace_folder, tar.clone()),
            self.engine
                .upload_archive(&plan.agent.name, &plan.workspace_folder, tar),
        )?;

        let l = &plan.lifecycle;
        let runner = InContainer {
            engine: &self.engine,
            container: &plan.workspace.name,
            user: l.user.clone(),
            workdir: plan.workspace_folder.clone(),
            env: l
                .env
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                .collect(),
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

        progress.step("checking that both containers run");
        let pod = self.engine.inspect_pod(&plan.pod.name).await?;
        for role in [Role::Workspace, Role::Agent] {
            let running = pod
                .containers
                .iter()
                .any(|c| c.role == Some(role) && c.state.eq_ignore_ascii_case("running"));
            if !running {
                return Err(CoreError::NotRunning {
                    name: plan.name.to_string(),
                    role: role.as_str(),
                    status: pod.status.clone(),
                });
            }
        }
        Ok(())
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
    }

    /// All workspaces of this instance: one engine round trip.
    pub async fn list(&self) -> Result<Vec<WorkspaceStatus>, CoreError> {
        let pods = self
            .engine
            .list_pods(&[(naming::LABEL_INSTANCE, self.instance())])
            .await?;
        let mut out: Vec<WorkspaceStatus> = pods
            .into_iter()
            .filter_map(WorkspaceStatus::from_pod)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The pod of workspace `name` of this instance, or `NotFound`.
    async fn find(&self, name: &str) -> Result<PodInfo, CoreError> {
        let n = WorkspaceName::new(name).map_err(|_| CoreError::NotFound(name.to_owned()))?;
        let pods = self
            .engine
            .list_pods(&[
                (naming::LABEL_INSTANCE, self.instance()),
                (naming::LABEL_WORKSPACE, n.as_str()),
            ])
            .await?;
        pods.into_iter()
            .next()
            .ok_or_else(|| CoreError::NotFound(name.to_owned()))
    }

    pub async fn status(&self, name: &str) -> Result<WorkspaceStatus, CoreError> {
        let pod = self.find(name).await?;
        let pod = self.engine.inspect_pod(&pod.name).await?;
        WorkspaceStatus::from_pod(pod).ok_or_else(|| CoreError::NotFound(name.to_owned()))
    }

    pub async fn stop(&self, name: &str) -> Result<(), CoreError> {
        let pod = self.find(name).await?;
        Ok(self.engine.stop_pod(&pod.name, 5).await?)
    }

    /// Starts a stopped workspace.
    pub async fn start(&self, name: &str) -> Result<(), CoreError> {
        let pod = self.find(name).await?;
        Ok(self.engine.start_pod(&pod.name).await?)
    }

    /// Removes the pod, its containers and (unless `keep_volumes`) its volumes. Only objects
    /// labelled with this instance and this workspace are touched.
    pub async fn delete(&self, name: &str, keep_volumes: bool) -> Result<(), CoreError> {
        let pod = self.find(name).await;
        let volumes = if keep_volumes {
            Vec::new()
        } else {
            self.engine
                .list_volumes(&[
                    (naming::LABEL_INSTANCE, self.instance()),
                    (naming::LABEL_WORKSPACE, name),
                ])
                .await?
        };
        match pod {
            Ok(p) => self.engine.remove_pod(&p.name).await?,
            Err(CoreError::NotFound(_)) if !volumes.is_empty() => {}
            Err(e) => return Err(e),
        }
        for v in volumes {
            self.engine.remove_volume(&v).await?;
        }
        Ok(())
    }

    /// Starts a command in a workspace's container; the caller pumps its streams and then
    /// asks [`Workspaces::exit_code`].
    pub async fn exec(
        &self,
        name: &str,
        target: ExecTarget,
        argv: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> Result<ExecSession, CoreError> {
        let pod = self.find(name).await?;
        let role = match target {
            ExecTarget::Workspace => Role::Workspace,
            ExecTarget::Agent => Role::Agent,
        };
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
        let spec = ExecSpec {
            argv,
            user,
            workdir: pod.labels.get(naming::LABEL_FOLDER).cloned(),
            env: BTreeMap::new(),
            stdin,
            tty,
        };
        Ok(self.engine.exec(&container.name, &spec).await?)
    }

    pub async fn exit_code(&self, session_id: &str) -> Result<i64, CoreError> {
        Ok(self.engine.exec_exit_code(session_id).await?)
    }

    pub async fn logs(
        &self,
        name: &str,
        target: ExecTarget,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<BoxStream<'static, Result<Output, EngineError>>, CoreError> {
        let pod = self.find(name).await?;
        let role = if target == ExecTarget::Agent {
            Role::Agent
        } else {
            Role::Workspace
        };
        let container = pod
            .containers
            .iter()
            .find(|c| c.role == Some(role))
            .ok_or_else(|| CoreError::NotFound(name.to_owned()))?;
        Ok(self.engine.logs(&container.name, follow, tail))
    }
}

/// A stable id for `${devcontainerId}`: hex of sha256(instance, name), 32 characters.
fn devcontainer_id(instance: &str, name: &WorkspaceName) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{instance}\0{name}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A tar of the checkout (with its `.git`), paths relative to the repository root.
fn repo_archive(dir: &Path) -> Result<Vec<u8>, CoreError> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)
        .map_err(|e| CoreError::Io(format!("cannot archive {}: {e}", dir.display())))?;
    tar.into_inner().map_err(|e| CoreError::Io(e.to_string()))
}
