-- Browser sessions of the web UI: the SHA-256 of the cookie value, never the value itself.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
