-- Least-privilege roles for custos on PostgreSQL. Run as the database owner
-- after `custos init --database ...` (psql -d DB -f scripts/postgres-roles.sql),
-- then give issuing nodes and the CLI `custos_issuer`, and nodes that only
-- serve OCSP, CRLs, CA certificates and the audit log `custos_serve`.
--
-- custos_serve can read everything and append to the audit log (its OCSP
-- signing batches and checkpoints), advance CRL numbers, renew OCSP
-- responders and record webhook deliveries. It cannot issue, revoke, change
-- tenants, connections or incidents, or update or delete anything in the
-- audit log: a compromised serving node cannot mint a certificate or rewrite history.
-- Passwords are set separately: ALTER ROLE custos_serve PASSWORD '...';
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'custos_issuer') THEN
        CREATE ROLE custos_issuer LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'custos_serve') THEN
        CREATE ROLE custos_serve LOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO custos_issuer, custos_serve;

-- Issuing: every row change the CA makes, but no DDL and no DELETE on the audit log.
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO custos_issuer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO custos_issuer;
REVOKE UPDATE ON audit_log, audit_tree, audit_checkpoints FROM custos_issuer;

-- Serving: read, append to the log, CRL numbers, responders, webhook deliveries.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO custos_serve;
GRANT INSERT ON audit_log, audit_tree, audit_checkpoints TO custos_serve;
GRANT UPDATE (crl_number) ON issuers TO custos_serve;
GRANT INSERT ON keys, responders TO custos_serve;
GRANT UPDATE (state, attempts, next_attempt_at, last_error, delivered_at) ON outbox TO custos_serve;
GRANT UPDATE (state, notified_at, updated_at) ON incident_connections TO custos_serve;
