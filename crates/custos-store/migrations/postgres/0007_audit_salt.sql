-- The salt of each entry's commitment: entries written from now on are
-- public (index, time, action, key, commitment); the actor, object and
-- details stay here, for authenticated readers. NULL marks an entry written
-- before, hashed in the clear form and kept so.
ALTER TABLE audit_log ADD COLUMN salt BYTEA;
