-- Range-partitions the table `@TABLE@` by `@KEY@` (neo-events' partition retention). Written
-- once for the outbox (outbox migration 20) and the webhook deliveries (webhooks migration 20)
-- by replacing @TABLE@, @KEY@ and @UNIQUES@.
--
-- The rows already there stay where they are: the old table is renamed `@TABLE@_unpartitioned`
-- and attached as the partition of everything up to this migration (MINVALUE to its time), so
-- the migration copies no row; it builds the unique indexes that now include the partition key
-- on it and scans it once to check the bound. A DEFAULT partition catches rows no other
-- partition takes, so an insert never fails for want of a partition; maintenance
-- (`ensure_partitions`) creates the ranges ahead of time. The new parent takes every column
-- of the old table (LIKE: columns later migrations added come along), its defaults (the id
-- sequence, now owned by the parent), checks, non-unique indexes, row-level security, policies
-- and grants.
DO $migration$
DECLARE
    tbl constant text := '@TABLE@';
    key constant text := '@KEY@';
    pk constant text := 'id';
    uniques constant text[] := @UNIQUES@;
    legacy constant text := tbl || '_unpartitioned';
    schema constant text := current_schema();
    ix record;
    pol record;
    grant_ record;
    cols text;
    seq text;
    bound timestamptz;
BEGIN
    EXECUTE format('LOCK TABLE %I.%I IN ACCESS EXCLUSIVE MODE', schema, tbl);
    EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', schema, tbl, legacy);
    -- Every column of the old table, whatever later migrations added, with its defaults (the
    -- id sequence too), checks, storage and statistics settings.
    EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        'INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS) PARTITION BY RANGE (%I)',
        schema, tbl, schema, legacy, key);
    seq := pg_get_serial_sequence(format('%I.%I', schema, legacy), pk);
    IF seq IS NOT NULL THEN
        EXECUTE format('ALTER SEQUENCE %s OWNED BY %I.%I.%I', seq, schema, tbl, pk);
    END IF;
    -- The old table's indexes take its new name; the parent gets the same non-unique ones
    -- (attaching the old table then adopts its indexes instead of building them again) and
    -- the unique ones with the partition key added (PostgreSQL requires it).
    FOR ix IN SELECT c.relname AS name, i.indisunique AS is_unique,
            pg_get_indexdef(i.indexrelid) AS def, k.conname AS constraint_name
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
        WHERE i.indrelid = format('%I.%I', schema, legacy)::regclass
    LOOP
        IF ix.is_unique THEN
            -- Replaced by the parent's (built on this table when it is attached).
            IF ix.constraint_name IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %I.%I DROP CONSTRAINT %I', schema, legacy, ix.constraint_name);
            ELSE
                EXECUTE format('DROP INDEX %I.%I', schema, ix.name);
            END IF;
        ELSE
            EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', schema, ix.name,
                left(CASE WHEN starts_with(ix.name, tbl) THEN legacy || substr(ix.name, length(tbl) + 1)
                     ELSE ix.name || '_unpartitioned' END, 63));
            EXECUTE regexp_replace(ix.def, ' ON (ONLY )?\S+ USING ',
                format(' ON %I.%I USING ', schema, tbl));
        END IF;
    END LOOP;
    EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I PRIMARY KEY (%I, %I)',
        schema, tbl, tbl || '_pkey', pk, key);
    FOREACH cols IN ARRAY uniques LOOP
        EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I UNIQUE (%s, %I)', schema, tbl,
            left(tbl || '_' || replace(replace(cols, ', ', '_'), ',', '_') || '_' || key || '_key', 63),
            cols, key);
    END LOOP;
    -- Row-level security, its policies and the grants, as the old table had them.
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = format('%I.%I', schema, legacy)::regclass) THEN
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', schema, tbl);
    END IF;
    IF (SELECT relforcerowsecurity FROM pg_class WHERE oid = format('%I.%I', schema, legacy)::regclass) THEN
        EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', schema, tbl);
    END IF;
    FOR pol IN SELECT * FROM pg_policies WHERE schemaname = schema AND tablename = legacy LOOP
        EXECUTE format('CREATE POLICY %I ON %I.%I AS %s FOR %s TO %s%s%s', pol.policyname, schema, tbl,
            pol.permissive, pol.cmd,
            (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
               FROM unnest(pol.roles) AS r),
            CASE WHEN pol.qual IS NULL THEN '' ELSE ' USING (' || pol.qual || ')' END,
            CASE WHEN pol.with_check IS NULL THEN '' ELSE ' WITH CHECK (' || pol.with_check || ')' END);
    END LOOP;
    FOR grant_ IN SELECT a.privilege_type AS privilege,
            CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grantee
        FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = format('%I.%I', schema, legacy)::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON %I.%I TO %s', grant_.privilege, schema, tbl, grant_.grantee);
    END LOOP;
    -- The old table becomes the partition of every row recorded so far (retention drops it
    -- whole once it is older than the retention); new rows go to the partitions that
    -- maintenance creates, or to the default partition until it has.
    EXECUTE format('SELECT greatest(clock_timestamp(), max(%I) + interval ''1 microsecond'') FROM %I.%I',
        key, schema, legacy) INTO bound;
    EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (MINVALUE) TO (%L)',
        schema, tbl, schema, legacy, bound);
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I DEFAULT', schema, tbl || '_default', schema, tbl);
    -- Under row-level security the parent's policies guard every query through it. A
    -- partition read directly (retention reads and drops them, as the owner) has security
    -- enabled without a policy and without FORCE: the owner reads it all, any other role
    -- without BYPASSRLS nothing.
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = format('%I.%I', schema, tbl)::regclass) THEN
        FOR pol IN SELECT * FROM pg_policies WHERE schemaname = schema AND tablename = legacy LOOP
            EXECUTE format('DROP POLICY %I ON %I.%I', pol.policyname, schema, legacy);
        END LOOP;
        EXECUTE format('ALTER TABLE %I.%I NO FORCE ROW LEVEL SECURITY', schema, legacy);
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', schema, tbl || '_default');
    END IF;
END
$migration$;
