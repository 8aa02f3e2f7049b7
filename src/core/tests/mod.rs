//! Core's policy against the fakes of `core::testing`: every ending of a task, crash and
//! resume, approve and reject, `up` and its rollback. These tests keep the task invariants
//! (exactly-once delivery, one proposal per task, one event per key, nothing left behind
//! by a failed `up`); each runs in milliseconds, without podman.

mod collect;
mod proposals;
mod tasks;
mod up;

use super::testing::{FakeAgent, Turn, WS, World, wait_end};
use crate::store::Proposal;

/// A workspace whose first task left a proposal adding `a.txt`.
async fn with_proposal() -> (World, Proposal) {
    let w = World::new().await;
    w.up().await;
    w.agent.script(Turn::complete("added a.txt").writes("a.txt", "a\n"));
    let task = w.core.run_task(WS, "add a.txt").await.expect("the task starts");
    let task = wait_end(&w.core, &task.id).await;
    let p = w.core.store.proposal_for_task(&task.id).await.expect("the store").expect("a proposal");
    (w, p)
}

/// The session the agent saw the latest prompt in.
fn last_session(agent: &FakeAgent) -> String {
    agent.prompts().last().map(|(s, _)| s.clone()).expect("a prompt")
}
