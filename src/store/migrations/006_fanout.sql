-- Fan-out: a proposal set gives one prompt to several candidate agents at once; a task of
-- candidate `candidate` of set `set_id` runs on that candidate's agent, with `model`.
ALTER TABLE tasks ADD COLUMN set_id TEXT;
ALTER TABLE tasks ADD COLUMN candidate INTEGER;
ALTER TABLE tasks ADD COLUMN model TEXT;
CREATE INDEX tasks_set ON tasks (set_id);

CREATE TABLE proposal_sets (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    prompt TEXT NOT NULL,
    -- The commit every candidate starts from.
    base TEXT NOT NULL,
    check_command TEXT,
    -- running, complete, chosen, rejected or cancelled.
    state TEXT NOT NULL,
    round INTEGER NOT NULL DEFAULT 1,
    chosen INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX proposal_sets_workspace ON proposal_sets (workspace);

CREATE TABLE candidates (
    set_id TEXT NOT NULL REFERENCES proposal_sets (id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    model TEXT NOT NULL,
    -- The candidate's latest task (none while it waits for its turn).
    task_id TEXT,
    -- Why it could not be given its task (its container did not start, …).
    error TEXT,
    -- Feedback waiting to go to the candidate as its next round's task.
    feedback TEXT,
    check_exit INTEGER,
    check_ms INTEGER,
    check_output TEXT,
    -- Why the check gave no exit code (it timed out, could not run).
    check_error TEXT,
    PRIMARY KEY (set_id, n)
);
