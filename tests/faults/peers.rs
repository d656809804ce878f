//! Private instances of the real dependencies, on their own ports and data directories, so a test
//! can restart or stop them without touching the servers the rest of the suite shares:
//! PostgreSQL (Debian's binaries, run as the `postgres` user when the test runs as root), the
//! Tansu broker `scripts/kafka` installed, and `redis-server`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 10 s");
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
}

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's PostgreSQL server binaries under /usr/lib/postgresql (scripts/services installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(dir.path()), "chown of the PostgreSQL directory");
        }
        let postgres = PrivatePostgres { dir, bin, port: free_port() };
        let data = postgres.data();
        run(&mut postgres.command("initdb").args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(&data), "initdb");
        postgres.pg_ctl("start");
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server comes back on the same port.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres.log");
        run(
            &mut self.command("pg_ctl").args(["-w", "-m", "fast", "-D"]).arg(self.data()).args(["-l"]).arg(log).args(["-o", &options, action]),
            &format!("pg_ctl {action}"),
        );
    }

    /// A command of this PostgreSQL installation, as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-m", "immediate", "-D"]).arg(self.data()).arg("stop").stdout(Stdio::null()).status();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A child process restarted on the same port and data directory.
pub struct Restartable {
    program: PathBuf,
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    what: &'static str,
}

impl Restartable {
    fn start(what: &'static str, program: PathBuf, args: impl Fn(u16) -> Vec<String>) -> Restartable {
        let port = free_port();
        let mut peer = Restartable { program, args: args(port), dir: tempfile::tempdir().unwrap(), child: None, port, what };
        peer.resume();
        peer
    }

    /// The broker `scripts/kafka` installed, with SQLite storage in its own directory.
    pub fn tansu() -> Restartable {
        let tools = std::env::var_os("REPDIST_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/repdist-tools"));
        let bin = tools.join("bin/tansu");
        assert!(bin.exists(), "no Tansu at {} (scripts/kafka up installs it)", bin.display());
        Restartable::start("tansu", bin, |port| {
            let url = format!("tcp://127.0.0.1:{port}");
            ["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "sqlite://tansu.db"]
                .map(String::from)
                .to_vec()
        })
    }

    /// `redis-server` keeping nothing on disk, like the cache it stands for.
    pub fn redis() -> Restartable {
        Restartable::start("redis-server", PathBuf::from("redis-server"), |port| {
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from).to_vec()
        })
    }

    /// SIGKILL: the peer vanishes mid-conversation.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn resume(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.what));
        self.child = Some(child);
        wait_listening(self.port, self.what);
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        self.kill();
    }
}
