-- keyward identity store (PostgreSQL), schema version 3: the audit trail in packed batches.
-- Same shape as the SQLite migration; see crates/store/src/migrations/0003_audit_batches.sql.

CREATE TABLE audit_batches (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id TEXT COLLATE "C" NOT NULL,
    min_ms     BIGINT NOT NULL,
    max_ms     BIGINT NOT NULL,
    events     INTEGER NOT NULL,
    data       BYTEA NOT NULL
);

CREATE INDEX audit_batches_by_time ON audit_batches (account_id, max_ms, seq);
CREATE INDEX audit_batches_by_age ON audit_batches (max_ms);
