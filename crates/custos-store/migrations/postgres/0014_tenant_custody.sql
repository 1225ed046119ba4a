-- A tenant may keep every new connection's key in custody by default.
ALTER TABLE tenants ADD COLUMN custody_default BIGINT NOT NULL DEFAULT 0;
