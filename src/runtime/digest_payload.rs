//! Rendering a digest (a SCHEDULED subscription's reports of one tick) into its channel's request.
//!
//! Every channel gets the same body: `{"type": "report.digest", "timestamp", "data": {delivery_id,
//! subscription_id, subscriber_id, channel, attempt, schedule, tick, report_count, reports: [{delivery_id,
//! accepted_at, report}, ...]}}`, where each entry's `delivery_id` is the id the report would have had
//! on its own (stable, for deduplicating across digests). The destination is the single report's,
//! except where a channel handles a digest differently: EMAIL renders the `DIGEST` template (no
//! attachment), SFTP uploads every member's file and the body as a manifest naming them.
//!
//! A subscription with a content selection gets each tabular report personalised, as it would
//! alone ([`MemberContent`]): SFTP uploads the subscriber's file, a webhook entry carries
//! `content` as a single report's `data.content` does. A report the selection does not fit (a
//! column it lacks) goes with no file and the reason as its entry's `content_error`: never its
//! unfiltered file, since a selection may be what the subscriber is entitled to see.

use std::collections::HashSet;
use std::time::Duration;

use dataflows::delivery::{DeliveryChannel, DeliveryTask};
use dataflows::digest::{tick_datetime, Digest};
use dataflows::report::ReportDistribution;
use serde::Serialize;
use sinks::{DeliveryRequest, Destination, SftpFile};

use super::render::Envelope;
use crate::content::Personalised;

/// The `type` of a digest's body; single reports are `report.distributed`.
pub const DIGEST_TYPE: &str = "report.digest";
/// The template report type EMAIL digests render with.
pub const DIGEST_TEMPLATE: &str = sinks::email::DIGEST_TEMPLATE;

/// A digest's part of `data`, after the delivery's identity.
#[derive(Serialize)]
struct DigestData<'a> {
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
    /// Webhooks: the subscriber's personalised file, described (and inline when small).
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a serde_json::Value>,
    /// Why the report's file was not sent: the subscription's selection does not fit it.
    #[serde(skip_serializing_if = "Option::is_none")]
    content_error: Option<&'a str>,
    report: &'a ReportDistribution,
}

/// A digest member's file as the subscriber gets it.
#[derive(Clone, Debug, Default)]
pub enum MemberContent {
    /// No selection, or no tabular file: the file as published.
    #[default]
    AsPublished,
    /// The subscriber's rows and columns in their format; `inline` is a webhook's `content`.
    Personalised { file: Personalised, inline: Option<serde_json::Value> },
    /// The selection does not fit this report: no file, and this reason in its entry.
    Refused(String),
}

/// Renders a digest task, member `i`'s file as `contents[i]` says (as published when absent). An
/// `Err` is a permanent failure (a destination the settings lack).
pub fn render(task: &DeliveryTask, digest: &Digest, contents: &[MemberContent], timeout: Duration) -> Result<DeliveryRequest, String> {
    let as_published = MemberContent::AsPublished;
    let contents: Vec<&MemberContent> = (0..digest.members.len()).map(|i| contents.get(i).unwrap_or(&as_published)).collect();
    let uploads = match task.channel {
        DeliveryChannel::Sftp => upload_names(digest, &contents),
        _ => vec![None; digest.members.len()],
    };
    let data = DigestData {
        schedule: &digest.schedule,
        tick: tick_datetime(digest.tick),
        report_count: digest.members.len(),
        reports: digest
            .members
            .iter()
            .zip(&uploads)
            .zip(&contents)
            .map(|((member, upload), content)| Entry {
                delivery_id: &member.member_id,
                accepted_at: tick_datetime(member.accepted_at),
                file_name: upload.as_ref().map(|file| file.name.clone()),
                content: match content {
                    MemberContent::Personalised { inline, .. } => inline.as_ref(),
                    _ => None,
                },
                content_error: match content {
                    MemberContent::Refused(reason) => Some(reason),
                    _ => None,
                },
                report: &member.report,
            })
            .collect(),
    };
    let envelope = Envelope::new(DIGEST_TYPE, task, data);
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

/// The name each member's local file (or personalised file) gets on the SFTP server: its own file
/// name, or, when two members' files share one, that name prefixed with the report id (then a
/// counter), so no upload replaces another. Members without a local file upload nothing.
fn upload_names(digest: &Digest, contents: &[&MemberContent]) -> Vec<Option<SftpFile>> {
    let mut taken: HashSet<String> = HashSet::new();
    digest
        .members
        .iter()
        .zip(contents)
        .map(|(member, content)| {
            let (path, base) = match content {
                MemberContent::Refused(_) => return None,
                MemberContent::Personalised { file, .. } => (file.path.clone(), file.file_name.clone()),
                MemberContent::AsPublished => {
                    let path = super::render::local_file(&member.report)?;
                    let base = path.file_name()?.to_string_lossy().into_owned();
                    (path, base)
                }
            };
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
            Some(SftpFile { path, name })
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
            content: None,
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

    fn sftp_settings() -> NotificationSettings {
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
        NotificationSettings { sftp: Some(Box::new(sftp)), ..Default::default() }
    }

    #[test]
    fn sftp_uploads_every_file_under_a_distinct_name_and_names_the_manifest() {
        let settings = sftp_settings();
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

    #[test]
    fn a_personalised_member_uploads_its_file_and_a_refused_one_nothing() {
        let task = digest_task(DeliveryChannel::Sftp, sftp_settings(), &[("r1", "/a/q2.csv"), ("r2", "/b/trades.csv"), ("r3", "/c/x.pdf")]);
        let personalised = Personalised {
            path: "/cache/k/d/q2.jsonl".into(),
            file_name: "q2.jsonl".into(),
            format: dataflows::content::OutputFormat::Json,
        };
        let contents = [
            MemberContent::Personalised { file: personalised, inline: None },
            MemberContent::Refused("filters.columns[0] names column `region`".into()),
        ];
        let request = render(&task, task.digest.as_ref().unwrap(), &contents, Duration::from_secs(1)).unwrap();
        let Destination::Sftp { files, .. } = &request.destination else { panic!() };
        let names: Vec<(&str, &str)> = files.iter().map(|f| (f.path.to_str().unwrap(), f.name.as_str())).collect();
        assert_eq!(names, [("/cache/k/d/q2.jsonl", "q2.jsonl"), ("/c/x.pdf", "x.pdf")], "the third member, given nothing, as published");
        let body: serde_json::Value = serde_json::from_slice(&request.payload).unwrap();
        let entries = body["data"]["reports"].as_array().unwrap();
        assert_eq!(entries[0]["file_name"], "q2.jsonl");
        assert!(entries[1].get("file_name").is_none());
        assert_eq!(entries[1]["content_error"], "filters.columns[0] names column `region`");
        assert!(entries[0].get("content_error").is_none() && entries[2].get("content_error").is_none());
        assert_eq!(body["data"]["delivery_id"], task.delivery_id, "the identity precedes the digest's fields");
        assert_eq!(body["data"]["report_count"], 3);
    }
}
