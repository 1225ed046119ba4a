-- A certificate's (or any object's) audit trail without reading the whole log:
-- the console shows it on every certificate page. Issuance entries (the bulk
-- of the log) stay out of the index, whose key (a random serial) would cost
-- every issuance a random b-tree insert: each certificate row records the
-- index of its own issuance entry instead (NULL for rows written before).
CREATE INDEX audit_log_by_object ON audit_log(object, idx) WHERE action <> 'certificate.issue';
ALTER TABLE certificates ADD COLUMN issued_entry BIGINT;
