//! `devaipod systemd`: unit files for running the daemon under systemd — a service for the
//! host binary (user or system), and Quadlet files (`devaipod.container` +
//! `devaipod-state.volume`, podman ≥ 4.4) for the daemon in a container, with the same
//! mounts as `scripts/daemon-container.sh` (docs/container.md). Pure text rendering.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where a host unit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `~/.config/systemd/user/devaipod.service`, `systemctl --user`.
    User,
    /// `/etc/systemd/system/devaipod.service`, as root.
    System,
}

/// What the host unit needs to know.
#[derive(Debug, Clone)]
pub struct HostUnit {
    pub scope: Scope,
    /// The devaipod executable (absolute).
    pub exe: PathBuf,
    pub listen: String,
    /// `--config`, when one was given.
    pub config: Option<PathBuf>,
}

/// The service for the host binary.
pub fn host_unit(u: &HostUnit) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# devaipod daemon (the host binary); written by `devaipod systemd`");
    let _ = writeln!(s, "[Unit]");
    let _ = writeln!(s, "Description=devaipod daemon: AI coding agents in sandboxed podman pods");
    // The podman API socket, started on demand (podman's own socket unit).
    let _ = writeln!(s, "Wants=podman.socket");
    let _ = writeln!(s, "After=podman.socket network-online.target");
    let _ = writeln!(s);
    let _ = writeln!(s, "[Service]");
    let _ = writeln!(s, "Type=simple");
    let mut exec = format!("{} serve --listen {}", quote(&u.exe.display().to_string()), u.listen);
    if let Some(c) = &u.config {
        exec = format!(
            "{} --config {} serve --listen {}",
            quote(&u.exe.display().to_string()),
            quote(&c.display().to_string()),
            u.listen
        );
    }
    let _ = writeln!(s, "ExecStart={exec}");
    // SIGTERM stops the daemon gracefully (tasks resume in the next one); its children
    // (git) get the rest of the stop timeout.
    let _ = writeln!(s, "KillMode=mixed");
    let _ = writeln!(s, "TimeoutStopSec=70");
    let _ = writeln!(s, "Restart=on-failure");
    let _ = writeln!(s, "RestartSec=2");
    let _ = writeln!(s);
    let _ = writeln!(s, "[Install]");
    let _ = writeln!(
        s,
        "WantedBy={}",
        match u.scope {
            Scope::User => "default.target",
            Scope::System => "multi-user.target",
        }
    );
    s
}

/// What the Quadlet files need to know (rootful podman: the daemon in a container needs
/// the host's rootful socket).
#[derive(Debug, Clone)]
pub struct Quadlet {
    pub image: String,
    pub instance: String,
    pub listen: String,
    /// podman's storage root (`podman info --format '{{.Store.GraphRoot}}'`): the state
    /// volume is mounted at its own path under it.
    pub graph_root: PathBuf,
    /// Host directories with local repositories, mounted read-only at the same paths.
    pub sources: Vec<PathBuf>,
    /// A config file on the host, mounted read-only.
    pub config: Option<PathBuf>,
}

/// The name of the `.volume` file; Quadlet names the volume `systemd-<stem>`.
pub const VOLUME_FILE: &str = "devaipod-state.volume";
pub const CONTAINER_FILE: &str = "devaipod.container";
const SOCKET: &str = "/run/podman/podman.sock";
const SECCOMP: &str = "/usr/share/containers/seccomp.json";

impl Quadlet {
    /// The state volume's path on the host, which is also its path in the container.
    pub fn data_dir(&self) -> PathBuf {
        let stem = VOLUME_FILE.trim_end_matches(".volume");
        self.graph_root.join("volumes").join(format!("systemd-{stem}")).join("_data")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        Path::new("/run/devaipod").join(&self.instance)
    }

    /// `(file name, content)` of both files, for `/etc/containers/systemd/`.
    pub fn files(&self) -> [(&'static str, String); 2] {
        [(CONTAINER_FILE, self.container()), (VOLUME_FILE, volume())]
    }

    fn container(&self) -> String {
        let data = self.data_dir().display().to_string();
        let runtime = self.runtime_dir().display().to_string();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# devaipod daemon in a container (Quadlet, podman >= 4.4); written by `devaipod systemd --quadlet`"
        );
        let _ = writeln!(s, "# Every path the daemon hands to podman is a host path: the state volume is mounted at");
        let _ = writeln!(
            s,
            "# its own host path, the runtime directory and the podman socket at theirs (docs/container.md)."
        );
        let _ = writeln!(s, "[Unit]");
        let _ = writeln!(s, "Description=devaipod daemon (container)");
        let _ = writeln!(s, "Wants=podman.socket");
        let _ = writeln!(s, "After=podman.socket network-online.target");
        let _ = writeln!(s);
        let _ = writeln!(s, "[Container]");
        let _ = writeln!(s, "Image={}", self.image);
        let _ = writeln!(s, "ContainerName=devaipod");
        let _ = writeln!(s, "Exec=serve");
        // Host network: the API on the host's loopback, and the egress proxy reaching an
        // LLM on the host's loopback (host.containers.internal) as the host daemon does.
        let _ = writeln!(s, "Network=host");
        let _ = writeln!(s, "SecurityLabelDisable=true");
        let _ = writeln!(s, "RunInit=true");
        let _ = writeln!(s, "Label=io.devaipod.instance={}", self.instance);
        let _ = writeln!(s, "Label=io.devaipod.role=daemon");
        let _ = writeln!(s, "Volume={SOCKET}:{SOCKET}");
        let _ = writeln!(s, "Volume={VOLUME_FILE}:{data}");
        let _ = writeln!(s, "Volume={runtime}:{runtime}");
        let _ = writeln!(s, "Volume={SECCOMP}:{SECCOMP}:ro");
        for d in &self.sources {
            let d = d.display();
            let _ = writeln!(s, "Volume={d}:{d}:ro");
        }
        let _ = writeln!(s, "Environment=DEVAIPOD_DATA_DIR={data}");
        let _ = writeln!(s, "Environment=DEVAIPOD_RUNTIME_DIR={runtime}");
        let _ = writeln!(s, "Environment=DEVAIPOD_INSTANCE={}", self.instance);
        let _ = writeln!(s, "Environment=DEVAIPOD_LISTEN={}", self.listen);
        if let Some(c) = &self.config {
            let _ = writeln!(s, "Volume={}:/etc/devaipod/devaipod.toml:ro", c.display());
            let _ = writeln!(s, "Environment=DEVAIPOD_CONFIG=/etc/devaipod/devaipod.toml");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "[Service]");
        // The runtime directory outlives a restart: running pods mount their sockets' directory.
        let _ = writeln!(s, "ExecStartPre=/usr/bin/mkdir -p -m 0700 {runtime}");
        let _ = writeln!(s, "TimeoutStopSec=70");
        let _ = writeln!(s, "Restart=on-failure");
        let _ = writeln!(s);
        let _ = writeln!(s, "[Install]");
        let _ = writeln!(s, "WantedBy=multi-user.target");
        s
    }
}

fn volume() -> String {
    "# devaipod's state (database, token, repositories); written by `devaipod systemd --quadlet`\n[Unit]\nDescription=devaipod state\n\n[Volume]\nLabel=io.devaipod.role=daemon-state\n".to_owned()
}

/// A path in an `ExecStart=` line: quoted when it has a space.
fn quote(s: &str) -> String {
    if s.contains([' ', '"', '\\']) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A unit file as systemd reads it: sections of `key=value` lines (comments and blank
    /// lines skipped). Anything else is a format error.
    type Sections = Vec<(String, Vec<(String, String)>)>;

    fn parse(text: &str) -> Result<Sections, String> {
        let mut out: Sections = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                out.push((name.to_owned(), Vec::new()));
                continue;
            }
            let (k, v) = line.split_once('=').ok_or(format!("line {}: not key=value: {line}", n + 1))?;
            let section = out.last_mut().ok_or(format!("line {}: a key before any section", n + 1))?;
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("line {}: bad key {k:?}", n + 1));
            }
            section.1.push((k.to_owned(), v.to_owned()));
        }
        Ok(out)
    }

    fn values<'a>(sections: &'a [(String, Vec<(String, String)>)], section: &str, key: &str) -> Vec<&'a str> {
        sections
            .iter()
            .filter(|s| s.0 == section)
            .flat_map(|s| &s.1)
            .filter(|kv| kv.0 == key)
            .map(|kv| kv.1.as_str())
            .collect()
    }

    /// The keys of each Quadlet section in podman 4.4, the first release with Quadlet
    /// (podman-systemd.unit(5) of 4.4): the generator refuses unknown ones.
    const CONTAINER_KEYS_4_4: &[&str] = &[
        "AddCapability",
        "AddDevice",
        "Annotation",
        "ContainerName",
        "DropCapability",
        "Environment",
        "EnvironmentFile",
        "EnvironmentHost",
        "Exec",
        "ExposeHostPort",
        "Group",
        "HealthCmd",
        "Image",
        "IP",
        "IP6",
        "Label",
        "LogDriver",
        "Network",
        "NoNewPrivileges",
        "Notify",
        "PodmanArgs",
        "PublishPort",
        "ReadOnly",
        "RemapGid",
        "RemapUid",
        "RemapUidSize",
        "RemapUsers",
        "Rootfs",
        "RunInit",
        "SeccompProfile",
        "SecurityLabelDisable",
        "SecurityLabelFileType",
        "SecurityLabelLevel",
        "SecurityLabelType",
        "Timezone",
        "User",
        "UserNS",
        "VolatileTmp",
        "Volume",
    ];
    const VOLUME_KEYS_4_4: &[&str] = &["Copy", "Device", "Group", "Label", "Options", "Type", "User"];

    fn quadlet() -> Quadlet {
        Quadlet {
            image: "localhost/devaipod:latest".into(),
            instance: "default".into(),
            listen: "127.0.0.1:8080".into(),
            graph_root: "/var/lib/containers/storage".into(),
            sources: vec!["/home/me/src".into()],
            config: Some("/etc/devaipod.toml".into()),
        }
    }

    #[test]
    fn the_quadlet_container_is_valid_and_mounts_host_paths_at_the_same_paths() {
        let q = quadlet();
        let [(cname, container), (vname, volume)] = q.files();
        assert_eq!((cname, vname), ("devaipod.container", "devaipod-state.volume"));
        let c = parse(&container).unwrap();
        let names: Vec<&str> = c.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["Unit", "Container", "Service", "Install"]);
        for (k, _) in &c[1].1 {
            assert!(CONTAINER_KEYS_4_4.contains(&k.as_str()), "[Container] {k} is not a Quadlet key of podman 4.4");
        }
        assert_eq!(values(&c, "Container", "Image"), ["localhost/devaipod:latest"]);
        assert_eq!(values(&c, "Container", "Exec"), ["serve"]);
        assert_eq!(values(&c, "Container", "Network"), ["host"]);
        let data = "/var/lib/containers/storage/volumes/systemd-devaipod-state/_data";
        let volumes: BTreeMap<&str, &str> = values(&c, "Container", "Volume")
            .into_iter()
            .map(|v| {
                let mut p = v.splitn(3, ':');
                (p.next().unwrap(), p.next().unwrap())
            })
            .collect();
        assert_eq!(volumes["devaipod-state.volume"], data, "the state volume at its own host path");
        for same in
            ["/run/podman/podman.sock", "/run/devaipod/default", "/usr/share/containers/seccomp.json", "/home/me/src"]
        {
            assert_eq!(volumes[same], same, "{same} at the same path inside");
        }
        for dst in volumes.values() {
            assert!(dst.starts_with('/'), "{dst}");
        }
        let env = values(&c, "Container", "Environment");
        assert!(env.contains(&format!("DEVAIPOD_DATA_DIR={data}").as_str()), "{env:?}");
        assert!(env.contains(&"DEVAIPOD_RUNTIME_DIR=/run/devaipod/default"), "{env:?}");
        assert!(env.contains(&"DEVAIPOD_LISTEN=127.0.0.1:8080"), "{env:?}");
        assert!(env.contains(&"DEVAIPOD_CONFIG=/etc/devaipod/devaipod.toml"), "{env:?}");
        assert!(!values(&c, "Install", "WantedBy").is_empty());

        let v = parse(&volume).unwrap();
        assert_eq!(v.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["Unit", "Volume"]);
        for (k, _) in &v[1].1 {
            assert!(VOLUME_KEYS_4_4.contains(&k.as_str()), "[Volume] {k}");
        }
    }

    #[test]
    fn host_units_run_this_binary_for_the_user_or_the_system() {
        let u = HostUnit {
            scope: Scope::User,
            exe: "/usr/local/bin/devaipod".into(),
            listen: "127.0.0.1:8080".into(),
            config: None,
        };
        let p = parse(&host_unit(&u)).unwrap();
        assert_eq!(values(&p, "Service", "ExecStart"), ["/usr/local/bin/devaipod serve --listen 127.0.0.1:8080"]);
        assert_eq!(values(&p, "Install", "WantedBy"), ["default.target"]);
        assert_eq!(values(&p, "Service", "KillMode"), ["mixed"]);
        let u = HostUnit {
            scope: Scope::System,
            exe: "/opt/my tools/devaipod".into(),
            config: Some("/etc/d.toml".into()),
            ..u
        };
        let p = parse(&host_unit(&u)).unwrap();
        assert_eq!(
            values(&p, "Service", "ExecStart"),
            ["\"/opt/my tools/devaipod\" --config /etc/d.toml serve --listen 127.0.0.1:8080"]
        );
        assert_eq!(values(&p, "Install", "WantedBy"), ["multi-user.target"]);
    }
}
