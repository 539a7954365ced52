-- keyward identity store (PostgreSQL), schema version 6: CreateAccessKey in one round trip.
-- A creation locked its owner's row, then counted and inserted in a second statement (so that
-- the count is taken after the lock and sees every key the previous holder committed), inside
-- BEGIN ... COMMIT: four round trips. This function runs the same two statements on the server,
-- where each statement of a VOLATILE function takes a fresh snapshot under READ COMMITTED, so it
-- is called in one autocommit statement. Measured, CreateAccessKey + DeleteAccessKey with 16
-- clients and PostgreSQL on keyward's core: see docs/benchmarks.md (session 8).
--
-- Arguments: the account, the owner's folded name (NULL: the account's root), the new key, its
-- sealed secret and creation time, the quota, and the announcement (payload, channel).
-- Returns one row: whether the owner exists, the owner's id and stored name (NULL for the root),
-- how many keys it had, and whether the key was inserted (false when at the quota or when the
-- key id is taken).
CREATE FUNCTION keyward_insert_access_key(
    p_account_id TEXT, p_name_lc TEXT, p_key_id TEXT, p_sealed BYTEA, p_created_ms BIGINT,
    p_max BIGINT, p_payload TEXT, p_channel TEXT,
    OUT o_found BOOLEAN, OUT o_user_id TEXT, OUT o_name TEXT, OUT o_count BIGINT,
    OUT o_inserted BOOLEAN)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    o_count := 0;
    o_inserted := false;
    -- The owner's row stays locked until commit: concurrent creators for the same owner, on any
    -- node, count one after the other.
    IF p_name_lc IS NULL THEN
        PERFORM 1 FROM accounts WHERE account_id = p_account_id FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            o_found := false;
            RETURN;
        END IF;
        -- A new statement, so a new snapshot: taken after the lock above.
        SELECT COUNT(*) INTO o_count FROM access_keys k
         WHERE k.account_id = p_account_id AND k.user_id IS NULL;
    ELSE
        SELECT u.user_id, u.name INTO o_user_id, o_name FROM users u
         WHERE u.account_id = p_account_id AND u.name_lc = p_name_lc
           FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            o_found := false;
            RETURN;
        END IF;
        SELECT COUNT(*) INTO o_count FROM access_keys k
         WHERE k.account_id = p_account_id AND k.user_id = o_user_id;
    END IF;
    o_found := true;
    IF o_count >= p_max THEN
        RETURN;
    END IF;
    INSERT INTO access_keys (key_id, account_id, user_id, status, sealed_secret, created_ms)
    VALUES (p_key_id, p_account_id, o_user_id, 'Active', p_sealed, p_created_ms)
    ON CONFLICT (key_id) DO NOTHING;
    o_inserted := FOUND;
    IF o_inserted THEN
        -- Every committed change moves the change stamp (its connection's row, schema 5) and is
        -- announced at commit.
        UPDATE change_stamp SET value = value + 1 WHERE id = 1 + pg_backend_pid() % 16;
        PERFORM pg_notify(p_channel, p_payload);
    END IF;
END
$$;
