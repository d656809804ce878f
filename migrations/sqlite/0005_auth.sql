-- Access control: API keys (only a SHA-256 of each key is kept) and the append-only audit trail.
-- Times are microseconds since the Unix epoch, as in both backends.
CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    key_hash      TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'subscriber')),
    subscriber_id TEXT,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    CHECK (role <> 'subscriber' OR subscriber_id IS NOT NULL)
);

CREATE TABLE audit_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

-- Append-only: rows are never changed or removed through the database either.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
