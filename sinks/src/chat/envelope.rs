//! Reading the `report.distributed` envelope that the service sends on every channel, for the
//! channels that show a human message instead of forwarding the JSON (chat and push).
//!
//! The envelope is `{"type", "timestamp", "data": {"delivery_id", "subscription_id", ..., "report":
//! {"report_data": {"report_id", "report_type", ...}, "metadata": {...}}}}`. Reading is lenient: a
//! missing field is shown as empty rather than failing the delivery, because a message with a blank
//! "period" is still worth sending. Only a payload that is not a JSON object at all is refused.

use serde_json::Value;

use crate::SinkError;

/// What a human-facing message says about one delivered report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportSummary {
    pub delivery_id: String,
    pub subscription_id: String,
    pub report_id: String,
    pub report_type: String,
    pub portfolio_id: String,
    pub report_period: String,
    pub file_path: String,
    pub file_size_bytes: Option<i64>,
    /// `report_data.title`, when the report carries one.
    pub title: Option<String>,
}

impl ReportSummary {
    /// Reads the envelope. A payload that is not a JSON object is a permanent failure: the
    /// dispatcher rendered something no chat or push message can be made from.
    pub fn parse(payload: &[u8]) -> Result<ReportSummary, SinkError> {
        let envelope: Value = serde_json::from_slice(payload)
            .map_err(|e| SinkError::permanent(format!("payload is not the JSON report envelope: {e}")))?;
        if !envelope.is_object() {
            return Err(SinkError::permanent("payload is not the JSON report envelope: not an object"));
        }
        Ok(ReportSummary::from_data(envelope.get("data").unwrap_or(&Value::Null)))
    }

    /// Reads one report's `data` object (`delivery_id`, `subscription_id`, `report`), as found in
    /// the envelope, or as each entry of a digest's `reports`.
    pub fn from_data(data: &Value) -> ReportSummary {
        let text = |pointer: &str| match data.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let report_data = "/report/report_data";
        ReportSummary {
            delivery_id: text("/delivery_id"),
            subscription_id: text("/subscription_id"),
            report_id: text(&format!("{report_data}/report_id")),
            report_type: text(&format!("{report_data}/report_type")),
            portfolio_id: text(&format!("{report_data}/portfolio_id")),
            report_period: text(&format!("{report_data}/report_period")),
            file_path: text(&format!("{report_data}/file_path")),
            file_size_bytes: data.pointer(&format!("{report_data}/file_size_bytes")).and_then(Value::as_i64),
            title: Some(text(&format!("{report_data}/title"))).filter(|t| !t.trim().is_empty()),
        }
    }

    /// The report's own title, else `<report_type> report <report_id>` (`Report <report_id>` when
    /// the type is unknown).
    pub fn title(&self) -> String {
        if let Some(title) = &self.title {
            return title.clone();
        }
        match (self.report_type.trim(), self.report_id.trim()) {
            ("", "") => "New report".to_string(),
            ("", id) => format!("Report {id}"),
            (kind, "") => format!("{} report", capitalised(kind)),
            (kind, id) => format!("{} report {id}", capitalised(kind)),
        }
    }

    /// One line for a notification body: portfolio and period, whichever are known.
    pub fn body_line(&self) -> String {
        let mut parts = Vec::new();
        if !self.portfolio_id.is_empty() {
            parts.push(format!("Portfolio {}", self.portfolio_id));
        }
        if !self.report_period.is_empty() {
            parts.push(format!("period {}", self.report_period));
        }
        if parts.is_empty() {
            "A new report is available".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// Where a "view" button points: the subscription's explicit link, else the file path when it
    /// is itself a web URL. A bare path (`/reports/x.pdf`) is no link: Slack and Teams reject a
    /// button whose URL is not http(s), which would fail the whole message.
    pub fn link(&self, explicit: Option<&str>) -> Option<String> {
        explicit.filter(|l| is_web_url(l)).or(Some(self.file_path.as_str()).filter(|p| is_web_url(p))).map(String::from)
    }
}

/// `http://` or `https://` followed by something.
pub fn is_web_url(value: &str) -> bool {
    let lower = value.trim().to_ascii_lowercase();
    ["http://", "https://"].iter().any(|scheme| lower.len() > scheme.len() && lower.starts_with(scheme))
}

/// `performance` -> `Performance`.
fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The first `max` characters of `text`, with an ellipsis when something was cut.
pub fn truncated(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: &str = r#"{"type":"report.distributed","timestamp":"2025-06-21T10:00:00Z","data":{
        "delivery_id":"dlv_1","subscription_id":"sub_1","subscriber_id":"acme","channel":"SLACK_INTEGRATION",
        "attempt":1,"report":{"event_id":"evt_1","report_data":{"report_id":"report_20250621_001",
        "report_type":"performance","portfolio_id":"portfolio_001","report_period":"2025-Q2",
        "file_path":"/reports/q2.pdf","file_size_bytes":2048576},"metadata":{"delivery_priority":2}}}}"#;

    #[test]
    fn reads_the_envelope() {
        let summary = ReportSummary::parse(ENVELOPE.as_bytes()).expect("valid envelope");
        assert_eq!(summary.delivery_id, "dlv_1");
        assert_eq!(summary.report_id, "report_20250621_001");
        assert_eq!(summary.portfolio_id, "portfolio_001");
        assert_eq!(summary.file_size_bytes, Some(2048576));
        assert_eq!(summary.title(), "Performance report report_20250621_001");
        assert_eq!(summary.body_line(), "Portfolio portfolio_001, period 2025-Q2");
    }

    #[test]
    fn missing_fields_are_blank_and_garbage_is_permanent() {
        let summary = ReportSummary::parse(br#"{"type":"report.distributed"}"#).expect("an object");
        assert_eq!(summary.title(), "New report");
        assert_eq!(summary.body_line(), "A new report is available");
        for bad in [&b"not json"[..], b"[1,2]", b""] {
            let error = ReportSummary::parse(bad).expect_err("not an envelope");
            assert!(!error.is_transient(), "{error:?}");
        }
    }

    #[test]
    fn links_must_be_web_urls() {
        let mut summary = ReportSummary::parse(ENVELOPE.as_bytes()).expect("valid envelope");
        assert_eq!(summary.link(None), None, "a bare path is no link");
        assert_eq!(summary.link(Some("https://portal/r/1")), Some("https://portal/r/1".into()));
        assert_eq!(summary.link(Some("javascript:alert(1)")), None);
        summary.file_path = "https://files.example/q2.pdf".into();
        assert_eq!(summary.link(None), Some("https://files.example/q2.pdf".into()));
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncated("héllo", 5), "héllo");
        assert_eq!(truncated("héllo wörld", 6), "héllo…");
        assert_eq!(truncated("héllo wörld", 6).chars().count(), 6);
    }
}
