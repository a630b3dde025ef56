-- The daemon's view of its plugins folder, for `eventhost plugins list`: one row per file.
CREATE TABLE eventhost.plugins (
    file      text        PRIMARY KEY,
    name      text,
    version   text,
    hash      text        NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    status    text        NOT NULL,
    error     text
);
