-- keyward identity store, schema version 3: the audit trail in packed batches.
-- One row per batch of events of one account (see crates/store/src/events/pack.rs for `data`):
-- one row per event cost more than the request it recorded. The rows of `audit_events` (schema 2)
-- are moved here by the migration code, each event keeping its JSON, then that table is dropped.

CREATE TABLE audit_batches (
    seq        INTEGER PRIMARY KEY,   -- insertion order, ties of max_ms
    account_id TEXT NOT NULL,
    min_ms     INTEGER NOT NULL,      -- the oldest event's time
    max_ms     INTEGER NOT NULL,      -- the newest event's time
    events     INTEGER NOT NULL,
    data       BLOB NOT NULL
);

-- Newest batches first within an account (every lookup).
CREATE INDEX audit_batches_by_time ON audit_batches (account_id, max_ms);
-- Retention: the oldest batches across accounts.
CREATE INDEX audit_batches_by_age ON audit_batches (max_ms);
