-- ACME (RFC 8555): nonces used up (on any node; issued without a write), single-use External Account
-- Binding keys, accounts bound to a tenant, orders and authorizations.
CREATE TABLE acme_nonces (
    nonce TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX acme_nonces_by_expiry ON acme_nonces (expires_at);
CREATE TABLE acme_eab (
    kid TEXT PRIMARY KEY,
    hmac_key TEXT NOT NULL,
    tenant TEXT NOT NULL REFERENCES tenants(name),
    connection TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    account TEXT
);
CREATE TABLE acme_accounts (
    id TEXT PRIMARY KEY,
    thumbprint TEXT NOT NULL UNIQUE,
    jwk TEXT NOT NULL,
    tenant TEXT NOT NULL REFERENCES tenants(name),
    connection TEXT,
    status TEXT NOT NULL,
    contact TEXT NOT NULL,
    eab_kid TEXT NOT NULL UNIQUE REFERENCES acme_eab(kid),
    created_at INTEGER NOT NULL
);
CREATE INDEX acme_accounts_by_tenant ON acme_accounts (tenant);
CREATE TABLE acme_orders (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL REFERENCES acme_accounts(id),
    tenant TEXT NOT NULL,
    connection TEXT NOT NULL,
    status TEXT NOT NULL,
    identifiers TEXT NOT NULL,
    not_before INTEGER,
    not_after INTEGER,
    expires_at INTEGER NOT NULL,
    error TEXT,
    certificate TEXT,
    replaces TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX acme_orders_by_account ON acme_orders (account, created_at);
CREATE TABLE acme_authzs (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES acme_orders(id),
    account TEXT NOT NULL,
    identifier TEXT NOT NULL,
    wildcard INTEGER NOT NULL,
    status TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    token TEXT NOT NULL,
    challenge TEXT,
    challenge_status TEXT NOT NULL,
    validated_at INTEGER,
    error TEXT
);
CREATE INDEX acme_authzs_by_order ON acme_authzs (order_id);
-- ARI asks, per certificate, whether an incident covers it.
CREATE INDEX incident_certificates_by_serial ON incident_certificates (serial);
