-- A tenant may keep every new connection's key in custody by default.
ALTER TABLE tenants ADD COLUMN custody_default INTEGER NOT NULL DEFAULT 0;
