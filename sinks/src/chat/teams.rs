//! Microsoft Teams through a Power Automate "post to a channel when a webhook request is received"
//! workflow: the body is a `message` with one Adaptive Card attachment
//! (<https://adaptivecards.io/explorer/>), version 1.4 as Teams renders it: a bold `TextBlock` title,
//! a `FactSet` of the report's type, portfolio, period and priority, and an `Action.OpenUrl` when
//! there is a web link (else the file path as a fact).
//!
//! A workflow answers `202 Accepted`; its errors (`400` schema mismatch, `404` deleted flow, `429`
//! with `Retry-After`) follow HTTP conventions, so `http_classify` decides.

use serde_json::{json, Value};

use super::envelope::{truncated, ReportSummary};

pub const CARD_SCHEMA: &str = "http://adaptivecards.io/schemas/adaptive-card.json";
pub const CARD_VERSION: &str = "1.4";
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
const FACT_VALUE_MAX_CHARS: usize = 200;

/// The workflow webhook body for one report.
pub fn render(summary: &ReportSummary, priority: i32, link: Option<&str>) -> Value {
    let fact = |title: &str, value: &str| {
        let value = if value.trim().is_empty() { "—".to_string() } else { truncated(value, FACT_VALUE_MAX_CHARS) };
        json!({"title": title, "value": value})
    };
    let mut facts = vec![
        fact("Type", &summary.report_type),
        fact("Portfolio", &summary.portfolio_id),
        fact("Period", &summary.report_period),
        fact("Priority", &priority.to_string()),
    ];
    if link.is_none() && !summary.file_path.is_empty() {
        facts.push(fact("File", &summary.file_path));
    }
    if !summary.delivery_id.is_empty() {
        facts.push(fact("Delivery", &summary.delivery_id));
    }
    let mut card = json!({
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": [
            {"type": "TextBlock", "text": summary.title(), "weight": "Bolder", "size": "Medium", "wrap": true},
            {"type": "FactSet", "facts": facts},
        ],
    });
    if let Some(url) = link {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open report", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": null, "content": card}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_link_the_file_is_a_fact_and_there_is_no_action() {
        let summary = ReportSummary { file_path: "/reports/q2.pdf".into(), ..Default::default() };
        let body = render(&summary, 1, None);
        let card = &body["attachments"][0]["content"];
        assert!(card.get("actions").is_none(), "{card}");
        let facts = card["body"][1]["facts"].as_array().expect("facts");
        assert!(facts.iter().any(|f| f["title"] == "File" && f["value"] == "/reports/q2.pdf"), "{facts:?}");
        assert!(facts.iter().any(|f| f["title"] == "Priority" && f["value"] == "1"), "{facts:?}");
    }
}
