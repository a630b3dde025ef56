-- The look-up of an append's event ids (is any already stored?) is planned for each call.
--
-- PL/pgSQL caches the plans of a function's statements per connection, and after five calls
-- may switch a statement to a generic plan, costed on the table as it is then and kept until
-- the table's statistics change. A connection whose first appends carried many ids each (a
-- policy's batch, a bulk import), while the events table was still small, got a generic plan
-- that scans the whole table for `id = ANY (v_ids)` instead of probing events_id_key; it kept
-- it as the table grew, until the next ANALYZE, and every append on it then read every event:
-- 3 ms per append on a table of 30,000 events (300 ms for 100 one-event appends that take
-- 15 ms on the index). The look-ups now go through EXECUTE, planned with the actual ids each
-- time, which is always the index (a probe per id) once the table is more than a few pages.
-- Everything else is as in 0005_append_rules.sql.
CREATE OR REPLACE FUNCTION eventhost.append_quiet(
    p_aggregate_type   text,
    p_aggregate_id     text,
    p_expected_version bigint,
    p_events           jsonb,
    max_payload_bytes  bigint
) RETURNS TABLE (event_position bigint, event_version bigint, event_id uuid, duplicate boolean)
LANGUAGE plpgsql
-- As 0004_append_privileges.sql set it: replacing the function would otherwise drop it.
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count     bigint;
    v_ids       uuid[];
    v_found     bigint;
    v_elsewhere boolean;
    v_version   bigint;
    v_order_tx  xid8;
BEGIN
    IF p_aggregate_type IS NULL OR p_aggregate_type = '' OR p_aggregate_id IS NULL OR p_aggregate_id = '' THEN
        RAISE EXCEPTION 'eventhost.append: aggregate_type and aggregate_id must not be empty'
            USING ERRCODE = '22023';
    END IF;
    IF p_events IS NULL OR jsonb_typeof(p_events) <> 'array' OR jsonb_array_length(p_events) = 0 THEN
        RAISE EXCEPTION 'eventhost.append: events must be a non-empty JSON array'
            USING ERRCODE = '22023';
    END IF;
    IF p_expected_version < 0 THEN
        RAISE EXCEPTION 'eventhost.append: expected_version must be NULL, 0 or positive, got %', p_expected_version
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_events) AS e
        WHERE jsonb_typeof(e) <> 'object'
           OR jsonb_typeof(e->'event_type') IS DISTINCT FROM 'string' OR e->>'event_type' = ''
           OR NOT e ? 'payload'
           OR (e ? 'metadata' AND jsonb_typeof(e->'metadata') <> 'object')
    ) THEN
        RAISE EXCEPTION 'eventhost.append: each event needs a non-empty "event_type" string and a "payload"; "metadata" must be an object'
            USING ERRCODE = '22023';
    END IF;
    IF octet_length(p_aggregate_type) > 1024 OR octet_length(p_aggregate_id) > 1024 OR EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_events) AS e
        WHERE octet_length(e->>'event_type') > 1024
    ) THEN
        RAISE EXCEPTION 'eventhost.append: aggregate_type, aggregate_id and event_type are at most 1024 bytes'
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_events) AS e, jsonb_each(e->'metadata') AS m
        WHERE jsonb_typeof(e->'metadata') = 'object' AND jsonb_typeof(m.value) <> 'string'
    ) THEN
        RAISE EXCEPTION 'eventhost.append: metadata values must be strings'
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_events) AS e
        WHERE e ? 'id' AND jsonb_typeof(e->'id') = 'string'
        GROUP BY e->>'id' HAVING count(*) > 1
    ) THEN
        RAISE EXCEPTION 'eventhost.append: an event id appears twice in one append'
            USING ERRCODE = '22023';
    END IF;

    IF max_payload_bytes IS NOT NULL AND EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_events) AS e
        WHERE octet_length((e->'payload')::text) > max_payload_bytes
    ) THEN
        RAISE EXCEPTION 'eventhost.append: a payload is larger than % bytes (eventhost.max_payload_bytes)', max_payload_bytes
            USING ERRCODE = '54000';
    END IF;

    v_count := jsonb_array_length(p_events);
    SELECT array_agg((e->>'id')::uuid) INTO v_ids
    FROM jsonb_array_elements(p_events) AS e
    WHERE e ? 'id' AND jsonb_typeof(e->'id') = 'string';

    IF v_ids IS NOT NULL THEN
        -- Planned afresh for each call (EXECUTE), so always on events_id_key: see above.
        EXECUTE 'SELECT count(*) FROM eventhost.events WHERE id = ANY ($1)'
            INTO v_found USING v_ids;
        IF v_found > 0 THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM eventhost.events WHERE id = ANY ($1)
                                    AND (aggregate_type, aggregate_id) <> ($2, $3))'
                INTO v_elsewhere USING v_ids, p_aggregate_type, p_aggregate_id;
            IF v_found = v_count AND cardinality(v_ids) = v_count AND NOT v_elsewhere THEN
                RETURN QUERY EXECUTE
                    'SELECT e.position, e.version, e.id, true
                     FROM eventhost.events AS e WHERE e.id = ANY ($1) ORDER BY e.version'
                    USING v_ids;
                RETURN;
            END IF;
            RAISE EXCEPTION 'eventhost.append: % of % event ids already exist (a batch is idempotent only when all of its ids were appended together to this stream)', v_found, v_count
                USING ERRCODE = '23505', DETAIL = format('found=%s total=%s', v_found, v_count);
        END IF;
    END IF;

    -- Lock the stream row (creating it if needed) and take the versions in one statement.
    INSERT INTO eventhost.streams AS s (aggregate_type, aggregate_id, version, order_tx)
    VALUES (p_aggregate_type, p_aggregate_id, v_count, pg_current_xact_id())
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
        SET version  = s.version + v_count,
            order_tx = greatest(s.order_tx, pg_current_xact_id())
    RETURNING s.version - v_count, s.order_tx INTO v_version, v_order_tx;

    IF p_expected_version IS NOT NULL AND p_expected_version <> v_version THEN
        RAISE EXCEPTION 'eventhost.append: stream %/% is at version %, expected %',
                p_aggregate_type, p_aggregate_id, v_version, p_expected_version
            USING ERRCODE = 'EH409',
                  DETAIL = format('expected=%s actual=%s', p_expected_version, v_version);
    END IF;

    RETURN QUERY
        INSERT INTO eventhost.events
            (order_tx, id, aggregate_type, aggregate_id, version, event_type, payload, metadata)
        SELECT v_order_tx,
               coalesce((x.e->>'id')::uuid, gen_random_uuid()),
               p_aggregate_type,
               p_aggregate_id,
               v_version + x.ord,
               x.e->>'event_type',
               x.e->'payload',
               coalesce(x.e->'metadata', '{}'::jsonb)
        FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, ord)
        ORDER BY x.ord
        RETURNING events.position, events.version, events.id, false;
END;
$$;
