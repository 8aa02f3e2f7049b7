//! Where podman's API socket is. No I/O beyond reading the environment.

use std::path::PathBuf;

/// The rootful socket, used when nothing else says otherwise.
pub const ROOTFUL_SOCKET: &str = "/run/podman/podman.sock";

/// Where the podman API socket is: `CONTAINER_HOST`/`DOCKER_HOST` (`unix://…`), else the
/// rootless socket under `$XDG_RUNTIME_DIR` for non-root users, else `/run/podman/podman.sock`.
pub fn default_socket() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    socket_from(
        var("CONTAINER_HOST"),
        var("DOCKER_HOST"),
        is_root(),
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
    )
}

/// The rule of [`default_socket`], given its inputs. A host that is not `unix://` (ssh,
/// tcp) is skipped: devaipod only speaks to a local socket.
fn socket_from(
    container_host: Option<String>,
    docker_host: Option<String>,
    root: bool,
    xdg_runtime_dir: Option<PathBuf>,
) -> PathBuf {
    for host in [container_host, docker_host].into_iter().flatten() {
        if let Some(path) = host.strip_prefix("unix://") {
            return PathBuf::from(path);
        }
    }
    match xdg_runtime_dir {
        Some(dir) if !root => dir.join("podman/podman.sock"),
        _ => PathBuf::from(ROOTFUL_SOCKET),
    }
}

/// Whether devaipod runs as root (rootful podman, `/run` paths).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_host_wins_over_docker_host() {
        let got = socket_from(Some("unix:///a.sock".into()), Some("unix:///b.sock".into()), true, None);
        assert_eq!(got, PathBuf::from("/a.sock"));
        let got = socket_from(None, Some("unix:///b.sock".into()), true, None);
        assert_eq!(got, PathBuf::from("/b.sock"));
    }

    #[test]
    fn a_host_that_is_not_a_unix_socket_is_skipped() {
        let got = socket_from(Some("ssh://me@host/run/podman.sock".into()), Some("unix:///b.sock".into()), true, None);
        assert_eq!(got, PathBuf::from("/b.sock"));
        let got = socket_from(Some("tcp://127.0.0.1:8080".into()), None, true, None);
        assert_eq!(got, PathBuf::from(ROOTFUL_SOCKET));
    }

    #[test]
    fn rootless_uses_the_runtime_dir_and_root_the_system_socket() {
        let xdg = Some(PathBuf::from("/run/user/1000"));
        assert_eq!(socket_from(None, None, false, xdg.clone()), PathBuf::from("/run/user/1000/podman/podman.sock"));
        assert_eq!(socket_from(None, None, true, xdg), PathBuf::from(ROOTFUL_SOCKET));
        assert_eq!(socket_from(None, None, false, None), PathBuf::from(ROOTFUL_SOCKET));
    }
}
