-- Gator: the GitHub repository a workspace works on, its scopes, and the audit log.
ALTER TABLE workspaces ADD COLUMN github_repo TEXT;

CREATE TABLE gator_scopes (
    workspace TEXT NOT NULL,
    scope TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (workspace, scope)
);

-- Every gator call, allowed or denied. Kept when a workspace is deleted.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    workspace TEXT NOT NULL,
    tool TEXT NOT NULL,
    target TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX audit_by_workspace ON audit (workspace, id);
