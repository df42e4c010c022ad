-- The security-relevant settings in force at the last start, to record changes between starts.
CREATE TABLE settings_snapshot (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
