-- Two-person approval: one admin requests an action, another approves it.
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    approved_by TEXT,
    approved_at INTEGER
);
CREATE INDEX approvals_by_object ON approvals (action, object);
