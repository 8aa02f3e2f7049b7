use serde_json::{Value, json};

use super::*;
use crate::agent::AgentEvent;
use crate::agent::opencode::{outcome_of, parse_event};

fn update(id: &str, u: Value) -> Value {
    json!({ "sessionId": id, "update": u })
}

/// What the daemon's client reads from the events.
fn parsed(events: &[Event]) -> Vec<AgentEvent> {
    events.iter().filter_map(parse_event).collect()
}

#[test]
fn a_turn_as_opencode_acp_streams_it_reads_as_the_daemon_expects() {
    let mut s = Sessions::default();
    s.add("s1", "task t-1", false);
    assert_eq!(parsed(&s.start_turn("s1", "write the greeting").unwrap()), [AgentEvent::Busy { session: "s1".into() }]);
    assert_eq!(s.start_turn("s1", "again"), Err(TurnRefused::Busy));
    assert_eq!(s.start_turn("nope", "x"), Err(TurnRefused::Unknown));
    assert_eq!(s.status_view(), json!({ "s1": { "type": "busy" } }));

    let mut events = Vec::new();
    // These are the updates opencode 1.18 sends for a `write` (verified by hand).
    for u in [
        json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "text", "text": "I will write it." } }),
        json!({ "sessionUpdate": "tool_call", "toolCallId": "call_2", "title": "write", "kind": "edit", "status": "pending" }),
        json!({ "sessionUpdate": "tool_call_update", "toolCallId": "call_2", "status": "in_progress", "kind": "edit", "title": "write" }),
        json!({ "sessionUpdate": "tool_call_update", "toolCallId": "call_2", "status": "in_progress" }),
        json!({ "sessionUpdate": "tool_call_update", "toolCallId": "call_2", "status": "completed", "title": "hello.txt" }),
        json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "text", "text": "Wrote " } }),
        json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "text", "text": "hello.txt" } }),
        json!({ "sessionUpdate": "plan", "entries": [{ "content": "a", "status": "completed" }, { "content": "b", "status": "pending" }] }),
        json!({ "sessionUpdate": "agent_thought_chunk", "content": { "type": "text", "text": "hmm" } }),
    ] {
        events.extend(s.update(&update("s1", u)));
    }
    // An update for a session this bridge does not know changes nothing.
    assert!(s.update(&update("other", json!({ "sessionUpdate": "agent_message_chunk" }))).is_empty());
    let tool = |status: &str, title: &str| AgentEvent::Tool {
        session: "s1".into(),
        key: format!("call_2:{status}"),
        tool: "write".into(),
        status: status.into(),
        title: title.into(),
    };
    let plan = AgentEvent::Tool {
        session: "s1".into(),
        key: "plan-1:completed".into(),
        tool: "plan".into(),
        status: "completed".into(),
        title: "1 of 2 steps done".into(),
    };
    assert_eq!(
        parsed(&events),
        [tool("pending", "write"), tool("running", "write"), tool("completed", "hello.txt"), plan],
        "one event per status"
    );
    let before = outcome_of(&s.messages_view("s1").unwrap());
    assert!(before.delivered && !before.answered, "{before:?}");

    let end = s.end_turn("s1", Ok(&json!({ "stopReason": "end_turn" })));
    assert_eq!(parsed(&end), [AgentEvent::Idle { session: "s1".into() }]);
    let o = outcome_of(&s.messages_view("s1").unwrap());
    assert_eq!((o.user_turns, o.answered, o.error), (1, true, None));
    assert_eq!(o.final_text.as_deref(), Some("Wrote hello.txt"), "what the agent said last");
    assert_eq!(s.status_view(), json!({}));

    // A cancelled turn and a failed one: the error is the outcome's, before idle.
    s.start_turn("s1", "slow").unwrap();
    let end = parsed(&s.end_turn("s1", Ok(&json!({ "stopReason": "cancelled" }))));
    assert!(matches!(&end[0], AgentEvent::Error { message, .. } if message.contains("cancelled")), "{end:?}");
    assert_eq!(end[1], AgentEvent::Idle { session: "s1".into() });
    s.start_turn("s1", "boom").unwrap();
    s.end_turn("s1", Err("the agent answered: provider said 400".into()));
    let o = outcome_of(&s.messages_view("s1").unwrap());
    assert_eq!(o.user_turns, 3);
    assert_eq!(o.error.as_deref(), Some("AcpError: the agent answered: provider said 400"));
    assert_eq!(s.list_view(), json!([{ "id": "s1", "title": "task t-1" }]));
}

#[test]
fn a_loaded_session_is_rebuilt_from_its_replay_without_events() {
    let mut s = Sessions::default();
    s.add("s9", "", true);
    let mut events = Vec::new();
    for u in [
        json!({ "sessionUpdate": "user_message_chunk", "content": { "type": "text", "text": "write " } }),
        json!({ "sessionUpdate": "user_message_chunk", "content": { "type": "text", "text": "the greeting" } }),
        json!({ "sessionUpdate": "tool_call", "toolCallId": "c1", "title": "hello.txt", "kind": "edit", "status": "completed" }),
        json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "text", "text": "Wrote hello.txt" } }),
        json!({ "sessionUpdate": "user_message_chunk", "content": { "type": "text", "text": "now say goodbye" } }),
        json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "text", "text": "Bye" } }),
    ] {
        events.extend(s.update(&update("s9", u)));
    }
    assert!(events.is_empty(), "a replay is history: {events:?}");
    s.loaded("s9");
    let msgs = s.messages_view("s9").unwrap();
    assert_eq!(msgs[0]["parts"][0]["text"], "write the greeting");
    let o = outcome_of(&msgs);
    assert_eq!((o.user_turns, o.answered, o.final_text.as_deref()), (2, true, Some("Bye")));
    // Updates after the load are live again.
    s.start_turn("s9", "more").unwrap();
    let live = s.update(&update("s9", json!({ "sessionUpdate": "tool_call", "toolCallId": "c2", "title": "Run make", "kind": "execute", "status": "in_progress" })));
    assert_eq!(
        parsed(&live),
        [AgentEvent::Tool {
            session: "s9".into(),
            key: "c2:running".into(),
            tool: "execute".into(),
            status: "running".into(),
            title: "Run make".into()
        }],
        "a title that is a sentence names the kind of tool"
    );
}

#[test]
fn permissions_allow_inside_the_workspace_and_refuse_outside() {
    let ws = Path::new("/workspaces/app");
    let options = json!([
        { "optionId": "once", "kind": "allow_once", "name": "Allow once" },
        { "optionId": "always", "kind": "allow_always", "name": "Always" },
        { "optionId": "reject", "kind": "reject_once", "name": "Reject" }
    ]);
    let ask = |call: Value| json!({ "sessionId": "s", "toolCall": call, "options": options });
    assert_eq!(
        permission(&ask(json!({ "toolCallId": "c", "locations": [{ "path": "/workspaces/app/src/a.rs" }] })), ws),
        (Some("once".into()), true)
    );
    assert_eq!(permission(&ask(json!({ "toolCallId": "c", "title": "make" })), ws), (Some("once".into()), true));
    assert_eq!(permission(&ask(json!({ "rawInput": { "filePath": "/tmp/x" } })), ws), (Some("once".into()), true));
    for outside in ["/etc/passwd", "/workspaces/app/../other/x", "/workspaces/apple/x", "../up"] {
        assert_eq!(
            permission(&ask(json!({ "locations": [{ "path": "/workspaces/app/ok" }, { "path": outside }] })), ws),
            (Some("reject".into()), false),
            "{outside}"
        );
    }
    assert_eq!(
        permission(&ask(json!({ "rawInput": { "filepath": "/home/devaipod/.ssh/id" } })), ws),
        (Some("reject".into()), false)
    );
    // Offered no way to refuse: nothing is chosen (the bridge cancels the request).
    let only_allow = json!({ "toolCall": { "locations": [{ "path": "/etc/x" }] }, "options": [{ "optionId": "a", "kind": "allow_once" }] });
    assert_eq!(permission(&only_allow, ws), (None, false));
}
