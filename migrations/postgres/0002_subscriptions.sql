-- Durable subscriptions: a checkpoint per subscription, each subscription's key-value state,
-- and the events it parked. The dispatcher commits a batch's effects and its new checkpoint
-- in one transaction whose checkpoint update checks the previous one.

CREATE TABLE eventhost.subscriptions (
    name                text        PRIMARY KEY,
    plugin              text        NOT NULL,
    aggregate_types     text[]      NOT NULL DEFAULT '{}',
    event_types         text[]      NOT NULL DEFAULT '{}',
    checkpoint_tx       bigint      NOT NULL DEFAULT 0,
    checkpoint_position bigint      NOT NULL DEFAULT 0,
    status              text        NOT NULL DEFAULT 'running',
    last_error          text,
    progress            jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE eventhost.state (
    namespace text NOT NULL,
    key       text COLLATE "C" NOT NULL,
    value     text NOT NULL,
    PRIMARY KEY (namespace, key)
);

CREATE TABLE eventhost.parked (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription     text        NOT NULL REFERENCES eventhost.subscriptions (name) ON DELETE CASCADE,
    event_id         uuid        NOT NULL,
    event_position   bigint      NOT NULL,
    error            text        NOT NULL,
    attempts         integer     NOT NULL,
    parked_at        timestamptz NOT NULL DEFAULT now(),
    replay_requested boolean     NOT NULL DEFAULT false,
    UNIQUE (subscription, event_id)
);
