-- The inventory's search stays fast at millions of certificates (issue 18):
-- every name a certificate covers, indexed (search by name was a scan of the
-- JSON list column), and the list's order (newest first) as an index, alone
-- and within a connection, so a page reads its 50 rows instead of sorting all.
CREATE TABLE certificate_names (
    name TEXT NOT NULL,
    serial TEXT NOT NULL,
    PRIMARY KEY (name, serial)
) WITHOUT ROWID;
INSERT INTO certificate_names (name, serial)
    SELECT DISTINCT j.value, c.serial FROM certificates c, json_each(c.sans) j;
CREATE INDEX certificates_by_created ON certificates(created_at DESC, serial);
DROP INDEX certificates_by_connection;
CREATE INDEX certificates_by_connection ON certificates(tenant, connection, created_at DESC, serial);
