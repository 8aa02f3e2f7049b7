//! The daemon process as the API sees it: what it reports of itself (`GET /api/v1/version`:
//! version, API and schema versions, executable, whether that was replaced since it started,
//! its bridge copy, its service manager), how it is asked to stop (`POST /api/v1/shutdown`),
//! and the work a stop waits for (state-changing requests under way and `up`s, which go on
//! when their client leaves). The daemon makes one and `serve` hands it to both listeners;
//! without one (tests, the in-process client) the version is this process's and nothing
//! can stop it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::version::{Build, DaemonVersion, Supervisor};

pub struct DaemonProcess {
    /// The executable it was started from, and that file's identity (device, inode) then.
    exe: PathBuf,
    exe_id: Option<(u64, u64)>,
    bridge: Option<PathBuf>,
    supervisor: Option<Supervisor>,
    stop: CancellationToken,
    work: TaskTracker,
}

impl DaemonProcess {
    /// This process; `bridge` is the copy of its executable agent containers run.
    pub fn new(bridge: Option<PathBuf>) -> Arc<DaemonProcess> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let supervisor = supervisor_from(std::env::var("INVOCATION_ID").ok().as_deref(), &cgroup);
        DaemonProcess::with_supervisor(bridge, supervisor)
    }

    /// This process, run by `supervisor` (or by no service manager).
    pub fn with_supervisor(bridge: Option<PathBuf>, supervisor: Option<Supervisor>) -> Arc<DaemonProcess> {
        let exe = std::env::current_exe().unwrap_or_default();
        // `current_exe` of an executable unlinked already reads `… (deleted)`.
        let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(s) => PathBuf::from(s),
            None => exe,
        };
        let exe_id = file_id(Path::new("/proc/self/exe")).or_else(|| file_id(&exe));
        Arc::new(DaemonProcess {
            exe,
            exe_id,
            bridge,
            supervisor,
            stop: CancellationToken::new(),
            work: TaskTracker::new(),
        })
    }

    /// Whether the path it was started from holds another file now (an upgrade or a
    /// rebuild replaced it, or it was removed).
    pub fn exe_replaced(&self) -> bool {
        self.exe_id.is_some() && file_id(&self.exe) != self.exe_id
    }

    pub fn version(&self) -> DaemonVersion {
        DaemonVersion {
            exe_replaced: self.exe_replaced(),
            bridge: self.bridge.as_ref().map(|b| b.display().to_string()),
            supervisor: self.supervisor.clone(),
            exe: self.exe.display().to_string(),
            ..version_of_this_process()
        }
    }

    pub fn supervisor(&self) -> Option<&Supervisor> {
        self.supervisor.as_ref()
    }

    /// Asks the daemon to stop (answered by [`DaemonProcess::stop_requested`]).
    pub fn request_stop(&self) {
        self.stop.cancel();
    }

    pub async fn stop_requested(&self) {
        self.stop.cancelled().await
    }

    /// The work a stop waits for: spawn what must finish before the daemon exits here.
    pub fn work(&self) -> &TaskTracker {
        &self.work
    }

    /// Resolves when no tracked work is left (call after the listeners stopped taking
    /// requests).
    pub async fn work_done(&self) {
        self.work.close();
        self.work.wait().await
    }
}

/// This process's version, as a daemon without a [`DaemonProcess`] reports it.
pub fn version_of_this_process() -> DaemonVersion {
    let own = Build::own();
    DaemonVersion {
        version: own.version,
        api: own.api,
        schema: crate::store::SCHEMA_VERSION,
        pid: std::process::id(),
        exe: std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        exe_replaced: false,
        bridge: None,
        supervisor: None,
    }
}

/// Middleware: a state-changing request holds the daemon's stop until it is answered.
pub async fn track(process: axum::extract::State<Arc<DaemonProcess>>, req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    let _token = process.work.token();
    next.run(req).await
}

fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// The service manager running this process: systemd sets `INVOCATION_ID` for a service,
/// whose unit is the last `.service` of the process's cgroup path (under `user@…` for a
/// user unit).
pub fn supervisor_from(invocation_id: Option<&str>, cgroup: &str) -> Option<Supervisor> {
    invocation_id.filter(|v| !v.trim().is_empty())?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or_default();
    let unit = path.rsplit('/').find(|c| c.ends_with(".service") && !c.starts_with("user@"));
    let user = if path.contains("/user@") { "--user " } else { "" };
    Some(match unit {
        Some(u) => Supervisor { name: format!("systemd unit {u}"), restart: format!("systemctl {user}restart {u}") },
        None => Supervisor { name: "systemd".into(), restart: format!("systemctl {user}restart <its unit>") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_systemd_service_is_recognised_with_its_unit() {
        assert_eq!(
            supervisor_from(None, "0::/user.slice/user-1000.slice/user@1000.service/app.slice/devaipod.service\n"),
            None
        );
        let user = supervisor_from(
            Some("abc"),
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/devaipod.service\n",
        );
        assert_eq!(
            user,
            Some(Supervisor {
                name: "systemd unit devaipod.service".into(),
                restart: "systemctl --user restart devaipod.service".into()
            })
        );
        let system = supervisor_from(Some("abc"), "0::/system.slice/devaipod@work.service\n").unwrap();
        assert_eq!(system.restart, "systemctl restart devaipod@work.service");
        let unknown = supervisor_from(Some("abc"), "12:pids:/\n").unwrap();
        assert_eq!(unknown.restart, "systemctl restart <its unit>");
    }

    #[test]
    fn a_replaced_executable_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("devaipod");
        std::fs::write(&exe, b"one").unwrap();
        let p = DaemonProcess {
            exe: exe.clone(),
            exe_id: file_id(&exe),
            bridge: None,
            supervisor: None,
            stop: CancellationToken::new(),
            work: TaskTracker::new(),
        };
        assert!(!p.exe_replaced());
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, b"two").unwrap();
        std::fs::rename(&tmp, &exe).unwrap();
        assert!(p.exe_replaced(), "renamed over");
        std::fs::remove_file(&exe).unwrap();
        assert!(p.exe_replaced(), "removed");
    }
}
