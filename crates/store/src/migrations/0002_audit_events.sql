-- keyward identity store, schema version 2: the audit trail (CloudTrail events).
-- One row per event; `body` is the CloudTrail event JSON as LookupEvents returns it, the other
-- columns are what LookupEvents filters and sorts on. No foreign key to accounts: events outlive
-- deleted users and keys, and are inserted only for accounts that exist (see the INSERT).

CREATE TABLE audit_events (
    seq           INTEGER PRIMARY KEY,      -- insertion order, ties of time_ms
    account_id    TEXT NOT NULL,
    time_ms       INTEGER NOT NULL,
    event_id      TEXT NOT NULL,
    event_name    TEXT NOT NULL,
    event_source  TEXT NOT NULL,
    access_key_id TEXT,
    user_name     TEXT,
    read_only     INTEGER NOT NULL,         -- 0 or 1
    body          TEXT NOT NULL
);

-- Newest first within an account (every lookup), and by key (the "who still uses it" lookup).
CREATE INDEX audit_events_by_time ON audit_events (account_id, time_ms, seq);
CREATE INDEX audit_events_by_key ON audit_events (access_key_id, time_ms, seq);
-- Retention: the oldest rows across accounts.
CREATE INDEX audit_events_by_age ON audit_events (time_ms);
