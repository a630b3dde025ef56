-- A counter that every operator request a running daemon must notice (a subscription reset,
-- a parked-event replay) raises in the request's transaction. A daemon's one poll for all
-- subscriptions reads it beside the head of the log, and a notification only makes it poll
-- sooner: anyone who may connect can `NOTIFY eventhost`, so what a daemon does never depends
-- on a notification's sender or payload, and a flood of them costs it one poll at a time.
CREATE TABLE eventhost.control (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint  NOT NULL
);
INSERT INTO eventhost.control (id, version) VALUES (1, 0);
