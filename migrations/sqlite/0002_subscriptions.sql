-- Durable subscriptions: a checkpoint per subscription, each subscription's key-value state,
-- and the events it parked. The dispatcher commits a batch's effects and its new checkpoint
-- in one transaction whose checkpoint update checks the previous one.

CREATE TABLE subscriptions (
    name                TEXT    PRIMARY KEY,
    plugin              TEXT    NOT NULL,
    aggregate_types     TEXT    NOT NULL DEFAULT '[]',
    event_types         TEXT    NOT NULL DEFAULT '[]',
    checkpoint_position INTEGER NOT NULL DEFAULT 0,
    status              TEXT    NOT NULL DEFAULT 'running',
    last_error          TEXT,
    progress            TEXT,
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL
);

CREATE TABLE state (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

CREATE TABLE parked (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription     TEXT    NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    event_id         TEXT    NOT NULL,
    event_position   INTEGER NOT NULL,
    error            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    parked_at        TEXT    NOT NULL,
    replay_requested INTEGER NOT NULL DEFAULT 0,
    UNIQUE (subscription, event_id)
);
