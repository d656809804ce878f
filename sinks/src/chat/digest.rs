//! A digest (several reports of one SCHEDULED tick) as one chat message: a header counting the
//! reports, one line per report (its title, portfolio and period) up to a limit that keeps the
//! message within Block Kit's and Adaptive Cards' sizes, then how many more there were.

use serde_json::{json, Value};

use super::envelope::{is_web_url, truncated};
use super::slack::{escape, HEADER_MAX_CHARS};
use super::teams::{CARD_CONTENT_TYPE, CARD_SCHEMA, CARD_VERSION};
use crate::digest::DigestSummary;

/// Reports listed one by one; the rest are counted. Block Kit allows 50 blocks per message.
pub const LISTED_MAX: usize = 20;
const LINE_MAX_CHARS: usize = 300;

fn footer(digest: &DigestSummary) -> String {
    let mut parts = Vec::new();
    if !digest.tick.is_empty() {
        parts.push(format!("Scheduled for {}", digest.tick));
    }
    if !digest.delivery_id.is_empty() {
        parts.push(format!("delivery {}", digest.delivery_id));
    }
    parts.join(", ")
}

fn more(digest: &DigestSummary) -> Option<String> {
    let rest = digest.reports.len().saturating_sub(LISTED_MAX);
    (rest > 0).then(|| format!("…and {rest} more"))
}

/// The Slack webhook body for a digest. `link` (the subscription's) becomes a button.
pub fn slack(digest: &DigestSummary, link: Option<&str>) -> Value {
    let title = digest.title();
    let mut blocks =
        vec![json!({"type": "header", "text": {"type": "plain_text", "text": truncated(&title, HEADER_MAX_CHARS), "emoji": true}})];
    for report in digest.reports.iter().take(LISTED_MAX) {
        let name = escape(&truncated(&report.title(), LINE_MAX_CHARS));
        let name = match report.link(None) {
            Some(url) => format!("*<{url}|{name}>*"),
            None => format!("*{name}*"),
        };
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("{name}\n{}", escape(&truncated(&report.body_line(), LINE_MAX_CHARS)))}}));
    }
    if let Some(more) = more(digest) {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]}));
    }
    if let Some(url) = link.filter(|l| is_web_url(l)) {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button", "action_id": "open_reports",
            "text": {"type": "plain_text", "text": "Open reports"}, "url": url,
        }]}));
    }
    let footer = footer(digest);
    if !footer.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(&footer)}]}));
    }
    json!({"text": escape(&format!("{title}: {}", digest.body_line(LINE_MAX_CHARS))), "blocks": blocks})
}

/// The Teams workflow body for a digest: an Adaptive Card listing the reports.
pub fn teams(digest: &DigestSummary, link: Option<&str>) -> Value {
    let mut body = vec![json!({"type": "TextBlock", "text": digest.title(), "weight": "Bolder", "size": "Medium", "wrap": true})];
    for report in digest.reports.iter().take(LISTED_MAX) {
        body.push(json!({"type": "TextBlock", "text": truncated(&report.title(), LINE_MAX_CHARS), "weight": "Bolder", "wrap": true, "spacing": "Medium"}));
        body.push(json!({"type": "TextBlock", "text": truncated(&report.body_line(), LINE_MAX_CHARS), "isSubtle": true, "wrap": true, "spacing": "None"}));
    }
    if let Some(more) = more(digest) {
        body.push(json!({"type": "TextBlock", "text": more, "isSubtle": true, "wrap": true}));
    }
    let footer = footer(digest);
    if !footer.is_empty() {
        body.push(json!({"type": "TextBlock", "text": footer, "isSubtle": true, "size": "Small", "wrap": true}));
    }
    let mut card = json!({"$schema": CARD_SCHEMA, "type": "AdaptiveCard", "version": CARD_VERSION, "body": body});
    if let Some(url) = link.filter(|l| is_web_url(l)) {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open reports", "url": url}]);
    }
    json!({"type": "message", "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": null, "content": card}]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::envelope::ReportSummary;

    fn digest(count: usize) -> DigestSummary {
        DigestSummary {
            delivery_id: "d1".into(),
            subscription_id: "s1".into(),
            tick: "2025-06-21T08:00:00Z".into(),
            reports: (0..count)
                .map(|i| ReportSummary {
                    report_id: format!("r{i}"),
                    report_type: "risk".into(),
                    portfolio_id: "p<1>".into(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn slack_lists_each_report_and_counts_the_rest() {
        let body = slack(&digest(LISTED_MAX + 3), Some("https://portal.example/reports"));
        let blocks = body["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= 50, "Block Kit's limit");
        assert_eq!(blocks[0]["text"]["text"], format!("{} new reports", LISTED_MAX + 3));
        assert_eq!(blocks[1]["text"]["text"], "*Risk report r0*\nPortfolio p&lt;1&gt;");
        let sections = blocks.iter().filter(|b| b["type"] == "section").count();
        assert_eq!(sections, LISTED_MAX);
        assert!(blocks.iter().any(|b| b["elements"][0]["text"] == "…and 3 more"), "{body}");
        assert!(blocks.iter().any(|b| b["type"] == "actions"), "{body}");
        assert!(body["text"].as_str().unwrap().starts_with("23 new reports: "));
    }

    #[test]
    fn teams_lists_each_report() {
        let body = teams(&digest(2), None);
        let card = &body["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["text"], "2 new reports");
        assert_eq!(card["body"][1]["text"], "Risk report r0");
        assert_eq!(card["body"][3]["text"], "Risk report r1");
        assert!(card.get("actions").is_none());
    }
}
