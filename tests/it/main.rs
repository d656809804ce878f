//! Integration tests: the real server on port 0, real HTTP receivers on loopback.

mod analytics;
// Credentials, roles, the keys CLI and the audit trail.
mod auth;
mod channels;
mod content;
mod dashboard;
mod delivery;
mod digests;
mod encryption;
mod endpoints;
mod errors;
mod helpers;
mod kafka;
mod kafka_peer;
mod ops;
mod process;
mod push;
mod receiver;
mod restart;
mod smtp;
mod smtp_tls;
// The WebSocket update stream.
mod stream;
// The SFTP tests' OpenSSH server, shared with the sinks' tests rather than copied.
#[path = "../../sinks/tests/it/sshd.rs"]
#[allow(dead_code)]
mod sshd;
mod temporal;
