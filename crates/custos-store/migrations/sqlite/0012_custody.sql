-- Connection keys in custody: which key signs for a connection (and the
-- certificate that carries it), and what a client assertion may name.
CREATE TABLE custody_keys (
    key_id TEXT PRIMARY KEY REFERENCES keys(id),
    tenant TEXT NOT NULL,
    connection TEXT NOT NULL,
    slot TEXT NOT NULL,
    serial TEXT NOT NULL REFERENCES certificates(serial),
    created_at INTEGER NOT NULL,
    FOREIGN KEY (tenant, connection) REFERENCES connections(tenant, name)
);
CREATE INDEX custody_keys_by_connection ON custody_keys (tenant, connection);
CREATE TABLE signing_policies (
    tenant TEXT NOT NULL,
    connection TEXT NOT NULL,
    audiences TEXT NOT NULL,
    client_ids TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, connection),
    FOREIGN KEY (tenant, connection) REFERENCES connections(tenant, name)
);
