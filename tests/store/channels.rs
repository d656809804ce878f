//! `delivery_channels`: create, read, list, enable and disable server-side channel configs.

use dataflows::delivery::DeliveryChannel;
use repdist::store::NewChannel;
use serde_json::{json, Value};

use crate::backend::Backend;

fn new_channel(id: &str, channel_type: DeliveryChannel, config: Value) -> NewChannel {
    let Value::Object(channel_config) = config else { panic!("config fixture must be an object") };
    NewChannel { channel_id: id.to_string(), channel_type, channel_config, enabled: true }
}

pub async fn delivery_channels_crud(backend: &dyn Backend) {
    let store = backend.open().await;
    assert!(store.channels().await.unwrap().is_empty());
    let smtp_config = json!({"host": "smtp.example.com", "port": 587, "username": "mailer", "password": "p4ss\u{e9}",
                             "tls": {"mode": "starttls", "ca": null}, "from": ["reports@example.com"], "rate": 2.5});
    let smtp = new_channel("smtp-main", DeliveryChannel::Email, smtp_config.clone());
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    let created = store.create_channel(&smtp).await.unwrap().expect("created");
    assert_eq!((created.channel_id.as_str(), created.channel_type, created.enabled), ("smtp-main", DeliveryChannel::Email, true));
    assert_eq!(Value::Object(created.channel_config.clone()), smtp_config, "the config exactly, secrets included (the store does not redact)");
    assert!(created.created_at > before, "{}", created.created_at);

    let sftp = NewChannel { enabled: false, ..new_channel("sftp-eu", DeliveryChannel::Sftp, json!({"host": "sftp.example.com", "private_key": "k"})) };
    let sftp_created = store.create_channel(&sftp).await.unwrap().expect("created");
    assert!(!sftp_created.enabled);

    let taken = new_channel("smtp-main", DeliveryChannel::MobilePush, json!({"token": "x"}));
    assert_eq!(store.create_channel(&taken).await.unwrap(), None, "a taken channel_id is refused");
    assert_eq!(store.channel("smtp-main").await.unwrap(), Some(created.clone()), "and the original is unchanged");
    assert_eq!(store.channel("nope").await.unwrap(), None);

    let ids: Vec<String> = store.channels().await.unwrap().into_iter().map(|c| c.channel_id).collect();
    assert_eq!(ids, vec!["sftp-eu", "smtp-main"], "by channel_id");

    let disabled = store.set_channel_enabled("smtp-main", false).await.unwrap().expect("exists");
    assert!(!disabled.enabled);
    assert_eq!(disabled.created_at, created.created_at);
    assert!(!store.set_channel_enabled("smtp-main", false).await.unwrap().unwrap().enabled, "disabling twice is fine");
    assert!(store.set_channel_enabled("sftp-eu", true).await.unwrap().unwrap().enabled);
    assert_eq!(store.set_channel_enabled("nope", true).await.unwrap(), None);

    drop(store);
    let store = backend.open().await;
    let kept = store.channel("smtp-main").await.unwrap().expect("kept across reopen");
    assert!(!kept.enabled);
    assert_eq!(Value::Object(kept.channel_config), smtp_config);
    assert!(store.channel("sftp-eu").await.unwrap().unwrap().enabled);
}
