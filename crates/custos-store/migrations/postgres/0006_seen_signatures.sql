-- Request signatures (tenant acks) already accepted, kept while they could
-- still verify, so that each is good once on every node sharing the database.
CREATE TABLE seen_signatures (
    mac TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
