-- Reports collected for SCHEDULED subscriptions' digests, written in the same transaction as the
-- report's delivery set. A digest is itself a delivery: its delivery_history row (report_id
-- 'digest:<tick>') is created with its first member, and it goes out at its tick with every member
-- collected by then. After a restart, members of digests that have not gone out are fed back.
CREATE TABLE digest_members (
    digest_id   TEXT NOT NULL,
    -- the report's own delivery id on that subscription and channel: one member per report
    member_id   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    report_id   TEXT NOT NULL,
    tick        BIGINT NOT NULL,
    accepted_at BIGINT NOT NULL,
    member      JSONB NOT NULL,
    PRIMARY KEY (digest_id, member_id)
);
CREATE INDEX digest_members_by_event ON digest_members (event_id);
CREATE INDEX digest_members_by_report ON digest_members (report_id);
