//! Reaching an SFTP server: TCP, the SSH handshake against the pinned host key, authentication, and
//! the `sftp` subsystem. Everything that can go wrong before the first file operation is classified
//! here:
//!
//! - refused, reset, unreachable, timed out, dropped mid-handshake: transient (the server may be back);
//! - another host key than the pinned one, rejected credentials, no common algorithm, no `sftp`
//!   subsystem: permanent (the same attempt would fail the same way).

use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use russh_sftp::client::RawSftpSession;

use super::config::SftpConfig;
use super::host_key::{fingerprint, HostKeyPin};
use crate::SinkError;

/// How the channel proves who it is, parsed from the destination before any connection is made.
pub(crate) enum Credentials {
    Password(String),
    Key(Arc<PrivateKey>),
}

/// One server and account, as a destination names them.
pub(crate) struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub username: &'a str,
    pub credentials: Credentials,
    pub pin: HostKeyPin,
}

impl Target<'_> {
    pub fn endpoint(&self) -> String {
        endpoint(self.host, self.port)
    }
}

/// `host:port`, bracketing an IPv6 address so the port stays readable.
pub(crate) fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An authenticated SSH connection with its SFTP session.
pub(crate) struct SftpConnection {
    ssh: Handle<PinnedHostKey>,
    pub sftp: Arc<RawSftpSession>,
    /// The extensions the server announced in its `SSH_FXP_VERSION`, e.g. `posix-rename@openssh.com`.
    pub extensions: std::collections::HashMap<String, String>,
}

impl SftpConnection {
    /// The SSH connection ended (the server closed it, or it failed); such a session is not kept.
    pub fn is_closed(&self) -> bool {
        self.ssh.is_closed()
    }

    /// Ends the session politely. Failing to do so is harmless: the upload is already complete, and
    /// dropping the handle closes the connection anyway.
    pub async fn close(self) {
        let _ = self.sftp.close_session();
        let _ = self.ssh.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

/// Connects, checks the host key, authenticates and starts the `sftp` subsystem, within
/// `config.connect_timeout`.
pub(crate) async fn open(config: &SftpConfig, target: Target<'_>) -> Result<SftpConnection, SinkError> {
    let endpoint = target.endpoint();
    let handshake = async {
        let ssh_config = Arc::new(client::Config {
            keepalive_interval: (!config.keepalive_interval.is_zero()).then_some(config.keepalive_interval),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let checker = PinnedHostKey { pin: target.pin.clone() };
        let mut ssh = client::connect(ssh_config, (target.host, target.port), checker)
            .await
            .map_err(|e| handshake_error(e, &endpoint, &target.pin))?;
        authenticate(&mut ssh, &target, &endpoint).await?;
        Ok::<_, SinkError>(ssh)
    };
    let ssh = tokio::time::timeout(config.connect_timeout, handshake).await.map_err(|_| {
        SinkError::transient(format!("timed out connecting to {endpoint} after {}", secs(config.connect_timeout)))
    })??;

    let channel = ssh.channel_open_session().await.map_err(|e| session_error(e, &endpoint))?;
    channel.request_subsystem(true, "sftp").await.map_err(|e| session_error(e, &endpoint))?;
    let mut channel = channel;
    // The answer to the subsystem request tells a server without SFTP (permanent) apart from a
    // connection lost on the way (transient).
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => break,
            Some(ChannelMsg::Failure) => {
                return Err(SinkError::permanent(format!("{endpoint} refused the sftp subsystem")));
            }
            Some(ChannelMsg::Close | ChannelMsg::Eof) | None => {
                return Err(SinkError::transient(format!("{endpoint} closed the session before sftp started")));
            }
            Some(_) => {}
        }
    }
    let sftp = RawSftpSession::new(channel.into_stream());
    let version =
        sftp.init().await.map_err(|e| SinkError::transient(format!("sftp start failed on {endpoint}: {e}")))?;
    Ok(SftpConnection { ssh, sftp: Arc::new(sftp), extensions: version.extensions })
}

async fn authenticate(ssh: &mut Handle<PinnedHostKey>, target: &Target<'_>, endpoint: &str) -> Result<(), SinkError> {
    let (method, result) = match &target.credentials {
        Credentials::Password(password) => {
            ("password", ssh.authenticate_password(target.username, password.as_str()).await)
        }
        Credentials::Key(key) => {
            let key = PrivateKeyWithHashAlg::new(key.clone(), None);
            ("private key", ssh.authenticate_publickey(target.username, key).await)
        }
    };
    let result = result.map_err(|e| session_error(e, endpoint))?;
    if result.success() {
        Ok(())
    } else {
        Err(SinkError::permanent(format!(
            "authentication rejected for user {:?} at {endpoint} ({method})",
            target.username
        )))
    }
}

/// Accepts the server only if it presents the pinned key; a certificate is judged by the key it
/// certifies.
pub(crate) struct PinnedHostKey {
    pin: HostKeyPin,
}

/// What can end a handshake: russh's own errors, and ours from [`PinnedHostKey`].
#[derive(Debug)]
pub(crate) enum HandshakeError {
    HostKeyMismatch { presented: String },
    Ssh(russh::Error),
}

impl From<russh::Error> for HandshakeError {
    fn from(error: russh::Error) -> Self {
        HandshakeError::Ssh(error)
    }
}

impl client::Handler for PinnedHostKey {
    type Error = HandshakeError;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let presented = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data(),
            PublicKeyOrCertificate::Certificate(certificate) => certificate.public_key(),
        };
        if self.pin.matches(presented) {
            Ok(true)
        } else {
            // An error rather than `Ok(false)`, so that the mismatch can name the key presented.
            Err(HandshakeError::HostKeyMismatch { presented: fingerprint(presented).to_string() })
        }
    }
}

fn handshake_error(error: HandshakeError, endpoint: &str, pin: &HostKeyPin) -> SinkError {
    match error {
        HandshakeError::HostKeyMismatch { presented } => SinkError::permanent(format!(
            "host key mismatch for {endpoint}, expected {}, got {presented}",
            pin.fingerprint()
        )),
        HandshakeError::Ssh(error) => session_error(error, endpoint),
    }
}

/// Classifies a russh error. Only failures that the same server would repeat are permanent.
fn session_error(error: russh::Error, endpoint: &str) -> SinkError {
    use russh::Error as E;
    match error {
        E::IO(io) => SinkError::transient(format!("connection to {endpoint} failed: {io}")),
        E::NoCommonAlgo { .. } | E::UnknownAlgo | E::Version => {
            SinkError::permanent(format!("cannot speak SSH with {endpoint}: {error}"))
        }
        E::ChannelOpenFailure(reason) => {
            SinkError::transient(format!("{endpoint} refused to open a session: {reason:?}"))
        }
        other => SinkError::transient(format!("SSH session with {endpoint} failed: {other}")),
    }
}

fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}
