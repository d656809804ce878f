//! A real SMTP server on loopback: mailin's RFC 5321 session logic behind a listener, one thread per
//! connection. It accepts every message and hands it (envelope recipients and DATA bytes) to a
//! callback. The demo's mail relay, and the EMAIL end-to-end tests' peer.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use mailin::{Action, Handler, Response, SessionBuilder};

/// One message the server accepted: the envelope recipients and the DATA bytes (dot-unstuffed).
#[derive(Clone, Debug)]
pub struct Arrived {
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
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
}

impl Handler for Capture {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        self.rcpt_to.clear();
        self.data.clear();
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        self.rcpt_to.push(to.to_string());
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        (self.on_message)(Arrived { rcpt_to: std::mem::take(&mut self.rcpt_to), data: std::mem::take(&mut self.data) });
        Response::custom(250, "2.0.0 Ok: queued".to_string())
    }
}

impl SmtpPeer {
    /// Listens on `127.0.0.1:0`; every accepted message goes to `on_message`. The listener thread
    /// is detached: it lives as long as the process.
    pub fn start(on_message: impl Fn(Arrived) + Send + Sync + 'static) -> std::io::Result<SmtpPeer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let builder = SessionBuilder::new("mx.demo.local");
        let on_message: OnMessage = Arc::new(on_message);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Capture { on_message: on_message.clone(), rcpt_to: Vec::new(), data: Vec::new() };
                let builder = builder.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &builder, handler);
                });
            }
        });
        Ok(SmtpPeer { addr })
    }
}

/// One SMTP session: greet, then answer line by line. The read timeout ends the thread of a client
/// that goes away.
fn serve(stream: TcpStream, builder: &SessionBuilder, handler: Capture) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Replies are small writes; without this, delayed ACKs add ~200 ms to a pipelined exchange.
    stream.set_nodelay(true)?;
    let remote = stream.peer_addr()?.ip();
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut session = builder.build(remote, handler);
    session.greeting().write_to(&mut writer)?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let response = session.process(&line);
        match response.action {
            Action::Reply => response.write_to(&mut writer)?,
            Action::Close => return response.write_to(&mut writer),
            Action::UpgradeTls | Action::NoReply => {}
        }
    }
}
