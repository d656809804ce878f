//! The EMAIL end-to-end tests' SMTP peer: the demo's loopback relay (`repdist::demo::smtp_peer`),
//! keeping every message it accepts.

use std::sync::{Arc, Mutex};

pub use repdist::demo::smtp_peer::{Arrived, PeerTls};

pub struct SmtpPeer {
    pub addr: std::net::SocketAddr,
    arrived: Arc<Mutex<Vec<Arrived>>>,
}

impl SmtpPeer {
    pub fn start() -> SmtpPeer {
        Self::start_with(PeerTls::None)
    }

    /// A peer speaking STARTTLS or implicit TLS.
    pub fn start_with(tls: PeerTls) -> SmtpPeer {
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&arrived);
        let peer = repdist::demo::smtp_peer::SmtpPeer::start_with(tls, move |message| keep.lock().unwrap().push(message))
            .expect("an SMTP peer on loopback");
        SmtpPeer { addr: peer.addr, arrived }
    }

    pub fn arrived(&self) -> Vec<Arrived> {
        self.arrived.lock().unwrap().clone()
    }
}
