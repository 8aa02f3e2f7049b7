//! `devaipod serve`: the daemon that owns all state. It opens the store (refusing one of a
//! newer schema), removes the helper containers a previous daemon of this instance left
//! behind, copies its own executable for agent containers (`exe.rs`: they never mount a
//! file an upgrade may replace) and removes the copies no container uses, resumes the
//! tasks it left running and the removals of deleted workspaces it did not finish, opens
//! every pod's gator socket, and serves the API on the unix socket and on loopback TCP until
//! SIGTERM, Ctrl-C or `POST /api/v1/shutdown`; then it finishes the work under way and
//! exits, and the next daemon resumes the tasks.

pub mod exe;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::config::{Config, EngineKind};
use crate::core::{ANOTHER_DAEMON, Core, Paths};
use crate::pods::kube::Kube;
use crate::pods::podman::default_socket;
use crate::pods::{Engine, Podman};
use crate::store::Store;
use crate::web;
use crate::web::process::DaemonProcess;

pub async fn run(config: Config, listen: &str) -> Result<()> {
    match config.engine.kind {
        EngineKind::Podman => {
            let engine = Podman::new(&default_socket())?;
            serve_on(config, listen, engine).await
        }
        EngineKind::Kubernetes => {
            let (ctx, ns) = (config.engine.context.clone(), config.engine.namespace.clone());
            let node = std::env::var("DEVAIPOD_KUBE_NODE").ok().or(config.engine.node.clone());
            let engine = Kube::connect(ctx.as_deref(), ns.as_deref()).await?.with_node(node);
            engine.ping().await.context("the Kubernetes API does not answer")?;
            tracing::info!("workspaces run on Kubernetes, namespace {}", engine.namespace());
            serve_on(config, listen, engine).await
        }
    }
}

/// The daemon on `engine`.
async fn serve_on<E: Engine>(config: Config, listen: &str, engine: E) -> Result<()> {
    let paths = Paths::for_instance(config.instance.as_str()).map_err(anyhow::Error::msg)?;
    paths.create().map_err(anyhow::Error::msg)?;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(paths.lock_file())?;
    if lock.try_lock().is_err() {
        bail!("{ANOTHER_DAEMON} {} ({})", config.instance, paths.runtime.display());
    }
    if crate::client::healthy(&paths.socket()).await {
        bail!("a devaipod daemon already serves {} (instance {})", paths.socket().display(), config.instance);
    }
    let store = Store::open(&paths.db())?;
    let token = web::auth::load_or_create(&paths.token())
        .with_context(|| format!("cannot write {}", paths.token().display()))?;
    let addr = web::parse_listen(listen).map_err(anyhow::Error::msg)?;
    let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let bound = tcp.local_addr()?;
    std::fs::write(paths.runtime.join("listen"), bound.to_string())?;
    std::fs::write(paths.pid_file(), std::process::id().to_string())?;

    sweep_helpers(&engine, config.instance.as_str()).await;
    let bin = paths.data.join("bin");
    let bridge = {
        let bin = bin.clone();
        tokio::task::spawn_blocking(move || exe::install(&exe::running(), &bin)).await??
    };
    collect_copies(&engine, config.instance.as_str(), &bin, &bridge).await;
    let process = DaemonProcess::new(Some(bridge.clone()));
    let mut core: Arc<Core<E>> = Core::new(config, engine, store, paths.clone());
    if std::env::var("DEVAIPOD_COPY_OPENCODE").as_deref() == Ok("1") {
        // In a container: its image's opencode, copied where podman (on the host) finds it.
        let (from, data) = (core.opencode_dir.clone(), paths.data.clone());
        let dir = tokio::task::spawn_blocking(move || exe::install_opencode(&from, &data)).await??;
        match Arc::get_mut(&mut core) {
            Some(c) => c.opencode_dir = dir,
            None => bail!("the core is shared before the daemon set it up"),
        }
    }
    let gator_shutdown = tokio_util::sync::CancellationToken::new();
    let sockets = crate::gator::PodSockets::new(&core, gator_shutdown.clone(), bridge);
    // Workspaces in former pool members: their socket directories are links to the
    // members' before gator opens their sockets.
    core.load_pool().await?;
    sockets.open_all().await?;
    core.set_endpoints(sockets);
    let ssh = if core.config.ssh.enabled {
        match crate::ssh::start(core.clone(), gator_shutdown.clone()).await {
            Ok(addr) => format!("; SSH on {addr}"),
            Err(e) => {
                tracing::warn!("{e}");
                format!("; no SSH ({e})")
            }
        }
    } else {
        let _ = std::fs::remove_file(crate::ssh::listen_file(&paths));
        String::new()
    };
    let resumed = core.resume_tasks().await?;
    core.resume_sets().await?;
    core.spawn_worker_reaper(gator_shutdown.clone());
    // What a crash left of the pool is finished before anything is served.
    if let Err(e) = core.recover_pool().await {
        tracing::warn!("pool: recovering after a restart: {e}");
    }
    core.keep_pool(gator_shutdown.clone());
    match core.resume_removals().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("finishing the removal of {n} deleted workspace(s) an earlier daemon left"),
        Err(e) => tracing::warn!("{e}"),
    }
    eprintln!(
        "devaipod daemon {} (pid {}, instance {}): API on {} and http://{bound}{ssh}; {resumed} task(s) resumed",
        process.version().version,
        std::process::id(),
        core.instance(),
        paths.socket().display()
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    web::serve(core.clone(), token, tcp, &paths.socket(), process.clone(), shutdown).await?;
    // No request is taken any more; an `up` whose client left may still be at work.
    if tokio::time::timeout(web::WORK_GRACE, process.work_done()).await.is_err() {
        tracing::warn!("stopping with work under way after {} s", web::WORK_GRACE.as_secs());
    }
    gator_shutdown.cancel();
    // Removals of deleted workspaces get a moment to finish; any left are finished at the
    // next start (their records stay).
    let pending = core.settle_removals(REMOVALS_AT_STOP).await;
    if pending > 0 {
        tracing::info!("{pending} removal(s) of deleted workspaces left for the next start");
    }
    // The files go before the lock: the next daemon may start as soon as the lock is free.
    let _ = std::fs::remove_file(paths.pid_file());
    let _ = std::fs::remove_file(paths.socket());
    let _ = std::fs::remove_file(crate::ssh::listen_file(&paths));
    drop(lock);
    eprintln!("devaipod daemon (pid {}) stopped; unfinished tasks resume in the next one", std::process::id());
    Ok(())
}

/// Removes the copies of devaipod's executable that no container of the instance mounts
/// any more (`exe::collect`). When podman does not say which it mounts, nothing is removed.
async fn collect_copies(engine: &impl Engine, instance: &str, bin: &Path, current: &Path) {
    match tokio::time::timeout(SWEEP_TIMEOUT, engine.bind_sources(instance)).await {
        Ok(Ok(in_use)) => {
            let (bin, current) = (bin.to_owned(), current.to_owned());
            let removed: Vec<PathBuf> =
                tokio::task::spawn_blocking(move || exe::collect(&bin, &current, &in_use)).await.unwrap_or_default();
            if !removed.is_empty() {
                let names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
                tracing::info!("removed copies of older devaipod executables no container uses: {}", names.join(", "));
            }
        }
        Ok(Err(e)) => tracing::warn!("cannot list the containers' mounts ({e}); older executables kept"),
        Err(_) => tracing::warn!(
            "the engine did not list the containers' mounts within {} s; older executables kept",
            SWEEP_TIMEOUT.as_secs()
        ),
    }
}

/// Removes this instance's helper containers (secret readers) that a crashed daemon left.
/// Runs while holding the instance's lock, before anything can start a new one. A podman
/// that does not answer is not fatal here, and may hold the start up by [`SWEEP_TIMEOUT`]
/// at most: the daemon serves, and reports podman's absence where it matters.
async fn sweep_helpers(engine: &impl Engine, instance: &str) {
    match tokio::time::timeout(SWEEP_TIMEOUT, engine.remove_helpers(instance)).await {
        Ok(Ok(removed)) if !removed.is_empty() => {
            tracing::info!(
                "removed {} helper container(s) left by an earlier daemon: {}",
                removed.len(),
                removed.join(", ")
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("cannot remove helper containers left by an earlier daemon: {e}"),
        Err(_) => tracing::warn!(
            "the engine did not list helper containers within {} s; left for the next start",
            SWEEP_TIMEOUT.as_secs()
        ),
    }
}

const SWEEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a stopping daemon waits for removals under way.
const REMOVALS_AT_STOP: std::time::Duration = std::time::Duration::from_secs(10);
