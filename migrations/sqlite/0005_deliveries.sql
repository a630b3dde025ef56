-- Messages for the operator's sinks (a transactional outbox). A batch's messages are inserted
-- in the transaction that commits its checkpoint; a delivery worker per sink sends the
-- pending ones in id order per ordering key and records each attempt. `message_id` is the
-- idempotency key receivers see; a message already stored for its sink is not stored again.
-- Status: pending, delivered, dead (gave up; `deliveries retry` sends it again) or skipped.

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sink            TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    subscription    TEXT    NOT NULL,
    ordering_key    TEXT,
    headers         TEXT    NOT NULL DEFAULT '[]',
    body            BLOB    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    finished_at     TEXT,
    UNIQUE (sink, message_id)
);

CREATE INDEX deliveries_pending ON deliveries (sink, id) WHERE status = 'pending';
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE status = 'delivered';
