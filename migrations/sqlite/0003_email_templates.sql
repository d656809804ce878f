-- Email templates managed over REST (subject, HTML and text, minijinja), per report type (or `*`)
-- and locale. Checked before they are stored; loaded into the EMAIL sink at start.
CREATE TABLE email_templates (
    report_type TEXT NOT NULL,
    locale      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    html        TEXT NOT NULL,
    text        TEXT NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (report_type, locale)
);
