-- repdist's PostgreSQL schema (storage.database_url / REPDIST_DATABASE_URL).
-- The service spec's four tables exactly as it gives them ("PostgreSQL (Command Side)": UUID ids,
-- VARCHAR(n) for max_length, JSONB for JSON, TIMESTAMPTZ for Timestamp, its defaults and unique keys),
-- followed by the columns repdist adds, the same as the embedded SQLite schema.
-- The other tables exist for durability: report_events (accepted reports and whether their delivery
-- set is durable), subscription_versions (history for replaying reports after a crash),
-- pending_deliveries (what resumes on restart), dead_letters, notifications.
-- Dataflow times are BIGINT microseconds since the Unix epoch.

CREATE TABLE report_subscriptions (
    id                   UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id      VARCHAR(100) NOT NULL UNIQUE,
    subscriber_id        VARCHAR(100) NOT NULL,
    subscriber_type      VARCHAR(50) NOT NULL,
    report_types         JSONB NOT NULL,
    delivery_preferences JSONB NOT NULL,
    filters              JSONB,
    status               VARCHAR(20) DEFAULT 'active',
    created_at           TIMESTAMPTZ DEFAULT now(),
    -- added: the subscription type and when the current version took effect
    subscription_type    VARCHAR(50) NOT NULL DEFAULT 'REAL_TIME',
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX report_subscriptions_by_subscriber ON report_subscriptions (subscriber_id);

CREATE TABLE delivery_channels (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    channel_id     VARCHAR(100) NOT NULL UNIQUE,
    channel_type   VARCHAR(50) NOT NULL,
    channel_config JSONB NOT NULL,
    enabled        BOOLEAN DEFAULT true,
    created_at     TIMESTAMPTZ DEFAULT now()
);

CREATE TABLE delivery_history (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    delivery_id     VARCHAR(100) NOT NULL UNIQUE,
    subscription_id VARCHAR(100) NOT NULL,
    report_id       VARCHAR(100) NOT NULL,
    channel         VARCHAR(50) NOT NULL,
    status          VARCHAR(20) NOT NULL,
    delivery_time   TIMESTAMPTZ,
    retry_count     INTEGER DEFAULT 0,
    error_details   TEXT,
    created_at      TIMESTAMPTZ DEFAULT now(),
    -- added: which event created it, for answering a re-sent event with the same ids
    event_id        TEXT NOT NULL
);
CREATE INDEX delivery_history_by_event ON delivery_history (event_id);
CREATE INDEX delivery_history_by_report ON delivery_history (report_id);
CREATE INDEX delivery_history_by_status ON delivery_history (channel, status);

CREATE TABLE distribution_stats (
    id                    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    timestamp             TIMESTAMPTZ NOT NULL,
    report_type           VARCHAR(50) NOT NULL,
    channel               VARCHAR(50) NOT NULL,
    deliveries_attempted  INTEGER DEFAULT 0,
    deliveries_successful INTEGER DEFAULT 0,
    deliveries_failed     INTEGER DEFAULT 0,
    avg_delivery_time_ms  DOUBLE PRECISION,
    created_at            TIMESTAMPTZ DEFAULT now(),
    -- added: the window's p99 and its start in dataflow time (one row per window x type x channel)
    p99_delivery_time_ms  DOUBLE PRECISION,
    window_start_us       BIGINT NOT NULL,
    UNIQUE (window_start_us, report_type, channel)
);

CREATE TABLE report_events (
    event_id    TEXT PRIMARY KEY,
    report_id   TEXT NOT NULL,
    accepted_at BIGINT NOT NULL,
    payload     JSONB NOT NULL,
    expanded    BOOLEAN NOT NULL DEFAULT false,
    -- acceptance order among reports accepted at the same time
    seq         BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX report_events_unexpanded ON report_events (accepted_at, seq) WHERE NOT expanded;

CREATE TABLE subscription_versions (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    changed_at      BIGINT NOT NULL,
    body            JSONB NOT NULL
);
CREATE INDEX subscription_versions_by_id ON subscription_versions (subscription_id, seq);

CREATE TABLE pending_deliveries (
    delivery_id TEXT PRIMARY KEY,
    task        JSONB NOT NULL,
    due         BIGINT NOT NULL
);

CREATE TABLE dead_letters (
    delivery_id      TEXT PRIMARY KEY,
    task             JSONB NOT NULL,
    reason           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    dead_lettered_at BIGINT NOT NULL,
    -- the listing's order and cursor (SQLite's rowid): kept by an upsert, new after a replay
    seq              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);

CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY,
    subscriber_id   TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    report_id       TEXT NOT NULL,
    payload         JSONB NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX notifications_by_subscriber ON notifications (subscriber_id, created_at);
