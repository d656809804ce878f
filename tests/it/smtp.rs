//! The EMAIL end-to-end tests' SMTP peer: the demo's loopback relay (`repdist::demo::smtp_peer`),
//! keeping every message it accepts.

use std::sync::{Arc, Mutex};

pub use repdist::demo::smtp_peer::Arrived;

pub struct SmtpPeer {
    pub addr: std::net::SocketAddr,
    arrived: Arc<Mutex<Vec<Arrived>>>,
}

impl SmtpPeer {
    pub fn start() -> SmtpPeer {
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&arrived);
        let peer = repdist::demo::smtp_peer::SmtpPeer::start(move |message| keep.lock().unwrap().push(message))
            .expect("an SMTP peer on loopback");
        SmtpPeer { addr: peer.addr, arrived }
    }

    pub fn arrived(&self) -> Vec<Arrived> {
        self.arrived.lock().unwrap().clone()
    }
}
