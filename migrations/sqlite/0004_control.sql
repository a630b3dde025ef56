-- A counter that every operator request a running daemon must notice (a subscription reset,
-- a parked-event replay) raises in its own transaction. On SQLite those requests come from
-- other processes, which cannot signal the daemon: its one poll for all subscriptions reads
-- this counter beside the head of the log, so idle subscriptions cost nothing per poll.
CREATE TABLE control (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO control (id, version) VALUES (1, 0);
