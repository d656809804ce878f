//! A real SMTP server on loopback: mailin's RFC 5321 session logic behind a listener, one thread per
//! connection. It accepts every message and hands it (envelope recipients, DATA bytes, and whether
//! the session was protected by TLS) to a callback. The demo's mail relay, and the EMAIL end-to-end
//! tests' peer.
//!
//! Two mailboxes answer as a relay in trouble does, so failure handling can be seen end to end:
//! [`DEFER_MAILBOX`] is answered `451` (try again later) and [`REJECT_MAILBOX`] `550` (no such user).
//!
//! It can speak TLS ([`PeerTls`]): offer `STARTTLS` and upgrade the session when the client asks,
//! or wrap the connection in TLS from the first byte (implicit TLS, "SMTPS"), with a certificate the
//! caller supplies (rustls on ring, the stack lettre uses too).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailin::{Action, Handler, Response, SessionBuilder};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A recipient with this local part is answered `451 4.3.0`: a transient failure.
pub const DEFER_MAILBOX: &str = "defer";
/// A recipient with this local part is answered `550 5.1.1`: a permanent failure.
pub const REJECT_MAILBOX: &str = "reject";

/// One message the server accepted: the envelope recipients and the DATA bytes (dot-unstuffed).
#[derive(Clone, Debug)]
pub struct Arrived {
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
    /// Whether the session carrying the message was TLS (upgraded by STARTTLS, or implicit) when
    /// the message arrived.
    pub tls: bool,
}

/// How the peer protects its sessions.
#[derive(Clone, Default)]
pub enum PeerTls {
    /// Plain SMTP; `STARTTLS` is not offered.
    #[default]
    None,
    /// `STARTTLS` is offered in the EHLO answer; a client that sends it gets a TLS session.
    Starttls(Arc<ServerConfig>),
    /// TLS from the first byte; the greeting is sent inside it.
    Implicit(Arc<ServerConfig>),
}

impl PeerTls {
    /// A TLS server configuration from a PEM certificate chain (leaf first) and a PEM private key.
    pub fn server_config(cert_chain_pem: &[u8], key_pem: &[u8]) -> io::Result<Arc<ServerConfig>> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"));
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("certificate chain", &e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid("private key", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("protocol versions", &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid("certificate", &e))?;
        Ok(Arc::new(config))
    }
}

pub struct SmtpPeer {
    pub addr: SocketAddr,
}

type OnMessage = Arc<dyn Fn(Arrived) + Send + Sync>;

/// A connection's handler: mailin calls it for each command.
struct Capture {
    on_message: OnMessage,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
    /// Set by the connection's thread once the TLS handshake has completed.
    tls: Arc<AtomicBool>,
}

impl Handler for Capture {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        self.rcpt_to.clear();
        self.data.clear();
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        match to.split('@').next() {
            Some(DEFER_MAILBOX) => Response::custom(451, "4.3.0 Mailbox busy, try again later".to_string()),
            Some(REJECT_MAILBOX) => Response::custom(550, "5.1.1 No such user".to_string()),
            _ => {
                self.rcpt_to.push(to.to_string());
                mailin::response::OK
            }
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        (self.on_message)(Arrived {
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            data: std::mem::take(&mut self.data),
            tls: self.tls.load(Ordering::SeqCst),
        });
        Response::custom(250, "2.0.0 Ok: queued".to_string())
    }
}

impl SmtpPeer {
    /// Listens on `127.0.0.1:0` speaking plain SMTP; every accepted message goes to `on_message`.
    /// The listener thread is detached: it lives as long as the process.
    pub fn start(on_message: impl Fn(Arrived) + Send + Sync + 'static) -> std::io::Result<SmtpPeer> {
        Self::start_with(PeerTls::None, on_message)
    }

    /// As [`SmtpPeer::start`], protecting sessions as `tls` says.
    pub fn start_with(tls: PeerTls, on_message: impl Fn(Arrived) + Send + Sync + 'static) -> std::io::Result<SmtpPeer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut builder = SessionBuilder::new("mx.demo.local");
        if matches!(tls, PeerTls::Starttls(_)) {
            builder.enable_start_tls();
        }
        let on_message: OnMessage = Arc::new(on_message);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let upgraded = Arc::new(AtomicBool::new(false));
                let handler =
                    Capture { on_message: on_message.clone(), rcpt_to: Vec::new(), data: Vec::new(), tls: upgraded.clone() };
                let (builder, tls) = (builder.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &builder, handler, &tls, &upgraded);
                });
            }
        });
        Ok(SmtpPeer { addr })
    }
}

/// A connection, before or after its TLS handshake.
enum Connection {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(tcp) => tcp.read(buf),
            Connection::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(tcp) => tcp.write(buf),
            Connection::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Connection::Plain(tcp) => tcp.flush(),
            Connection::Tls(tls) => tls.flush(),
        }
    }
}

/// Runs the server side of the TLS handshake to its end, so a client that refuses the certificate
/// fails here (and the session ends) rather than on the first command.
fn handshake(config: &Arc<ServerConfig>, mut tcp: TcpStream) -> io::Result<Connection> {
    let mut tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)?;
    }
    Ok(Connection::Tls(Box::new(StreamOwned::new(tls, tcp))))
}

/// One SMTP session: greet, then answer line by line, upgrading to TLS on `STARTTLS`. The read
/// timeout ends the thread of a client that goes away.
fn serve(
    stream: TcpStream,
    builder: &SessionBuilder,
    handler: Capture,
    tls: &PeerTls,
    upgraded: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Replies are small writes; without this, delayed ACKs add ~200 ms to a pipelined exchange.
    stream.set_nodelay(true)?;
    let remote = stream.peer_addr()?.ip();
    let mut session = builder.build(remote, handler);
    let connection = match tls {
        PeerTls::Implicit(config) => {
            let connection = handshake(config, stream)?;
            upgraded.store(true, Ordering::SeqCst);
            session.tls_active();
            connection
        }
        PeerTls::None | PeerTls::Starttls(_) => Connection::Plain(stream),
    };
    let mut reader = BufReader::new(connection);
    session.greeting().write_to(reader.get_mut())?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let response = session.process(&line);
        match response.action {
            Action::Reply => response.write_to(reader.get_mut())?,
            Action::Close => return response.write_to(reader.get_mut()),
            Action::UpgradeTls => {
                // "220 Ready to start TLS", in the clear; the client's next bytes are its hello.
                response.write_to(reader.get_mut())?;
                let PeerTls::Starttls(config) = tls else { return Ok(()) };
                if !reader.buffer().is_empty() {
                    // Commands pipelined after STARTTLS would be taken as if sent under TLS
                    // (RFC 3207 section 5 forbids it; a client doing it is attacking or broken).
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "data pipelined after STARTTLS"));
                }
                let Connection::Plain(tcp) = reader.into_inner() else { return Ok(()) };
                reader = BufReader::new(handshake(config, tcp)?);
                upgraded.store(true, Ordering::SeqCst);
                session.tls_active();
            }
            Action::NoReply => {}
        }
    }
}
