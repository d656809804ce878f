//! A real OpenSSH server for the SFTP tests: Debian's `/usr/sbin/sshd` on `127.0.0.1`, a free port,
//! with a throwaway ed25519 host key, an authorized client key and `internal-sftp`, all in its own
//! temporary directory. Uploads land in that directory too, so a test reads them back with `std::fs`.
//!
//! The tests run as root: sshd logs in as root (`PermitRootLogin yes`), with `UsePAM no` and
//! `StrictModes no` so that nothing outside the temporary directory is consulted but the account
//! itself. Needs `openssh-server` (`scripts/test-prerequisites.d/sftp.sh`).
//!
//! For password logins ([`Sshd::start_with_root_password`]) sshd runs in a mount namespace of its
//! own (util-linux `unshare`) in which `/etc/shadow` is a copy giving root the test's password:
//! the machine's own account is never changed, and no other process sees the copy.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd; killed when dropped.
pub struct Sshd {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Child,
}

/// An ed25519 key pair made by `ssh-keygen`.
pub struct KeyPair {
    /// The private key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub private_pem: String,
    /// `ssh-ed25519 AAAA... comment`.
    pub public_line: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
}

impl KeyPair {
    /// Makes a key pair in `dir` named `name`, optionally encrypted with `passphrase`.
    pub fn generate(dir: &Path, name: &str, passphrase: &str) -> KeyPair {
        let path = dir.join(name);
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-C", name, "-N", passphrase, "-f"]).arg(&path));
        let listing = run(Command::new("ssh-keygen").arg("-lf").arg(path.with_extension("pub")));
        let fingerprint =
            listing.split_whitespace().nth(1).expect("ssh-keygen -lf: bits fingerprint comment").to_string();
        KeyPair {
            private_pem: std::fs::read_to_string(&path).expect("private key"),
            public_line: std::fs::read_to_string(path.with_extension("pub")).expect("public key").trim().to_string(),
            fingerprint,
        }
    }
}

fn run(command: &mut Command) -> String {
    let output = command.stdin(Stdio::null()).output().expect("ssh-keygen runs (is openssh-client installed?)");
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

impl Sshd {
    /// Starts sshd accepting `authorized` (public key lines) and passwords, and waits until it
    /// accepts connections.
    pub fn start(authorized: &[&str]) -> Sshd {
        Sshd::start_with(authorized, "")
    }

    /// Like [`Sshd::start`], with options for `internal-sftp` (e.g. `-P posix-rename` to refuse a
    /// request).
    pub fn start_with(authorized: &[&str], sftp_options: &str) -> Sshd {
        Sshd::launch(authorized, sftp_options, None)
    }

    /// Like [`Sshd::start`], and root's password is `password`, for this server only (see the
    /// module's documentation).
    pub fn start_with_root_password(authorized: &[&str], password: &str) -> Sshd {
        Sshd::launch(authorized, "", Some(password))
    }

    fn launch(authorized: &[&str], sftp_options: &str, root_password: Option<&str>) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/test-prerequisites.d/sftp.sh (installs openssh-server)"
        );
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd (the tests run as root)");
        let dir = tempfile::tempdir().expect("temp dir");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f"])
            .arg(dir.path().join("host_key")));
        std::fs::write(dir.path().join("authorized_keys"), authorized.join("\n") + "\n").expect("authorized_keys");
        std::fs::create_dir(dir.path().join("upload")).expect("upload dir");
        let config = format!(
            "ListenAddress 127.0.0.1\n\
             HostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PidFile {dir}/sshd.pid\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin yes\n\
             UsePAM no\n\
             StrictModes no\n\
             MaxStartups 64\n\
             LogLevel VERBOSE\n\
             Subsystem sftp internal-sftp {sftp_options}\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config).expect("sshd_config");
        let shadow = root_password.map(|password| {
            let path = dir.path().join("shadow");
            std::fs::write(&path, shadow_with_root_password(password)).expect("shadow copy");
            path
        });

        // A port that was free a moment ago may be taken by a parallel test before sshd binds it:
        // then sshd exits at once and another port is tried.
        let log_path = dir.path().join("sshd.log");
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut command = match &shadow {
                None => Command::new(SSHD),
                Some(shadow) => {
                    let mut command = Command::new("unshare");
                    command
                        .args(["--mount", "--propagation", "private", "sh", "-c", r#"mount --bind "$0" /etc/shadow && exec "$@""#])
                        .arg(shadow)
                        .arg(SSHD);
                    command
                }
            };
            let mut process = command
                .args(["-D", "-e", "-f"])
                .arg(dir.path().join("sshd_config"))
                .args(["-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn sshd");
            match wait_until_listening(&mut process, port, &log_path) {
                Ok(()) => return Sshd { port, dir, process },
                Err(log) => {
                    let _ = process.kill();
                    let _ = process.wait();
                    if !log.contains("Address already in use") {
                        panic!("sshd did not start:\n{log}");
                    }
                }
            }
        }
        panic!("sshd found no free port in 5 tries");
    }

    /// Kills the server's per-connection processes (not the listener): every open session ends as
    /// if the server had dropped it, and new connections are still accepted.
    pub fn drop_connections(&self) {
        let status = Command::new("pkill").args(["-KILL", "-P", &self.process.id().to_string()]).status().expect("pkill runs");
        assert!(status.success(), "no sshd session process to kill");
    }

    /// sshd's log so far, for failure messages.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("sshd.log"))
    }

    /// The host key as a public key line, to pin.
    pub fn host_key_line(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_key.pub")).expect("host key").trim().to_string()
    }

    /// The host key's `SHA256:` fingerprint, as `ssh-keygen -lf` prints it.
    pub fn host_key_fingerprint(&self) -> String {
        let listing = run(Command::new("ssh-keygen").arg("-lf").arg(self.dir.path().join("host_key.pub")));
        listing.split_whitespace().nth(1).expect("fingerprint").to_string()
    }

    /// A directory the server's user may write to, absolute (as a destination names it).
    pub fn upload_dir(&self) -> PathBuf {
        self.dir.path().join("upload")
    }

    /// The scratch directory, for keys and local report files.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Waits (at most 10 s) until sshd accepts connections; its log if it exits or never does.
fn wait_until_listening(process: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if let Ok(Some(_)) = process.try_wait() {
            return Err(read_log(log));
        }
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("not listening on {address} after 10s\n{}", read_log(log)))
}

fn read_log(path: &Path) -> String {
    let mut log = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut log);
    }
    log
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// The machine's `/etc/shadow` with root's password hash replaced by `password`'s (SHA-512 crypt,
/// by `openssl passwd -6`).
fn shadow_with_root_password(password: &str) -> String {
    use std::io::Write;
    let mut openssl = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    openssl.stdin.take().expect("stdin").write_all(password.as_bytes()).expect("password to openssl");
    let output = openssl.wait_with_output().expect("openssl passwd");
    assert!(output.status.success(), "openssl passwd -6 failed");
    let hash = String::from_utf8(output.stdout).expect("utf-8").trim().to_string();
    let shadow = std::fs::read_to_string("/etc/shadow").expect("/etc/shadow (the tests run as root)");
    let mut replaced = false;
    let lines: Vec<String> = shadow
        .lines()
        .map(|line| match line.split_once(':') {
            Some(("root", rest)) => {
                replaced = true;
                let after_hash = rest.split_once(':').map_or("", |(_, after)| after);
                format!("root:{hash}:{after_hash}")
            }
            _ => line.to_string(),
        })
        .collect();
    assert!(replaced, "/etc/shadow has no root line");
    lines.join("\n") + "\n"
}
