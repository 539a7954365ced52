-- keyward identity store, schema version 1.
-- Times are integer milliseconds since the Unix epoch.

CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,            -- 12 digits
    name       TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);

CREATE TABLE users (
    user_id    TEXT PRIMARY KEY,            -- AIDA + 17, stable across renames
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    name       TEXT NOT NULL,               -- as given
    name_lc    TEXT NOT NULL,               -- ASCII-lowercased: names are unique ignoring case
    path       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (account_id, name_lc)
);

CREATE TABLE user_tags (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    key     TEXT NOT NULL,
    key_lc  TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, key_lc)
);

CREATE TABLE access_keys (
    key_id            TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts (account_id),
    user_id           TEXT REFERENCES users (user_id),   -- NULL: the account's root
    status            TEXT NOT NULL CHECK (status IN ('Active', 'Inactive')),
    sealed_secret     BLOB NOT NULL,                     -- XChaCha20-Poly1305, AAD = key_id
    created_ms        INTEGER NOT NULL,
    last_used_ms      INTEGER,
    last_used_service TEXT,
    last_used_region  TEXT
);
CREATE INDEX access_keys_owner ON access_keys (account_id, user_id);

CREATE TABLE account_aliases (
    alias      TEXT PRIMARY KEY,
    account_id TEXT NOT NULL UNIQUE REFERENCES accounts (account_id)
);

-- Grows with every committed change (except last-used updates): the server's cache invalidation.
CREATE TABLE change_stamp (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO change_stamp (id, value) VALUES (1, 0);
