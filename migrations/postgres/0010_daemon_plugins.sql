-- What each daemon runs: plugin name to `<version> #<fingerprint of its subscriptions>`,
-- written at every renewal, so that `eventhost daemons list` says what runs where and a
-- daemon can warn when a peer runs another version of one of its plugins.
ALTER TABLE eventhost.daemons ADD COLUMN plugins jsonb NOT NULL DEFAULT '{}'::jsonb;
