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

-- Newest first within an account (every lookup; a filter on key, user or name scans the account's
-- events in time order). No index by access key: with many keys its inserts land all over the
-- tree, and measured with 10,000 keys it cut GetCallerIdentity throughput to a third.
CREATE INDEX audit_events_by_time ON audit_events (account_id, time_ms, seq);
-- Retention: the oldest rows across accounts.
CREATE INDEX audit_events_by_age ON audit_events (time_ms);
