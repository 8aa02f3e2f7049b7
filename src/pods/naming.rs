//! Names and labels of everything devaipod creates (DESIGN §3).
//!
//! Pod `devaipod-<name>`; containers `devaipod-<name>-workspace|-agent`; volumes
//! `devaipod-<name>-workspace|-agent-workspace|-agent-home`. Every object carries the
//! labels below, so a daemon (or a test run) only ever touches objects of its own instance.

use std::collections::BTreeMap;

use crate::config::is_dns_label;

pub const PREFIX: &str = "devaipod-";
pub const LABEL_INSTANCE: &str = "io.devaipod.instance";
pub const LABEL_WORKSPACE: &str = "io.devaipod.workspace";
pub const LABEL_ROLE: &str = "io.devaipod.role";
pub const LABEL_VERSION: &str = "io.devaipod.version";
/// Where the workspace came from (a path or a URL without credentials), for `list`.
pub const LABEL_SOURCE: &str = "io.devaipod.source";
/// The repository's path inside the containers.
pub const LABEL_FOLDER: &str = "io.devaipod.workspace-folder";
/// The user commands run as in the workspace container (`remoteUser`), when not the image's.
pub const LABEL_USER: &str = "io.devaipod.user";
/// devcontainer.json's `remoteEnv` (JSON; `${containerEnv:…}` unresolved), applied to
/// interactive sessions (SSH, `exec`, `attach`).
pub const LABEL_REMOTE_ENV: &str = "io.devaipod.remote-env";
/// devcontainer.json's `postAttachCommand` (JSON, as written), run by `devaipod attach`.
pub const LABEL_POST_ATTACH: &str = "io.devaipod.post-attach";
/// The compose service a container runs (role `service`).
pub const LABEL_SERVICE: &str = "io.devaipod.service";
/// On the pod: the images `up` built for compose services (comma-separated), which
/// `delete` removes.
pub const LABEL_SERVICE_IMAGES: &str = "io.devaipod.service-images";

/// The role label of a worker agent's container (its number is in [`LABEL_WORKER`]).
pub const ROLE_WORKER: &str = "worker";
/// The number of a worker agent, on its container and volumes.
pub const LABEL_WORKER: &str = "io.devaipod.worker";

/// The role label of a fan-out candidate's container (its number is in [`LABEL_CANDIDATE`]).
pub const ROLE_CANDIDATE: &str = "candidate";
/// The number of a fan-out candidate, on its container and volumes.
pub const LABEL_CANDIDATE: &str = "io.devaipod.candidate";

/// On a warm pool member's objects: the image its agent runs. The member's workspace label
/// is its key (`pool.<hex>`), and stays so after a workspace took it.
pub const LABEL_POOL: &str = "io.devaipod.pool";

/// The agents a workspace has beside its own, each in a container made from the agent's:
/// workers (delegated to by the agent's task) and fan-out candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extra {
    Worker,
    Candidate,
}

impl Extra {
    /// The word in names (`devaipod-<ws>-<word>-<n>`) and the role label.
    pub fn word(self) -> &'static str {
        match self {
            Extra::Worker => ROLE_WORKER,
            Extra::Candidate => ROLE_CANDIDATE,
        }
    }

    /// The label holding the number.
    pub fn label(self) -> &'static str {
        match self {
            Extra::Worker => LABEL_WORKER,
            Extra::Candidate => LABEL_CANDIDATE,
        }
    }
}

/// The role label of the throwaway container that reads a podman secret's value.
pub const ROLE_SECRET_READER: &str = "secret-reader";
/// Name prefix of those containers: `devaipod-secret-read-<random>`.
pub const SECRET_READER_PREFIX: &str = "devaipod-secret-read-";
/// Role label of helper containers that probe the LLM endpoint from the agents' network.
pub const ROLE_LLM_PROBE: &str = "llm-probe";
/// Name prefix of helper containers other than secret readers: `devaipod-helper-<random>`.
pub const HELPER_PREFIX: &str = "devaipod-helper-";

/// The longest workspace name: `devaipod-<name>-agent-workspace` must stay a sane length.
pub const MAX_NAME_LEN: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Workspace,
    Agent,
    /// A compose service's container beside the workspace's (named by
    /// [`WorkspaceName::service_container`], not by [`WorkspaceName::container`]).
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Workspace => "workspace",
            Role::Agent => "agent",
            Role::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "workspace" => Some(Role::Workspace),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// A workspace name that is a valid DNS label of at most [`MAX_NAME_LEN`] characters.
///
/// Its objects (pod, containers, volumes, secrets, their labels) are named after it, unless
/// the workspace took a warm pool member ([`WorkspaceName::in_pool_member`]): podman cannot
/// rename a pod, so that workspace's objects keep the member's key, and only devaipod's
/// store ties the name to them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkspaceName(String, Option<String>);

impl serde::Serialize for WorkspaceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The prefix of warm pool members' keys: `pool.<hex>`. A workspace name has no `.`, so a
/// member's objects (`devaipod-pool.<hex>-agent`, …) never collide with a workspace's.
pub const POOL_KEY_PREFIX: &str = "pool.";

/// Whether `key` is a pool member's key: `pool.` and 8 to 32 lowercase hex digits.
pub fn is_pool_key(key: &str) -> bool {
    key.strip_prefix(POOL_KEY_PREFIX).is_some_and(|h| {
        (8..=32).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Endings that would make a workspace's object names collide with another's.
const RESERVED_SUFFIXES: [&str; 2] = ["-agent", "-workspace"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid workspace name: use lowercase letters, digits and `-`, at most {MAX_NAME_LEN} characters, starting with a letter, not ending with `-`, `-agent`, `-workspace`, `-worker-<number>` or `-candidate-<number>`"
)]
pub struct InvalidName(pub String);

impl WorkspaceName {
    pub fn new(s: &str) -> Result<Self, InvalidName> {
        // `foo-agent` would own `devaipod-foo-agent-workspace`, which is `foo`'s agent volume.
        // `foo-worker-1` would own `devaipod-foo-worker-1-workspace`, a volume of `foo`'s
        // first worker.
        let ok = is_dns_label(s)
            && s.len() <= MAX_NAME_LEN
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !RESERVED_SUFFIXES.iter().any(|r| s.ends_with(r))
            && !ends_like_a_worker(s);
        if ok { Ok(WorkspaceName(s.to_owned(), None)) } else { Err(InvalidName(s.to_owned())) }
    }

    /// Derives a name from free text (a repository's directory or URL basename): lowercase,
    /// anything else becomes `-`, trimmed to the limit. Never fails.
    pub fn derive(text: &str) -> Self {
        let mut out = String::new();
        for c in text.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.insert_str(0, "ws-");
        }
        out.truncate(MAX_NAME_LEN - 3); // leave room for a `-NN` suffix
        while out.ends_with('-') {
            out.pop();
        }
        if RESERVED_SUFFIXES.iter().any(|r| out.ends_with(r)) || ends_like_a_worker(&out) {
            out.truncate(MAX_NAME_LEN - 6);
            out.push_str("-ws");
        }
        WorkspaceName(out, None)
    }

    /// The `n`th alternative when the name is taken: `name-2`, `name-3`, …
    pub fn with_suffix(&self, n: u32) -> Self {
        let suffix = format!("-{n}");
        let mut base = self.0.clone();
        base.truncate(MAX_NAME_LEN - suffix.len());
        while base.ends_with('-') {
            base.pop();
        }
        WorkspaceName(base + &suffix, None)
    }

    /// A warm pool member, named by its key (see [`is_pool_key`]) until a workspace takes it.
    pub fn pool_member(key: &str) -> Result<Self, InvalidName> {
        if is_pool_key(key) { Ok(WorkspaceName(key.to_owned(), None)) } else { Err(InvalidName(key.to_owned())) }
    }

    /// The same workspace, whose objects are those of pool member `key` (it took that
    /// member), or its own (`None`).
    pub fn in_pool_member(self, key: Option<String>) -> Self {
        WorkspaceName(self.0, key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What its objects are named after: the name, or the pool member's key it took.
    pub fn objects(&self) -> &str {
        self.1.as_deref().unwrap_or(&self.0)
    }

    /// The pool member's key, when the workspace took one.
    pub fn pool_key(&self) -> Option<&str> {
        self.1.as_deref()
    }

    pub fn pod(&self) -> String {
        format!("{PREFIX}{}", self.objects())
    }

    pub fn container(&self, role: Role) -> String {
        format!("{PREFIX}{}-{}", self.objects(), role.as_str())
    }

    pub fn workspace_volume(&self) -> String {
        format!("{PREFIX}{}-workspace", self.objects())
    }

    pub fn agent_workspace_volume(&self) -> String {
        format!("{PREFIX}{}-agent-workspace", self.objects())
    }

    pub fn agent_home_volume(&self) -> String {
        format!("{PREFIX}{}-agent-home", self.objects())
    }

    /// The container of compose service `service`: `devaipod-<name>_<service>`. A workspace
    /// name has no `_`, so no other workspace's object can have this name.
    pub fn service_container(&self, service: &str) -> String {
        format!("{PREFIX}{}_{service}", self.objects())
    }

    /// A named volume of the compose project: `devaipod-<name>_<volume>`.
    pub fn compose_volume(&self, volume: &str) -> String {
        format!("{PREFIX}{}_{volume}", self.objects())
    }

    /// The `n`th anonymous volume of compose service `service`: `devaipod-<name>__<service>-<n>`.
    pub fn service_volume(&self, service: &str, n: usize) -> String {
        format!("{PREFIX}{}__{service}-{n}", self.objects())
    }

    /// The container of worker agent `n` (1, 2, …).
    pub fn worker_container(&self, n: u32) -> String {
        self.extra_container(Extra::Worker, n)
    }

    /// Worker `n`'s clone.
    pub fn worker_workspace_volume(&self, n: u32) -> String {
        self.extra_workspace_volume(Extra::Worker, n)
    }

    /// Worker `n`'s HOME.
    pub fn worker_home_volume(&self, n: u32) -> String {
        self.extra_home_volume(Extra::Worker, n)
    }

    /// The container of the workspace's extra agent `n` of its kind (1, 2, …).
    pub fn extra_container(&self, kind: Extra, n: u32) -> String {
        format!("{PREFIX}{}-{}-{n}", self.objects(), kind.word())
    }

    /// The extra agent's clone.
    pub fn extra_workspace_volume(&self, kind: Extra, n: u32) -> String {
        format!("{}-workspace", self.extra_container(kind, n))
    }

    /// The extra agent's HOME.
    pub fn extra_home_volume(&self, kind: Extra, n: u32) -> String {
        format!("{}-home", self.extra_container(kind, n))
    }

    /// The extra agent of a container name of this workspace's (`devaipod-<ws>-<word>-<n>`).
    pub fn extra_of(&self, container: &str) -> Option<(Extra, u32)> {
        let rest = container.strip_prefix(PREFIX)?.strip_prefix(self.objects())?.strip_prefix('-')?;
        [Extra::Worker, Extra::Candidate].into_iter().find_map(|kind| {
            let n = rest.strip_prefix(kind.word())?.strip_prefix('-')?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse().ok())
                .flatten()
                .map(|n| (kind, n))
        })
    }
}

/// `…-worker-<digits>` or `…-candidate-<digits>`: the ending of extra agents' containers'
/// names.
fn ends_like_a_worker(s: &str) -> bool {
    [Extra::Worker, Extra::Candidate].into_iter().any(|kind| {
        s.rsplit_once(&format!("-{}-", kind.word()))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The labels of worker agent `n`'s container and volumes.
pub fn worker_labels(instance: &str, name: &WorkspaceName, n: u32) -> BTreeMap<String, String> {
    extra_labels(instance, name, Extra::Worker, n)
}

/// The labels of an extra agent's container and volumes.
pub fn extra_labels(instance: &str, name: &WorkspaceName, kind: Extra, n: u32) -> BTreeMap<String, String> {
    let mut l = labels(instance, name, None);
    l.insert(LABEL_ROLE.to_owned(), kind.word().to_owned());
    l.insert(kind.label().to_owned(), n.to_string());
    l
}

impl std::fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The labels every object of a workspace carries. `role` is `None` for the pod and
/// volumes shared by the pod. The workspace label is what the objects are named after
/// ([`WorkspaceName::objects`]): a pool member's key stays on everything made for the
/// workspace that took it.
pub fn labels(instance: &str, name: &WorkspaceName, role: Option<Role>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        (LABEL_WORKSPACE.to_owned(), name.objects().to_owned()),
        (LABEL_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ]);
    if let Some(role) = role {
        l.insert(LABEL_ROLE.to_owned(), role.as_str().to_owned());
    }
    l
}

/// The labels of a helper container that belongs to the instance but to no workspace (a
/// secret reader): instance, version and `role`. The daemon's start sweeps them by these.
pub fn helper_labels(instance: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        (LABEL_ROLE.to_owned(), role.to_owned()),
        (LABEL_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() {
        let n = WorkspaceName::new("hello").unwrap();
        assert_eq!(n.pod(), "devaipod-hello");
        assert_eq!(n.container(Role::Workspace), "devaipod-hello-workspace");
        assert_eq!(n.container(Role::Agent), "devaipod-hello-agent");
        assert_eq!(n.workspace_volume(), "devaipod-hello-workspace");
        assert_eq!(n.agent_workspace_volume(), "devaipod-hello-agent-workspace");
        assert_eq!(n.agent_home_volume(), "devaipod-hello-agent-home");
        assert_eq!(n.worker_container(2), "devaipod-hello-worker-2");
        assert_eq!(n.worker_workspace_volume(2), "devaipod-hello-worker-2-workspace");
        assert_eq!(n.worker_home_volume(2), "devaipod-hello-worker-2-home");
        assert_eq!(n.extra_container(Extra::Candidate, 3), "devaipod-hello-candidate-3");
        assert_eq!(n.extra_home_volume(Extra::Candidate, 3), "devaipod-hello-candidate-3-home");
        assert_eq!(n.extra_of("devaipod-hello-candidate-3"), Some((Extra::Candidate, 3)));
        assert_eq!(n.extra_of("devaipod-hello-worker-12"), Some((Extra::Worker, 12)));
        for not in
            ["devaipod-hello-agent", "devaipod-hello-worker-", "devaipod-hello-x-worker-1", "devaipod-hellox-worker-1"]
        {
            assert_eq!(n.extra_of(not), None, "{not}");
        }
        let l = extra_labels("run-1", &n, Extra::Candidate, 3);
        assert_eq!((l[LABEL_ROLE].as_str(), l[LABEL_CANDIDATE].as_str()), ("candidate", "3"));
        let l = worker_labels("run-1", &n, 2);
        assert_eq!(
            (l[LABEL_ROLE].as_str(), l[LABEL_WORKER].as_str(), l[LABEL_WORKSPACE].as_str()),
            ("worker", "2", "hello")
        );
    }

    #[test]
    fn a_workspace_in_a_pool_member_names_its_objects_after_the_member() {
        let n = WorkspaceName::new("hello").unwrap().in_pool_member(Some("pool.0123abcd".into()));
        assert_eq!(n.as_str(), "hello");
        assert_eq!(n.to_string(), "hello");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"hello\"");
        assert_eq!(n.pod(), "devaipod-pool.0123abcd");
        assert_eq!(n.container(Role::Agent), "devaipod-pool.0123abcd-agent");
        assert_eq!(n.workspace_volume(), "devaipod-pool.0123abcd-workspace");
        assert_eq!(n.extra_container(Extra::Worker, 1), "devaipod-pool.0123abcd-worker-1");
        assert_eq!(n.extra_of("devaipod-pool.0123abcd-worker-1"), Some((Extra::Worker, 1)));
        assert_eq!(n.extra_of("devaipod-hello-worker-1"), None);
        assert_eq!(labels("run-1", &n, None)[LABEL_WORKSPACE], "pool.0123abcd");
        // A member's key is no workspace name, and no workspace name is a member's key.
        let m = WorkspaceName::pool_member("pool.0123abcd").unwrap();
        assert_eq!(m.pod(), "devaipod-pool.0123abcd");
        for bad in ["pool.xyz12345", "pool.0123", "pool-0123abcd", "hello", "pool.0123ABCD"] {
            assert!(WorkspaceName::pool_member(bad).is_err(), "{bad}");
        }
        assert!(WorkspaceName::new("pool.0123abcd").is_err());
    }

    #[test]
    fn derive_makes_valid_labels() {
        for (input, want) in [
            ("My_Repo.git", "my-repo-git"),
            ("hello", "hello"),
            ("42things", "ws-42things"),
            ("--weird--", "weird"),
            ("", "ws"),
            ("foo-agent", "foo-agent-ws"),
            ("my-workspace", "my-workspace-ws"),
            ("app-worker-1", "app-worker-1-ws"),
            ("a".repeat(80).as_str(), &"a".repeat(37)),
        ] {
            let got = WorkspaceName::derive(input);
            assert_eq!(got.as_str(), want, "derive({input:?})");
            assert!(WorkspaceName::new(got.as_str()).is_ok(), "{got} must be valid");
        }
        let long = WorkspaceName::derive(&"b".repeat(80));
        assert_eq!(long.with_suffix(12).as_str().len(), 40);
        assert_eq!(WorkspaceName::derive("x").with_suffix(2).as_str(), "x-2");
    }

    #[test]
    fn invalid_names_are_rejected_with_the_rule() {
        for bad in [
            "",
            "Upper",
            "-a",
            "a-",
            "a_b",
            "1abc",
            &"a".repeat(41),
            "foo-agent",
            "x-workspace",
            "x-worker-12",
            "x-candidate-3",
        ] {
            let e = WorkspaceName::new(bad).unwrap_err().to_string();
            assert!(e.contains("lowercase letters, digits and `-`"), "{bad}: {e}");
        }
        for good in ["x-worker", "worker-1x", "x-worker-a"] {
            assert!(WorkspaceName::new(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn labels_carry_instance_workspace_role_version() {
        let n = WorkspaceName::new("w").unwrap();
        let l = labels("run-1", &n, Some(Role::Agent));
        assert_eq!(l[LABEL_INSTANCE], "run-1");
        assert_eq!(l[LABEL_WORKSPACE], "w");
        assert_eq!(l[LABEL_ROLE], "agent");
        assert_eq!(l[LABEL_VERSION], env!("CARGO_PKG_VERSION"));
        assert!(!labels("run-1", &n, None).contains_key(LABEL_ROLE));
    }

    #[test]
    fn helpers_carry_instance_role_and_version_but_no_workspace() {
        let l = helper_labels("run-1", ROLE_SECRET_READER);
        assert_eq!(
            l,
            BTreeMap::from([
                (LABEL_INSTANCE.to_owned(), "run-1".to_owned()),
                (LABEL_ROLE.to_owned(), "secret-reader".to_owned()),
                (LABEL_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ])
        );
    }
}
