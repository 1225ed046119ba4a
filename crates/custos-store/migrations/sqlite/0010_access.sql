-- Who may use the API. Tokens are kept as the SHA-256 of their secret only;
-- operators by the serial of their current client certificate.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant TEXT,
    connection TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_by TEXT NOT NULL
);
CREATE TABLE operators (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    serial TEXT NOT NULL UNIQUE,
    der BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    revoked_at INTEGER,
    created_by TEXT NOT NULL
);
