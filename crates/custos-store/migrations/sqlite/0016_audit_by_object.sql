-- A certificate's (or any object's) audit trail without reading the whole log:
-- the console shows it on every certificate page.
CREATE INDEX audit_log_by_object ON audit_log(object, idx);
