//! `up`: what it makes and its first task, what it refuses before making anything, the
//! rollback of a failure in each phase (a table), its wait for the agent's API, and
//! `delete`, whose removals run in the background and survive a crash.

use std::time::Duration;

use std::sync::Arc;

use crate::core::testing::{Doomed, Op, Steps, Turn, WS, World, container, git, pod, until, wait_end};
use crate::core::{CoreError, UpOutcome, UpRequest};
use crate::pods::EngineError;
use crate::pods::naming::{Role, WorkspaceName};
use crate::pods::plan::build_tag;
use crate::store::TaskState;

#[tokio::test]
async fn up_makes_the_pod_and_starts_the_first_task_and_delete_removes_it_all() {
    let w = World::new().await;
    w.agent.script(Turn::complete("wrote hello.txt").writes("hello.txt", "hi\n"));
    let steps = Steps::default();
    let req = UpRequest { task: Some("write hello.txt".into()), ..w.request() };
    let Ok(UpOutcome::Created(created)) = w.core.up(&req, &steps).await else { panic!("up failed") };

    let ws = &created.workspace;
    assert_eq!((ws.name.as_str(), ws.pod.as_str(), ws.status.as_str()), (WS, "devaipod-ws", "Running"));
    assert_eq!((ws.workspace.as_deref(), ws.agent.as_deref()), (Some("running"), Some("running")));
    assert_eq!(ws.workspace_folder.as_deref(), Some("/workspaces/r"));
    assert_eq!(w.engine.pods(), [pod()]);
    assert_eq!(w.engine.containers(), [container(Role::Agent), container(Role::Workspace)]);
    assert_eq!(w.engine.volumes(), ["devaipod-ws-agent-home", "devaipod-ws-agent-workspace", "devaipod-ws-workspace"]);
    assert_eq!(w.engine.secrets(), ["devaipod-ws-agent-password"]);
    assert_eq!(w.engine.images(), [build_tag("default", &WorkspaceName::new(WS).unwrap())]);
    assert!(steps.all().iter().any(|s| s == "starting the first task"), "{:?}", steps.all());

    // Both containers have the repository; the daemon's repository has the source.
    let head = git(&w.source, &["rev-parse", "HEAD"]);
    assert_eq!(git(&w.agent_clone(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&w.workspace_clone(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&w.bare_repo(), &["rev-parse", "refs/devaipod/source"]), head);

    // The agent is reached on its API socket, in the directory mounted into its container
    // only, with the pod's password (the proxy too).
    let password = w.engine.secret("devaipod-ws-agent-password").unwrap();
    let dir = w.engine.bind_source("devaipod-ws-agent", crate::pods::plan::AGENT_API_DIR).unwrap();
    assert_eq!(dir, w.core.paths.agent_dir(WS));
    let endpoint = format!("unix:{}/api.sock", dir.display());
    assert_eq!(w.core.agent_ui_target(WS).await.unwrap(), (endpoint, password.clone()));
    assert!(w.agent.connects().iter().all(|(_, p)| *p == password));

    let first = created.task.expect("the first task");
    assert_eq!((first.state, first.prompt.as_str()), (TaskState::Queued, "write hello.txt"));
    let done = wait_end(&w.core, &first.id).await;
    assert_eq!(done.state, TaskState::Completed);
    assert!(w.core.store.proposal_for_task(&first.id).await.unwrap().is_some());

    w.core.delete(WS, false).await.unwrap();
    assert!(matches!(w.core.status(WS).await, Err(CoreError::NotFound(_))), "gone at once");
    until(|| w.core.removals_pending().is_empty()).await;
    assert_eq!(w.engine.pods(), Vec::<String>::new());
    assert_eq!(w.engine.volumes(), Vec::<String>::new());
    assert_eq!(w.engine.secrets(), Vec::<String>::new());
    assert_eq!(w.engine.images(), Vec::<String>::new());
    assert_eq!(w.core.workspace_names().await.unwrap(), Vec::<String>::new());
    assert!(matches!(w.core.status(WS).await, Err(CoreError::NotFound(_))));
}

#[tokio::test]
async fn a_run_without_a_task_is_refused_before_anything_is_made() {
    let w = World::new().await;
    for task in [None, Some("   ".to_owned())] {
        let req = UpRequest { task, require_task: true, ..w.request() };
        let e = w.core.up(&req, &Steps::default()).await.unwrap_err();
        assert!(matches!(&e, CoreError::Invalid(m) if m.starts_with("give the task")), "{e}");
    }
    assert_eq!(w.engine.calls(), Vec::<String>::new(), "the engine was not asked anything");
    assert_eq!(w.core.workspace_names().await.unwrap(), Vec::<String>::new());
}

/// How a row of the rollback table breaks `up`.
enum Break {
    Engine(Op),
    AgentNeverAnswers,
    AgentExitsAtStart,
}

fn injected(e: &CoreError) -> bool {
    matches!(e, CoreError::Engine(EngineError::Api { message, .. }) if message == "injected failure")
}

/// Each row's failure leaves nothing behind: no pod, container, volume, secret, image,
/// repository or record; so the next row, and at last a good `up`, start from nothing.
#[tokio::test]
async fn a_failed_up_removes_what_it_made_in_every_phase() {
    type Expect = fn(&CoreError) -> bool;
    let rows: [(&str, Break, Expect); 9] = [
        ("image", Break::Engine(Op::BuildImage), |e| matches!(e, CoreError::Engine(EngineError::Build { .. }))),
        ("secret", Break::Engine(Op::CreateSecret), injected),
        ("volume", Break::Engine(Op::CreateVolume), injected),
        ("pod", Break::Engine(Op::CreatePod), injected),
        ("container", Break::Engine(Op::CreateContainer), injected),
        ("start", Break::Engine(Op::StartPod), injected),
        ("copy", Break::Engine(Op::UploadArchive), injected),
        (
            "agent not ready",
            Break::AgentNeverAnswers,
            |e| matches!(e, CoreError::AgentNotReady { name, secs: 0 } if name == WS),
        ),
        (
            "agent exits",
            Break::AgentExitsAtStart,
            |e| matches!(e, CoreError::NotRunning { role: "agent", status, .. } if status == "Degraded"),
        ),
    ];
    let w = World::with_config(|c| c.agent.ready_timeout_secs = 0).await;
    for (phase, breaks, expected) in rows {
        match breaks {
            Break::Engine(op) => w.engine.fail_next(op),
            Break::AgentNeverAnswers => w.agent.set_ready(false),
            Break::AgentExitsAtStart => w.engine.exit_on_start(&container(Role::Agent)),
        }
        let steps = Steps::default();
        let e = w.core.up(&w.request(), &steps).await.expect_err(phase);
        assert!(expected(&e), "{phase}: unexpected error: {e}");
        assert!(steps.all().iter().any(|s| s == "up failed; removing what it created for `ws`"), "{phase}");
        assert_eq!(w.engine.pending_failures(), [], "{phase}: the failure happened");

        assert_eq!(w.engine.pods(), Vec::<String>::new(), "{phase}");
        assert_eq!(w.engine.containers(), Vec::<String>::new(), "{phase}");
        assert_eq!(w.engine.volumes(), Vec::<String>::new(), "{phase}");
        assert_eq!(w.engine.secrets(), Vec::<String>::new(), "{phase}");
        assert_eq!(w.engine.images(), Vec::<String>::new(), "{phase}");
        assert!(!w.bare_repo().exists(), "{phase}: the daemon's repository is removed");
        assert_eq!(w.core.workspace_names().await.unwrap(), Vec::<String>::new(), "{phase}");
        w.agent.set_ready(true);
    }
    let created = w.up().await;
    assert_eq!(created.workspace.status, "Running", "nothing left behind stands in the way");
}

/// Regression (#22): opencode accepts connections a moment before it serves and never
/// answers a request sent then; a probe that waited for that answer stalled `up` for the
/// whole call timeout (30 s) one time in four. Probes are hedged and bounded: three silent
/// probes cost three probe intervals, not three timeouts (tokio's paused time).
#[tokio::test]
async fn silent_readiness_probes_cost_an_interval_not_a_timeout() {
    let w = World::new().await;
    w.up().await;
    w.core.stop(WS).await.unwrap();
    w.agent.silence_probes(3);
    let probes_before = w.agent.probes();
    tokio::time::pause();

    let started = tokio::time::Instant::now();
    let started_ok = tokio::time::timeout(Duration::from_secs(60), w.core.start(WS)).await;
    let took = started.elapsed();
    assert!(matches!(started_ok, Ok(Ok(()))), "start waited for the agent: {started_ok:?}");
    assert_eq!(w.agent.probes() - probes_before, 4, "three silent probes, then one answered");
    assert!(took < Duration::from_secs(1), "ready after {took:?}: well under one probe's timeout (2 s)");
}

/// After a reboot the runtime directory is gone; the agent container's API directory is
/// a bind mount, so `start` makes it again (and `delete` removes it).
#[tokio::test]
async fn start_makes_the_agents_api_directory_again_and_delete_removes_it() {
    let w = World::new().await;
    w.up().await;
    let dir = w.core.paths.agent_dir(WS);
    assert!(dir.is_dir());
    w.core.stop(WS).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    w.core.start(WS).await.unwrap();
    assert!(dir.is_dir(), "start made {} again", dir.display());
    w.core.delete(WS, false).await.unwrap();
    assert!(!dir.exists());
}

/// `delete` returns before podman has removed anything (a pod whose containers ran API
/// execs takes 3.3 s to remove, a big volume much longer): the workspace is hidden at once,
/// its removal is recorded first, and a daemon killed before the removal ends finishes it
/// at its next start.
#[tokio::test]
async fn delete_returns_at_once_and_a_crash_does_not_leak_what_it_removes() {
    let w = World::new().await;
    w.up().await;
    let records = || std::fs::read_dir(w.core.paths.removals()).map(|d| d.count()).unwrap_or(0);
    w.engine.hold(Op::RemovePod);
    let daemon = Doomed::new();
    let dying = w.restart();
    let deleting = dying.clone();
    daemon.run(async move { deleting.delete(WS, false).await }).await.expect("delete returns while podman works");

    assert!(matches!(dying.status(WS).await, Err(CoreError::NotFound(_))), "hidden at once");
    assert_eq!(dying.list().await.unwrap(), []);
    assert_eq!(dying.workspace_names().await.unwrap(), Vec::<String>::new(), "its record is gone");
    assert_eq!(dying.removals_pending(), [WS]);
    assert_eq!((w.engine.pods(), records()), (vec![pod()], 1), "recorded, not removed yet");

    daemon.kill();
    w.engine.release(Op::RemovePod);
    let core = w.restart();
    assert_eq!(core.resume_removals().await.unwrap(), 1);
    assert!(matches!(core.status(WS).await, Err(CoreError::NotFound(_))), "hidden after the restart too");
    until(|| core.removals_pending().is_empty()).await;
    assert_eq!(w.engine.pods(), Vec::<String>::new());
    assert_eq!(w.engine.containers(), Vec::<String>::new());
    assert_eq!(w.engine.volumes(), Vec::<String>::new());
    assert_eq!(w.engine.secrets(), Vec::<String>::new());
    assert_eq!(w.engine.images(), Vec::<String>::new());
    assert_eq!(records(), 0, "the record goes with the last object");
    assert_eq!(w.restart().resume_removals().await.unwrap(), 0, "nothing left to do");
}

/// `up` of a name whose deleted workspace is still being removed waits for the removal
/// (its volumes have the same names), then makes the workspace anew.
#[tokio::test]
async fn up_of_a_name_being_removed_waits_for_the_removal() {
    let w = World::new().await;
    w.up().await;
    w.engine.hold(Op::RemoveVolume);
    w.core.delete(WS, false).await.unwrap();
    assert_eq!(w.core.settle_removals(Duration::from_millis(20)).await, 1, "a stopping daemon waits, bounded");

    let steps = Arc::new(Steps::default());
    let (core, req, seen) = (w.core.clone(), w.request(), steps.clone());
    let up = tokio::spawn(async move { core.up(&req, &*seen).await });
    let waiting = "waiting for the deleted workspace `ws` to be removed";
    until(|| steps.all().iter().any(|s| s == waiting)).await;
    assert!(!up.is_finished(), "up waits");
    assert_eq!(w.engine.volumes().len(), 3, "the old volumes are still there");

    w.engine.release(Op::RemoveVolume);
    let created = match up.await.expect("up's task") {
        Ok(UpOutcome::Created(c)) => c,
        other => panic!("up after the removal: {other:?}"),
    };
    assert_eq!(created.workspace.status, "Running");
    assert_eq!(w.core.removals_pending(), Vec::<String>::new());
    assert_eq!(w.engine.volumes().len(), 3, "the new workspace's");
}

/// A compose project: the services' images are built or pulled, their containers made and
/// started before the workspace's in `depends_on` order (a healthy database — its health
/// check run in its container —, a migration that must end with 0), and `delete` removes
/// them with their volumes and built images. A migration that fails fails `up`, which then
/// leaves nothing behind, the services' objects included.
#[tokio::test]
async fn compose_services_start_in_order_and_a_failed_one_leaves_nothing() {
    let w = World::new().await;
    std::fs::write(
        w.source.join(".devcontainer/devcontainer.json"),
        r#"{ "dockerComposeFile": "compose.yml", "service": "app" }"#,
    )
    .unwrap();
    std::fs::write(
        w.source.join(".devcontainer/compose.yml"),
        "services:\n  app:\n    image: localhost/app:1\n    depends_on:\n      migrate:\n        condition: service_completed_successfully\n  db:\n    build: .\n    volumes: [data:/data]\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n  migrate:\n    image: localhost/app:1\n    command: [migrate]\n    depends_on:\n      db:\n        condition: service_healthy\nvolumes:\n  data:\n",
    )
    .unwrap();
    std::fs::write(w.source.join(".devcontainer/Dockerfile"), "FROM scratch\n").unwrap();
    git(&w.source, &["add", "-A"]);
    git(&w.source, &["commit", "-q", "-m", "compose"]);
    let db_image = crate::pods::plan::service_build_tag("default", &WorkspaceName::new(WS).unwrap(), "db");

    // A migration that fails: up fails and removes everything it made.
    w.engine.exit_on_start("devaipod-ws_migrate");
    let steps = Steps::default();
    let e = w.core.up(&w.request(), &steps).await.expect_err("the migration fails");
    assert!(e.to_string().contains("service migrate exited with 1"), "{e}");
    assert!(steps.all().iter().any(|s| s == "waiting for service db to be healthy"), "{:?}", steps.all());
    assert_eq!(w.engine.pods(), Vec::<String>::new());
    assert_eq!(w.engine.containers(), Vec::<String>::new());
    assert_eq!(w.engine.volumes(), Vec::<String>::new());
    assert_eq!(w.engine.secrets(), Vec::<String>::new());
    // The service's built image is gone; the pulled one stays (it is not ours).
    assert_eq!(w.engine.images(), ["localhost/app:1"]);

    w.engine.finish_on_start("devaipod-ws_migrate");
    let steps = Steps::default();
    let created = match w.core.up(&w.request(), &steps).await {
        Ok(UpOutcome::Created(created)) => created,
        other => panic!("up: {:?}", other.err()),
    };
    // (podman calls a pod with a finished one-shot service "Degraded")
    let ws = &created.workspace;
    assert_eq!((ws.workspace.as_deref(), ws.agent.as_deref()), (Some("running"), Some("running")));
    let all = steps.all();
    let order: Vec<&str> = all.iter().filter_map(|s| s.strip_prefix("starting devaipod-")).collect();
    assert_eq!(order, ["ws_db", "ws_migrate", "ws-workspace"]);
    let mut containers = w.engine.containers();
    containers.sort();
    assert_eq!(containers, ["devaipod-ws-agent", "devaipod-ws-workspace", "devaipod-ws_db", "devaipod-ws_migrate"]);
    assert!(w.engine.volumes().contains(&"devaipod-ws_data".to_owned()), "{:?}", w.engine.volumes());
    assert!(w.engine.images().contains(&db_image));

    w.core.delete(WS, false).await.unwrap();
    until(|| w.core.removals_pending().is_empty()).await;
    assert_eq!(w.engine.containers(), Vec::<String>::new());
    assert_eq!(w.engine.volumes(), Vec::<String>::new());
    assert!(!w.engine.images().contains(&db_image), "{:?}", w.engine.images());
}

#[tokio::test]
async fn a_workspace_chooses_its_agent_and_an_unknown_one_is_refused_before_anything_is_made() {
    let w = World::new().await;
    let req = UpRequest { agent: Some("gpt-pilot".into()), ..w.request() };
    let e = w.core.up(&req, &Steps::default()).await.unwrap_err();
    assert!(
        matches!(&e, CoreError::Invalid(m) if m.starts_with("no agent named `gpt-pilot`: choose one of opencode, opencode-acp")),
        "{e}"
    );
    assert_eq!(w.engine.calls(), Vec::<String>::new(), "the engine was not asked anything");

    let req = UpRequest { agent: Some("opencode-acp".into()), dry_run: true, ..w.request() };
    match w.core.up(&req, &Steps::default()).await.unwrap() {
        UpOutcome::Planned(plan) => {
            let c = &plan.agent.command;
            assert!(
                c.contains(&"--acp".to_owned()) && c.ends_with(&["/opt/devaipod/bin/opencode".into(), "acp".into()]),
                "{c:?}"
            );
        }
        UpOutcome::Created(_) => panic!("a dry run made a workspace"),
    }
    // Blank (a form's empty field) is the configured agent.
    let req = UpRequest { agent: Some(" ".into()), dry_run: true, ..w.request() };
    match w.core.up(&req, &Steps::default()).await.unwrap() {
        UpOutcome::Planned(plan) => assert!(!plan.agent.command.contains(&"--acp".to_owned())),
        UpOutcome::Created(_) => panic!("a dry run made a workspace"),
    }
}
