-- keyward identity store (PostgreSQL), schema version 4: the audit trail's packed batches are
-- compressed with LZ4 instead of pglz. Both shrink them about twofold (measured: 3.0 M events,
-- 281 MiB packed, 136-137 MiB stored either way), but PostgreSQL's whole CPU with pglz was 2.5-3
-- times that with LZ4, on keyward's core (per 6 s under ~70k requests/s: 0.48-0.57 s against
-- 0.20-0.23 s with one key, 1.03-1.19 s against 0.37-0.39 s with 10,000 keys). Applies to batches written from now on; older ones stay as they are.
-- PostgreSQL before 14, or built without LZ4, keeps pglz: the change is skipped with a notice.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE audit_batches ALTER COLUMN data SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'keyward: audit batches keep pglz compression (%)', SQLERRM;
END
$$;
