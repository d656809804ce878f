//! `/api/v1/reporting/channels` over HTTP on the real server (embedded SQLite): statuses, the
//! error body naming the field, secrets masked on every read.

use std::time::Duration;

use serde_json::{json, Value};

struct Api {
    server: Option<repdist::server::Server>,
    base: String,
    http: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = repdist::config::Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_path_buf(),
            ..Default::default()
        };
        config.storage.fsync = false;
        let server = repdist::server::start(config).await.expect("server starts");
        let base = format!("http://{}/api/v1/reporting", server.http_addr());
        let key = server.local_admin_key().await.expect("an admin key");
        let http = reqwest::Client::builder().default_headers(repdist::auth::client_headers(&key).unwrap()).build().unwrap();
        Api { server: Some(server), base, http, _data_dir: data_dir }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(&body.to_string())).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_configs_are_created_listed_toggled_and_masked() {
    let api = Api::start().await;
    let config = json!({"host": "smtp.example.com", "port": 587, "username": "mailer", "password": "p4ss"});
    let (status, created) = api.post("/channels", json!({"channel_id": "smtp-main", "channel_type": "EMAIL", "channel_config": config})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["channel_id"], "smtp-main");
    assert_eq!(created["channel_type"], "EMAIL");
    assert_eq!(created["enabled"], true);
    assert!(created["created_at"].is_string());
    let masked = json!({"host": "smtp.example.com", "port": 587, "username": "mailer", "password": "********"});
    assert_eq!(created["channel_config"], masked);

    let (status, got) = api.get("/channels/smtp-main").await;
    assert_eq!(status, 200);
    assert_eq!(got["channel_config"], masked, "GET masks secrets");
    assert!(!got.to_string().contains("p4ss"));

    let (status, conflict) = api.post("/channels", json!({"channel_id": "smtp-main", "channel_type": "SFTP", "channel_config": {}})).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "conflict");

    let push = json!({"token": "x", "oauth": {"client_secret": "cs", "token": "t"}, "keys": [{"private_key": "pk", "name": "a"}]});
    let (status, _) = api.post("/channels", json!({"channel_id": "push", "channel_type": "MOBILE_PUSH", "channel_config": push, "enabled": false})).await;
    assert_eq!(status, 201);
    let (status, list) = api.get("/channels").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|c| c["channel_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["push", "smtp-main"]);
    assert_eq!(list[0]["enabled"], false);
    assert_eq!(
        list[0]["channel_config"],
        json!({"token": "********", "oauth": {"client_secret": "********", "token": "********"}, "keys": [{"private_key": "********", "name": "a"}]}),
        "secrets masked at any depth"
    );

    let (status, disabled) = api.post("/channels/smtp-main/disable", json!({})).await;
    assert_eq!((status, &disabled["enabled"]), (200, &json!(false)));
    assert_eq!(api.get("/channels/smtp-main").await.1["enabled"], false);
    let (status, enabled) = api.call(reqwest::Method::POST, "/channels/smtp-main/enable", None).await;
    assert_eq!((status, &enabled["enabled"]), (200, &json!(true)), "no body needed");
    assert_eq!(enabled["channel_config"]["password"], "********");

    for path in ["/channels/nope/enable", "/channels/nope/disable"] {
        let (status, body) = api.call(reqwest::Method::POST, path, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{path}: {body}");
    }
    let (status, body) = api.get("/channels/nope").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    let bad: [(Value, &str); 12] = [
        // An EMAIL row is an SMTP relay: its config is checked as one.
        (json!({"channel_id": "x", "channel_type": "EMAIL", "channel_config": {"hots": "smtp.example.com"}}), "channel_config.hots"),
        (json!({"channel_id": "x", "channel_type": "EMAIL", "channel_config": {"port": 25}}), "channel_config.host"),
        (json!({"channel_id": "x", "channel_type": "EMAIL", "channel_config": {"host": "smtp", "username": "u"}}), "channel_config.password"),
        (json!({"channel_id": "x", "channel_type": "EMAIL", "channel_config": {"host": "smtp", "from": "not an address"}}), "channel_config.from"),
        (json!({"channel_id": "x", "channel_type": "EMAIL", "channel_config": {"tls": {"ca": ["ok", "a\u{0}b"]}}}), "channel_config.tls.ca[1]"),
        (json!({"channel_id": "x", "channel_type": "CARRIER_PIGEON", "channel_config": {}}), "channel_type"),
        (json!({"channel_id": "x", "channel_type": "EMAIL", "channel_config": "host=smtp"}), "channel_config"),
        (json!({"channel_id": "x", "channel_type": "EMAIL", "channel_config": []}), "channel_config"),
        (json!({"channel_id": "x", "channel_type": "EMAIL"}), "channel_config"),
        (json!({"channel_type": "EMAIL", "channel_config": {}}), "channel_id"),
        (json!({"channel_id": "a/b", "channel_type": "EMAIL", "channel_config": {}}), "channel_id"),
        (json!({"channel_id": "x".repeat(101), "channel_type": "EMAIL", "channel_config": {}}), "channel_id"),
    ];
    for (body, field) in bad {
        let (status, answer) = api.post("/channels", body.clone()).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
    }
    let (status, answer) = api.post("/channels", json!({"channel_id": "x", "channel_type": "EMAIL", "channel_config": {}, "extra": 1})).await;
    assert_eq!((status, &answer["error"]["field"]), (422, &json!("extra")));
    let (status, list) = api.get("/channels").await;
    assert_eq!((status, list.as_array().unwrap().len()), (200, 2), "nothing invalid was stored");

    let response = api.http.get(api.base.replace("/reporting", "/openapi.json")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let doc: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    for path in ["/api/v1/reporting/channels", "/api/v1/reporting/channels/{channel_id}", "/api/v1/reporting/channels/{channel_id}/disable"] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    api.server.unwrap_or_else(|| unreachable!()).shutdown().await.unwrap();
}
