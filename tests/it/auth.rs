//! Access control over REST and WebSocket: credentials, roles, a subscriber confined to its own
//! data, JWTs, the bootstrap admin key, the `repdist keys` CLI, and the audit trail.

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use repdist::store::Role;
use serde_json::{json, Value};

use crate::helpers::{client_with, eventually, report, webhook_subscription, TestServer};
use crate::receiver::Receiver;

fn dashboard(id: &str, subscriber: &str) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": subscriber,
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["DASHBOARD_NOTIFICATION"], "notification_settings": {"dashboard": {}}}
    })
}

#[tokio::test]
async fn every_reporting_call_needs_a_valid_credential() {
    let server = TestServer::start().await;
    let anonymous = client_with(None);
    for (method, path) in [
        (Method::GET, "/api/v1/reporting/subscriptions/pm_001"),
        (Method::POST, "/api/v1/reporting/deliver"),
        (Method::GET, "/api/v1/reporting/dead-letters"),
        (Method::GET, "/api/v1/reporting/keys"),
        (Method::GET, "/api/v1/reporting/audit"),
    ] {
        let (status, body) = server.send_with(&anonymous, method.clone(), path, Some(&json!({}))).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    }
    let response = anonymous.get(format!("{}/api/v1/reporting/stats", server.base)).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    for bad in [client_with(Some("rd_not-a-key")), client_with(Some("not even a key")), client_with(Some(""))] {
        let (status, body) = server.send_with(&bad, Method::GET, "/api/v1/reporting/stats", None).await;
        assert_eq!(status, 401, "{body}");
    }
    let basic = reqwest::Client::new().get(format!("{}/api/v1/reporting/stats", server.base)).header("authorization", "Basic YTpi").send().await.unwrap();
    assert_eq!(basic.status().as_u16(), 401);

    // Probes, scraping and the API's description stay open.
    for path in ["/healthz", "/metrics", "/api/v1/openapi.json"] {
        let (status, _) = server.send_with(&anonymous, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    let (_, document) = server.send_with(&anonymous, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer", "{}", document["components"]);
    assert!(document["paths"]["/api/v1/reporting/keys"]["post"]["responses"]["401"].is_object());
    assert!(document["paths"]["/healthz"]["get"]["security"].is_null());
    // Unknown paths are still 404, credential or not.
    assert_eq!(server.send_with(&anonymous, Method::GET, "/api/v1/reporting/nope", None).await.0, 404);
}

#[tokio::test]
async fn each_role_reaches_only_its_routes() {
    let server = TestServer::start().await;
    server.subscribe(dashboard("dash-1", "pm_001")).await;
    let publisher = server.client_as(Role::Publisher, None).await;
    let subscriber = server.client_as(Role::Subscriber, Some("pm_001")).await;

    let (status, ack) = server.send_with(&publisher, Method::POST, "/api/v1/reporting/deliver", Some(&report("evt-1", "rep-1"))).await;
    assert_eq!(status, 202, "a publisher submits reports: {ack}");
    let delivery = ack["delivery_ids"][0].as_str().unwrap().to_string();
    let (status, _) = server.send_with(&publisher, Method::GET, &format!("/api/v1/reporting/delivery/{delivery}/status"), None).await;
    assert_eq!(status, 200, "and follows their deliveries");
    let channel = json!({"channel_id": "relay", "channel_type": "EMAIL", "channel_config": {"host": "smtp.example.com"}});
    for (method, path, body) in [
        (Method::POST, "/api/v1/reporting/channels", Some(&channel)),
        (Method::POST, "/api/v1/reporting/subscribe", Some(&dashboard("dash-p", "pm_001"))),
        (Method::GET, "/api/v1/reporting/subscriptions/pm_001", None),
        (Method::GET, "/api/v1/reporting/dead-letters", None),
        (Method::POST, "/api/v1/reporting/keys", Some(&json!({"role": "admin"}))),
    ] {
        let (status, body) = server.send_with(&publisher, method.clone(), path, body).await;
        assert_eq!(status, 403, "publisher {method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    for (method, path, body) in [
        (Method::POST, "/api/v1/reporting/deliver", Some(&report("evt-2", "rep-2"))),
        (Method::GET, "/api/v1/reporting/dead-letters", None),
        (Method::GET, "/api/v1/reporting/stats", None),
        (Method::GET, "/api/v1/reporting/channels", None),
        (Method::GET, "/api/v1/reporting/audit", None),
        (Method::POST, "/api/v1/reporting/keys", Some(&json!({"role": "subscriber", "subscriber_id": "pm_001"}))),
    ] {
        let (status, body) = server.send_with(&subscriber, method.clone(), path, body).await;
        assert_eq!(status, 403, "subscriber {method} {path}: {body}");
    }
    let (status, _) = server.post("/api/v1/reporting/channels", &channel).await;
    assert_eq!(status, 201, "an admin may do everything");
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_by_admins() {
    let server = TestServer::start().await;
    let (status, created) = server.post("/api/v1/reporting/keys", &json!({"role": "publisher"})).await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["key_id"].as_str().unwrap().to_string();
    assert!(key.starts_with("rd_") && key.len() > 40, "{key}");
    let publisher = client_with(Some(&key));
    let (status, _) = server.send_with(&publisher, Method::POST, "/api/v1/reporting/deliver", Some(&report("evt-1", "rep-1"))).await;
    assert_eq!(status, 202);

    let (status, body) = server.post("/api/v1/reporting/keys", &json!({"role": "subscriber"})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("subscriber_id")), "{body}");
    let (status, body) = server.post("/api/v1/reporting/keys", &json!({"role": "root"})).await;
    assert_eq!(status, 422, "{body}");

    let (status, listed) = server.get("/api/v1/reporting/keys").await;
    assert_eq!(status, 200);
    let text = listed.to_string();
    assert!(!text.contains(&key) && !text.contains("key_hash"), "never the secret nor its hash: {text}");
    assert!(listed.as_array().unwrap().iter().any(|k| k["key_id"] == key_id.as_str() && k["role"] == "publisher"));

    let (status, revoked) = server.post(&format!("/api/v1/reporting/keys/{key_id}/revoke"), &json!({})).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    let (status, body) = server.send_with(&publisher, Method::POST, "/api/v1/reporting/deliver", Some(&report("evt-2", "rep-2"))).await;
    assert_eq!(status, 401, "a revoked key is refused at once: {body}");
    let (status, _) = server.post("/api/v1/reporting/keys/key_nope/revoke", &json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_subscriber_sees_only_its_own_data() {
    let server = TestServer::start().await;
    server.subscribe(dashboard("dash-1", "pm_001")).await;
    server.subscribe(dashboard("dash-2", "pm_002")).await;
    let ids = server.deliver(report("evt-1", "rep-1")).await;
    assert_eq!(ids.len(), 2);
    for id in &ids {
        server.wait_for_state(id, "DELIVERED").await;
    }
    let mine = dataflows::delivery::delivery_id("rep-1", "dash-1", dataflows::delivery::DeliveryChannel::DashboardNotification);
    let theirs = dataflows::delivery::delivery_id("rep-1", "dash-2", dataflows::delivery::DeliveryChannel::DashboardNotification);
    let key = server.key_for(Role::Subscriber, Some("pm_001")).await;
    let me = client_with(Some(&key));

    let (status, own) = server.send_with(&me, Method::GET, "/api/v1/reporting/subscriptions/pm_001", None).await;
    assert_eq!(status, 200);
    assert_eq!(own.as_array().unwrap().len(), 1);
    let (status, own) = server.send_with(&me, Method::GET, &format!("/api/v1/reporting/delivery/{mine}/status"), None).await;
    assert_eq!((status, own["delivery_id"].as_str()), (200, Some(mine.as_str())));
    let (status, own) = server.send_with(&me, Method::GET, "/api/v1/reporting/notifications/pm_001", None).await;
    assert_eq!(status, 200);
    assert_eq!(own.as_array().unwrap().len(), 1);

    let updated = dashboard("dash-2", "pm_002");
    for (method, path, body) in [
        (Method::GET, "/api/v1/reporting/subscriptions/pm_002".to_string(), None),
        (Method::PUT, "/api/v1/reporting/subscriptions/dash-2".to_string(), Some(&updated)),
        (Method::DELETE, "/api/v1/reporting/subscriptions/dash-2".to_string(), None),
        (Method::GET, format!("/api/v1/reporting/delivery/{theirs}/status"), None),
        (Method::GET, "/api/v1/reporting/notifications/pm_002".to_string(), None),
    ] {
        let (status, body) = server.send_with(&me, method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        assert!(!body.to_string().contains("pm_002") || path.contains("pm_002"), "no data of the other subscriber: {body}");
    }
    let (_, still) = server.get("/api/v1/reporting/subscriptions/pm_002").await;
    assert_eq!(still[0]["status"], "active", "the other subscriber's subscription is untouched");

    let (status, body) = server.send_with(&me, Method::POST, "/api/v1/reporting/subscribe", Some(&dashboard("dash-3", "pm_002"))).await;
    assert_eq!((status, body["error"]["field"].as_str()), (403, Some("subscriber_id")), "{body}");
    let (status, created) = server.send_with(&me, Method::POST, "/api/v1/reporting/subscribe", Some(&dashboard("dash-3", "pm_001"))).await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = server.send_with(&me, Method::DELETE, "/api/v1/reporting/subscriptions/dash-3", None).await;
    assert_eq!(status, 200, "its own subscription it may cancel");

    // The stream: another subscriber's subscription is refused like an unknown one.
    let addr = server.server.http_addr();
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/reporting/stream?subscription_id=dash-2&token={key}")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 404),
        other => panic!("expected a 404 handshake, got {:?}", other.map(|_| "a connection")),
    }
    let anonymous = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/reporting/stream?subscription_id=dash-1")).await;
    match anonymous {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("expected a 401 handshake, got {:?}", other.map(|_| "a connection")),
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/reporting/stream?subscription_id=dash-1&token={key}"))
        .await
        .expect("its own stream opens");
    use futures::StreamExt;
    let hello = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("hello in time").unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("\"hello\""), "{hello:?}");
}

#[tokio::test]
async fn jwt_bearer_tokens_map_claims_to_roles() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
    let server = TestServer::start_with(|config| {
        config.auth.jwt = Some(repdist::config::JwtConfig {
            secret: Some(SECRET.to_string()),
            issuer: Some("https://idp.test/".to_string()),
            leeway: Duration::ZERO,
            ..Default::default()
        });
    })
    .await;
    server.subscribe(dashboard("dash-1", "pm_001")).await;
    let now = chrono::Utc::now().timestamp();
    let token = |claims: Value, secret: &str| encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    let claims = |exp: i64| json!({"sub": "alice", "iss": "https://idp.test/", "exp": exp, "role": "subscriber", "subscriber_id": "pm_001"});

    let valid = client_with(Some(&token(claims(now + 300), SECRET)));
    let (status, body) = server.send_with(&valid, Method::GET, "/api/v1/reporting/subscriptions/pm_001", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.send_with(&valid, Method::GET, "/api/v1/reporting/subscriptions/pm_002", None).await;
    assert_eq!(status, 404, "the subscriber_id claim confines the token");
    let (status, _) = server.send_with(&valid, Method::GET, "/api/v1/reporting/dead-letters", None).await;
    assert_eq!(status, 403, "the role claim decides");

    let mut wrong_issuer = claims(now + 300);
    wrong_issuer["iss"] = json!("https://elsewhere/");
    let mut no_role = claims(now + 300);
    no_role.as_object_mut().unwrap().remove("role");
    let mut no_subscriber = claims(now + 300);
    no_subscriber.as_object_mut().unwrap().remove("subscriber_id");
    for (name, refused) in [
        ("expired", token(claims(now - 120), SECRET)),
        ("bad signature", token(claims(now + 300), "another-secret-of-at-least-32-bytes!")),
        ("wrong issuer", token(wrong_issuer, SECRET)),
        ("no role", token(no_role, SECRET)),
        ("no subscriber_id", token(no_subscriber, SECRET)),
    ] {
        let (status, body) = server.send_with(&client_with(Some(&refused)), Method::GET, "/api/v1/reporting/subscriptions/pm_001", None).await;
        assert_eq!(status, 401, "{name}: {body}");
    }
    let (_, page) = server.get("/api/v1/reporting/audit?action=request.denied").await;
    let details: Vec<&str> = page["items"].as_array().unwrap().iter().filter_map(|r| r["detail"].as_str()).collect();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, page) = server.get("/api/v1/reporting/audit?action=request.denied").await;
            let details = page.to_string();
            (details.contains("token expired") && details.contains("bad signature")).then_some(())
        })
        .await
        .is_some(),
        "the reasons are audited: {details:?}"
    );
    let (_, page) = server.get("/api/v1/reporting/audit?actor=jwt:alice").await;
    assert!(page["items"].as_array().unwrap().iter().any(|r| r["outcome"] == "forbidden"), "{page}");
}

#[tokio::test]
async fn jwts_are_verified_against_a_jwks_file_or_a_pem_public_key() {
    use base64::Engine;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let keys = tempfile::tempdir().unwrap();
    let signer = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    // The public key as a JWK: the uncompressed point is 0x04 || x || y.
    let point = signer.public_key_raw();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..65])}]});
    std::fs::write(keys.path().join("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(keys.path().join("public.pem"), signer.public_key_pem()).unwrap();
    let claims = json!({"sub": "ops", "exp": chrono::Utc::now().timestamp() + 300, "role": "admin"});
    let sign = |key: &rcgen::KeyPair| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".to_string());
        encode(&header, &claims, &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap()).unwrap()
    };
    for source in ["jwks_file", "public_key_file"] {
        let dir = keys.path().to_path_buf();
        let server = TestServer::start_with(move |config| {
            config.auth.jwt = Some(repdist::config::JwtConfig {
                jwks_file: (source == "jwks_file").then(|| dir.join("jwks.json")),
                public_key_file: (source == "public_key_file").then(|| dir.join("public.pem")),
                ..Default::default()
            });
        })
        .await;
        let (status, body) = server.send_with(&client_with(Some(&sign(&signer))), Method::GET, "/api/v1/reporting/dead-letters", None).await;
        assert_eq!(status, 200, "{source}: {body}");
        let (status, body) = server.send_with(&client_with(Some(&sign(&stranger))), Method::GET, "/api/v1/reporting/dead-letters", None).await;
        assert_eq!(status, 401, "{source}: signed by another key: {body}");
    }
}

#[tokio::test]
async fn the_embedded_default_creates_one_admin_key_in_the_data_directory() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data_dir.path(), |_| {}).await;
    let created = server.server.bootstrap_admin_key().expect("no key existed: one was created").to_string();
    let path = data_dir.path().join("admin.key");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), created);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (status, _) = server.send_with(&client_with(Some(&created)), Method::GET, "/api/v1/reporting/keys", None).await;
    assert_eq!(status, 200, "it is an admin key");
    server.server.shutdown().await.unwrap();

    let again = TestServer::start_in(data_dir.path(), |_| {}).await;
    assert!(again.server.bootstrap_admin_key().is_none(), "a key exists: none is created");
    assert_eq!(again.key, created, "tools find the key in the data directory");
    let (_, keys) = again.get("/api/v1/reporting/keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    again.server.shutdown().await.unwrap();

    let off = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(off.path());
    config.auth.bootstrap_admin_key = false;
    let server = repdist::server::start(config).await.unwrap();
    assert!(server.bootstrap_admin_key().is_none());
    assert!(!off.path().join("admin.key").exists());
    server.shutdown().await.unwrap();
}

fn repdist_keys(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_repdist")).arg("keys").args(args).env("RUST_LOG", "warn").output().expect("repdist keys runs")
}

#[tokio::test]
async fn the_keys_command_creates_lists_and_revokes() {
    let data_dir = tempfile::tempdir().unwrap();
    let dir = data_dir.path().to_str().unwrap().to_string();
    let created = repdist_keys(&["create", "--data-dir", &dir, "--role", "subscriber", "--subscriber", "pm_cli"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8(created.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("rd_"), "{key}");
    let refused = repdist_keys(&["create", "--data-dir", &dir, "--role", "subscriber"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("subscriber_id"), "{}", String::from_utf8_lossy(&refused.stderr));

    let listed = repdist_keys(&["list", "--data-dir", &dir]);
    assert!(listed.status.success());
    let table = String::from_utf8(listed.stdout).unwrap();
    assert!(table.contains("pm_cli") && table.contains("subscriber") && !table.contains(&key), "{table}");
    let key_id = table.split_whitespace().find(|w| w.starts_with("key_") && *w != "key_id").expect("a key id").to_string();

    let server = TestServer::start_in(data_dir.path(), |_| {}).await;
    assert!(server.server.bootstrap_admin_key().is_none(), "a key existed");
    let me = client_with(Some(&key));
    let (status, _) = server.send_with(&me, Method::GET, "/api/v1/reporting/subscriptions/pm_cli", None).await;
    assert_eq!(status, 200);

    let revoked = repdist_keys(&["revoke", "--data-dir", &dir, &key_id]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let (status, _) = server.send_with(&me, Method::GET, "/api/v1/reporting/subscriptions/pm_cli", None).await;
    assert_eq!(status, 401, "revoked beside the running server, refused at once");
    assert!(!repdist_keys(&["revoke", "--data-dir", &dir, "key_nope"]).status.success());

    let (_, page) = server.get("/api/v1/reporting/audit?actor=cli").await;
    let actions: Vec<&str> = page["items"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions, ["keys.create", "keys.revoke", "keys.revoke"], "{page}");
}

#[tokio::test]
async fn the_audit_trail_records_every_kind_of_event() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let (url, secret) = receiver.endpoint("gone");
    receiver.script("gone", vec![(410, None), (204, None)]);
    server.subscribe(webhook_subscription("sub-g", "client_001", &url, &secret)).await;
    let ids = server.deliver(report("evt-1", "rep-1")).await;
    server.wait_for_state(&ids[0], "DEAD_LETTERED").await;
    let (status, _) = server.post(&format!("/api/v1/reporting/dead-letters/{}/replay", ids[0]), &json!({})).await;
    assert_eq!(status, 202);
    server.wait_for_state(&ids[0], "DELIVERED").await;
    let (status, _) = server.post("/api/v1/reporting/channels", &json!({"channel_id": "relay", "channel_type": "EMAIL", "channel_config": {"host": "smtp.example.com"}})).await;
    assert_eq!(status, 201);
    let (status, created) = server.post("/api/v1/reporting/keys", &json!({"role": "publisher"})).await;
    assert_eq!(status, 201);
    let publisher_actor = format!("key:{}", created["key_id"].as_str().unwrap());
    let publisher = client_with(created["key"].as_str());
    assert_eq!(server.send_with(&publisher, Method::GET, "/api/v1/reporting/dead-letters", None).await.0, 403);
    assert_eq!(server.send_with(&client_with(None), Method::GET, "/api/v1/reporting/dead-letters", None).await.0, 401);

    let (_, me) = server.get("/api/v1/reporting/keys").await;
    let admin_actor = format!("key:{}", me[0]["key_id"].as_str().unwrap());
    let wanted = [
        (admin_actor.as_str(), "subscription.create", "sub-g", "ok"),
        ("system", "subscription.version", "sub-g", "active"),
        ("system", "delivery.attempt", ids[0].as_str(), "FAILED"),
        ("system", "delivery.dead_letter", ids[0].as_str(), "DEAD_LETTERED"),
        (admin_actor.as_str(), "dead_letter.replay", ids[0].as_str(), "ok"),
        ("system", "delivery.replay", ids[0].as_str(), "PENDING"),
        ("system", "delivery.attempt", ids[0].as_str(), "DELIVERED"),
        (admin_actor.as_str(), "channel.create", "relay", "ok"),
        (admin_actor.as_str(), "keys.create", created["key_id"].as_str().unwrap(), "ok"),
        (publisher_actor.as_str(), "request.denied", "GET /api/v1/reporting/dead-letters", "forbidden"),
        ("anonymous", "request.denied", "GET /api/v1/reporting/dead-letters", "unauthenticated"),
    ];
    let rows = eventually(Duration::from_secs(10), || async {
        let (status, page) = server.get("/api/v1/reporting/audit?limit=1000").await;
        assert_eq!(status, 200, "{page}");
        let rows: Vec<(String, String, String, String)> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (text("actor"), text("action"), text("target"), text("outcome"))
            })
            .collect();
        let all_there = wanted.iter().all(|w| rows.iter().any(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str(), r.3.as_str()) == *w));
        all_there.then_some(rows)
    })
    .await;
    assert!(rows.is_some(), "missing audit rows; wanted {wanted:?}, have {:?}", server.get("/api/v1/reporting/audit?limit=1000").await.1);

    let (status, page) = server.get("/api/v1/reporting/audit?action=delivery.attempt&limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"].as_i64().expect("a next page");
    let (_, second) = server.get(&format!("/api/v1/reporting/audit?action=delivery.attempt&limit=1&after={next}")).await;
    assert_eq!(second["items"][0]["outcome"], "DELIVERED", "{second}");
    let (status, body) = server.get("/api/v1/reporting/audit?since=yesterday").await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("since")));
}
