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
mod sshd;
mod temporal;
