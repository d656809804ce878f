//! Rendering a digest (a SCHEDULED subscription's reports of one tick) into its channel's request.
//!
//! Every channel gets the same body: `{"type": "report.digest", "timestamp", "data": {delivery_id,
//! subscription_id, subscriber_id, channel, attempt, schedule, tick, report_count, reports: [{delivery_id,
//! accepted_at, report}, ...]}}`, where each entry's `delivery_id` is the id the report would have had
//! on its own (stable, for deduplicating across digests). The destination is the single report's,
//! except where a channel handles a digest differently: EMAIL renders the `DIGEST` template (no
//! attachment), SFTP uploads every member's file and the body as a manifest naming them.

use std::collections::HashSet;
use std::time::Duration;

use dataflows::delivery::{DeliveryChannel, DeliveryTask};
use dataflows::digest::{tick_datetime, Digest};
use dataflows::report::ReportDistribution;
use serde::Serialize;
use sinks::{DeliveryRequest, Destination, SftpFile};

/// The `type` of a digest's body; single reports are `report.distributed`.
pub const DIGEST_TYPE: &str = "report.digest";
/// The template report type EMAIL digests render with.
pub const DIGEST_TEMPLATE: &str = sinks::email::DIGEST_TEMPLATE;

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: chrono::DateTime<chrono::Utc>,
    data: EnvelopeData<'a>,
}

#[derive(Serialize)]
struct EnvelopeData<'a> {
    delivery_id: &'a str,
    subscription_id: &'a str,
    subscriber_id: &'a str,
    channel: DeliveryChannel,
    attempt: u32,
    schedule: &'a str,
    tick: chrono::DateTime<chrono::Utc>,
    report_count: usize,
    reports: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    delivery_id: &'a str,
    accepted_at: chrono::DateTime<chrono::Utc>,
    /// SFTP only: the name the report's file was uploaded under, beside the manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    file_name: Option<String>,
    report: &'a ReportDistribution,
}

/// Renders a digest task. An `Err` is a permanent failure (a destination the settings lack).
pub fn render(task: &DeliveryTask, digest: &Digest, timeout: Duration) -> Result<DeliveryRequest, String> {
    let uploads = match task.channel {
        DeliveryChannel::Sftp => upload_names(digest),
        _ => vec![None; digest.members.len()],
    };
    let envelope = Envelope {
        kind: DIGEST_TYPE,
        timestamp: chrono::Utc::now(),
        data: EnvelopeData {
            delivery_id: &task.delivery_id,
            subscription_id: &task.subscription_id,
            subscriber_id: &task.subscriber_id,
            channel: task.channel,
            attempt: task.attempt,
            schedule: &digest.schedule,
            tick: tick_datetime(digest.tick),
            report_count: digest.members.len(),
            reports: digest
                .members
                .iter()
                .zip(&uploads)
                .map(|(member, upload)| Entry {
                    delivery_id: &member.member_id,
                    accepted_at: tick_datetime(member.accepted_at),
                    file_name: upload.as_ref().map(|file| file.name.clone()),
                    report: &member.report,
                })
                .collect(),
        },
    };
    let payload = serde_json::to_vec(&envelope).map_err(|e| format!("could not render digest payload: {e}"))?;
    let destination = match super::render::destination(task)? {
        Destination::Email { to, locale, .. } => {
            Destination::Email { to, locale, report_type: DIGEST_TEMPLATE.to_string(), attachment: None }
        }
        Destination::Sftp { host, port, username, auth, host_key, directory, .. } => Destination::Sftp {
            host,
            port,
            username,
            auth,
            host_key,
            directory,
            files: uploads.into_iter().flatten().collect(),
            // One manifest per digest, named for it whatever the number of files.
            manifest_name: Some(format!("digest_{}.json", task.delivery_id)),
        },
        other => other,
    };
    Ok(DeliveryRequest {
        idempotency_key: task.delivery_id.clone(),
        destination,
        payload: payload.into(),
        timeout,
        attempt: task.attempt,
        priority: task.priority(),
        encrypt_to: super::render::encryption(task)?,
    })
}

/// The name each member's local file gets on the SFTP server: its own file name, or, when two
/// members' files share one, that name prefixed with the report id (then a counter), so no upload
/// replaces another. Members without a local file upload nothing.
fn upload_names(digest: &Digest) -> Vec<Option<SftpFile>> {
    let mut taken: HashSet<String> = HashSet::new();
    digest
        .members
        .iter()
        .map(|member| {
            let path = super::render::local_file(&member.report)?;
            let base = path.file_name()?.to_string_lossy().into_owned();
            let report_id: String = member
                .report
                .report_data
                .report_id
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
                .collect();
            let mut name = base.clone();
            let mut n = 1;
            while !taken.insert(name.clone()) {
                name = if n == 1 { format!("{report_id}_{base}") } else { format!("{report_id}_{n}_{base}") };
                n += 1;
            }
            Some(SftpFile { path: path.to_path_buf(), name })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use dataflows::digest::{assemble, digest_id, DigestMember};
    use dataflows::subscription::{EmailSettings, NotificationSettings, SftpSettings};

    use super::*;

    fn member(report_id: &str, file_path: &str, accepted_at: u64, channel: DeliveryChannel, settings: &NotificationSettings) -> DigestMember {
        DigestMember {
            digest_id: digest_id("s1", channel, 2_000_000),
            member_id: dataflows::delivery::delivery_id(report_id, "s1", channel),
            subscription_id: "s1".into(),
            subscriber_id: "c1".into(),
            channel,
            settings: settings.clone(),
            schedule: "* * * * * *".into(),
            tick: 2_000_000,
            report: serde_json::from_value(serde_json::json!({"event_id": format!("e-{report_id}"),
                "timestamp": "2025-06-21T08:00:00Z", "data_type": "RISK_REPORT",
                "report_data": {"report_id": report_id, "file_path": file_path}}))
            .unwrap(),
            accepted_at,
        }
    }

    fn digest_task(channel: DeliveryChannel, settings: NotificationSettings, files: &[(&str, &str)]) -> DeliveryTask {
        let members = files.iter().enumerate().map(|(i, (id, path))| member(id, path, i as u64, channel, &settings)).collect();
        assemble(members).unwrap()
    }

    fn render_task(task: &DeliveryTask) -> (DeliveryRequest, serde_json::Value) {
        let request = super::super::render::render(task, Duration::from_secs(1)).expect("renders");
        let body = serde_json::from_slice(&request.payload).unwrap();
        (request, body)
    }

    #[test]
    fn every_channel_gets_the_digest_body_and_email_the_digest_template() {
        let settings = NotificationSettings {
            email: Some(EmailSettings { to: vec!["a@example.com".into()], locale: None }),
            ..Default::default()
        };
        let task = digest_task(DeliveryChannel::Email, settings, &[("r1", "/data/a.pdf"), ("r2", "")]);
        let (request, body) = render_task(&task);
        assert_eq!(request.idempotency_key, task.delivery_id);
        let Destination::Email { report_type, attachment, .. } = &request.destination else { panic!() };
        assert_eq!((report_type.as_str(), attachment), (DIGEST_TEMPLATE, &None));
        assert_eq!(body["type"], DIGEST_TYPE);
        assert_eq!(body["data"]["delivery_id"], task.delivery_id);
        assert_eq!(body["data"]["report_count"], 2);
        assert_eq!(body["data"]["tick"], "1970-01-01T00:00:02Z");
        assert_eq!(body["data"]["reports"][1]["report"]["report_data"]["report_id"], "r2");
        assert_eq!(body["data"]["reports"][0]["delivery_id"], task.digest.as_ref().unwrap().members[0].member_id);
        assert!(body["data"]["reports"][0].get("file_name").is_none(), "file names are for SFTP");
    }

    #[test]
    fn sftp_uploads_every_file_under_a_distinct_name_and_names_the_manifest() {
        let sftp = SftpSettings {
            host: "h".into(),
            port: 22,
            username: "u".into(),
            password: Some("pw".into()),
            private_key: None,
            passphrase: None,
            host_key: "SHA256:x".into(),
            directory: "in".into(),
        };
        let settings = NotificationSettings { sftp: Some(Box::new(sftp)), ..Default::default() };
        let files = [("r1", "/a/q2.pdf"), ("r2", "/b/q2.pdf"), ("r3", ""), ("r4", "https://x/y.pdf"), ("r/5", "/c/q2.pdf")];
        let task = digest_task(DeliveryChannel::Sftp, settings, &files);
        let (request, body) = render_task(&task);
        let Destination::Sftp { files, manifest_name, .. } = &request.destination else { panic!() };
        let names: Vec<(&str, &str)> = files.iter().map(|f| (f.path.to_str().unwrap(), f.name.as_str())).collect();
        assert_eq!(names, [("/a/q2.pdf", "q2.pdf"), ("/b/q2.pdf", "r2_q2.pdf"), ("/c/q2.pdf", "r_5_q2.pdf")]);
        assert_eq!(manifest_name.as_deref(), Some(format!("digest_{}.json", task.delivery_id).as_str()));
        let listed: Vec<Option<&str>> = body["data"]["reports"].as_array().unwrap().iter().map(|e| e["file_name"].as_str()).collect();
        assert_eq!(listed, [Some("q2.pdf"), Some("r2_q2.pdf"), None, None, Some("r_5_q2.pdf")], "the manifest names each upload");
    }
}
