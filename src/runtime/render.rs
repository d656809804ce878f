//! Rendering a delivery task into its channel's request: one payload for every channel (the Standard
//! Webhooks `{type, timestamp, data}` envelope), and one destination arm per channel built from the
//! subscription's settings as they were when the report matched.
//!
//! Settings were validated when the subscription was written, so a missing one here means a task
//! from before that validation existed: an `Err`, which the dispatcher turns into a permanent
//! failure. Errors never quote a secret.

use std::path::PathBuf;
use std::time::Duration;

use dataflows::delivery::{DeliveryChannel, DeliveryTask};
use dataflows::report::ReportDistribution;
use dataflows::subscription::{ChatKind, MobilePushSettings, PushProvider, SftpSettings};
use serde::Serialize;
use sinks::{DeliveryRequest, Destination, PushTarget, SftpAuth, SftpFile};

/// The body every channel sends, a single report's and a digest's: the Standard Webhooks
/// `{type, timestamp, data}` envelope, where `data` starts with the delivery's identity and goes
/// on with `D`'s fields (the report, or the digest's).
#[derive(Serialize)]
pub(super) struct Envelope<'a, D> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: chrono::DateTime<chrono::Utc>,
    data: EnvelopeData<'a, D>,
}

#[derive(Serialize)]
struct EnvelopeData<'a, D> {
    delivery_id: &'a str,
    subscription_id: &'a str,
    subscriber_id: &'a str,
    channel: DeliveryChannel,
    attempt: u32,
    #[serde(flatten)]
    rest: D,
}

impl<'a, D: Serialize> Envelope<'a, D> {
    /// `task`'s envelope of type `kind`, stamped now.
    pub(super) fn new(kind: &'static str, task: &'a DeliveryTask, rest: D) -> Self {
        Envelope {
            kind,
            timestamp: chrono::Utc::now(),
            data: EnvelopeData {
                delivery_id: &task.delivery_id,
                subscription_id: &task.subscription_id,
                subscriber_id: &task.subscriber_id,
                channel: task.channel,
                attempt: task.attempt,
                rest,
            },
        }
    }
}

/// A single report's part of `data`.
#[derive(Serialize)]
struct ReportData<'a> {
    report: &'a ReportDistribution,
}

/// Renders a task into its channel's request. An `Err` is a permanent failure (bad destination).
pub fn render(task: &DeliveryTask, timeout: Duration) -> Result<DeliveryRequest, String> {
    if let Some(digest) = &task.digest {
        return super::digest_payload::render(task, digest, &[], timeout);
    }
    let envelope = Envelope::new("report.distributed", task, ReportData { report: &task.report });
    let payload = serde_json::to_vec(&envelope).map_err(|e| format!("could not render payload: {e}"))?;
    Ok(DeliveryRequest {
        idempotency_key: task.delivery_id.clone(),
        destination: destination(task)?,
        payload: payload.into(),
        timeout,
        attempt: task.attempt,
        priority: task.priority(),
        encrypt_to: encryption(task)?,
    })
}

/// The age recipient everything of this task must be encrypted to, when its report requires
/// encryption (`metadata.encryption_required`; a digest requires it when any of its reports does).
/// Refused, as a permanent failure before anything is sent: a channel that cannot carry ciphertext
/// (SLACK_INTEGRATION, MOBILE_PUSH and DASHBOARD_NOTIFICATION, whose messages are read by people
/// or stored here in clear), and a subscription without a key.
pub(super) fn encryption(task: &DeliveryTask) -> Result<Option<sinks::encryption::Recipient>, String> {
    if !task.report.metadata.encryption_required {
        return Ok(None);
    }
    if matches!(
        task.channel,
        DeliveryChannel::SlackIntegration | DeliveryChannel::MobilePush | DeliveryChannel::DashboardNotification
    ) {
        return Err(sinks::encryption::unsupported(task.channel.as_str()).reason().to_string());
    }
    let key = task.settings.encryption.as_ref().map(|e| e.age_recipient.as_str()).ok_or_else(|| {
        format!(
            "the report requires encryption (metadata.encryption_required) and the subscription has no encryption key              ({ENCRYPTION_KEY_FIELD}): nothing was sent"
        )
    })?;
    key.parse::<sinks::encryption::Recipient>().map(Some).map_err(|e| format!("{ENCRYPTION_KEY_FIELD} {e}: nothing was sent"))
}

/// Where a subscription's age public key is set.
pub const ENCRYPTION_KEY_FIELD: &str = "delivery_preferences.notification_settings.encryption.age_recipient";

/// The task's destination alone (no payload): also what its endpoint is derived from.
pub(super) fn destination(task: &DeliveryTask) -> Result<Destination, String> {
    let settings = &task.settings;
    let missing = |key: &str| format!("subscription has no {key} settings");
    Ok(match task.channel {
        DeliveryChannel::ApiWebhook => {
            let webhook = settings.webhook.as_ref().ok_or_else(|| missing("webhook"))?;
            Destination::Webhook { url: webhook.url.clone(), secret: webhook.secret.clone() }
        }
        DeliveryChannel::DashboardNotification => Destination::Dashboard {
            subscriber_id: task.subscriber_id.clone(),
            subscription_id: task.subscription_id.clone(),
            report_id: task.report.report_data.report_id.clone(),
        },
        DeliveryChannel::Email => {
            let email = settings.email.as_ref().ok_or_else(|| missing("email"))?;
            Destination::Email {
                to: email.to.clone(),
                locale: email.locale.clone(),
                report_type: task.report.data_type.as_str().to_string(),
                attachment: local_file(&task.report),
            }
        }
        DeliveryChannel::Sftp => sftp(settings.sftp.as_ref().ok_or_else(|| missing("sftp"))?, task)?,
        DeliveryChannel::SlackIntegration => {
            let slack = settings.slack.as_ref().ok_or_else(|| missing("slack"))?;
            let kind = match slack.kind {
                ChatKind::Slack => sinks::ChatKind::Slack,
                ChatKind::Teams => sinks::ChatKind::Teams,
            };
            Destination::Chat { kind, webhook_url: slack.webhook_url.clone(), link: slack.link.clone() }
        }
        DeliveryChannel::MobilePush => Destination::Push {
            target: push_target(settings.mobile_push.as_ref().ok_or_else(|| missing("mobile_push"))?)?,
        },
    })
}

/// The report's file as a local path, when it has one. A web URL is no file to read: channels that
/// attach or upload the file skip it (chat and push link to it instead).
pub(super) fn local_file(report: &ReportDistribution) -> Option<PathBuf> {
    let path = report.report_data.file_path.trim();
    let lower = path.to_ascii_lowercase();
    if path.is_empty() || lower.starts_with("http://") || lower.starts_with("https://") {
        return None;
    }
    Some(PathBuf::from(path))
}

fn sftp(sftp: &SftpSettings, task: &DeliveryTask) -> Result<Destination, String> {
    let auth = match (&sftp.password, &sftp.private_key) {
        (Some(password), None) => SftpAuth::Password(password.clone()),
        (None, Some(pem)) => SftpAuth::PrivateKey { pem: pem.clone(), passphrase: sftp.passphrase.clone() },
        _ => return Err("the sftp settings need exactly one of password and private_key".to_string()),
    };
    // The report's file under its own name, or only the manifest when the report has no local file.
    let files = local_file(&task.report)
        .and_then(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            Some(SftpFile { path, name })
        })
        .into_iter()
        .collect();
    Ok(Destination::Sftp {
        host: sftp.host.clone(),
        port: sftp.port,
        username: sftp.username.clone(),
        auth,
        host_key: sftp.host_key.clone(),
        directory: sftp.directory.clone(),
        files,
        manifest_name: None,
    })
}

fn push_target(push: &MobilePushSettings) -> Result<PushTarget, String> {
    // A token the provider declared gone (see `runtime::dead_tokens`) is not tried again: the answer
    // is known, and providers throttle senders that keep using dead tokens.
    if push.target_is_dead() {
        let what = match push.provider {
            PushProvider::Ntfy => "topic_url",
            PushProvider::Fcm | PushProvider::Apns => "device_token",
        };
        return Err(format!(
            "no live device: the subscription's mobile_push.{what} was reported dead by the push provider on an \
             earlier delivery and is skipped; update the subscription with a current {what}"
        ));
    }
    let needed = |value: &Option<String>, key: &str| {
        value.clone().ok_or_else(|| format!("the mobile_push settings have no {key}"))
    };
    Ok(match push.provider {
        PushProvider::Fcm => PushTarget::Fcm { device_token: needed(&push.device_token, "device_token")? },
        PushProvider::Apns => PushTarget::Apns { device_token: needed(&push.device_token, "device_token")? },
        PushProvider::Ntfy => PushTarget::Ntfy { topic_url: needed(&push.topic_url, "topic_url")? },
    })
}

#[cfg(test)]
mod tests {
    use dataflows::report::{ReportDataInfo, ReportDataType};
    use dataflows::subscription::{EmailSettings, NotificationSettings, SlackSettings};

    use super::*;

    fn task(channel: DeliveryChannel, settings: NotificationSettings, file_path: &str) -> DeliveryTask {
        DeliveryTask {
            delivery_id: "d1".into(),
            subscription_id: "s1".into(),
            subscriber_id: "c1".into(),
            channel,
            settings,
            report: ReportDistribution {
                event_id: "e1".into(),
                timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
                data_type: ReportDataType::PerformanceReport,
                report_data: ReportDataInfo {
                    report_id: "r1".into(),
                    file_path: file_path.into(),
                    ..Default::default()
                },
                routing: Default::default(),
                metadata: Default::default(),
            },
            accepted_at: 0,
            attempt: 1,
            digest: None,
            content: None,
        }
    }

    fn sftp_settings() -> SftpSettings {
        SftpSettings {
            host: "h".into(),
            port: 2222,
            username: "u".into(),
            password: Some("pw".into()),
            private_key: None,
            passphrase: None,
            host_key: "SHA256:x".into(),
            directory: "in".into(),
        }
    }

    #[test]
    fn email_attaches_local_files_only() {
        let settings = NotificationSettings {
            email: Some(EmailSettings { to: vec!["a@example.com".into()], locale: Some("de".into()) }),
            ..Default::default()
        };
        let request =
            render(&task(DeliveryChannel::Email, settings.clone(), "/data/q2.pdf"), Duration::from_secs(1)).unwrap();
        let Destination::Email { to, locale, report_type, attachment } = request.destination else { panic!() };
        assert_eq!((to.len(), locale.as_deref(), report_type.as_str()), (1, Some("de"), "PERFORMANCE_REPORT"));
        assert_eq!(attachment, Some(PathBuf::from("/data/q2.pdf")));
        for path in ["", "https://files.example.com/q2.pdf"] {
            let request =
                render(&task(DeliveryChannel::Email, settings.clone(), path), Duration::from_secs(1)).unwrap();
            assert!(matches!(request.destination, Destination::Email { attachment: None, .. }), "{path:?}");
        }
    }

    #[test]
    fn sftp_names_the_file_after_the_report() {
        let settings = NotificationSettings { sftp: Some(Box::new(sftp_settings())), ..Default::default() };
        let request =
            render(&task(DeliveryChannel::Sftp, settings.clone(), "/data/q2.pdf"), Duration::from_secs(1)).unwrap();
        let Destination::Sftp { port, files, manifest_name, auth, .. } = request.destination else { panic!() };
        assert_eq!(port, 2222);
        assert_eq!(files, vec![SftpFile { path: PathBuf::from("/data/q2.pdf"), name: "q2.pdf".into() }]);
        assert_eq!(manifest_name, None, "the sink's own rule: q2.pdf.manifest.json");
        assert_eq!(auth, SftpAuth::Password("pw".into()));
        let request = render(&task(DeliveryChannel::Sftp, settings, ""), Duration::from_secs(1)).unwrap();
        let Destination::Sftp { files, .. } = request.destination else { panic!() };
        assert!(files.is_empty(), "no local file: the manifest alone");
    }

    #[test]
    fn encrypted_reports_need_a_key_and_a_channel_that_carries_ciphertext() {
        use dataflows::subscription::EncryptionSettings;
        let key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let webhook = NotificationSettings {
            webhook: Some(dataflows::subscription::WebhookSettings { url: "https://x/h".into(), secret: "whsec_x".into() }),
            encryption: Some(EncryptionSettings { age_recipient: key.into() }),
            ..Default::default()
        };
        let mut sealed = task(DeliveryChannel::ApiWebhook, webhook.clone(), "");
        assert!(render(&sealed, Duration::from_secs(1)).unwrap().encrypt_to.is_none(), "not required: in clear");
        sealed.report.metadata.encryption_required = true;
        let request = render(&sealed, Duration::from_secs(1)).unwrap();
        assert_eq!(request.encrypt_to.map(|r| r.to_string()).as_deref(), Some(key));
        let keyless = DeliveryTask { settings: NotificationSettings { encryption: None, ..webhook.clone() }, ..sealed.clone() };
        let error = render(&keyless, Duration::from_secs(1)).unwrap_err();
        assert!(error.contains(ENCRYPTION_KEY_FIELD) && error.contains("nothing was sent"), "{error}");
        for channel in [DeliveryChannel::SlackIntegration, DeliveryChannel::MobilePush, DeliveryChannel::DashboardNotification] {
            let error = encryption(&DeliveryTask { channel, ..sealed.clone() }).unwrap_err();
            assert!(error.contains(channel.as_str()) && error.contains("cannot carry"), "{error}");
        }
    }

    #[test]
    fn chat_and_push_map_their_kinds_and_missing_settings_fail() {
        let settings = NotificationSettings {
            slack: Some(SlackSettings { kind: ChatKind::Teams, webhook_url: "https://x/w".into(), link: None }),
            mobile_push: Some(MobilePushSettings {
                provider: PushProvider::Ntfy,
                device_token: None,
                topic_url: Some("https://n/t".into()),
                dead_tokens: vec!["https://n/old".into()],
            }),
            ..Default::default()
        };
        let request =
            render(&task(DeliveryChannel::SlackIntegration, settings.clone(), ""), Duration::from_secs(1)).unwrap();
        assert!(matches!(request.destination, Destination::Chat { kind: sinks::ChatKind::Teams, .. }));
        let request =
            render(&task(DeliveryChannel::MobilePush, settings.clone(), ""), Duration::from_secs(1)).unwrap();
        assert!(matches!(request.destination, Destination::Push { target: PushTarget::Ntfy { .. } }));
        let mut dead = settings;
        if let Some(push) = dead.mobile_push.as_mut() {
            push.dead_tokens.push("https://n/t".into());
        }
        let error = render(&task(DeliveryChannel::MobilePush, dead, ""), Duration::from_secs(1)).unwrap_err();
        assert!(error.starts_with("no live device: ") && error.contains("mobile_push.topic_url"), "{error}");
        assert!(!error.contains("https://n/t"), "the reason never quotes the token: {error}");
        let error = render(&task(DeliveryChannel::Sftp, NotificationSettings::default(), ""), Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(error, "subscription has no sftp settings");
    }
}
