//! The task driver: its every ending (a table over one workspace), its sense of time (in
//! tokio's paused time), crash and resume, and what `run_task` refuses.

use std::time::Duration;

use super::last_session;
use crate::core::CoreError;
use crate::core::testing::{Doomed, Op, Turn, WS, World, container, keys, pod, published, until, wait_end, wait_task};
use crate::pods::Engine;
use crate::pods::naming::Role;
use crate::store::TaskState;

/// What the test does once the task has started.
enum Then {
    /// Waits for its end.
    Wait,
    /// Cancels it once it runs.
    Cancel,
    /// Once the agent asks for input, the agent goes on with this turn.
    Answer(Turn),
}

/// One row: a prompt, what the agent does with it, and how the task must end.
struct Ending {
    prompt: &'static str,
    turn: Turn,
    /// An engine call that fails while the task runs.
    breaks: Option<Op>,
    then: Then,
    state: TaskState,
    /// How its error starts.
    error: Option<&'static str>,
    /// The files its proposal changes (relative to the source); none: no proposal.
    files: &'static [&'static str],
    /// Its stored events' keys.
    keys: &'static [&'static str],
}

const QUOTA: &str = "the LLM provider answered 429: quota exceeded";

fn endings() -> Vec<Ending> {
    vec![
        Ending {
            prompt: "add a greeting",
            turn: Turn::complete("Added hello.txt").writes("hello.txt", "hi\n"),
            breaks: None,
            then: Then::Wait,
            state: TaskState::Completed,
            error: None,
            files: &["hello.txt"],
            keys: &["state:queued", "state:running", "tool:write-0:completed", "proposal", "state:completed"],
        },
        Ending {
            prompt: "look around",
            turn: Turn::complete("Nothing to change"),
            breaks: None,
            then: Then::Wait,
            state: TaskState::Completed,
            error: None,
            files: &[],
            keys: &["state:queued", "state:running", "state:completed"],
        },
        Ending {
            prompt: "ask the provider",
            turn: Turn::Fail(QUOTA.into()),
            breaks: None,
            then: Then::Wait,
            state: TaskState::Failed,
            error: Some(QUOTA),
            files: &[],
            keys: &[
                "state:queued",
                "state:running",
                "error:the LLM provider answered 429: quota exceeded",
                "state:failed",
            ],
        },
        Ending {
            prompt: "build it",
            turn: Turn::Ask("run make?".into()),
            breaks: None,
            then: Then::Answer(Turn::complete("built").writes("out.txt", "ok\n")),
            state: TaskState::Completed,
            error: None,
            // The diff is all the branch adds to the source: the first row's commit too.
            files: &["hello.txt", "out.txt"],
            keys: &[
                "state:queued",
                "state:running",
                "state:needs_input",
                "state:running:2",
                "tool:write-0:completed",
                "proposal",
                "state:completed",
            ],
        },
        Ending {
            prompt: "take your time",
            turn: Turn::Hang,
            breaks: None,
            then: Then::Cancel,
            state: TaskState::Cancelled,
            error: None,
            files: &[],
            keys: &["state:queued", "state:running", "state:cancelled"],
        },
        Ending {
            prompt: "write b.txt",
            turn: Turn::complete("wrote b.txt").writes("b.txt", "b\n"),
            breaks: Some(Op::Exec),
            then: Then::Wait,
            state: TaskState::Failed,
            error: Some("the agent finished, but its work could not be collected: podman could not"),
            files: &[],
            keys: &["state:queued", "state:running", "tool:write-0:completed", "state:failed"],
        },
        Ending {
            prompt: "stop",
            turn: Turn::Stop,
            breaks: None,
            then: Then::Wait,
            state: TaskState::Failed,
            error: Some("the agent stopped while working (its container is not running)"),
            files: &[],
            keys: &["state:queued", "state:running", "state:failed"],
        },
    ]
}

#[tokio::test]
async fn every_ending_of_a_task() {
    let w = World::new().await;
    w.up().await;
    for row in endings() {
        let name = row.prompt;
        let mut bus = w.core.subscribe();
        if let Some(op) = row.breaks {
            w.engine.fail_next(op);
        }
        w.agent.script(row.turn);
        let prompts = w.agent.prompts().len();
        let task = w.core.run_task(WS, row.prompt).await.unwrap();
        match row.then {
            Then::Wait => {}
            Then::Cancel => {
                wait_task(&w.core, &task.id, |t| t.state == TaskState::Running).await;
                assert_eq!(w.core.cancel_task(&task.id).await.unwrap().state, TaskState::Cancelled, "{name}");
                let e = w.core.cancel_task(&task.id).await.unwrap_err();
                assert!(matches!(&e, CoreError::TaskEnded { state, .. } if state == "cancelled"), "{name}: {e}");
            }
            Then::Answer(turn) => {
                wait_task(&w.core, &task.id, |t| t.state == TaskState::NeedsInput).await;
                w.agent.finish(turn);
            }
        }
        let task = wait_end(&w.core, &task.id).await;

        assert_eq!(task.state, row.state, "{name}: {:?}", task.error);
        match row.error {
            Some(start) => assert!(task.error.as_deref().unwrap_or_default().starts_with(start), "{name}: {task:?}"),
            None => assert_eq!(task.error, None, "{name}"),
        }
        let events = w.core.store.events(&task.id).await.unwrap();
        assert_eq!(keys(&events), row.keys, "{name}");
        // Stored, then published: every event reached the bus once, in order.
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(published(&mut bus, &task.id).await, seqs, "{name}");
        // Delivered exactly once, in a session of its own.
        let session = task.session_id.clone().expect("a session");
        assert_eq!(w.agent.prompts()[prompts..], [(session.clone(), row.prompt.to_owned())], "{name}");
        let proposal = w.core.store.proposal_for_task(&task.id).await.unwrap();
        let files: Vec<String> = proposal.iter().flat_map(|p| p.files.iter().map(|f| f.path.clone())).collect();
        assert_eq!(files, row.files, "{name}");
        if row.state == TaskState::Cancelled {
            assert!(w.agent.aborts().contains(&session), "{name}: the session is aborted");
        }
    }
    assert_eq!(w.engine.container_state(&container(Role::Agent)), Some("exited"), "the last row stopped the agent");
}

/// The driver's clock: a turn's end is noticed from the agent's idle event (regression:
/// only the 2 s poll noticed it), and a task past its deadline fails naming the setting.
/// In tokio's paused time, so the five seconds take none.
#[tokio::test]
async fn the_driver_notices_ends_at_once_and_keeps_the_deadline() {
    let w = World::with_config(|c| c.agent.task_timeout_secs = 5).await;
    w.up().await;
    tokio::time::pause();

    let started = tokio::time::Instant::now();
    w.agent.script(Turn::complete("done").after(Duration::from_millis(300)));
    let quick = w.core.run_task(WS, "quick").await.unwrap();
    let quick = wait_end(&w.core, &quick.id).await;
    assert_eq!(quick.state, TaskState::Completed);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(1), "noticed after {took:?}");

    let started = tokio::time::Instant::now();
    w.agent.script(Turn::Hang);
    let slow = w.core.run_task(WS, "take your time").await.unwrap();
    let slow = wait_end(&w.core, &slow.id).await;
    assert_eq!(slow.state, TaskState::Failed);
    assert_eq!(
        slow.error.as_deref(),
        Some("the task did not finish within its deadline of 5 s ([agent] task-timeout-secs)")
    );
    // Whole seconds: the deadline is stored in seconds since the epoch.
    assert!(started.elapsed() >= Duration::from_secs(4), "failed after {:?}", started.elapsed());
    assert!(w.agent.aborts().contains(&last_session(&w.agent)), "the session is aborted");
}

#[tokio::test]
async fn run_task_refuses_what_it_cannot_do_and_creates_nothing() {
    let w = World::new().await;
    w.up().await;
    let refused = |r: Result<_, CoreError>| r.expect_err("refused");

    let e = refused(w.core.run_task(WS, "  ").await);
    assert!(matches!(&e, CoreError::Invalid(m) if m.starts_with("the prompt is empty")), "{e}");
    let e = refused(w.core.run_task("", "do it").await);
    assert!(matches!(&e, CoreError::Invalid(m) if m.starts_with("`workspace` is required")), "{e}");
    let e = refused(w.core.run_task("nope", "do it").await);
    assert!(matches!(&e, CoreError::NotFound(n) if n == "nope"), "{e}");

    // One unfinished task per workspace.
    w.agent.script(Turn::Hang);
    let first = w.core.run_task(WS, "take your time").await.unwrap();
    let e = refused(w.core.run_task(WS, "another").await);
    assert!(matches!(&e, CoreError::Busy { task, .. } if *task == first.id), "{e}");
    w.core.cancel_task(&first.id).await.unwrap();

    // The agent must be there now.
    w.engine.stop_container(&container(Role::Agent));
    let e = refused(w.core.run_task(WS, "do it").await);
    assert!(matches!(&e, CoreError::NotRunning { role: "agent", .. }), "{e}");
    w.core.engine.remove_pod(&pod()).await.unwrap();
    let e = refused(w.core.run_task(WS, "do it").await);
    assert!(matches!(&e, CoreError::PodGone(n) if n == WS), "{e}");

    assert_eq!(w.core.store.tasks(Some(WS)).await.unwrap().len(), 1, "only the first task");
    assert_eq!(w.agent.prompts().len(), 1);
}

/// Where a daemon dies during a task.
enum CrashPoint {
    /// The agent took the prompt; the daemon had not recorded that.
    BeforeItsRecord,
    /// The agent works; it finishes while no daemon runs.
    WhileTheAgentWorks,
    /// The agent finished; the collection runs in the sandbox (a killed `git add` of old
    /// left an `index.lock` in the clone).
    WhileCollecting,
    /// The collected work has arrived on the daemon's side.
    AfterTheBundleArrived,
    /// A gator push collected the work (the branch is in the daemon's repository, no
    /// proposal yet); the agent finishes while no daemon runs.
    AfterAPushCollected,
}

#[tokio::test]
async fn a_task_resumed_after_a_crash_is_delivered_once_and_leaves_one_proposal() {
    let w = World::new().await;
    w.up().await;
    let rows = [
        ("write a.txt", CrashPoint::BeforeItsRecord),
        ("write b.txt", CrashPoint::WhileTheAgentWorks),
        ("write c.txt", CrashPoint::WhileCollecting),
        ("write d.txt", CrashPoint::AfterTheBundleArrived),
        ("write e.txt", CrashPoint::AfterAPushCollected),
    ];
    for (n, (prompt, point)) in rows.into_iter().enumerate() {
        let mut pushed = None;
        let mut expected = vec!["state:queued", "state:running", "proposal", "state:completed"];
        let file = prompt.trim_start_matches("write ");
        let daemon = Doomed::new();
        let dying = w.restart();
        let prompts = w.agent.prompts().len();
        let id = match point {
            CrashPoint::BeforeItsRecord => {
                w.agent.hold_next_reply();
                w.agent.script(Turn::complete("wrote it").writes(file, "x\n"));
                let id = daemon.run_task(&dying, prompt).await;
                until(|| w.agent.prompts().len() > prompts).await;
                daemon.kill();
                let t = dying.store.task(&id).await.unwrap().unwrap();
                assert_eq!((t.state, t.delivered, t.session_id.is_some()), (TaskState::Queued, false, true));
                id
            }
            CrashPoint::WhileTheAgentWorks => {
                w.agent.script(Turn::Hang);
                let id = daemon.run_task(&dying, prompt).await;
                wait_task(&dying, &id, |t| t.state == TaskState::Running).await;
                daemon.kill();
                w.agent.finish(Turn::complete("wrote it").writes(file, "x\n"));
                id
            }
            CrashPoint::WhileCollecting | CrashPoint::AfterTheBundleArrived => {
                let held = if matches!(point, CrashPoint::WhileCollecting) { Op::ExecTo } else { Op::ExecToEnd };
                std::fs::write(w.agent_clone().join(".git/index.lock"), "").unwrap();
                w.engine.hold(held);
                let calls = w.engine.calls().iter().filter(|c| *c == "exec_to").count();
                w.agent.script(Turn::complete("wrote it").writes(file, "x\n"));
                let id = daemon.run_task(&dying, prompt).await;
                until(|| w.engine.calls().iter().filter(|c| *c == "exec_to").count() > calls).await;
                if held == Op::ExecToEnd {
                    // The command ended and its output is on the daemon's disk.
                    let staged = w.bare_repo().join("devaipod-collect").join(format!("{id}.bundle"));
                    until(|| std::fs::metadata(&staged).is_ok_and(|m| m.len() > 0)).await;
                }
                daemon.kill();
                w.engine.release(held);
                expected.insert(2, "tool:write-0:completed");
                id
            }
            CrashPoint::AfterAPushCollected => {
                w.agent.script(Turn::Hang);
                let id = daemon.run_task(&dying, prompt).await;
                wait_task(&dying, &id, |t| t.state == TaskState::Running).await;
                std::fs::write(w.agent_clone().join(file), "x\n").unwrap();
                let task = dying.store.task(&id).await.unwrap().unwrap();
                let core = dying.clone();
                pushed = daemon.run(async move { core.bring_out(&task).await }).await.unwrap();
                assert!(pushed.is_some(), "the push collected the work");
                daemon.kill();
                w.agent.finish(Turn::complete("wrote it").writes(file, "x\n"));
                id
            }
        };

        let core = w.restart();
        assert_eq!(core.resume_tasks().await.unwrap(), 1, "{prompt}");
        let task = wait_end(&core, &id).await;
        assert_eq!((task.state, task.delivered), (TaskState::Completed, true), "{prompt}");
        assert_eq!(w.agent.prompts()[prompts..].len(), 1, "{prompt}: delivered once");
        let p = core.store.proposal_for_task(&id).await.unwrap().expect("a proposal");
        assert!(p.files.iter().any(|f| f.path == file), "{prompt}: {:?}", p.files);
        if let Some(pushed) = &pushed {
            assert_eq!(&p.head, pushed, "{prompt}: the same work is the same commit");
        }
        assert_eq!(core.proposals(&Default::default()).await.unwrap().total, n as u64 + 1, "{prompt}");
        let events = core.store.events(&id).await.unwrap();
        assert_eq!(keys(&events), expected, "{prompt}");

        // Another restart finds nothing to do and changes nothing.
        let again = w.restart();
        assert_eq!(again.resume_tasks().await.unwrap(), 0, "{prompt}");
        assert_eq!(again.store.events(&id).await.unwrap(), events, "{prompt}");
    }
}
