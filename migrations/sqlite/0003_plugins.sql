-- The daemon's view of its plugins folder, for `eventhost plugins list`: one row per file.
CREATE TABLE plugins (
    file      TEXT PRIMARY KEY,
    name      TEXT,
    version   TEXT,
    hash      TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    status    TEXT NOT NULL,
    error     TEXT
);
