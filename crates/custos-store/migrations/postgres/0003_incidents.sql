-- Incidents: a compromise declared, its blast radius, and the durable state
-- of its execution per connection; tenant webhooks and the outbox that
-- delivers their notifications.
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    scope_kind TEXT NOT NULL,
    scope_value TEXT NOT NULL,
    reason TEXT NOT NULL,
    since BIGINT,
    note TEXT NOT NULL,
    state TEXT NOT NULL,
    -- Issuers that execute created to replace compromised ones (JSON list).
    new_issuers TEXT NOT NULL DEFAULT '[]',
    declared_at BIGINT NOT NULL,
    declared_by TEXT NOT NULL,
    executed_at BIGINT,
    revoked_at BIGINT,
    replaced_at BIGINT,
    closed_at BIGINT,
    lock_owner TEXT,
    lock_until BIGINT
);
CREATE TABLE incident_certificates (
    incident TEXT NOT NULL REFERENCES incidents(id),
    serial TEXT NOT NULL,
    tenant TEXT NOT NULL,
    connection TEXT NOT NULL,
    PRIMARY KEY (incident, serial)
);
CREATE TABLE incident_connections (
    incident TEXT NOT NULL REFERENCES incidents(id),
    tenant TEXT NOT NULL,
    connection TEXT NOT NULL,
    state TEXT NOT NULL,
    replacement TEXT,
    updated_at BIGINT NOT NULL,
    issued_at BIGINT,
    notified_at BIGINT,
    acknowledged_at BIGINT,
    retired_at BIGINT,
    PRIMARY KEY (incident, tenant, connection)
);
CREATE INDEX incident_connections_by_state ON incident_connections(incident, state);
CREATE TABLE webhooks (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name),
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    incident TEXT NOT NULL,
    tenant TEXT NOT NULL,
    connections TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
-- A compromised CA's certificate is revoked by its parent at this time.
ALTER TABLE issuers ADD COLUMN revoked_at BIGINT;
