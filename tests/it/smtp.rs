//! A real SMTP server on loopback for the EMAIL end-to-end tests, as in `sinks/tests/it/email.rs`:
//! mailin's RFC 5321 session state machine behind a blocking `127.0.0.1:0` listener, one thread per
//! connection. It accepts every message and records the envelope and the DATA bytes.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin::{Action, Handler, Response, SessionBuilder};

/// One message the server accepted: the envelope and the DATA bytes (dot-unstuffed).
#[derive(Clone, Debug)]
pub struct Arrived {
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
}

pub struct SmtpPeer {
    pub addr: SocketAddr,
    arrived: Arc<Mutex<Vec<Arrived>>>,
}

/// A connection's handler: mailin calls it for each command.
struct Capture {
    arrived: Arc<Mutex<Vec<Arrived>>>,
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
        let message = Arrived { rcpt_to: self.rcpt_to.clone(), data: std::mem::take(&mut self.data) };
        self.arrived.lock().unwrap().push(message);
        Response::custom(250, "2.0.0 Ok: queued".to_string())
    }
}

impl SmtpPeer {
    pub fn start() -> SmtpPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let builder = SessionBuilder::new("mx.test");
        let accepting = Arc::clone(&arrived);
        // Detached: it ends with the test binary. Each connection has its own thread and a read
        // timeout, so a client that goes away never leaves a thread blocked for long.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Capture { arrived: Arc::clone(&accepting), rcpt_to: Vec::new(), data: Vec::new() };
                let builder = builder.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &builder, handler);
                });
            }
        });
        SmtpPeer { addr, arrived }
    }

    pub fn arrived(&self) -> Vec<Arrived> {
        self.arrived.lock().unwrap().clone()
    }
}

/// One SMTP session, as mailin-embedded runs it: greet, then answer line by line.
fn serve(stream: TcpStream, builder: &SessionBuilder, handler: Capture) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
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
