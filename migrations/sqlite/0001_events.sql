-- The embedded event store. SQLite has one writer at a time (appends run in BEGIN IMMEDIATE
-- transactions), so position order is commit order and a subscriber can checkpoint on the
-- position alone.

CREATE TABLE streams (
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 0),
    PRIMARY KEY (aggregate_type, aggregate_id)
) WITHOUT ROWID;

CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    event_type     TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL DEFAULT '{}',
    recorded_at    TEXT    NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, version)
);

CREATE INDEX events_category ON events (aggregate_type, position);
CREATE INDEX events_type ON events (event_type, position);
