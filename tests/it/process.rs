//! `repdist serve` as a child process, for the tests that kill it with SIGKILL: a crash the
//! service cannot see coming, unlike aborting an in-process server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from the server's first line of output.
    pub base: String,
    /// An admin key: the one the first start wrote to `DATA_DIR/admin.key`, or (when the store
    /// already had keys) one made with `repdist keys create` and kept there for restarts.
    pub key: String,
}

impl Serve {
    /// Starts `repdist serve` on `data_dir`, on ephemeral ports, with short retry backoffs and
    /// loopback webhooks allowed; `env` adds or overrides `REPDIST_*` settings.
    pub fn start(data_dir: &std::path::Path, env: &[(&str, String)]) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_repdist"));
        command
            .arg("serve")
            .env("REPDIST_HTTP_ADDR", "127.0.0.1:0")
            .env("REPDIST_GRPC_ADDR", "127.0.0.1:0")
            .env("REPDIST_DATA_DIR", data_dir)
            .env("REPDIST_ALLOW_PRIVATE_WEBHOOKS", "true")
            .env("REPDIST_RETRY__INITIAL_BACKOFF", "50ms")
            .env("REPDIST_RETRY__MAX_BACKOFF", "200ms")
            .env("REPDIST_DELIVERY__MAX_IN_FLIGHT", "8")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("repdist serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reads the listening line");
        let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line: {line:?}")).to_string();
        let key = admin_key(data_dir, env);
        Serve { child, base, key }
    }


    /// SIGKILL, then reap the process.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

fn admin_key(data_dir: &std::path::Path, env: &[(&str, String)]) -> String {
    let path = data_dir.join("admin.key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        return key.trim().to_string();
    }
    let output = Command::new(env!("CARGO_BIN_EXE_repdist"))
        .args(["keys", "create", "--role", "admin"])
        .env("REPDIST_DATA_DIR", data_dir)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .output()
        .expect("repdist keys create runs");
    assert!(output.status.success(), "repdist keys create: {}", String::from_utf8_lossy(&output.stderr));
    let key = String::from_utf8(output.stdout).expect("UTF-8").trim().to_string();
    std::fs::write(&path, &key).expect("admin.key written");
    key
}
