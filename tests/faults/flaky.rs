//! A fault injector in front of a real receiver: a TCP proxy whose first connections fail in a
//! chosen way, after which it forwards bytes unchanged. The receiver behind it stays real.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Accept, read the request, then reset the connection (RST, not a clean close).
    Reset,
    /// Accept and read, never answer: the sender's own timeout must end the attempt.
    Hang,
}

pub struct FlakyProxy {
    pub addr: SocketAddr,
    /// Faults not yet used, one per incoming connection.
    pending: Arc<Mutex<VecDeque<Fault>>>,
}

impl FlakyProxy {
    pub async fn start(upstream: SocketAddr, faults: Vec<Fault>) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pending = Arc::new(Mutex::new(VecDeque::from(faults)));
        let queue = pending.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fault = queue.lock().unwrap().pop_front();
                tokio::spawn(handle(client, upstream, fault));
            }
        });
        FlakyProxy { addr, pending }
    }

    pub fn faults_left(&self) -> usize {
        self.pending.lock().unwrap().len()
    }
}

async fn handle(mut client: TcpStream, upstream: SocketAddr, fault: Option<Fault>) {
    use tokio::io::AsyncReadExt;
    let mut request = [0u8; 4096];
    match fault {
        Some(Fault::Reset) => {
            let _ = client.read(&mut request).await;
            let _ = client.set_zero_linger();
            drop(client);
        }
        Some(Fault::Hang) => {
            let _ = client.read(&mut request).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        None => {
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        }
    }
}
