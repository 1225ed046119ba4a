-- Client assertions custos signed, by jti and by time: what `audit match`
-- compares a relying party's sign-ins with. Each row is written in the same
-- transaction as the audit entry that records the signature.
CREATE TABLE signatures (
    jti TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    key_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    connection TEXT NOT NULL,
    aud TEXT NOT NULL,
    iat INTEGER NOT NULL,
    exp INTEGER NOT NULL,
    audit_index INTEGER NOT NULL
);
-- A sign-in without a jti is matched by certificate, audience and time.
CREATE INDEX signatures_by_key ON signatures (serial, aud, iat);
