-- metadata.retention_days: the dataflow time (microseconds) after which a report's stored payload,
-- delivery history, dead letters and notifications may be purged (once its deliveries have ended).
-- Reports stored before this migration get theirs from the payload (default 90 days).
ALTER TABLE report_events ADD COLUMN purge_after INTEGER;
UPDATE report_events
   SET purge_after = accepted_at + MIN(MAX(CAST(COALESCE(json_extract(payload, '$.metadata.retention_days'), 90) AS INTEGER), 0), 36500) * 86400000000;
CREATE INDEX report_events_purge_after ON report_events (purge_after);
