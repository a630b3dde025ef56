-- Every change to a subscription raises its revision: each batch's commit (checkpoint, state,
-- parked entries, replays) and each operator request that changes it (reset, clearing its
-- state, skipping a parked event). A batch commits only while the revision is the one its
-- worker last saw, so a change made while the batch was in flight fails the batch's commit
-- and the worker starts again from what is stored; and a daemon that keeps a subscription's
-- state in memory between batches can never commit anything computed from a stale copy.
ALTER TABLE eventhost.subscriptions ADD COLUMN revision bigint NOT NULL DEFAULT 0;
