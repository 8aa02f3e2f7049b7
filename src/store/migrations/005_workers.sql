-- Workers: a task an owner task delegated (`parent`) runs on the workspace's worker agent
-- number `worker`; an owner task may delegate to at most `workers` workers at once.
ALTER TABLE tasks ADD COLUMN parent TEXT;
ALTER TABLE tasks ADD COLUMN worker INTEGER;
ALTER TABLE tasks ADD COLUMN workers INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_parent ON tasks (parent);
