//! The demo's SFTP server: Debian's OpenSSH `sshd` on a loopback port with throwaway keys, when it
//! is installed (`openssh-server`); otherwise the demo runs without SFTP subscriptions and says so.
//! Arrivals are the manifests uploaded into its directory, noticed by polling.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::arrivals::Arrivals;

const SSHD: &str = "/usr/sbin/sshd";

pub struct SftpPeer {
    pub port: u16,
    /// Pin of the server's host key, as a subscription gives it.
    pub host_key: String,
    /// The client key subscriptions authenticate with.
    pub client_key: String,
    pub upload_dir: PathBuf,
    process: Child,
}

impl SftpPeer {
    /// `None` when sshd is not installed.
    pub fn start(dir: &Path) -> anyhow::Result<Option<SftpPeer>> {
        if !Path::new(SSHD).exists() {
            return Ok(None);
        }
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd (sshd's privilege separation dir)")?;
        let dir = dir.join("sftp");
        std::fs::create_dir_all(dir.join("upload"))?;
        keygen(&dir.join("host_key"))?;
        keygen(&dir.join("client_key"))?;
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin yes\nUsePAM no\n\
             StrictModes no\nMaxStartups 200\nMaxSessions 64\nSubsystem sftp internal-sftp\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config)?;
        let mut process = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log"))?)
            .spawn()
            .context("starting sshd")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline || process.try_wait()?.is_some() {
                let _ = process.kill();
                anyhow::bail!("sshd did not start; see {}", dir.join("sshd.log").display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(SftpPeer {
            port,
            host_key: std::fs::read_to_string(dir.join("host_key.pub"))?.trim().to_string(),
            client_key: std::fs::read_to_string(dir.join("client_key"))?,
            upload_dir: dir.join("upload"),
            process,
        }))
    }

    /// Polls the upload directory for manifests until the returned task is aborted.
    pub fn watch(&self, arrivals: Arrivals) -> tokio::task::JoinHandle<()> {
        let dir = self.upload_dir.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            loop {
                // Each subscription uploads into its own directory under the upload root.
                let directories = std::fs::read_dir(&dir).into_iter().flatten().flatten().filter(|e| e.path().is_dir());
                for directory in directories {
                    let Ok(entries) = std::fs::read_dir(directory.path()) else { continue };
                    for entry in entries.flatten() {
                        let name = entry.path().display().to_string();
                        let file = entry.file_name().to_string_lossy().to_string();
                        if !file.ends_with(".json") || file.starts_with('.') || !seen.insert(name) {
                            continue;
                        }
                        let id = std::fs::read(entry.path())
                            .ok()
                            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                            .and_then(|v| v.pointer("/data/delivery_id").and_then(|id| id.as_str()).map(str::to_string));
                        if let Some(id) = id {
                            arrivals.record("SFTP", &id);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}

impl Drop for SftpPeer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "repdist-demo", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .context("running ssh-keygen")?;
    anyhow::ensure!(status.success(), "ssh-keygen failed");
    Ok(())
}
