-- The audit log becomes a Merkle log: entries indexed from 0 with no gaps,
-- each with its RFC 9162 leaf hash and the key it used; every complete
-- interior node is kept so that proofs and tiles read O(log n) rows.
CREATE TABLE audit_log_v3 (
    idx INTEGER PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    key_id TEXT,
    details TEXT NOT NULL,
    leaf_hash BLOB NOT NULL
);
-- Entries written before this migration get their hashes from the store
-- when it opens (an empty leaf_hash marks them).
INSERT INTO audit_log_v3 (idx, time, actor, action, object, key_id, details, leaf_hash)
    SELECT idx - 1, time, actor, action, object, json_extract(details, '$.key'), details, X''
    FROM audit_log ORDER BY idx;
DROP TABLE audit_log;
ALTER TABLE audit_log_v3 RENAME TO audit_log;
CREATE INDEX audit_log_by_key ON audit_log(key_id, idx) WHERE key_id IS NOT NULL;
CREATE TABLE audit_tree (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE audit_checkpoints (
    size INTEGER PRIMARY KEY,
    time BIGINT NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL
);
