//! The sinks' integration tests, one binary: each channel against a real peer (a loopback HTTP
//! server for HTTP channels, an in-memory implementation of the service-side trait otherwise).

mod chat;
mod dashboard;
mod email;
mod push;
mod receiver;
mod sftp;
mod sshd;
mod webhook;
