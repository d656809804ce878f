//! Integration tests: the real server on port 0, real HTTP receivers on loopback.

mod channels;
mod dashboard;
mod delivery;
mod errors;
mod helpers;
mod kafka;
mod ops;
mod receiver;
mod restart;
mod smtp;
// The SFTP tests' OpenSSH server, shared with the sinks' tests rather than copied.
#[path = "../../sinks/tests/it/sshd.rs"]
#[allow(dead_code)]
mod sshd;
mod temporal;
