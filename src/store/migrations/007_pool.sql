-- Warm pool: pods started ahead of `up`, whose agent already runs. A member is `warm`
-- until a workspace claims it (`claimed`, with the workspace's name); once the workspace's
-- record exists the member's row goes and `pod_bindings` ties the workspace to the
-- member's objects (named by its key: podman cannot rename a pod).
CREATE TABLE pool_members (
    key TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    password TEXT NOT NULL,
    -- The agent container's plan and the pod's (JSON): what a workspace's must equal.
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    workspace TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE pod_bindings (
    workspace TEXT PRIMARY KEY,
    pod_key TEXT NOT NULL UNIQUE,
    -- The labels the workspace's own pod would carry (source, folder, user, …), JSON.
    labels TEXT NOT NULL
);
