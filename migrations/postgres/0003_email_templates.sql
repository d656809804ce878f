-- Email templates managed over REST (subject, HTML and text, minijinja), per report type (or `*`)
-- and locale. Checked before they are stored; loaded into the EMAIL sink at start.
CREATE TABLE email_templates (
    report_type VARCHAR(100) NOT NULL,
    locale      VARCHAR(100) NOT NULL,
    subject     TEXT NOT NULL,
    html        TEXT NOT NULL,
    text        TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (report_type, locale)
);
