//! The demo's mail relay: a real SMTP server on loopback (mailin's RFC 5321 session logic behind a
//! listener, one thread per connection). It accepts every message and records its delivery id.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use mailin::{Action, Handler, Response, SessionBuilder};

use super::arrivals::{uuid_after, Arrivals};

pub struct SmtpPeer {
    pub addr: SocketAddr,
}

struct Capture {
    arrivals: Arrivals,
    data: Vec<u8>,
}

impl Handler for Capture {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, _to: &[String]) -> Response {
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        // Headers are all the demo reads; cap what a large attachment would add.
        if self.data.len() < 64 * 1024 {
            self.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let text = String::from_utf8_lossy(&self.data);
        if let Some(id) = uuid_after(&text, "X-Repdist-Delivery-Id:") {
            self.arrivals.record("EMAIL", &id);
        }
        mailin::response::OK
    }
}

impl SmtpPeer {
    pub fn start(arrivals: Arrivals) -> std::io::Result<SmtpPeer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let builder = SessionBuilder::new("mx.demo.local");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Capture { arrivals: arrivals.clone(), data: Vec::new() };
                let builder = builder.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &builder, handler);
                });
            }
        });
        Ok(SmtpPeer { addr })
    }
}

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
