-- Keys that must never be certified again: revoked for keyCompromise, named
-- by an incident, or blocked by hand. Every issuance checks its key here.
CREATE TABLE blocked_keys (
    spki_sha256 TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
