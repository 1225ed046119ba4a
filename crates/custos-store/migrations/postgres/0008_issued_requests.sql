-- Idempotency keys of bulk requests (input file and line): a request whose
-- key is here was issued, in the same transaction as its certificate, and a
-- resumed run skips it instead of issuing it twice.
CREATE TABLE issued_requests (
    request_key TEXT PRIMARY KEY,
    serial TEXT NOT NULL REFERENCES certificates(serial)
);
