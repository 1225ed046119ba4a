-- A pending two-person request can be refused (or withdrawn) instead of left to expire.
ALTER TABLE approvals ADD COLUMN refused_by TEXT;
ALTER TABLE approvals ADD COLUMN refused_at BIGINT;
