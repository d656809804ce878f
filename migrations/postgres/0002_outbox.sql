-- The transactional outbox: events for Kafka written in the same transaction as the change they
-- report, published by the relay afterwards and then deleted.
CREATE TABLE outbox (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      VARCHAR(50) NOT NULL,
    key        TEXT NOT NULL,
    payload    TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
