-- keyward identity store (PostgreSQL), schema version 2: the audit trail (CloudTrail events).
-- Same shape as the SQLite migration; see crates/store/src/migrations/0002_audit_events.sql.

CREATE TABLE audit_events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    TEXT COLLATE "C" NOT NULL,
    time_ms       BIGINT NOT NULL,
    event_id      TEXT COLLATE "C" NOT NULL,
    event_name    TEXT COLLATE "C" NOT NULL,
    event_source  TEXT COLLATE "C" NOT NULL,
    access_key_id TEXT COLLATE "C",
    user_name     TEXT COLLATE "C",
    read_only     BOOLEAN NOT NULL,
    body          TEXT NOT NULL
);

CREATE INDEX audit_events_by_time ON audit_events (account_id, time_ms, seq);
CREATE INDEX audit_events_by_age ON audit_events (time_ms);
