-- keyward identity store on PostgreSQL, schema version 1 (the same tables as SQLite's 0001).
-- Times are bigint milliseconds since the Unix epoch. Every text column uses the "C" collation so
-- that ordering and comparisons (list order, page markers) are bytewise, as in SQLite, whatever
-- the database's locale.

CREATE TABLE accounts (
    account_id TEXT COLLATE "C" PRIMARY KEY,         -- 12 digits
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);

CREATE TABLE users (
    user_id    TEXT COLLATE "C" PRIMARY KEY,         -- AIDA + 17, stable across renames
    account_id TEXT COLLATE "C" NOT NULL REFERENCES accounts (account_id),
    name       TEXT COLLATE "C" NOT NULL,            -- as given
    name_lc    TEXT COLLATE "C" NOT NULL,            -- ASCII-lowercased by keyward (names are ASCII)
    path       TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    CHECK (name_lc = lower(name))
);
-- User names are unique per account ignoring case.
CREATE UNIQUE INDEX users_account_name_lc ON users (account_id, name_lc);

CREATE TABLE user_tags (
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (user_id),
    key     TEXT COLLATE "C" NOT NULL,
    key_lc  TEXT COLLATE "C" NOT NULL,
    value   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, key_lc)
);

CREATE TABLE access_keys (
    key_id            TEXT COLLATE "C" PRIMARY KEY,
    account_id        TEXT COLLATE "C" NOT NULL REFERENCES accounts (account_id),
    user_id           TEXT COLLATE "C" REFERENCES users (user_id),   -- NULL: the account's root
    status            TEXT COLLATE "C" NOT NULL CHECK (status IN ('Active', 'Inactive')),
    sealed_secret     BYTEA NOT NULL,                                -- XChaCha20-Poly1305, AAD = key_id
    created_ms        BIGINT NOT NULL,
    last_used_ms      BIGINT,
    last_used_service TEXT COLLATE "C",
    last_used_region  TEXT COLLATE "C"
);
CREATE INDEX access_keys_owner ON access_keys (account_id, user_id);
CREATE INDEX access_keys_user ON access_keys (user_id);

CREATE TABLE account_aliases (
    alias      TEXT COLLATE "C" PRIMARY KEY,
    account_id TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES accounts (account_id)
);

-- Grows with every committed change (except last-used updates): the server's cache invalidation.
CREATE TABLE change_stamp (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO change_stamp (id, value) VALUES (1, 0);
