-- The event store: streams with optimistic concurrency, events in a gap-free readable order,
-- and eventhost.append(), the one way in for both the daemon and application transactions.
--
-- Ordering. A subscriber must never skip an event that commits late. Each event carries
-- `order_tx`: the appending transaction's id, raised to the stream's previous `order_tx`
-- when that one is larger (a transaction that took its id early may append version 2 after
-- a younger one appended version 1). Readers take rows with
-- `order_tx < pg_snapshot_xmin(pg_current_snapshot())` only -- every transaction that could
-- still add such a row has finished -- in `(order_tx, position)` order, and checkpoint on
-- that pair. Nothing committed later can sort before a row already read, and each stream's
-- versions sort in version order.

CREATE TABLE eventhost.streams (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL CHECK (version >= 0),
    order_tx       xid8   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

CREATE TABLE eventhost.events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_tx       xid8        NOT NULL,
    id             uuid        NOT NULL UNIQUE,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (aggregate_type, aggregate_id, version)
);

CREATE INDEX events_order ON eventhost.events (order_tx, position);
CREATE INDEX events_category_order ON eventhost.events (aggregate_type, order_tx, position);
CREATE INDEX events_type_order ON eventhost.events (event_type, order_tx, position);

-- Appends `events` (a JSON array of {"id"?, "event_type", "payload", "metadata"?}) to the
-- stream, atomically, inside the caller's transaction. `expected_version`: NULL for any,
-- 0 for "the stream must not exist", n for "the stream must be at version n". A mismatch
-- raises SQLSTATE EH409 with the detail 'expected=<e> actual=<a>'. A payload whose jsonb text
-- is longer than `max_payload_bytes` raises SQLSTATE 54000; NULL means the caller has checked
-- payload sizes itself (the daemon does, on compact JSON, against its configured cap). When every event carries
-- an id that is already stored in this stream, nothing is written and the stored rows come
-- back with duplicate = true. Does not notify: see eventhost.append() below.
CREATE FUNCTION eventhost.append_quiet(
    p_aggregate_type   text,
    p_aggregate_id     text,
    p_expected_version bigint,
    p_events           jsonb,
    max_payload_bytes  bigint
) RETURNS TABLE (event_position bigint, event_version bigint, event_id uuid, duplicate boolean)
LANGUAGE plpgsql
AS $$
DECLARE
    v_count     bigint;
    v_ids       uuid[];
    v_found     bigint;
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
        SELECT count(*) INTO v_found FROM eventhost.events WHERE id = ANY (v_ids);
        IF v_found > 0 THEN
            IF v_found = v_count AND cardinality(v_ids) = v_count AND NOT EXISTS (
                SELECT 1 FROM eventhost.events
                WHERE id = ANY (v_ids)
                  AND (aggregate_type, aggregate_id) <> (p_aggregate_type, p_aggregate_id)
            ) THEN
                RETURN QUERY
                    SELECT e.position, e.version, e.id, true
                    FROM eventhost.events AS e WHERE e.id = ANY (v_ids) ORDER BY e.version;
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

-- The outbox way in: call it inside any application transaction. If the transaction rolls
-- back, no event exists; when it commits, listeners on channel 'eventhost' are woken once
-- (PostgreSQL folds identical notifications of one transaction into one). Payloads are
-- capped by the setting eventhost.max_payload_bytes (default 1 MiB, measured on jsonb text).
CREATE FUNCTION eventhost.append(
    aggregate_type   text,
    aggregate_id     text,
    expected_version bigint,
    events           jsonb
) RETURNS TABLE (event_position bigint, event_version bigint, event_id uuid, duplicate boolean)
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN QUERY SELECT * FROM eventhost.append_quiet(
        aggregate_type, aggregate_id, expected_version, events,
        coalesce(nullif(current_setting('eventhost.max_payload_bytes', true), '')::bigint, 1048576));
    PERFORM pg_notify('eventhost', '');
END;
$$;
