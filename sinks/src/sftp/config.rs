//! The SFTP channel's settings: how it dials, keeps a session alive, how many sessions it opens per
//! server and how it cuts a file into writes. Where a delivery goes and how it authenticates are not
//! here: they come with each [`crate::Destination::Sftp`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest write the channel sends in one SFTP request. OpenSSH's server refuses packets over
/// 256 KiB (`SFTP_MAX_MSG_LENGTH`), and a write request carries its handle and offset besides the data.
pub const MAX_CHUNK_SIZE: usize = 255 * 1024;

/// Settings of the SFTP channel. Every field has a default, so an empty table is a valid
/// configuration; unknown keys are rejected so that a typo is an error rather than a silently ignored
/// setting. Durations are written as `"10s"`, `"1m 30s"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftpConfig {
    /// Bound on reaching the server and getting through the SSH handshake and authentication. The
    /// per-request deadline still applies, so the effective bound is the smaller of the two.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How often an idle session sends an SSH keepalive, so that a NAT or firewall does not drop a
    /// connection in the middle of a long upload. `"0s"` disables keepalives.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Sessions open at the same time to one `host:port`. SFTP servers commonly limit concurrent
    /// sessions per user (OpenSSH's `MaxStartups`, hosted SFTP plans); further deliveries to the same
    /// server wait for a slot, within their deadline.
    pub max_sessions_per_host: usize,
    /// How long a session stays open after an upload, waiting for the next upload to the same
    /// server and account (see `pool`). Saves the SSH handshake for a busy server; `"0s"` closes
    /// every session after its upload.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Bytes per SFTP write request. Larger chunks mean fewer round trips; at most [`MAX_CHUNK_SIZE`],
    /// and lowered further when the server announces a smaller limit (`limits@openssh.com`).
    pub chunk_size: usize,
    /// Write requests sent before waiting for the first acknowledgement. Pipelining hides the round
    /// trip: one request at a time would bound throughput to `chunk_size / RTT`. At most this many
    /// chunks of a file are held in memory.
    pub writes_in_flight: usize,
}

impl Default for SftpConfig {
    fn default() -> Self {
        SftpConfig {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            max_sessions_per_host: 4,
            idle_timeout: Duration::from_secs(30),
            chunk_size: 32 * 1024,
            writes_in_flight: 16,
        }
    }
}

/// Why the SFTP channel could not be set up. Errors name the offending key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SftpSetupError {
    #[error("sftp.{key}: {reason}")]
    InvalidConfig { key: &'static str, reason: &'static str },
}

impl SftpConfig {
    /// Checks what serde cannot: values that parse but would make every delivery fail or stall.
    pub fn validate(&self) -> Result<(), SftpSetupError> {
        let invalid = |key, reason| Err(SftpSetupError::InvalidConfig { key, reason });
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be greater than zero");
        }
        if self.max_sessions_per_host == 0 {
            return invalid("max_sessions_per_host", "must be at least 1");
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return invalid("chunk_size", "must be between 1 and 261120 bytes (255 KiB)");
        }
        if self.writes_in_flight == 0 {
            return invalid("writes_in_flight", "must be at least 1");
        }
        if self.writes_in_flight > 1024 {
            return invalid("writes_in_flight", "must be at most 1024");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_gives_valid_defaults() {
        let config: SftpConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config, SftpConfig::default());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn durations_are_human_readable() {
        let config: SftpConfig =
            serde_json::from_str(r#"{"connect_timeout": "2s 500ms", "keepalive_interval": "0s", "chunk_size": 65536}"#)
                .expect("valid config");
        assert_eq!(config.connect_timeout, Duration::from_millis(2500));
        assert_eq!(config.keepalive_interval, Duration::ZERO);
        assert_eq!(config.chunk_size, 65536);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_str::<SftpConfig>(r#"{"chunksize": 1024}"#).expect_err("a typo");
        assert!(error.to_string().contains("chunksize"), "{error}");
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (SftpConfig { connect_timeout: Duration::ZERO, ..Default::default() }, "connect_timeout"),
            (SftpConfig { max_sessions_per_host: 0, ..Default::default() }, "max_sessions_per_host"),
            (SftpConfig { chunk_size: 0, ..Default::default() }, "chunk_size"),
            (SftpConfig { chunk_size: MAX_CHUNK_SIZE + 1, ..Default::default() }, "chunk_size"),
            (SftpConfig { writes_in_flight: 0, ..Default::default() }, "writes_in_flight"),
        ];
        for (config, key) in cases {
            let error = config.validate().expect_err(key);
            assert!(error.to_string().starts_with(&format!("sftp.{key}: ")), "{error}");
        }
        let largest = SftpConfig { chunk_size: MAX_CHUNK_SIZE, ..Default::default() };
        assert_eq!(largest.validate(), Ok(()));
    }
}
