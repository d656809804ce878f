-- repdist's embedded schema.
-- The service spec's four tables keep its names, columns, defaults and unique keys:
--   report_subscriptions, delivery_channels, delivery_history, distribution_stats
-- (UUID ids as text, JSON as text, timestamps as RFC 3339 text), with a few added columns.
-- The other tables exist for durability: report_events (accepted reports and whether their delivery
-- set is durable), subscription_versions (history for replaying reports after a crash),
-- pending_deliveries (what resumes on restart), dead_letters, notifications.

CREATE TABLE report_subscriptions (
    id                   TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    subscription_id      TEXT NOT NULL UNIQUE CHECK (length(subscription_id) <= 100),
    subscriber_id        TEXT NOT NULL CHECK (length(subscriber_id) <= 100),
    subscriber_type      TEXT NOT NULL CHECK (length(subscriber_type) <= 50),
    report_types         TEXT NOT NULL,
    delivery_preferences TEXT NOT NULL,
    filters              TEXT,
    status               TEXT NOT NULL DEFAULT 'active' CHECK (length(status) <= 20),
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- added: the subscription type and when the current version took effect
    subscription_type    TEXT NOT NULL DEFAULT 'REAL_TIME',
    updated_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX report_subscriptions_by_subscriber ON report_subscriptions (subscriber_id);

CREATE TABLE delivery_channels (
    id             TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    channel_id     TEXT NOT NULL UNIQUE CHECK (length(channel_id) <= 100),
    channel_type   TEXT NOT NULL CHECK (length(channel_type) <= 50),
    channel_config TEXT NOT NULL,
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE delivery_history (
    id              TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    delivery_id     TEXT NOT NULL UNIQUE CHECK (length(delivery_id) <= 100),
    subscription_id TEXT NOT NULL CHECK (length(subscription_id) <= 100),
    report_id       TEXT NOT NULL CHECK (length(report_id) <= 100),
    channel         TEXT NOT NULL CHECK (length(channel) <= 50),
    status          TEXT NOT NULL CHECK (length(status) <= 20),
    delivery_time   TEXT,
    retry_count     INTEGER NOT NULL DEFAULT 0,
    error_details   TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- added: which event created it, for answering a re-sent event with the same ids
    event_id        TEXT NOT NULL
);
CREATE INDEX delivery_history_by_event ON delivery_history (event_id);
CREATE INDEX delivery_history_by_status ON delivery_history (channel, status);

CREATE TABLE distribution_stats (
    id                    TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    timestamp             TEXT NOT NULL,
    report_type           TEXT NOT NULL CHECK (length(report_type) <= 50),
    channel               TEXT NOT NULL CHECK (length(channel) <= 50),
    deliveries_attempted  INTEGER NOT NULL DEFAULT 0,
    deliveries_successful INTEGER NOT NULL DEFAULT 0,
    deliveries_failed     INTEGER NOT NULL DEFAULT 0,
    avg_delivery_time_ms  REAL,
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- added: the window's p99 and its start in dataflow time (one row per window x type x channel)
    p99_delivery_time_ms  REAL,
    window_start_us       INTEGER NOT NULL,
    UNIQUE (window_start_us, report_type, channel)
);

CREATE TABLE report_events (
    event_id    TEXT PRIMARY KEY NOT NULL,
    report_id   TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    expanded    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX report_events_unexpanded ON report_events (expanded, accepted_at);

CREATE TABLE subscription_versions (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    changed_at      INTEGER NOT NULL,
    body            TEXT NOT NULL
);
CREATE INDEX subscription_versions_by_id ON subscription_versions (subscription_id, seq);

CREATE TABLE pending_deliveries (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    task        TEXT NOT NULL,
    due         INTEGER NOT NULL
);

CREATE TABLE dead_letters (
    delivery_id      TEXT PRIMARY KEY NOT NULL,
    task             TEXT NOT NULL,
    reason           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL
);

CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY NOT NULL,
    subscriber_id   TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    report_id       TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX notifications_by_subscriber ON notifications (subscriber_id, created_at);
