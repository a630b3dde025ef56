-- Several daemons on one database. Each daemon is a member while its row here is live (it
-- renews `expires_at` every third of the lease TTL); each subscription is run by the one
-- daemon that holds its lease: `owner`, until `lease_expires_at` (the database's clock, the
-- only clock the daemons share). Taking a lease raises `epoch` and the subscription's
-- `revision`, so a batch the previous owner still has in flight can never commit (its
-- commit names the old revision), and every commit also checks that its daemon still holds
-- an unexpired lease: a daemon paused past its lease commits nothing when it wakes.
CREATE TABLE eventhost.daemons (
    id         uuid        PRIMARY KEY,
    host       text        NOT NULL,
    boot_id    text,
    pid        bigint      NOT NULL,
    version    text        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

ALTER TABLE eventhost.subscriptions
    ADD COLUMN owner            uuid,
    ADD COLUMN epoch            bigint NOT NULL DEFAULT 0,
    ADD COLUMN lease_expires_at timestamptz;
