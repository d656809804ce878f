//! Reading a digest's body, for the channels that show a human message (chat, push) instead of
//! forwarding the JSON. The service sends a SCHEDULED subscription's reports of one tick as one
//! delivery whose payload is `{"type": "report.digest", "timestamp", "data": {delivery_id,
//! subscription_id, subscriber_id, channel, attempt, schedule, tick, report_count, reports: [{delivery_id,
//! accepted_at, report}, ...]}}`; each entry of `reports` reads like a single report's `data`.

use serde_json::Value;

use crate::chat::envelope::{truncated, ReportSummary};
use crate::SinkError;

/// The payload `type` of a digest.
pub const DIGEST_TYPE: &str = "report.digest";

/// What a human-facing message says about a digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DigestSummary {
    pub delivery_id: String,
    pub subscription_id: String,
    /// The tick as the payload spells it (RFC 3339, UTC).
    pub tick: String,
    pub reports: Vec<ReportSummary>,
}

impl DigestSummary {
    /// The digest in `payload`, or `None` when the payload is a single report's envelope. A payload
    /// that is not a JSON object is a permanent failure.
    pub fn parse(payload: &[u8]) -> Result<Option<DigestSummary>, SinkError> {
        let envelope: Value = serde_json::from_slice(payload)
            .map_err(|e| SinkError::permanent(format!("payload is not a JSON envelope: {e}")))?;
        if !envelope.is_object() {
            return Err(SinkError::permanent("payload is not a JSON envelope: not an object"));
        }
        if envelope.get("type").and_then(Value::as_str) != Some(DIGEST_TYPE) {
            return Ok(None);
        }
        let data = envelope.get("data").unwrap_or(&Value::Null);
        let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let reports = data
            .get("reports")
            .and_then(Value::as_array)
            .map(|entries| entries.iter().map(ReportSummary::from_data).collect())
            .unwrap_or_default();
        Ok(Some(DigestSummary {
            delivery_id: text("delivery_id"),
            subscription_id: text("subscription_id"),
            tick: text("tick"),
            reports,
        }))
    }

    /// `1 new report` / `3 new reports`.
    pub fn title(&self) -> String {
        match self.reports.len() {
            1 => "1 new report".to_string(),
            n => format!("{n} new reports"),
        }
    }

    /// The reports' titles, as many as fit in `max` characters with `and N more` after them.
    pub fn body_line(&self, max: usize) -> String {
        let titles: Vec<String> = self.reports.iter().map(ReportSummary::title).collect();
        let Some(first) = titles.first() else { return "No reports".to_string() };
        let mut best = None;
        for shown in 1..=titles.len() {
            let mut text = titles[..shown].join(", ");
            if shown < titles.len() {
                text.push_str(&format!(" and {} more", titles.len() - shown));
            }
            if text.chars().count() > max {
                break;
            }
            best = Some(text);
        }
        best.unwrap_or_else(|| truncated(first, max))
    }
}

/// Whether `payload` is a digest (cheap enough per attempt: payloads are small).
pub fn is_digest(payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload).is_ok_and(|v| v.get("type").and_then(Value::as_str) == Some(DIGEST_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(report_ids: &[&str]) -> Vec<u8> {
        let reports: Vec<Value> = report_ids
            .iter()
            .map(|id| serde_json::json!({"delivery_id": format!("m-{id}"),
                "report": {"report_data": {"report_id": id, "report_type": "risk"}}}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"type": DIGEST_TYPE, "data": {"delivery_id": "d1",
            "subscription_id": "s1", "tick": "2025-06-21T08:00:00Z", "reports": reports}}))
        .unwrap()
    }

    #[test]
    fn reads_a_digest_and_leaves_single_reports_alone() {
        let summary = DigestSummary::parse(&digest(&["r1", "r2"])).unwrap().expect("a digest");
        assert_eq!((summary.delivery_id.as_str(), summary.tick.as_str()), ("d1", "2025-06-21T08:00:00Z"));
        assert_eq!(summary.reports.len(), 2);
        assert_eq!(summary.reports[1].delivery_id, "m-r2");
        assert_eq!(summary.title(), "2 new reports");
        assert_eq!(summary.body_line(200), "Risk report r1, Risk report r2");
        assert!(is_digest(&digest(&[])));
        let single = br#"{"type":"report.distributed","data":{}}"#;
        assert_eq!(DigestSummary::parse(single).unwrap(), None);
        assert!(!is_digest(single));
        assert!(DigestSummary::parse(b"[1]").is_err());
    }

    #[test]
    fn the_body_line_says_how_many_did_not_fit() {
        let summary = DigestSummary::parse(&digest(&["r1", "r2", "r3", "r4"])).unwrap().unwrap();
        assert_eq!(summary.body_line(40), "Risk report r1 and 3 more");
        assert_eq!(summary.body_line(41), "Risk report r1, Risk report r2 and 2 more");
        assert_eq!(summary.body_line(10).chars().count(), 10, "even the first title is cut to fit");
        assert_eq!(DigestSummary::parse(&digest(&[])).unwrap().unwrap().body_line(40), "No reports");
    }
}
