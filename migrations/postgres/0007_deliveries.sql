-- Messages for the operator's sinks (a transactional outbox). A batch's messages are inserted
-- in the transaction that commits its checkpoint; a delivery worker per sink sends the
-- pending ones in id order per ordering key and records each attempt. `message_id` is the
-- idempotency key receivers see; a message already stored for its sink is not stored again.
-- Status: pending, delivered, dead (gave up; `deliveries retry` sends it again) or skipped.

CREATE TABLE eventhost.deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sink            text        NOT NULL,
    message_id      text        NOT NULL,
    subscription    text        NOT NULL,
    ordering_key    text,
    headers         jsonb       NOT NULL DEFAULT '[]',
    body            bytea       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'dead', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (sink, message_id)
);

CREATE INDEX deliveries_pending ON eventhost.deliveries (sink, id) WHERE status = 'pending';
CREATE INDEX deliveries_finished ON eventhost.deliveries (finished_at) WHERE status = 'delivered';
