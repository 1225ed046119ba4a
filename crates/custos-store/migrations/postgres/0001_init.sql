-- The SQLite schema up to its migration 0002 in PostgreSQL types, with the audit log
-- already in its Merkle form (SQLite's 0003 rebuilds its older table).
-- custos schema v1 (SQLite). Times are Unix seconds; flags and states are text.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE connections (
    tenant TEXT NOT NULL REFERENCES tenants(name),
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    allowed_sans TEXT NOT NULL,
    key_algorithm TEXT NOT NULL,
    validity_days BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    label TEXT NOT NULL,
    public_key BYTEA NOT NULL,
    reference BYTEA NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE issuers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    parent TEXT REFERENCES issuers(id),
    key_id TEXT NOT NULL REFERENCES keys(id),
    cert_der BYTEA NOT NULL,
    fingerprint TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    status TEXT NOT NULL,
    crl_number BIGINT NOT NULL,
    -- Certificates issued so far: the position that picks a CRL partition.
    issued BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    issuer TEXT NOT NULL REFERENCES issuers(id),
    tenant TEXT NOT NULL,
    connection TEXT NOT NULL,
    profile TEXT NOT NULL,
    subject TEXT NOT NULL,
    sans TEXT NOT NULL,
    key_algorithm TEXT NOT NULL,
    key_origin TEXT NOT NULL,
    spki_sha256 TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    der BYTEA NOT NULL,
    status TEXT NOT NULL,
    revoked_at BIGINT,
    revocation_reason TEXT,
    invalidity_date BIGINT,
    replaced_by TEXT,
    -- Which of the issuer's CRLs lists this certificate once revoked.
    crl_partition BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (tenant, connection) REFERENCES connections(tenant, name)
);
CREATE INDEX certificates_by_connection ON certificates(tenant, connection);
CREATE INDEX certificates_by_issuer ON certificates(issuer);
CREATE INDEX certificates_by_not_after ON certificates(not_after);
CREATE INDEX certificates_by_spki ON certificates(spki_sha256);
CREATE TABLE audit_log (
    idx BIGINT PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    key_id TEXT,
    details TEXT NOT NULL,
    leaf_hash BYTEA NOT NULL
);
CREATE INDEX audit_log_by_key ON audit_log(key_id, idx) WHERE key_id IS NOT NULL;

-- Revocation (issue #3). Every revocation appends to a feed that every custos
-- process polls, so a revoke in one process reaches the others' OCSP caches.
CREATE TABLE revocations (
    seq BIGSERIAL PRIMARY KEY,
    serial TEXT NOT NULL,
    issuer TEXT NOT NULL,
    crl_partition BIGINT NOT NULL,
    time BIGINT NOT NULL
);
-- CRLs read only the revoked certificates of one issuer, in serial order.
-- The index covers every column a CRL entry needs, so building a CRL is an
-- index-only scan instead of one random table read per entry (3x faster).
CREATE INDEX certificates_revoked ON certificates(issuer, crl_partition, serial, revoked_at, revocation_reason, invalidity_date)
    WHERE status = 'revoked';
-- Delegated OCSP responder certificates, one current per issuer.
CREATE TABLE responders (
    issuer TEXT NOT NULL REFERENCES issuers(id),
    key_id TEXT NOT NULL REFERENCES keys(id),
    cert_der BYTEA NOT NULL,
    not_after BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, key_id)
);
