//! The warm pool (`[pool]`): pods started ahead of `up`, whose agent already answers, so
//! that `up` of a plain repository takes one instead of starting a pod.
//!
//! A **member** is a pod planned like a workspace's without a repository
//! (`pods::plan::pool`), named by a key (`pool.<hex>`) that no workspace name can be. A
//! workspace whose plan, made with a member's key, has the member's shape **takes** it:
//! the claim is one store statement (two `up`s never get one member), then the repository
//! goes in, the workspace container is made in the member's pod, and the workspace is
//! **bound** to the member's objects in the store (podman cannot rename a pod, so they keep
//! the key). From then on `ws_name` gives the workspace's objects by the key and `overlay`
//! gives the member's pod the labels the workspace's own would carry, so `list`, `status`
//! and everything else see the workspace as any other. A member that fails to take the
//! repository is destroyed and `up` goes on cold.
//!
//! The keeper (`keep_pool`) refills the pool in the background, one member at a time,
//! destroys members whose pod broke or whose plan the config no longer gives, and at a
//! daemon's start finishes what a crash left: a claim that had not bound its workspace is
//! undone (its member destroyed: it may hold part of a repository), a member made but not
//! recorded is destroyed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::workspaces::random_hex;
use super::{Core, CoreError, Seat};
use crate::devcontainer::Loaded;
use crate::pods::engine::PodInfo;
use crate::pods::naming::{self, InvalidName, WorkspaceName};
use crate::pods::plan::{self, PlanRequest, PodPlan, Redacted, SandboxMounts};
use crate::pods::{Engine, EngineError};
use crate::store::{MemberState, PodBinding, PoolMember, WorkspaceRecord};

/// How often the keeper looks at the pool when nothing wakes it.
const KEEP_EVERY: Duration = Duration::from_secs(30);
/// The longest a member's agent may take to answer when it is made.
const MEMBER_READY: Duration = Duration::from_secs(120);

/// The pool's state in the daemon: the workspaces bound to former members, and the
/// keeper's progress.
#[derive(Default)]
pub(crate) struct PoolState {
    /// Workspace → (member key, the labels its own pod would carry).
    bound: dashmap::DashMap<String, (String, BTreeMap<String, String>)>,
    /// Member key → workspace.
    by_key: dashmap::DashMap<String, String>,
    /// Wakes the keeper (a member was taken, or broke).
    wake: tokio::sync::Notify,
    /// Members being made now, by image.
    making: dashmap::DashMap<String, usize>,
    /// The last failure to make a member, by image (cleared by a success).
    errors: dashmap::DashMap<String, String>,
    /// One keeper pass at a time.
    pass: tokio::sync::Mutex<()>,
    /// Workspace names an `up` is making now (a pooled workspace is no podman pod of its
    /// name, so podman cannot refuse a second one).
    names: dashmap::DashSet<String>,
}

/// A name reserved by an `up` until it is dropped ([`Core::reserve_name`]).
pub(in crate::core) struct Reserved<'a> {
    names: &'a dashmap::DashSet<String>,
    name: String,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.names.remove(&self.name);
    }
}

/// The pool as `devaipod pool` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PoolView {
    /// Members kept warm per image (`[pool] size`; 0: no pool).
    pub size: u8,
    pub images: Vec<PoolImage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PoolImage {
    pub image: String,
    /// Members whose agent answers, ready to be taken.
    pub warm: usize,
    /// Members being started now.
    pub starting: usize,
    pub members: Vec<PoolMemberView>,
    /// Why the last member could not be made, until one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PoolMemberView {
    pub key: String,
    pub pod: String,
    /// warm, or claimed (a workspace is taking it).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The pod's status as podman reports it (absent: the pod is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub created_at: i64,
}

/// A member a workspace claimed, and its plan made with the member's key.
pub(in crate::core) struct Taken {
    pub member: PoolMember,
    pub plan: PodPlan,
}

impl<E: Engine> Core<E> {
    /// The workspace `name` with its objects' names: a bound workspace's are its member's.
    /// A member's key names the member itself.
    pub(in crate::core) fn ws_name(&self, name: &str) -> Result<WorkspaceName, InvalidName> {
        if naming::is_pool_key(name) {
            return WorkspaceName::pool_member(name);
        }
        let key = self.pool.bound.get(name).map(|b| b.0.clone());
        Ok(WorkspaceName::new(name)?.in_pool_member(key))
    }

    /// Gives a bound workspace's pod (a former member's, labelled with its key) the labels
    /// the workspace's own pod would carry. `false`: the pod is a member no workspace took
    /// (not a workspace: hidden from listings).
    pub(in crate::core) fn overlay(&self, pod: &mut PodInfo) -> bool {
        let Some(key) = pod.labels.get(naming::LABEL_WORKSPACE).filter(|k| naming::is_pool_key(k)).cloned() else {
            return true;
        };
        let Some(ws) = self.pool.by_key.get(&key).map(|w| w.clone()) else { return false };
        if let Some(b) = self.pool.bound.get(&ws) {
            pod.labels.extend(b.1.clone());
        }
        pod.labels.insert(naming::LABEL_WORKSPACE.to_owned(), ws);
        true
    }

    /// The project directory of an agent whose opencode was started elsewhere (a bound
    /// workspace's own agent, started in the pool folder): its requests name the folder.
    pub(in crate::core) fn agent_directory(&self, name: &str, seat: Seat) -> Option<String> {
        if seat != Seat::Owner {
            return None;
        }
        self.pool.bound.get(name).and_then(|b| b.1.get(naming::LABEL_FOLDER).cloned())
    }

    /// Reserves `name` for this `up` (another `up` of it meanwhile is refused).
    pub(in crate::core) fn reserve_name(&self, name: &str) -> Result<Reserved<'_>, CoreError> {
        if !self.pool.names.insert(name.to_owned()) {
            return Err(CoreError::NameTaken(name.to_owned()));
        }
        Ok(Reserved { names: &self.pool.names, name: name.to_owned() })
    }

    pub(in crate::core) fn name_reserved(&self, name: &str) -> bool {
        self.pool.names.contains(name)
    }

    /// Asks the keeper to look at the pool now (a member was taken or lost).
    pub(in crate::core) fn wake_pool(&self) {
        self.pool.wake.notify_one();
    }

    /// Whether workspace `ws` lives in a former member's pod (its name is taken).
    pub(in crate::core) fn pool_bound(&self, ws: &str) -> bool {
        self.pool.bound.contains_key(ws)
    }

    fn bind(&self, ws: &str, key: &str, labels: BTreeMap<String, String>) {
        self.pool.bound.insert(ws.to_owned(), (key.to_owned(), labels));
        self.pool.by_key.insert(key.to_owned(), ws.to_owned());
    }

    /// Forgets a workspace's binding (it is deleted); returns the member key it had.
    pub(in crate::core) fn unbind(&self, ws: &str) -> Option<String> {
        let (_, (key, _)) = self.pool.bound.remove(ws)?;
        self.pool.by_key.remove(&key);
        Some(key)
    }

    /// Reads the bindings of workspaces in former members and links their socket
    /// directories: before anything serves a workspace (gator opens its sockets through
    /// the links).
    pub async fn load_pool(&self) -> Result<usize, CoreError> {
        let bindings = self.store.bindings().await?;
        for b in &bindings {
            self.bind(&b.workspace, &b.pod_key, b.labels.clone());
            if let Err(e) = self.link_dirs(&b.workspace, &b.pod_key) {
                tracing::warn!("pool: the socket directories of {}: {e}", b.workspace);
            }
        }
        Ok(bindings.len())
    }

    /// The socket directories of a member (the ones its agent container mounts) made
    /// reachable under the workspace's name: `<root>/<ws>` → `<root>/<key>`, for the
    /// agent's API directory and gator's. Everything that serves a workspace by its name
    /// then reaches its agent.
    fn link_dirs(&self, ws: &str, key: &str) -> Result<(), CoreError> {
        self.member_dirs(key)?;
        for root in [self.paths.runtime.join("agent"), self.paths.runtime.join("gator")] {
            let io = |what: &str, e: std::io::Error| {
                CoreError::Io(format!("the socket directory of {ws} ({}): {what}: {e}", root.display()))
            };
            let link = root.join(ws);
            if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(key)) {
                continue;
            }
            match std::fs::symlink_metadata(&link) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&link).map_err(|e| io("remove", e))?,
                Ok(_) => std::fs::remove_file(&link).map_err(|e| io("remove", e))?,
                Err(_) => {}
            }
            std::os::unix::fs::symlink(key, &link).map_err(|e| io("link", e))?;
        }
        Ok(())
    }

    /// The images members are kept for: none when the daemon's agent is an ACP agent
    /// (members start opencode's HTTP API, and an ACP session opens its folder only once).
    /// Member `key`'s socket directories (what its agent container mounts): the agent's
    /// API directory, open to the agent's user as a workspace's is, and gator's.
    fn member_dirs(&self, key: &str) -> Result<(), CoreError> {
        use std::os::unix::fs::PermissionsExt;
        for (root, mode) in [("agent", 0o777), ("gator", 0o755)] {
            let dir = self.paths.runtime.join(root).join(key);
            let io = |e: std::io::Error| CoreError::Io(format!("{}: {e}", dir.display()));
            std::fs::create_dir_all(&dir).map_err(io)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        Ok(())
    }

    fn pool_images(&self) -> Vec<&str> {
        if self.config.agent.kind != crate::config::AgentKind::Opencode {
            return Vec::new();
        }
        self.config.pool.images(&self.config.default_image)
    }

    /// The sandbox mounts of the agent whose directories are named `dir` (a workspace's,
    /// or a pool member's key).
    pub(in crate::core) fn sandbox_mounts(&self, dir: &str) -> Result<SandboxMounts, CoreError> {
        Ok(SandboxMounts {
            socket_dir: self.paths.pod_sockets(dir),
            api_dir: self.paths.agent_dir(dir),
            bridge: match self.endpoints() {
                Some(endpoints) => endpoints.bridge()?,
                None => PathBuf::from(plan::GATOR_BRIDGE),
            },
            seccomp: Some(self.paths.agent_seccomp()),
        })
    }

    /// A member's plan for `image`: a workspace's without a repository, planned with the
    /// daemon's environment (no LLM key: a taker brings its own).
    fn member_plan(&self, key: &str, image: &str, password: &str) -> Result<PodPlan, CoreError> {
        let mut config = self.config.clone();
        config.agent.api_key_env = None;
        let req = PlanRequest {
            name: WorkspaceName::pool_member(key)?,
            instance: self.instance().to_owned(),
            source: String::new(),
            image_override: Some(image.to_owned()),
            host_env: std::env::vars().collect(),
            opencode_dir: self.opencode_dir.clone(),
            checkout_dir: PathBuf::from("/nonexistent/pool"),
            agent_password: Redacted(password.to_owned()),
            sandbox: self.sandbox_mounts(key)?,
        };
        Ok(plan::pool::member_plan(plan::plan(&config, None, &req)?))
    }

    /// Claims a warm member for the workspace of `cold` (its plan with its own name, from
    /// `config`: the daemon's with the workspace's agent), or says why it is made cold.
    /// `Ok(None)`: there is no pool.
    pub(in crate::core) async fn take_member(
        &self,
        config: &crate::config::Config,
        cold: &PodPlan,
        dc: Option<&Loaded>,
        req: &PlanRequest,
    ) -> Result<Option<Taken>, String> {
        if self.config.pool.size == 0 {
            return Ok(None);
        }
        if config.agent.kind != crate::config::AgentKind::Opencode {
            return Err("warm pods run opencode's HTTP API; this workspace's agent is an ACP agent".into());
        }
        if let Some(why) = plan::pool::unfit(cold, &self.pool_images()) {
            return Err(why);
        }
        let image = cold.image.reference();
        let members = self.store.members().await.map_err(|e| e.to_string())?;
        let mut mismatch = None;
        for m in members.into_iter().filter(|m| m.state == MemberState::Warm && m.image == image) {
            let sandbox = self.sandbox_mounts(&m.key).map_err(|e| e.to_string())?;
            let taker_req = PlanRequest {
                name: req.name.clone().in_pool_member(Some(m.key.clone())),
                agent_password: Redacted(m.password.clone()),
                sandbox,
                ..req.clone()
            };
            let taker = plan::plan(config, dc, &taker_req).map_err(|e| e.to_string())?;
            let theirs: serde_json::Value = serde_json::from_str(&m.plan).unwrap_or_default();
            let ours = plan::pool::shape(&taker);
            if ours != theirs {
                mismatch = Some(plan::pool::differences(&ours, &theirs));
                continue;
            }
            match self.store.claim_member(&m.key, cold.name.as_str()).await {
                Ok(true) => return Ok(Some(Taken { member: m, plan: taker })),
                Ok(false) => continue, // another `up` took it just now
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(match mismatch {
            Some(fields) => format!("its agent's settings differ from the warm pods' ({})", fields.join(", ")),
            None => {
                let starting = self.pool.making.get(image).map_or(0, |n| *n);
                format!("no warm pod of {image} was free ({starting} being started)")
            }
        })
    }

    /// Gives the workspace the member it claimed: its name bound (in memory until `up`
    /// records it), the member's socket directories linked under its name and gator's
    /// sockets opened there, its secrets (the LLM key) made.
    pub(in crate::core) async fn fill_member(&self, taken: &Taken) -> Result<(), CoreError> {
        let plan = &taken.plan;
        let (ws, key) = (plan.name.as_str(), taken.member.key.as_str());
        if self.pool.bound.get(ws).is_some_and(|b| b.0 != key) {
            return Err(CoreError::NameTaken(ws.to_owned()));
        }
        self.bind(ws, key, plan::pool::taker_labels(plan, &plan.name));
        // Volumes the workspace's plan has beyond the member's own (devcontainer.json's
        // anonymous mounts), labelled like them.
        let own = [plan.name.workspace_volume(), plan.name.agent_workspace_volume(), plan.name.agent_home_volume()];
        for v in plan.volumes.iter().filter(|v| !own.contains(&v.name)) {
            match self.engine.create_volume(v).await {
                Ok(()) | Err(EngineError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.link_dirs(ws, key)?;
        if let Some(endpoints) = self.endpoints() {
            endpoints.open(ws)?;
        }
        let password_secret = format!("{}-agent-password", plan.name.pod());
        for s in plan.secrets.iter().filter(|s| s.name != password_secret) {
            match self.engine.create_secret(s).await {
                // One a crash left (the member's secrets are its own): replaced.
                Err(EngineError::AlreadyExists { .. }) => {
                    self.engine.remove_secret(&s.name).await?;
                    self.engine.create_secret(s).await?;
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Destroys member `key` (its pod, volumes, secrets, directories and record). `ws`: the
    /// workspace that had claimed it, whose binding, sockets and links go too — only those
    /// that are the member's (another workspace of that name, made meanwhile, keeps its
    /// own). The member's record stays when its pod cannot be removed (the keeper tries
    /// again).
    pub(in crate::core) async fn destroy_member(&self, key: &str, ws: Option<&str>) {
        let Ok(name) = WorkspaceName::pool_member(key) else { return };
        if let Some(ws) = ws.filter(|w| WorkspaceName::new(w).is_ok()) {
            let root = |r: &str| self.paths.runtime.join(r);
            let links_here = |r: &str| std::fs::read_link(root(r).join(ws)).is_ok_and(|t| t == Path::new(key));
            if self.pool.bound.get(ws).is_some_and(|b| b.0 == key) {
                self.unbind(ws);
                self.forget_agent(ws);
                if let Some(endpoints) = self.endpoints() {
                    endpoints.close(ws);
                }
                self.close_agent_dir(ws);
            } else {
                for r in ["agent", "gator"] {
                    if links_here(r) {
                        let _ = std::fs::remove_file(root(r).join(ws));
                    }
                }
            }
        }
        self.agent_at.remove(key);
        match self.engine.remove_pod(&name.pod()).await {
            Ok(()) | Err(EngineError::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!("pool: cannot remove pod {}: {e}", name.pod());
                return;
            }
        }
        let labels = [(naming::LABEL_INSTANCE, self.instance()), (naming::LABEL_WORKSPACE, key)];
        match self.engine.list_volumes(&labels).await {
            Ok(volumes) => {
                for v in volumes {
                    if let Err(e) = self.engine.remove_volume(&v).await {
                        tracing::warn!("pool: cannot remove volume {v}: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("pool: cannot list member {key}'s volumes: {e}"),
        }
        for s in [format!("{}-agent-password", name.pod()), plan::llm_key_secret(&name)] {
            match self.engine.remove_secret(&s).await {
                Ok(()) | Err(EngineError::NotFound { .. }) => {}
                Err(e) => tracing::warn!("pool: cannot remove secret {s}: {e}"),
            }
        }
        for root in ["agent", "gator"] {
            let _ = std::fs::remove_dir_all(self.paths.runtime.join(root).join(key));
        }
        if let Err(e) = self.store.remove_member(key).await {
            tracing::warn!("pool: cannot forget member {key}: {e}");
        }
    }

    /// Records that the workspace of `taken` lives in its member (one transaction with its
    /// record): from here on it is a workspace like any other.
    pub(in crate::core) async fn bind_taken(&self, taken: &Taken, record: WorkspaceRecord) -> Result<(), CoreError> {
        let plan = &taken.plan;
        let labels = plan::pool::taker_labels(plan, &plan.name);
        let binding =
            PodBinding { workspace: plan.name.to_string(), pod_key: taken.member.key.clone(), labels: labels.clone() };
        self.store.bind_member(binding, record).await?;
        self.bind(plan.name.as_str(), &taken.member.key, labels);
        self.wake_pool();
        Ok(())
    }

    /// Makes one member of `image`: pod, volumes, its password, the agent container
    /// started and answering; recorded warm. What it made is removed when it fails.
    async fn make_member(&self, image: &str) -> Result<String, CoreError> {
        let key = format!("{}{}", naming::POOL_KEY_PREFIX, random_hex(8));
        let password = random_hex(32);
        let plan = self.member_plan(&key, image, &password)?;
        let shape = plan::pool::shape(&plan).to_string();
        let made = async {
            if !self.engine.image_exists(image).await? {
                return Err(CoreError::ImageMissing {
                    image: image.to_owned(),
                    reason: "a pool member needs it locally ([pool] images)".into(),
                });
            }
            self.agent_seccomp().await?;
            self.member_dirs(&key)?;
            for s in &plan.secrets {
                self.engine.create_secret(s).await?;
            }
            for v in &plan.volumes {
                self.engine.create_volume(v).await?;
            }
            self.engine.create_pod(&plan.pod).await?;
            let mut agent = plan.agent.clone();
            agent.image = image.to_owned();
            self.engine.create_container(&plan.pod.name, &agent).await?;
            self.engine.start_pod(&plan.pod.name).await?;
            tokio::time::timeout(MEMBER_READY, self.wait_for_agent(&key, Seat::Owner, &plan.pod.name, &password))
                .await
                .map_err(|_| CoreError::AgentNotReady { name: key.clone(), secs: MEMBER_READY.as_secs() })??;
            self.agent_at.remove(&key);
            self.warm_up(&key, &agent.name, &password).await;
            self.store.insert_member(crate::store::warm_member(&key, image, &password, &shape)).await?;
            Ok(())
        };
        match made.await {
            Ok(()) => Ok(key),
            Err(e) => {
                self.destroy_member(&key, None).await;
                Err(e)
            }
        }
    }

    /// opencode loads much of itself when it first opens a project: a member's opens a
    /// throwaway repository in its container's `/tmp` (not in any volume), so that the
    /// taker's repository opens quicker. Best effort: an image without git skips it.
    async fn warm_up(&self, key: &str, container: &str, password: &str) {
        const WARM: &str = "/tmp/devaipod-warm";
        let place = super::workspaces::ExecPlace {
            container: container.to_owned(),
            user: Some(plan::AGENT_USER.to_owned()),
            workdir: Some("/tmp".to_owned()),
            env: BTreeMap::new(),
            post_attach: Vec::new(),
        };
        let init = ["sh", "-c", "mkdir -p /tmp/devaipod-warm && git init -q /tmp/devaipod-warm"];
        match self.capture_at(&place, "warming up the agent", &init, BTreeMap::new()).await {
            Ok((0, _, _)) => {}
            other => {
                tracing::debug!("pool: member {key}: no warm-up repository: {other:?}");
                return;
            }
        }
        let url = crate::agent::endpoint::unix(&self.paths.agent_socket(key));
        let agent = self.agents.connect(&crate::agent::endpoint::in_directory(&url, Some(WARM)), password);
        if tokio::time::timeout(Duration::from_secs(10), agent.ready()).await != Ok(true) {
            tracing::debug!("pool: member {key}: the warm-up project did not open");
        }
    }

    /// Keeps the pool filled until `stop`: at once, whenever a member is taken or lost,
    /// and every [`KEEP_EVERY`]. (The daemon runs [`Core::recover_pool`] first.)
    pub fn keep_pool(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.keep_pool_once().await {
                    tracing::warn!("pool: {e}");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = me.pool.wake.notified() => {}
                    _ = tokio::time::sleep(KEEP_EVERY) => {}
                }
            }
        });
    }

    /// What a crash left: claims that never bound their workspace, members made but not
    /// recorded, records of members whose pod is gone.
    pub async fn recover_pool(&self) -> Result<(), CoreError> {
        let members = self.store.members().await?;
        for m in &members {
            if let MemberState::Claimed(ws) = &m.state {
                tracing::info!("pool: undoing the unfinished claim of {} by {ws:?}", m.key);
                // The claimer's links to the member go too (an empty name: the keeper's own
                // claim of a member it was destroying).
                self.destroy_member(&m.key, Some(ws.as_str()).filter(|w| !w.is_empty())).await;
            }
        }
        let known: Vec<String> = members.iter().map(|m| m.key.clone()).collect();
        let unknown = |key: &str| !known.iter().any(|k| k == key) && !self.pool.by_key.contains_key(key);
        let pods = self.engine.list_pods(&[(naming::LABEL_INSTANCE, self.instance())]).await?;
        let mut gone = Vec::new();
        for p in pods {
            let Some(key) = p.labels.get(naming::LABEL_WORKSPACE).filter(|k| naming::is_pool_key(k)) else { continue };
            if unknown(key) {
                tracing::info!("pool: removing member {key}, made but never recorded");
                self.destroy_member(key, None).await;
                gone.push(key.clone());
            }
        }
        // Volumes of a member whose making was cut short before its pod existed.
        for v in self.engine.list_volumes(&[(naming::LABEL_INSTANCE, self.instance())]).await? {
            let Some(key) = member_of_volume(&v) else { continue };
            if unknown(key) && !gone.iter().any(|g| g == key) {
                tracing::info!("pool: removing member {key}'s volumes, made but never recorded");
                self.destroy_member(key, None).await;
                gone.push(key.to_owned());
            }
        }
        Ok(())
    }

    /// One pass: destroys what should not be warm, then makes members until each image
    /// has `[pool] size` (one at a time: starts compete for the same cores).
    pub async fn keep_pool_once(&self) -> Result<(), CoreError> {
        let _one = self.pool.pass.lock().await;
        let images: Vec<String> = self.pool_images().into_iter().map(str::to_owned).collect();
        let members = self.store.members().await?;
        if images.is_empty() && members.is_empty() {
            return Ok(()); // no pool, nothing to shrink
        }
        let size = usize::from(self.config.pool.size);
        let pods = self.engine.list_pods(&[(naming::LABEL_INSTANCE, self.instance())]).await?;
        let running = |key: &str| {
            let pod = format!("{}{key}", naming::PREFIX);
            pods.iter().find(|p| p.name == pod).is_some_and(|p| {
                p.containers
                    .iter()
                    .any(|c| c.role == Some(naming::Role::Agent) && c.state.eq_ignore_ascii_case("running"))
            })
        };
        let mut warm: BTreeMap<String, usize> = BTreeMap::new();
        for m in members {
            if m.state != MemberState::Warm {
                continue;
            }
            let current = self.member_plan(&m.key, &m.image, &m.password).map(|p| plan::pool::shape(&p).to_string());
            let why = if !images.contains(&m.image) {
                Some("its image is no longer in [pool] images")
            } else if !running(&m.key) {
                Some("its agent is not running")
            } else if current.ok().as_deref() != Some(m.plan.as_str()) {
                Some("the config gives members another plan now")
            } else if warm.get(&m.image).copied().unwrap_or(0) >= size {
                Some("the pool is smaller now")
            } else {
                None
            };
            match why {
                Some(why) => {
                    // Claimed meanwhile? Then it is no longer the keeper's.
                    if self.store.claim_member(&m.key, "").await? {
                        tracing::info!("pool: removing member {}: {why}", m.key);
                        self.destroy_member(&m.key, None).await;
                    }
                }
                None => *warm.entry(m.image.clone()).or_default() += 1,
            }
        }
        for image in &images {
            while warm.get(image).copied().unwrap_or(0) < size {
                *self.pool.making.entry(image.clone()).or_default() += 1;
                let made = self.make_member(image).await;
                if let Some(mut n) = self.pool.making.get_mut(image) {
                    *n = n.saturating_sub(1);
                }
                match made {
                    Ok(key) => {
                        tracing::info!("pool: member {key} of {image} is warm");
                        self.pool.errors.remove(image);
                        *warm.entry(image.clone()).or_default() += 1;
                    }
                    Err(e) => {
                        tracing::warn!("pool: cannot make a member of {image}: {e}");
                        self.pool.errors.insert(image.clone(), e.to_string());
                        break; // tried again at the next pass
                    }
                }
            }
        }
        Ok(())
    }

    /// The pool's state, for `devaipod pool`.
    pub async fn pool_view(&self) -> Result<PoolView, CoreError> {
        let members = self.store.members().await?;
        let pods = self.engine.list_pods(&[(naming::LABEL_INSTANCE, self.instance())]).await?;
        let mut images: Vec<String> = self.pool_images().into_iter().map(str::to_owned).collect();
        for m in &members {
            if !images.contains(&m.image) {
                images.push(m.image.clone());
            }
        }
        let view = images
            .into_iter()
            .map(|image| {
                let members: Vec<PoolMemberView> = members
                    .iter()
                    .filter(|m| m.image == image)
                    .map(|m| {
                        let pod = format!("{}{}", naming::PREFIX, m.key);
                        let (state, workspace) = match &m.state {
                            MemberState::Warm => ("warm", None),
                            MemberState::Claimed(w) => ("claimed", Some(w.clone()).filter(|w| !w.is_empty())),
                        };
                        PoolMemberView {
                            key: m.key.clone(),
                            status: pods.iter().find(|p| p.name == pod).map(|p| p.status.clone()),
                            pod,
                            state: state.to_owned(),
                            workspace,
                            created_at: m.created_at,
                        }
                    })
                    .collect();
                PoolImage {
                    warm: members.iter().filter(|m| m.state == "warm").count(),
                    starting: self.pool.making.get(&image).map_or(0, |n| *n),
                    last_error: self.pool.errors.get(&image).map(|e| e.clone()),
                    image,
                    members,
                }
            })
            .collect();
        Ok(PoolView { size: self.config.pool.size, images: view })
    }
}

/// The member key of a member's volume name (`devaipod-pool.<hex>-…`).
fn member_of_volume(volume: &str) -> Option<&str> {
    let rest = volume.strip_prefix(naming::PREFIX)?;
    let key = &rest[..rest.find('-')?];
    naming::is_pool_key(key).then_some(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_members_volume_names_its_member() {
        assert_eq!(super::member_of_volume("devaipod-pool.0123abcd-agent-home"), Some("pool.0123abcd"));
        for not in ["devaipod-hello-agent-home", "devaipod-pool.xyz-agent", "other", "devaipod-pool.0123abcd"] {
            assert_eq!(super::member_of_volume(not), None, "{not}");
        }
    }
}
