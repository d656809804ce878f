//! A stand-in for Google's token endpoint, FCM and APNs on loopback: one axum server (HTTP/1.1 and
//! h2c) that checks what a real provider checks. It verifies the FCM assertion (RS256) and the APNs
//! provider token (ES256) with the public halves of the fixture keys, only accepts access tokens it
//! issued and has not revoked, insists on HTTP/2 and the required headers for APNs, and records every
//! violation in `violations()` (which a test asserts is empty) besides answering as the provider would.
//! Failures are scripted per provider; unscripted requests succeed.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};

/// The fixture keys' directory, for the sinks crate's own tests (another crate including this module
/// has its own manifest directory).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/push");
pub const CLIENT_EMAIL: &str = "repdist-push@repdist-test.iam.gserviceaccount.com";
pub const PROJECT_ID: &str = "repdist-test";
pub const TEAM_ID: &str = "TEAM123456";
pub const KEY_ID: &str = "KEY7654321";
pub const TOPIC: &str = "com.example.repdist";

/// One scripted answer: status, extra headers, JSON body, delay.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    pub delay: Duration,
}

impl Answer {
    pub fn new(status: u16, body: Value) -> Answer {
        Answer { status, headers: Vec::new(), body, delay: Duration::ZERO }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// A request that reached FCM's send endpoint or APNs, after authentication.
#[derive(Clone, Debug)]
pub struct Received {
    pub version: Version,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct State {
    token_requests: usize,
    issued: Vec<String>,
    revoked: HashSet<String>,
    fcm_script: VecDeque<Answer>,
    apns_script: VecDeque<Answer>,
    fcm: Vec<Received>,
    apns: Vec<Received>,
    violations: Vec<String>,
}

struct Shared {
    token_uri: String,
    fcm_key: DecodingKey,
    apns_key: DecodingKey,
    state: Mutex<State>,
}

pub struct Provider {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Provider {
    pub async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        // Compiled in, relative to this file, so the service's tests (`tests/it/push.rs`) can include
        // this module from another crate.
        let fcm_public = include_bytes!("../../fixtures/push/fcm-service-account-pub.pem");
        let apns_public = include_bytes!("../../fixtures/push/apns-auth-pub.pem");
        let shared = Arc::new(Shared {
            token_uri: format!("http://{addr}/token"),
            fcm_key: DecodingKey::from_rsa_pem(fcm_public).expect("RSA public key"),
            apns_key: DecodingKey::from_ec_pem(apns_public).expect("EC public key"),
            state: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().expect("provider lock")
    }

    pub fn script_fcm(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state().fcm_script.extend(answers);
    }

    pub fn script_apns(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state().apns_script.extend(answers);
    }

    /// How many assertions were exchanged at the token endpoint (valid or not).
    pub fn token_requests(&self) -> usize {
        self.state().token_requests
    }

    /// Makes every access token issued so far invalid, as Google does when one is revoked.
    pub fn revoke_access_tokens(&self) {
        let mut state = self.state();
        let issued = state.issued.clone();
        state.revoked.extend(issued);
    }

    pub fn fcm_received(&self) -> Vec<Received> {
        self.state().fcm.clone()
    }

    pub fn apns_received(&self) -> Vec<Received> {
        self.state().apns.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }
}

/// A request the provider turns away before it reaches the script.
type Refusal = (StatusCode, String);

fn answer(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).expect("a scripted status is valid");
    let body = if answer.body.is_null() { String::new() } else { answer.body.to_string() };
    let mut response = (status, body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().expect("a scripted header value"));
    }
    response
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    method: Method,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let scripted = {
        let mut state = shared.state.lock().expect("provider lock");
        if method != Method::POST {
            state.violations.push(format!("{method} {path}: not a POST"));
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        if path == "/token" {
            return token(&shared, &mut state, &body);
        }
        if path == format!("/v1/projects/{PROJECT_ID}/messages:send") {
            match fcm(&mut state, &headers, &body) {
                Ok(received) => state.fcm.push(Received { version, path, headers, body: received }),
                Err(refusal) => return refusal.into_response(),
            }
            state.fcm_script.pop_front().unwrap_or_else(|| {
                Answer::new(200, json!({"name": format!("projects/{PROJECT_ID}/messages/{}", state.fcm.len())}))
            })
        } else if let Some(device) = path.strip_prefix("/3/device/") {
            let device = device.to_string();
            match apns(&shared, &mut state, version, &headers, &body, &device) {
                Ok(received) => state.apns.push(Received { version, path, headers: headers.clone(), body: received }),
                Err(refusal) => return refusal.into_response(),
            }
            let id = headers.get("apns-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            state.apns_script.pop_front().unwrap_or_else(|| Answer::new(200, Value::Null).header("apns-id", &id))
        } else {
            state.violations.push(format!("unexpected path {path}"));
            return StatusCode::NOT_FOUND.into_response();
        }
    };
    if !scripted.delay.is_zero() {
        tokio::time::sleep(scripted.delay).await;
    }
    answer(scripted)
}

#[derive(Deserialize)]
struct Assertion {
    iss: String,
    scope: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// `application/x-www-form-urlencoded` pairs, decoded.
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(byte) = u8::from_str_radix(hex, 16) {
                    out.push(byte);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Google's token endpoint: a jwt-bearer grant whose assertion verifies with the service account's
/// public key and has the right issuer, audience, scope and lifetime.
fn token(shared: &Shared, state: &mut State, body: &[u8]) -> Response {
    state.token_requests += 1;
    let pairs = form_pairs(body);
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let refuse = |state: &mut State, why: String| {
        state.violations.push(format!("token endpoint: {why}"));
        (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant", "error_description": why}).to_string())
            .into_response()
    };
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return refuse(state, format!("grant_type {:?}", field("grant_type")));
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_audience(&[shared.token_uri.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = match jsonwebtoken::decode::<Assertion>(field("assertion"), &shared.fcm_key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return refuse(state, format!("assertion does not verify: {e}")),
    };
    if claims.scope != "https://www.googleapis.com/auth/firebase.messaging" {
        return refuse(state, format!("scope {}", claims.scope));
    }
    if claims.exp != claims.iat + 3600 || claims.iat.abs_diff(now()) > 60 || claims.iss != CLIENT_EMAIL {
        return refuse(state, format!("lifetime iat={} exp={}", claims.iat, claims.exp));
    }
    let _ = claims.aud;
    let access_token = format!("ya29.test-access-token-{}", state.issued.len() + 1);
    state.issued.push(access_token.clone());
    let body = json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"});
    ([("content-type", "application/json")], body.to_string()).into_response()
}

/// FCM's send endpoint: a live access token and a v1 `message` with string `data` values.
fn fcm(state: &mut State, headers: &HeaderMap, body: &[u8]) -> Result<Value, Refusal> {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let live = bearer.is_some_and(|t| state.issued.iter().any(|i| i == t) && !state.revoked.contains(t));
    if !live {
        let body = json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}});
        return Err((StatusCode::UNAUTHORIZED, body.to_string()));
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        state.violations.push("fcm: body is not JSON".into());
        return Err((StatusCode::BAD_REQUEST, String::new()));
    };
    let message = &value["message"];
    let mut problems = Vec::new();
    if message["token"].as_str().is_none_or(str::is_empty) {
        problems.push("message.token");
    }
    if !message["notification"]["title"].is_string() || !message["notification"]["body"].is_string() {
        problems.push("message.notification");
    }
    if !message["data"].as_object().is_some_and(|d| d.values().all(Value::is_string)) {
        problems.push("message.data must map to strings");
    }
    if !matches!(message["android"]["priority"].as_str(), Some("HIGH" | "NORMAL")) {
        problems.push("message.android.priority");
    }
    if !problems.is_empty() {
        state.violations.push(format!("fcm: {problems:?} in {value}"));
        return Err((StatusCode::BAD_REQUEST, String::new()));
    }
    Ok(value)
}

#[derive(Deserialize)]
struct ProviderClaims {
    iss: String,
    iat: u64,
}

/// APNs: HTTP/2 only, a provider token signed by the team's key, the headers Apple requires.
fn apns(
    shared: &Shared,
    state: &mut State,
    version: Version,
    headers: &HeaderMap,
    body: &[u8],
    device: &str,
) -> Result<Value, Refusal> {
    let mut problems = Vec::new();
    if version != Version::HTTP_2 {
        problems.push(format!("HTTP version {version:?}, APNs requires HTTP/2"));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    match header("authorization").strip_prefix("bearer ") {
        None => problems.push("no `authorization: bearer` provider token".into()),
        Some(jwt) => {
            match jsonwebtoken::decode_header(jwt) {
                Ok(h) if h.kid.as_deref() == Some(KEY_ID) && h.alg == Algorithm::ES256 => {}
                other => problems.push(format!("provider token header {other:?}")),
            }
            let mut validation = Validation::new(Algorithm::ES256);
            validation.set_issuer(&[TEAM_ID]);
            validation.set_required_spec_claims(&["iss"]);
            validation.validate_exp = false;
            match jsonwebtoken::decode::<ProviderClaims>(jwt, &shared.apns_key, &validation) {
                Ok(data) if data.claims.iat.abs_diff(now()) <= 3600 && data.claims.iss == TEAM_ID => {}
                Ok(data) => problems.push(format!("provider token iat {} is stale", data.claims.iat)),
                Err(e) => problems.push(format!("provider token does not verify: {e}")),
            }
        }
    }
    if header("apns-topic") != TOPIC {
        problems.push(format!("apns-topic {:?}", header("apns-topic")));
    }
    if header("apns-push-type") != "alert" {
        problems.push(format!("apns-push-type {:?}", header("apns-push-type")));
    }
    if !matches!(header("apns-priority").as_str(), "5" | "10") {
        problems.push(format!("apns-priority {:?}", header("apns-priority")));
    }
    let id = header("apns-id");
    if id.len() != 36 || id.chars().filter(|c| *c == '-').count() != 4 || id != id.to_ascii_lowercase() {
        problems.push(format!("apns-id {id:?} is not a lowercase UUID"));
    }
    if device.is_empty() || !device.chars().all(|c| c.is_ascii_hexdigit()) {
        problems.push(format!("device token {device:?} is not hex"));
    }
    let value = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    if !value["aps"]["alert"]["title"].is_string() || !value["aps"]["alert"]["body"].is_string() {
        problems.push(format!("payload {value} has no aps.alert title and body"));
    }
    if body.len() > 4096 {
        problems.push("payload over 4 KiB".into());
    }
    if problems.is_empty() {
        return Ok(value);
    }
    state.violations.push(format!("apns: {problems:?}"));
    Err((StatusCode::BAD_REQUEST, json!({"reason": "BadRequest"}).to_string()))
}
