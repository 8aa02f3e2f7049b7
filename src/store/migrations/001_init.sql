-- Workspaces devaipod created: what the engine cannot tell (the full source, the agent's password).
CREATE TABLE workspaces (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    agent_password TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- The agent clone's HEAD as devaipod last left it (the base of the next task).
    agent_head TEXT
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    prompt TEXT NOT NULL,
    state TEXT NOT NULL,
    session_id TEXT,
    -- 1 once the agent accepted the prompt: never delivered twice.
    delivered INTEGER NOT NULL DEFAULT 0,
    -- User turns the session had before this task's prompt (a follow-up reuses a session):
    -- more turns than this means the prompt arrived, even if `delivered` was not yet written.
    turns_before INTEGER NOT NULL DEFAULT 0,
    -- Agent commit the task started from.
    base TEXT,
    -- The proposal whose rejection (with feedback) created this task.
    follows_proposal TEXT,
    error TEXT,
    summary TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deadline_at INTEGER NOT NULL
);
CREATE INDEX tasks_by_workspace ON tasks (workspace, created_at);

CREATE TABLE task_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    -- Identity of the event at its source (agent part id + status), so a replay after a
    -- restart adds nothing twice.
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    at INTEGER NOT NULL,
    UNIQUE (task_id, key)
);

CREATE TABLE proposals (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    workspace TEXT NOT NULL,
    branch TEXT NOT NULL,
    base TEXT NOT NULL,
    head TEXT NOT NULL,
    commits TEXT NOT NULL,
    files TEXT NOT NULL,
    added INTEGER NOT NULL,
    removed INTEGER NOT NULL,
    summary TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE approvals (
    proposal_id TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (proposal_id, action)
);
