-- Every complete Merkle node of the audit log, and the signed checkpoints.
CREATE TABLE audit_tree (
    level BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY,
    time BIGINT NOT NULL,
    root BYTEA NOT NULL,
    note TEXT NOT NULL
);
