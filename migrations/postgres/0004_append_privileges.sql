-- Applications append through eventhost.append() with no right on the tables themselves.
--
-- append() runs with its owner's rights (the role that migrated the schema, the daemon's),
-- so an application role needs only USAGE on the schema and EXECUTE on append(); it cannot
-- write the tables directly, where a row could skip the ordering rule of 0001_events.sql.
-- Both functions get a fixed search_path: a SECURITY DEFINER function must not resolve names
-- through the caller's. append_quiet() (no notification, optional payload cap) is for the
-- owner only.
ALTER FUNCTION eventhost.append(text, text, bigint, jsonb)
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION eventhost.append_quiet(text, text, bigint, jsonb, bigint)
    SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION eventhost.append(text, text, bigint, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION eventhost.append_quiet(text, text, bigint, jsonb, bigint) FROM PUBLIC;
