-- A subscription filtered by aggregate type reads each type's next events on
-- events_category_order (aggregate_type, order_tx, position), which returns them in
-- subscription order, so a batch of 100 touches 100 index entries. The unique key of a
-- stream's versions also began with aggregate_type, and on a table grown since its last
-- ANALYZE the planner preferred it: all of the type's events after the checkpoint, then an
-- incremental sort. The soak bench met it after 8 minutes: 250-500 ms per batch of
-- order-totals instead of 0.3 ms, and the subscription fell behind for good. Beginning with
-- aggregate_id, the key still serves what it is for (uniqueness, one stream's events by
-- version) and can no longer stand in for the category index.
ALTER TABLE eventhost.events
    ADD CONSTRAINT events_stream_version_key UNIQUE (aggregate_id, aggregate_type, version);
ALTER TABLE eventhost.events
    DROP CONSTRAINT events_aggregate_type_aggregate_id_version_key;
