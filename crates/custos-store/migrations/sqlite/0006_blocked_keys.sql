-- Keys that must never be certified again: revoked for keyCompromise, named
-- by an incident, or blocked by hand. Every issuance checks its key here.
-- WITHOUT ROWID: the random SPKI hash is the table's own b-tree, so blocking
-- the keys of a mass revocation writes one index, not a table and an index.
CREATE TABLE blocked_keys (
    spki_sha256 TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
