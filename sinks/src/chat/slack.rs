//! Slack incoming webhooks: a Block Kit message, and Slack's own way of saying no.
//!
//! Layout (<https://api.slack.com/reference/block-kit/blocks>): a `header` (plain text, at most 150
//! characters), a `section` whose `fields` (mrkdwn, at most 10) are the report's type, portfolio,
//! period and priority, an `actions` block with a link button when there is a web link (else the
//! file path in a section), and a `context` line with the delivery id. The top-level `text` is the
//! fallback shown in notifications and by clients that cannot render blocks.
//!
//! Slack answers `200 ok` on success and a 4xx with a short code in the body otherwise
//! (`invalid_payload`, `no_service`, `channel_is_archived`, ...), which `http_classify` already makes
//! permanent; 429 carries `Retry-After`. Some Slack-compatible receivers (and Slack's older
//! behaviour) answer `200` with such an error code in the body: that is not a delivery.

use serde_json::{json, Value};

use super::envelope::{truncated, ReportSummary};
use crate::SinkError;

/// Block Kit's limit on a header's text.
pub const HEADER_MAX_CHARS: usize = 150;
/// Block Kit's limit on a button URL.
const BUTTON_URL_MAX_CHARS: usize = 3000;
/// Values are cut well below the 2000-character field limit: a field is a label, not a document.
const FIELD_VALUE_MAX_CHARS: usize = 200;

/// Error codes Slack's webhook endpoint answers in its body. Seen after a `200`, they still mean
/// the message was not posted, and none of them goes away by retrying.
const ERROR_CODES: &[&str] = &[
    "invalid_payload",
    "invalid_blocks",
    "invalid_token",
    "no_service",
    "no_service_id",
    "no_team",
    "no_active_hooks",
    "team_disabled",
    "channel_not_found",
    "channel_is_archived",
    "user_not_found",
    "action_prohibited",
    "posting_to_general_channel_denied",
    "too_many_attachments",
];

/// The webhook body for one report.
pub fn render(summary: &ReportSummary, priority: i32, link: Option<&str>) -> Value {
    let title = summary.title();
    let field = |label: &str, value: &str| {
        let value =
            if value.trim().is_empty() { "—".to_string() } else { escape(&truncated(value, FIELD_VALUE_MAX_CHARS)) };
        json!({"type": "mrkdwn", "text": format!("*{label}*\n{value}")})
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncated(&title, HEADER_MAX_CHARS), "emoji": true}}),
        json!({"type": "section", "fields": [
            field("Type", &summary.report_type),
            field("Portfolio", &summary.portfolio_id),
            field("Period", &summary.report_period),
            field("Priority", &priority.to_string()),
        ]}),
    ];
    match link.filter(|l| l.chars().count() <= BUTTON_URL_MAX_CHARS) {
        Some(url) => blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "action_id": "open_report",
            "text": {"type": "plain_text", "text": "Open report"},
            "url": url,
        }]})),
        None if !summary.file_path.is_empty() => blocks.push(json!({"type": "section", "text": {
            "type": "mrkdwn",
            "text": format!("*File*\n`{}`", escape(&truncated(&summary.file_path, FIELD_VALUE_MAX_CHARS))),
        }})),
        None => {}
    }
    if !summary.delivery_id.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{
            "type": "mrkdwn",
            "text": format!("Delivery `{}`", escape(&truncated(&summary.delivery_id, FIELD_VALUE_MAX_CHARS))),
        }]}));
    }
    // The fallback is read as mrkdwn too (a `<!channel>` in it would notify everyone).
    let fallback = escape(&format!("{title}: {}", summary.body_line()));
    json!({"text": fallback, "blocks": blocks})
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters (`<url|text>` is a link), so text
/// taken from a report is escaped before it is shown.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The "200 but not posted" case: a 2xx whose body is one of Slack's error codes.
pub fn error_in_success_body(body: &[u8]) -> Option<SinkError> {
    let text = std::str::from_utf8(body).ok()?.trim();
    ERROR_CODES.contains(&text).then(|| SinkError::permanent(format!("Slack refused the message: {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrkdwn_control_characters_are_escaped() {
        assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        let summary = ReportSummary { report_type: "<!channel>".into(), ..Default::default() };
        let body = render(&summary, 0, None);
        assert_eq!(body["text"], "&lt;!channel&gt; report: A new report is available");
        assert_eq!(body["blocks"][1]["fields"][0]["text"], "*Type*\n&lt;!channel&gt;");
        // A header is plain text, which Slack shows as it is: nothing to escape there.
        assert_eq!(body["blocks"][0]["text"]["text"], "<!channel> report");
    }

    #[test]
    fn long_titles_are_cut_to_the_header_limit_and_long_links_dropped() {
        let summary = ReportSummary { title: Some("x".repeat(400)), ..Default::default() };
        let long_link = format!("https://x/{}", "a".repeat(BUTTON_URL_MAX_CHARS));
        let body = render(&summary, 0, Some(&long_link));
        let header = body["blocks"][0]["text"]["text"].as_str().expect("header text");
        assert_eq!(header.chars().count(), HEADER_MAX_CHARS);
        assert!(body["blocks"].as_array().expect("blocks").iter().all(|b| b["type"] != "actions"));
    }

    #[test]
    fn slack_error_codes_after_a_200_are_permanent() {
        assert!(error_in_success_body(b"ok").is_none());
        assert!(error_in_success_body(b"").is_none());
        let error = error_in_success_body(b"channel_is_archived\n").expect("an error code");
        assert_eq!(error, SinkError::permanent("Slack refused the message: channel_is_archived"));
    }
}
