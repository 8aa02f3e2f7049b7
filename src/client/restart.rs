//! `devaipod restart-daemon`, and the client's automatic restart of an older daemon: wait
//! until no task is being delivered, ask the daemon to stop (it finishes the requests under
//! way and exits; a daemon from before `/api/v1/shutdown` gets SIGTERM), wait until it has
//! released the instance's lock, and start this binary as the new daemon, which resumes
//! the tasks as it does after a crash (exactly-once delivery, one proposal per task).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Client, ClientError, DaemonVersion, UnixSocket, healthy};
use crate::core::{Paths, TaskQuery};

/// Longest wait for tasks being delivered before restarting anyway (they resume safely).
const DELIVERY_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for the daemon to stop (it finishes an `up` under way, which may build).
const STOP_WAIT: Duration = Duration::from_secs(600);
/// Longest wait for a daemon that holds the lock but does not answer yet (starting).
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// What a restart did.
#[derive(Debug, Clone)]
pub struct Restarted {
    /// The daemon stopped: its pid and (unless it did not report one) its version.
    pub stopped: Option<(u32, Option<DaemonVersion>)>,
    pub started: DaemonVersion,
    /// Tasks the new daemon drives on (resumed).
    pub resumed: usize,
}

impl Restarted {
    pub fn summary(&self) -> String {
        let new = format!("pid {}, devaipod {}", self.started.pid, self.started.version);
        match &self.stopped {
            Some((pid, old)) => {
                let old = old.as_ref().map_or(String::new(), |v| format!(", devaipod {}", v.version));
                format!(
                    "restarted the devaipod daemon (pid {pid}{old} → {new}); {} unfinished task(s) resumed",
                    self.resumed
                )
            }
            None => format!("no devaipod daemon was running; started one ({new})"),
        }
    }
}

impl Client {
    /// Restarts this instance's daemon with this executable; `say` hears what it waits for.
    pub async fn restart_daemon(
        paths: &Paths,
        config: Option<&Path>,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<Restarted, ClientError> {
        let socket = paths.socket();
        let lock = paths.lock_file();
        if !healthy(&socket).await {
            let start = Instant::now();
            while !lock_is_free(&lock) && !healthy(&socket).await {
                if start.elapsed() > ANSWER_WAIT {
                    let pid = read_pid(paths).map_or("?".to_owned(), |p| p.to_string());
                    return Err(ClientError::Restart(format!(
                        "a daemon (pid {pid}) holds {} but does not answer on {}: stop it (`kill {pid}`) and try again",
                        lock.display(),
                        socket.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let mut stopped = None;
        if healthy(&socket).await {
            let old = Client::new(std::sync::Arc::new(UnixSocket::new(&socket)));
            let version = old.daemon_version().await?;
            if let Some(s) = version.as_ref().and_then(|v| v.supervisor.as_ref()) {
                return Err(ClientError::Restart(format!(
                    "the daemon runs under {}: restart it with `{}`",
                    s.name, s.restart
                )));
            }
            wait_for_deliveries(&old, say).await?;
            let pid = match &version {
                Some(v) => {
                    old.shutdown().await?;
                    v.pid
                }
                None => terminate_legacy(paths)?,
            };
            let start = Instant::now();
            let mut told = Instant::now();
            while !lock_is_free(&lock) {
                if start.elapsed() > STOP_WAIT {
                    return Err(ClientError::Restart(format!(
                        "the daemon (pid {pid}) did not stop within {} s",
                        STOP_WAIT.as_secs()
                    )));
                }
                if told.elapsed() > Duration::from_secs(15) {
                    say(&format!("waiting for the daemon (pid {pid}) to finish the work under way and stop…"));
                    told = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Gone altogether: an older daemon removes its socket after releasing the lock.
            let start = Instant::now();
            while alive(pid) && start.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stopped = Some((pid, version));
        }
        let new = Client::connect_or_start(paths, config).await?;
        let started = new.daemon_version().await?.ok_or_else(|| {
            ClientError::Restart("the new daemon does not report its version: is this devaipod the one started?".into())
        })?;
        let tasks = new.tasks(&TaskQuery::default()).await?;
        let resumed = tasks.iter().filter(|t| !t.state.is_final()).count();
        Ok(Restarted { stopped, started, resumed })
    }
}

/// Waits (at most [`DELIVERY_WAIT`]) until no task's prompt is on its way to its agent.
async fn wait_for_deliveries(c: &Client, say: &(dyn Fn(&str) + Sync)) -> Result<(), ClientError> {
    let start = Instant::now();
    let mut told = false;
    loop {
        let delivering = c.delivering().await?;
        if delivering.is_empty() {
            return Ok(());
        }
        if start.elapsed() > DELIVERY_WAIT {
            say(&format!(
                "task {} is still being delivered after {} s; restarting anyway: it resumes as after a crash (its prompt reaches the agent once)",
                delivering.join(", "),
                DELIVERY_WAIT.as_secs()
            ));
            return Ok(());
        }
        if !told {
            say(&format!("waiting until task {} is delivered to its agent…", delivering.join(", ")));
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether no process holds the daemon's lock (none runs, or it has exited).
fn lock_is_free(lock: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock) else {
        return true; // no runtime directory: no daemon
    };
    f.try_lock().is_ok() // released when `f` is dropped
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) S …`: the state follows the last `)`.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|s| s != 'Z')
}

fn read_pid(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(paths.pid_file()).ok()?.trim().parse().ok()
}

/// Stops a daemon from before `/api/v1/shutdown` with SIGTERM (its graceful stop), after
/// checking that the pid file names a `devaipod … serve` process.
fn terminate_legacy(paths: &Paths) -> Result<u32, ClientError> {
    let pid = read_pid(paths)
        .ok_or_else(|| ClientError::Restart(format!("no daemon pid in {}", paths.pid_file().display())))?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_daemon =
        args.first().is_some_and(|a| a.windows(8).any(|w| w == b"devaipod")) && args.iter().any(|a| *a == b"serve");
    if !is_daemon {
        return Err(ClientError::Restart(format!(
            "process {pid} (from {}) is not a devaipod daemon",
            paths.pid_file().display()
        )));
    }
    // SAFETY: kill has no memory preconditions; the pid was checked just above.
    let rc = unsafe { libc_kill(pid as i32, SIGTERM) };
    if rc != 0 {
        return Err(ClientError::Restart(format!(
            "cannot signal the daemon (pid {pid}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(pid)
}

const SIGTERM: i32 = 15;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
