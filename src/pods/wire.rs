//! libpod's JSON, as typed structs: the create requests devaipod sends (built by `spec.rs`)
//! and the answers it reads back, with their conversion into the engine's own types.
//! Pure: no I/O. Field names are podman 4.3's (`/v4.0.0/libpod`); the tests in `spec.rs`
//! pin the serialized names of the requests, the tests here read answers podman gave.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::engine::{ContainerInfo, EngineInfo, PodInfo, PublishedPort};
use super::naming::Role;

/// `POST /containers/create`: the subset of libpod's SpecGenerator devaipod sets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerCreate {
    pub name: String,
    /// Absent for a container outside any pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub image: String,
    /// Replaces the image's ENTRYPOINT; with `command`, the whole argv. Absent: the image's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD (empty: none). Absent: the image's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Variable name → podman secret name: the value is put into this container's
    /// environment by podman (`type=env`), never sent in `env`.
    pub secret_env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub init: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub volumes: Vec<NamedVolume>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_profile_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apparmor_profile: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selinux_opts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<Namespace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipcns: Option<Namespace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<LogConfiguration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub r_limits: Vec<RLimit>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
}

/// A POSIX resource limit, named as libpod takes it (`nofile`; it adds `RLIMIT_`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RLimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

/// A named volume mounted into a container (libpod spells these in PascalCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NamedVolume {
    pub name: String,
    pub dest: String,
    pub options: Vec<String>,
}

/// A bind or tmpfs mount (OCI runtime-spec field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub destination: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub path: String,
}

/// A namespace mode, e.g. `{"nsmode": "none"}` for no network at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub nsmode: String,
}

/// Where a container's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfiguration {
    pub driver: String,
    pub path: PathBuf,
}

/// `POST /pods/create`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodCreate {
    pub name: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub portmappings: Vec<PortMapping>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hostadd: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_ip: String,
    /// 0: a free port, chosen by podman.
    pub host_port: u16,
    pub protocol: String,
}

/// `POST /volumes/create`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeCreate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The body of every libpod error answer: `{"cause": …, "message": …, "response": N}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub cause: String,
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    /// What podman said went wrong: its message (which usually ends with the cause), else
    /// the cause, else the per-container errors of a pod start or stop (a 409), else the body
    /// as text; `None` when the body says nothing.
    pub fn reason(body: &[u8]) -> Option<String> {
        let said = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) if !e.message.trim().is_empty() => e.message,
            Ok(e) if !e.cause.trim().is_empty() => e.cause,
            // A pod's start or stop that failed answers 409 with its per-container report.
            Ok(_) => PodActionReport::errors(body).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(body).into_owned(),
        };
        let said = said.trim();
        (!said.is_empty()).then(|| said.to_owned())
    }

    /// Whether podman says the object exists already. Its causes (libpod's `define`
    /// errors) are "pod already exists", "container already exists", "volume already
    /// exists", and for secrets (answered 500) "secret name in use"; a name taken by a
    /// container reads "… is already in use by …". Nothing else counts: "volume is being
    /// used", "container state improper" and a pod that failed to start are other conflicts.
    pub fn says_exists(body: &[u8]) -> bool {
        let e: ErrorBody = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(_) => ErrorBody { cause: String::new(), message: String::from_utf8_lossy(body).into_owned() },
        };
        said_exists(&e.cause) || said_exists(&e.message)
    }
}

fn said_exists(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("already exists") || t.contains("name in use") || t.contains("is already in use")
}

/// What pod start and stop answer with 200: per-container errors, if any.
#[derive(Debug, Default, Deserialize)]
pub struct PodActionReport {
    #[serde(rename = "Errs", default)]
    pub errs: Option<Vec<serde_json::Value>>,
}

impl PodActionReport {
    /// The per-container errors joined, or `None` when there were none. A body that is not
    /// a report (podman's answers vary between versions) counts as no error.
    pub fn errors(body: &[u8]) -> Option<String> {
        let report: PodActionReport = serde_json::from_slice(body).unwrap_or_default();
        let errs = report.errs.unwrap_or_default();
        let msgs: Vec<String> = errs.iter().map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned)).collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }
}

/// One line of a build or pull stream.
#[derive(Debug, Default, Deserialize)]
pub struct ProgressLine {
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// `GET /pods/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedPod {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub containers: Vec<ListedPodContainer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedPodContainer {
    pub names: String,
    pub status: String,
}

impl ListedPod {
    pub fn into_info(self) -> PodInfo {
        PodInfo {
            containers: self
                .containers
                .into_iter()
                .map(|c| ContainerInfo { role: role_of(&c.names, &self.name), name: c.names, state: c.status })
                .collect(),
            name: self.name,
            status: self.status,
            created: self.created,
            labels: self.labels.unwrap_or_default(),
            ports: Vec::new(),
        }
    }
}

/// `GET /pods/{name}/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedPod {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub containers: Vec<InspectedPodContainer>,
    #[serde(default)]
    pub infra_config: Option<InfraConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedPodContainer {
    pub name: String,
    pub state: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InfraConfig {
    #[serde(default)]
    pub port_bindings: Option<BTreeMap<String, Vec<PortBinding>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    #[serde(default)]
    pub host_ip: String,
    pub host_port: String,
}

impl InspectedPod {
    pub fn into_info(self) -> PodInfo {
        let mut ports = Vec::new();
        for (key, bindings) in self.infra_config.and_then(|i| i.port_bindings).unwrap_or_default() {
            // `4096/tcp`
            let Some(container_port) = key.split('/').next().and_then(|p| p.parse().ok()) else {
                continue;
            };
            for b in bindings {
                if let Ok(host_port) = b.host_port.parse() {
                    ports.push(PublishedPort { container_port, host_ip: b.host_ip, host_port });
                }
            }
        }
        PodInfo {
            containers: self
                .containers
                .into_iter()
                .map(|c| ContainerInfo { role: role_of(&c.name, &self.name), name: c.name, state: c.state })
                .collect(),
            name: self.name,
            status: self.state,
            created: self.created,
            labels: self.labels.unwrap_or_default(),
            ports,
        }
    }
}

/// `GET /volumes/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedVolume {
    pub name: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `GET /containers/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedContainer {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `GET /containers/{name}/json`, the parts devaipod reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedContainer {
    #[serde(default)]
    pub config: Option<InspectedConfig>,
    #[serde(default)]
    pub host_config: Option<InspectedHostConfig>,
    #[serde(default)]
    pub mounts: Option<Vec<InspectedMount>>,
    #[serde(default)]
    pub state: Option<InspectedState>,
}

/// A container's state, as inspected.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedState {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub exit_code: i64,
}

/// One of a container's mounts, as inspected.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedMount {
    #[serde(default, rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedHostConfig {
    #[serde(default)]
    pub log_config: Option<InspectedLogConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedLogConfig {
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// `GET /images/{name}/json`: the parts devaipod reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedImage {
    pub id: String,
    #[serde(default)]
    pub config: Option<InspectedImageConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectedImageConfig {
    #[serde(default)]
    pub user: Option<String>,
}

impl InspectedContainer {
    /// The container's environment (`KEY=value` entries; an entry without `=` is skipped).
    pub fn env(&self) -> BTreeMap<String, String> {
        let entries = self.config.as_ref().and_then(|c| c.env.as_deref()).unwrap_or_default();
        entries.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    /// The host paths bind-mounted into the container.
    pub fn bind_sources(&self) -> impl Iterator<Item = &std::path::Path> {
        let mounts = self.mounts.as_deref().unwrap_or_default();
        mounts.iter().filter(|m| m.kind == "bind").filter_map(|m| m.source.as_deref())
    }

    /// Where a `k8s-file` log of the container is written.
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.host_config.as_ref()?.log_config.as_ref()?.path.as_deref()
    }
}

/// `GET /info`: what podman says about itself (the fields `devaipod doctor` shows).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SystemInfo {
    pub host: InfoHost,
    pub store: InfoStore,
    pub version: InfoVersion,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InfoHost {
    pub cgroup_version: String,
    pub cgroup_manager: String,
    pub oci_runtime: InfoRuntime,
    pub security: InfoSecurity,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct InfoRuntime {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct InfoSecurity {
    pub rootless: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InfoStore {
    pub graph_driver_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InfoVersion {
    pub version: String,
    #[serde(rename = "APIVersion")]
    pub api_version: String,
}

impl SystemInfo {
    /// The engine's form; the runtime's version is its first line (`runc version 1.1.5`).
    pub fn into_info(self, socket: PathBuf) -> EngineInfo {
        let runtime_version = self.host.oci_runtime.version.lines().next().unwrap_or_default().trim().to_owned();
        EngineInfo {
            socket,
            version: self.version.version,
            api_version: self.version.api_version,
            rootless: self.host.security.rootless,
            cgroup_version: self.host.cgroup_version,
            cgroup_manager: self.host.cgroup_manager,
            runtime: self.host.oci_runtime.name,
            runtime_version,
            storage_driver: self.store.graph_driver_name,
        }
    }
}

/// Podman combines several label filters with OR for some object types (seen on 4.3 for
/// pods and volumes), so every listing checks all labels itself as well.
pub fn has_all(have: Option<&BTreeMap<String, String>>, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| have.and_then(|h| h.get(*k)).is_some_and(|x| x == v))
}

/// The role of a container, from its name `devaipod-<name>-<role>` (infra has none).
pub fn role_of(container: &str, pod: &str) -> Option<Role> {
    container.strip_prefix(pod)?.strip_prefix('-').and_then(Role::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_require_every_label() {
        let have = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
        assert!(has_all(Some(&have), &[("a", "1"), ("b", "2")]));
        assert!(!has_all(Some(&have), &[("a", "1"), ("b", "3")]));
        assert!(!has_all(None, &[("a", "1")]));
        assert!(has_all(None, &[]));
    }

    #[test]
    fn roles_come_from_container_names() {
        assert_eq!(role_of("devaipod-w-agent", "devaipod-w"), Some(Role::Agent));
        assert_eq!(role_of("devaipod-w-workspace", "devaipod-w"), Some(Role::Workspace));
        assert_eq!(role_of("1234abcd-infra", "devaipod-w"), None);
        assert_eq!(role_of("devaipod-wx-agent", "devaipod-w"), None, "another pod's prefix");
    }

    /// As podman 4.3.1 answered `GET /pods/json` (ids shortened).
    #[test]
    fn a_listed_pod_becomes_pod_info() {
        let body = r#"[{"Cgroup":"/libpod_parent","Containers":[
            {"Id":"761c","Names":"6212109c7ef1-infra","Status":"running"},
            {"Id":"8f82","Names":"devaipod-w-agent","Status":"exited"}],
            "Created":"2026-12-02T00:42:54.066495924Z","Id":"6212","InfraId":"761c","Name":"devaipod-w",
            "Namespace":"","Networks":["podman"],"Status":"Degraded","Labels":{"io.devaipod.instance":"t"}}]"#;
        let pods: Vec<ListedPod> = serde_json::from_str(body).unwrap();
        let info = pods.into_iter().next().unwrap().into_info();
        assert_eq!(info.name, "devaipod-w");
        assert_eq!(info.status, "Degraded");
        assert_eq!(info.created, "2026-12-02T00:42:54.066495924Z");
        assert_eq!(info.labels, BTreeMap::from([("io.devaipod.instance".to_owned(), "t".to_owned())]));
        assert_eq!(
            info.containers,
            [
                ContainerInfo { name: "6212109c7ef1-infra".into(), role: None, state: "running".into() },
                ContainerInfo { name: "devaipod-w-agent".into(), role: Some(Role::Agent), state: "exited".into() },
            ]
        );
        assert_eq!(info.ports, []);
    }

    /// As podman 4.3.1 answered `GET /pods/{name}/json` (the parts read).
    #[test]
    fn an_inspected_pod_reports_its_published_ports() {
        let body = r#"{"Name":"devaipod-w","State":"Running","Created":"c","Labels":null,
            "Containers":[{"Id":"761c","Name":"6212109c7ef1-infra","State":"running"}],
            "InfraConfig":{"PortBindings":{"4096/tcp":[{"HostIp":"127.0.0.1","HostPort":"43497"}],
            "bad/tcp":[{"HostIp":"127.0.0.1","HostPort":"1"}],"8000/tcp":[{"HostIp":"127.0.0.1","HostPort":""}]},
            "HostNetwork":false}}"#;
        let info = serde_json::from_str::<InspectedPod>(body).unwrap().into_info();
        assert_eq!(info.status, "Running");
        assert_eq!(info.labels, BTreeMap::new());
        assert_eq!(info.ports, [PublishedPort { container_port: 4096, host_ip: "127.0.0.1".into(), host_port: 43497 }]);
    }

    #[test]
    fn error_bodies_give_podmans_own_reason() {
        let body = br#"{"cause":"no such pod","message":"no pod with name or ID x found: no such pod","response":404}"#;
        assert_eq!(ErrorBody::reason(body).as_deref(), Some("no pod with name or ID x found: no such pod"));
        assert_eq!(
            ErrorBody::reason(br#"{"cause":"secret name in use","message":""}"#).as_deref(),
            Some("secret name in use")
        );
        assert_eq!(ErrorBody::reason(b"plain text\n").as_deref(), Some("plain text"));
        assert_eq!(ErrorBody::reason(b""), None, "a 304 has no body");
        // podman 4.3.1's 409 to a pod start whose container cannot start.
        let report = br#"{"Errs":["starting container 1985: runc: exec: \"/x\": stat /x: no such file or directory"],"Id":"658f"}"#;
        assert_eq!(
            ErrorBody::reason(report).as_deref(),
            Some(r#"starting container 1985: runc: exec: "/x": stat /x: no such file or directory"#)
        );
    }

    #[test]
    fn pod_action_reports_name_each_container_error() {
        assert_eq!(PodActionReport::errors(br#"{"Errs":null,"Id":"6212"}"#), None);
        assert_eq!(PodActionReport::errors(br#"{"Errs":[],"Id":"6212"}"#), None);
        assert_eq!(PodActionReport::errors(b""), None);
        assert_eq!(
            PodActionReport::errors(br#"{"Errs":["a failed",{"x":1}],"Id":"6212"}"#).as_deref(),
            Some(r#"a failed; {"x":1}"#)
        );
    }

    #[test]
    fn an_inspected_container_gives_env_and_log_path() {
        let body = r#"{"Config":{"Env":["A=1","B=x=y","NOEQ"]},
            "HostConfig":{"LogConfig":{"Type":"k8s-file","Config":null,"Path":"/run/x/c.log","Tag":"","Size":"0B"}}}"#;
        let c: InspectedContainer = serde_json::from_str(body).unwrap();
        assert_eq!(c.env(), BTreeMap::from([("A".to_owned(), "1".to_owned()), ("B".to_owned(), "x=y".to_owned())]));
        assert_eq!(c.log_path(), Some(std::path::Path::new("/run/x/c.log")));
        let empty: InspectedContainer = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.env(), BTreeMap::new());
        assert_eq!(empty.log_path(), None);
        assert_eq!(empty.bind_sources().count(), 0);
    }

    #[test]
    fn an_inspected_container_gives_its_bind_sources() {
        // Podman 4.3's answer for `-v /tmp/x:/opt/x:ro`, and a named volume.
        let body = r#"{"Mounts":[
            {"Type":"bind","Source":"/tmp/x","Destination":"/opt/x","Driver":"","Mode":"","Options":["rbind"],"RW":false,"Propagation":"rprivate"},
            {"Type":"volume","Name":"v","Source":"/var/lib/containers/storage/volumes/v/_data","Destination":"/w","Driver":"local","Mode":"","Options":["nosuid","nodev","rbind"],"RW":true,"Propagation":"rprivate"}]}"#;
        let c: InspectedContainer = serde_json::from_str(body).unwrap();
        assert_eq!(c.bind_sources().collect::<Vec<_>>(), [std::path::Path::new("/tmp/x")]);
    }

    #[test]
    fn system_info_as_podman_4_3_gives_it() {
        let body = r#"{"host":{"cgroupVersion":"v1","cgroupManager":"cgroupfs","ociRuntime":{"name":"runc",
            "version":"runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev"},
            "security":{"rootless":false},"arch":"amd64"},"store":{"graphDriverName":"overlay"},
            "version":{"APIVersion":"4.3.1","Version":"4.3.1","GoVersion":"go1.19.8"}}"#;
        let info = serde_json::from_str::<SystemInfo>(body).unwrap().into_info("/run/podman/podman.sock".into());
        assert_eq!((info.version.as_str(), info.api_version.as_str(), info.rootless), ("4.3.1", "4.3.1", false));
        assert_eq!((info.cgroup_version.as_str(), info.cgroup_manager.as_str()), ("v1", "cgroupfs"));
        assert_eq!((info.runtime.as_str(), info.runtime_version.as_str()), ("runc", "runc version 1.1.5+ds1"));
        assert_eq!(info.storage_driver, "overlay");
    }
}
