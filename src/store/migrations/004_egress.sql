-- Egress: the hosts a workspace's agent may reach beyond [network] allow-hosts.
CREATE TABLE egress_hosts (
    workspace TEXT NOT NULL,
    pattern TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (workspace, pattern)
);
