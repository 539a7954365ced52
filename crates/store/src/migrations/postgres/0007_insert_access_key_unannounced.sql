-- keyward identity store (PostgreSQL), schema version 7: CreateAccessKey without NOTIFY in its
-- transaction.
--
-- PostgreSQL serializes the commits of every transaction that has sent a NOTIFY, across the
-- whole cluster: such a commit holds one global lock from before its WAL flush until it ends.
-- Each durable write then waited for the previous writer's fsync, and 16 concurrent creators
-- went no faster than one (sampled: 8-13 of 16 backends waiting on "Lock:object"). keyward now
-- announces a change after its commit, in a transaction of its own, which writes no WAL of its
-- own to wait for (see `PgBackend::announce` in postgres.rs).
--
-- This is schema 6's function with the same arguments but the last two (the announcement) and
-- without the NOTIFY. Schema 6's function stays, so a node of the previous release that shares
-- the database keeps working until it is restarted.
CREATE FUNCTION keyward_insert_access_key(
    p_account_id TEXT, p_name_lc TEXT, p_key_id TEXT, p_sealed BYTEA, p_created_ms BIGINT,
    p_max BIGINT,
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
        -- Every committed change moves the change stamp (its connection's row, schema 5).
        UPDATE change_stamp SET value = value + 1 WHERE id = 1 + pg_backend_pid() % 16;
    END IF;
END
$$;
