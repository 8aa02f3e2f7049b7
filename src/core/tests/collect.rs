//! Collecting a finished task's work: none of the agent's git configuration runs, nothing
//! is written to its clone, and the size cap, the cancel and the deadline apply.

use std::time::Duration;

use crate::core::testing::{Op, Turn, WS, World, git, until, wait_end};
use crate::store::TaskState;

/// Plants, in the agent's clone and its HOME, git configuration that would leave `marker`
/// (and sleep a minute) if anything ran it: a clean/smudge filter named by
/// `.gitattributes`, hooks, fsmonitor, an include, an alias; plus an `index.lock` as a
/// killed `git add` leaves.
fn plant(w: &World, marker: &std::path::Path) {
    let clone = w.agent_clone();
    let trap = format!("touch {}; sleep 60; cat", marker.display());
    let hooks = clone.join(".git/evil-hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    for hook in ["pre-commit", "post-commit", "commit-msg", "reference-transaction", "post-index-change"] {
        let path = hooks.join(hook);
        std::fs::write(&path, format!("#!/bin/sh\ntouch {}\nsleep 60\n", marker.display())).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let fsmonitor = hooks.join("fsmonitor");
    std::fs::copy(hooks.join("pre-commit"), &fsmonitor).unwrap();
    let included = clone.join(".git/included");
    std::fs::write(&included, format!("[filter \"inc\"]\n\tclean = {trap}\n")).unwrap();
    let config = format!(
        "[filter \"evil\"]\n\tclean = {trap}\n\tsmudge = {trap}\n\trequired = true\n\
         [core]\n\thooksPath = {}\n\tfsmonitor = {}\n\
         [include]\n\tpath = {}\n[alias]\n\tadd = !touch {}\n",
        hooks.display(),
        fsmonitor.display(),
        included.display(),
        marker.display()
    );
    let mut existing = std::fs::read_to_string(clone.join(".git/config")).unwrap();
    existing.push_str(&config);
    std::fs::write(clone.join(".git/config"), existing).unwrap();
    std::fs::write(clone.join(".gitattributes"), "* filter=evil\n*.txt filter=inc diff=evil merge=evil\n").unwrap();
    std::fs::write(clone.join(".git/index.lock"), "").unwrap();
    // The HOME the fake gives commands is the container's root.
    let home = clone.ancestors().nth(2).unwrap().join(".gitconfig");
    std::fs::write(home, format!("[filter \"evil\"]\n\tclean = {trap}\n")).unwrap();
}

#[tokio::test]
async fn collection_runs_none_of_the_agents_git_configuration_and_leaves_its_clone_alone() {
    let w = World::new().await;
    w.up().await;
    let marker = w.agent_clone().parent().unwrap().parent().unwrap().join("ran");
    plant(&w, &marker);
    let clone = w.agent_clone();
    let head_before = git(&clone, &["rev-parse", "HEAD"]);
    let status_before = std::fs::read(clone.join(".git/index")).unwrap();
    // Build output the tree ignores stays out.
    std::fs::write(clone.join(".gitignore"), "target/\n").unwrap();
    std::fs::create_dir_all(clone.join("target")).unwrap();
    std::fs::write(clone.join("target/app.bin"), "built\n").unwrap();

    w.agent.script(Turn::complete("added a.txt").writes("a.txt", "a\n"));
    let started = std::time::Instant::now();
    let task = w.core.run_task(WS, "add a.txt").await.unwrap();
    let task = wait_end(&w.core, &task.id).await;
    assert_eq!((task.state, task.error.as_deref()), (TaskState::Completed, None));
    assert_eq!(task.summary.as_deref(), Some("added a.txt"));
    assert!(started.elapsed() < Duration::from_secs(20), "nothing slept: {:?}", started.elapsed());
    assert!(!marker.exists(), "a planted filter, hook, fsmonitor, include or alias ran");

    let p = w.core.store.proposal_for_task(&task.id).await.unwrap().expect("a proposal");
    let files: Vec<&str> = p.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, [".gitattributes", ".gitignore", "a.txt"]);
    assert_eq!(p.summary, "added a.txt");
    // The bytes as the agent wrote them (no filter touched them), on the task's base.
    let bare = w.bare_repo();
    assert_eq!(git(&bare, &["cat-file", "blob", &format!("{}:a.txt", p.head)]), "a");
    assert_eq!(git(&bare, &["rev-parse", &format!("{}^", p.head)]), head_before);
    assert_eq!(git(&bare, &["for-each-ref", "refs/devaipod/collected"]), "", "no staging ref is left");

    // Nothing was written to the clone: same HEAD, same index, the stale lock untouched.
    assert_eq!(git(&clone, &["-c", "core.fsmonitor=false", "rev-parse", "HEAD"]), head_before);
    assert_eq!(std::fs::read(clone.join(".git/index")).unwrap(), status_before);
    assert!(clone.join(".git/index.lock").exists());

    // The plant is live: the agent's own git runs it (so the test above can fail).
    std::fs::remove_file(clone.join(".git/index.lock")).unwrap();
    let _ = std::process::Command::new("timeout")
        .args(["1", "git", "-C"])
        .arg(&clone)
        .args(["add", "a.txt"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output();
    assert!(marker.exists(), "the planted configuration is not live");
}

#[tokio::test]
async fn work_over_the_cap_fails_the_task_naming_the_setting() {
    let w = World::with_config(|c| c.agent.max_proposal_mb = 1).await;
    w.up().await;
    // 3 MiB that do not compress.
    let mut noise = vec![0u8; 3 * 1024 * 1024];
    rand::Rng::fill(&mut rand::rng(), noise.as_mut_slice());
    std::fs::write(w.agent_clone().join("big.bin"), noise).unwrap();
    w.agent.script(Turn::complete("made it big"));
    let task = w.core.run_task(WS, "make it big").await.unwrap();
    let task = wait_end(&w.core, &task.id).await;
    assert_eq!(task.state, TaskState::Failed);
    let error = task.error.unwrap_or_default();
    assert!(
        error.starts_with("the agent finished, but its work could not be collected: the task's work is larger than [agent] max-proposal-mb (1 MiB"),
        "{error}"
    );
    assert!(w.core.store.proposal_for_task(&task.id).await.unwrap().is_none());
    let staging = w.bare_repo().join("devaipod-collect");
    assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().count() == 0, "nothing is left staged");
}

#[tokio::test]
async fn cancel_ends_a_task_while_its_work_is_collected() {
    let w = World::new().await;
    w.up().await;
    w.engine.hold(Op::ExecTo);
    w.agent.script(Turn::complete("wrote c.txt").writes("c.txt", "c\n"));
    let task = w.core.run_task(WS, "write c.txt").await.unwrap();
    until(|| w.engine.calls().iter().any(|c| c == "exec_to")).await;
    let started = std::time::Instant::now();
    let cancelled = w.core.cancel_task(&task.id).await.unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(2), "cancelled after {:?}", started.elapsed());
    w.engine.release(Op::ExecTo);
    assert!(w.core.store.proposal_for_task(&task.id).await.unwrap().is_none());
    assert!(!w.bare_repo().join("devaipod-collect").exists(), "the staging went with the cancel");
}

/// In tokio's paused time: a collection that does not end fails the task at its deadline.
#[tokio::test]
async fn the_deadline_applies_while_the_work_is_collected() {
    let w = World::with_config(|c| c.agent.task_timeout_secs = 3).await;
    w.up().await;
    tokio::time::pause();
    w.engine.hold(Op::ExecTo);
    w.agent.script(Turn::complete("wrote d.txt").writes("d.txt", "d\n"));
    let task = w.core.run_task(WS, "write d.txt").await.unwrap();
    let task = wait_end(&w.core, &task.id).await;
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(
        task.error.as_deref(),
        Some(
            "the agent finished, but collecting its work did not end within the task's deadline of 3 s ([agent] task-timeout-secs)"
        )
    );
    assert!(w.engine.calls().iter().any(|c| c == "exec_to"), "it was collecting");
    w.engine.release(Op::ExecTo);
}

/// What a captured command prints is held in memory: in the agent's container, the agent
/// decides how much that is, so it has a bound.
#[tokio::test]
async fn a_captured_command_that_prints_too_much_fails_instead_of_filling_memory() {
    let w = World::new().await;
    w.up().await;
    let agent = crate::core::ExecTarget::Agent;
    let e = w.core.exec_capture(WS, agent, &["head", "-c", "2000000", "/dev/zero"]).await.unwrap_err();
    assert_eq!(e.to_string(), "`head -c 2000000 /dev/zero` in the agent container printed more than 1024 KiB");
    let (code, out, _) = w.core.exec_capture(WS, agent, &["head", "-c", "1000", "/dev/zero"]).await.unwrap();
    assert_eq!((code, out.len()), (0, 1000));
}
