-- Access control: API keys (only a SHA-256 of each key is kept) and the append-only audit trail.
-- Times are microseconds since the Unix epoch, as in both backends.
CREATE TABLE api_keys (
    key_id        VARCHAR(64) PRIMARY KEY,
    key_hash      VARCHAR(64) NOT NULL UNIQUE,
    role          VARCHAR(16) NOT NULL CHECK (role IN ('admin', 'publisher', 'subscriber')),
    subscriber_id VARCHAR(255),
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    CHECK (role <> 'subscriber' OR subscriber_id IS NOT NULL)
);

CREATE TABLE audit_log (
    seq     BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

-- Append-only: rows are never changed or removed through the database either.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
