//! Where podman's API socket is and what to do when nothing answers there, decided as podman
//! itself decides: rootful for root, rootless (the user's own podman) for anyone else. No
//! I/O beyond reading the environment and whether a few paths exist.

use std::path::{Path, PathBuf};

/// The rootful socket: root's podman.
pub const ROOTFUL_SOCKET: &str = "/run/podman/podman.sock";

/// What the decisions depend on: the environment and a few facts of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub container_host: Option<String>,
    pub docker_host: Option<String>,
    /// Non-empty `XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// The effective uid.
    pub uid: u32,
    /// `/run/user/<uid>` exists (a login session or someone made it).
    pub run_user_exists: bool,
    /// systemd runs this host (`/run/systemd/system` exists), so `podman.socket` units do.
    pub systemd: bool,
}

impl Host {
    /// This process's view.
    pub fn current() -> Host {
        let var =
            |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(|v| v.to_string_lossy().into_owned());
        let uid = euid();
        Host {
            container_host: var("CONTAINER_HOST"),
            docker_host: var("DOCKER_HOST"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR").map(PathBuf::from),
            uid,
            run_user_exists: Path::new(&format!("/run/user/{uid}")).is_dir(),
            systemd: Path::new("/run/systemd/system").is_dir(),
        }
    }

    pub fn root(&self) -> bool {
        self.uid == 0
    }

    /// The socket given by `CONTAINER_HOST`, else `DOCKER_HOST`, when it is `unix://…`
    /// (devaipod only speaks to a local socket: ssh and tcp hosts are skipped).
    fn explicit_socket(&self) -> Option<(&'static str, PathBuf)> {
        [("CONTAINER_HOST", &self.container_host), ("DOCKER_HOST", &self.docker_host)]
            .into_iter()
            .find_map(|(var, host)| Some((var, PathBuf::from(host.as_deref()?.strip_prefix("unix://")?))))
    }

    /// The user's runtime directory: `$XDG_RUNTIME_DIR`, else `/run/user/<uid>` when it
    /// exists. `None` for root (root's podman and devaipod use `/run`).
    fn user_runtime_dir(&self) -> Option<PathBuf> {
        if self.root() {
            return None;
        }
        self.xdg_runtime_dir.clone().or_else(|| self.run_user_exists.then(|| self.run_user()))
    }

    fn run_user(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }

    /// Where podman's API socket is: `CONTAINER_HOST`/`DOCKER_HOST` (`unix://…`); else for
    /// root the rootful socket; else the user's own, `$XDG_RUNTIME_DIR/podman/podman.sock`
    /// or `/run/user/<uid>/podman/podman.sock`. Never the rootful socket for another user
    /// unless `CONTAINER_HOST` says so.
    pub fn socket(&self) -> PathBuf {
        if let Some((_, path)) = self.explicit_socket() {
            return path;
        }
        if self.root() {
            return PathBuf::from(ROOTFUL_SOCKET);
        }
        self.xdg_runtime_dir.clone().unwrap_or_else(|| self.run_user()).join("podman/podman.sock")
    }

    /// What to do when nothing answers at `socket`, for this user on this host.
    pub fn start_hint(&self, socket: &Path) -> String {
        if let Some((var, path)) = self.explicit_socket() {
            return format!(
                "{var} points at unix://{}: start podman's API service there, or unset {var} to use {}",
                path.display(),
                Host { container_host: None, docker_host: None, ..self.clone() }.socket().display()
            );
        }
        let dir = socket.parent().unwrap_or(Path::new("/"));
        if self.root() {
            return if self.systemd {
                "start it with `systemctl enable --now podman.socket` (or scripts/setup.sh)".to_owned()
            } else {
                format!(
                    "start it with scripts/setup.sh, or: mkdir -p {} && podman system service --time=0 unix://{} &\n  (or point CONTAINER_HOST at a running podman socket)",
                    dir.display(),
                    socket.display()
                )
            };
        }
        let service = format!("podman system service --time=0 unix://{} &", socket.display());
        match (self.systemd, self.user_runtime_dir()) {
            (true, Some(_)) => format!(
                "start your rootless podman with `systemctl --user enable --now podman.socket`, or: mkdir -p {} && {service}",
                dir.display()
            ),
            (false, Some(_)) => format!("start your rootless podman with: mkdir -p {} && {service}", dir.display()),
            (_, None) => format!(
                "you have no runtime directory (XDG_RUNTIME_DIR is not set and {run} does not exist: no login session); log in through one (or `loginctl enable-linger` as root), or have root run `install -d -m 0700 -o $(id -un) {run}`, then: export XDG_RUNTIME_DIR={run}; mkdir -p {} && {service}",
                dir.display(),
                run = self.run_user().display()
            ),
        }
    }

    /// The runtime directory of devaipod's `instance` (its API socket, pid file, the pods'
    /// sockets): `$DEVAIPOD_RUNTIME_DIR` (given as `explicit`), else for root
    /// `/run/devaipod/<instance>`, else `$XDG_RUNTIME_DIR/devaipod/<instance>`, else
    /// `/run/user/<uid>/devaipod/<instance>` when that exists. Never a directory shared
    /// with other users (such as `/tmp`): without one, `Err` says what to do.
    pub fn runtime_dir(&self, explicit: Option<PathBuf>, instance: &str) -> Result<PathBuf, String> {
        if let Some(dir) = explicit {
            return Ok(dir);
        }
        if self.root() {
            return Ok(Path::new("/run/devaipod").join(instance));
        }
        match self.user_runtime_dir() {
            Some(dir) => Ok(dir.join("devaipod").join(instance)),
            None => Err(format!(
                "no runtime directory for uid {uid}: XDG_RUNTIME_DIR is not set and {run} does not exist (no login session). Log in through a session (or have root run `loginctl enable-linger $(id -un)`), or have root run `install -d -m 0700 -o $(id -un) {run}` and export XDG_RUNTIME_DIR={run}, or set DEVAIPOD_RUNTIME_DIR to a directory only you can enter",
                uid = self.uid,
                run = self.run_user().display()
            )),
        }
    }
}

/// Where this process reaches podman's API (see [`Host::socket`]).
pub fn default_socket() -> PathBuf {
    Host::current().socket()
}

/// What to do when nothing answers at `socket`, for this process (see [`Host::start_hint`]).
pub fn start_hint(socket: &Path) -> String {
    Host::current().start_hint(socket)
}

/// Whether devaipod runs as root (rootful podman, `/run` paths).
pub fn is_root() -> bool {
    euid() == 0
}

/// The effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(uid: u32) -> Host {
        Host { uid, ..Host::default() }
    }

    fn with(h: Host, f: impl FnOnce(&mut Host)) -> Host {
        let mut h = h;
        f(&mut h);
        h
    }

    /// One row per situation: who runs, what the environment says → which socket.
    #[test]
    fn the_socket_is_found_as_podman_finds_it() {
        let xdg = |h: &mut Host| h.xdg_runtime_dir = Some("/run/user/1000".into());
        let rows: Vec<(&str, Host, &str)> = vec![
            ("root", host(0), ROOTFUL_SOCKET),
            ("root with XDG_RUNTIME_DIR", with(host(0), xdg), ROOTFUL_SOCKET),
            ("user with XDG_RUNTIME_DIR", with(host(1000), xdg), "/run/user/1000/podman/podman.sock"),
            (
                "user without XDG_RUNTIME_DIR: /run/user/<uid>, never the rootful socket",
                host(1001),
                "/run/user/1001/podman/podman.sock",
            ),
            (
                "CONTAINER_HOST wins over DOCKER_HOST",
                with(host(1000), |h| {
                    h.container_host = Some("unix:///a.sock".into());
                    h.docker_host = Some("unix:///b.sock".into());
                }),
                "/a.sock",
            ),
            ("DOCKER_HOST alone", with(host(0), |h| h.docker_host = Some("unix:///b.sock".into())), "/b.sock"),
            (
                "CONTAINER_HOST may point a user at the rootful socket",
                with(host(1000), |h| h.container_host = Some(format!("unix://{ROOTFUL_SOCKET}"))),
                ROOTFUL_SOCKET,
            ),
            (
                "an ssh host is skipped",
                with(host(0), |h| {
                    h.container_host = Some("ssh://me@host/run/podman.sock".into());
                    h.docker_host = Some("unix:///b.sock".into());
                }),
                "/b.sock",
            ),
            (
                "a tcp host is skipped",
                with(host(1000), |h| {
                    h.container_host = Some("tcp://127.0.0.1:8080".into());
                    xdg(h);
                }),
                "/run/user/1000/podman/podman.sock",
            ),
        ];
        for (what, h, want) in rows {
            assert_eq!(h.socket(), PathBuf::from(want), "{what}");
        }
    }

    #[test]
    fn the_runtime_dir_is_private_to_the_user_or_refused() {
        let ok = |h: Host, explicit: Option<&str>| h.runtime_dir(explicit.map(PathBuf::from), "work").unwrap();
        assert_eq!(ok(host(0), None), PathBuf::from("/run/devaipod/work"));
        assert_eq!(ok(host(1000), Some("/srv/rt")), PathBuf::from("/srv/rt"), "DEVAIPOD_RUNTIME_DIR wins");
        let xdg = with(host(1000), |h| h.xdg_runtime_dir = Some("/run/user/1000".into()));
        assert_eq!(ok(xdg, None), PathBuf::from("/run/user/1000/devaipod/work"));
        let run_user = with(host(1000), |h| h.run_user_exists = true);
        assert_eq!(
            ok(run_user, None),
            PathBuf::from("/run/user/1000/devaipod/work"),
            "no session, /run/user/<uid> made"
        );

        let e = host(1000).runtime_dir(None, "work").unwrap_err();
        assert!(
            e.starts_with(
                "no runtime directory for uid 1000: XDG_RUNTIME_DIR is not set and /run/user/1000 does not exist"
            ),
            "{e}"
        );
        assert!(e.contains("install -d -m 0700 -o $(id -un) /run/user/1000"), "{e}");
        assert!(e.contains("export XDG_RUNTIME_DIR=/run/user/1000"), "{e}");
        assert!(e.contains("DEVAIPOD_RUNTIME_DIR"), "{e}");
        assert!(!e.contains("/tmp"), "{e}");
    }

    #[test]
    fn the_hint_for_a_missing_socket_fits_the_user_and_the_host() {
        let hint = |h: Host| h.start_hint(&h.socket());
        let root = hint(host(0));
        assert!(
            root.contains("mkdir -p /run/podman && podman system service --time=0 unix:///run/podman/podman.sock &"),
            "{root}"
        );
        let root_systemd = hint(with(host(0), |h| h.systemd = true));
        assert!(root_systemd.contains("`systemctl enable --now podman.socket`"), "{root_systemd}");
        assert!(!root_systemd.contains("--user"), "{root_systemd}");

        let session = |h: &mut Host| h.xdg_runtime_dir = Some("/run/user/1000".into());
        let user_systemd = hint(with(host(1000), |h| {
            session(h);
            h.systemd = true;
        }));
        assert!(user_systemd.contains("`systemctl --user enable --now podman.socket`"), "{user_systemd}");
        let user = hint(with(host(1000), session));
        assert_eq!(
            user,
            "start your rootless podman with: mkdir -p /run/user/1000/podman && podman system service --time=0 unix:///run/user/1000/podman/podman.sock &"
        );
        assert!(!user.contains(ROOTFUL_SOCKET) && !user.contains("systemctl"), "{user}");

        let no_session = hint(host(1001));
        assert!(
            no_session.starts_with(
                "you have no runtime directory (XDG_RUNTIME_DIR is not set and /run/user/1001 does not exist"
            ),
            "{no_session}"
        );
        assert!(
            no_session.ends_with("export XDG_RUNTIME_DIR=/run/user/1001; mkdir -p /run/user/1001/podman && podman system service --time=0 unix:///run/user/1001/podman/podman.sock &"),
            "{no_session}"
        );

        let explicit = with(host(1000), |h| {
            session(h);
            h.container_host = Some("unix:///srv/p.sock".into());
        });
        assert_eq!(
            hint(explicit),
            "CONTAINER_HOST points at unix:///srv/p.sock: start podman's API service there, or unset CONTAINER_HOST to use /run/user/1000/podman/podman.sock"
        );
    }
}
