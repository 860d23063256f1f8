//! A tansu broker process for the suites that need a real Kafka-protocol broker
//! (`tests/e2e.rs`, `tests/edge.rs`): `$WABA_GATEWAY_TANSU`, which `tests/run.sh` installs.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker on a free loopback port, stopped when dropped.
pub struct Tansu {
    child: Child,
    pub address: String,
}

impl Tansu {
    pub fn start() -> Self {
        Self::start_with("memory://tansu/", None, None)
    }

    /// A broker with `storage` (`sqlite://tansu.db` keeps its data across a restart,
    /// relative to `dir`), on `address` when given.
    pub fn start_with(storage: &str, dir: Option<&std::path::Path>, address: Option<&str>) -> Self {
        let binary = std::env::var_os("WABA_GATEWAY_TANSU")
            .expect("WABA_GATEWAY_TANSU is not set (tests/run.sh installs tansu and sets it)");
        let address = address.map_or_else(free_address, str::to_owned);
        let url = format!("tcp://{address}");
        let mut command = Command::new(binary);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let child = command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&address).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, address }
    }
}

/// A loopback address nothing listens on yet.
pub fn free_address() -> String {
    free_address_on("127.0.0.1")
}

/// An address of loopback `ip` nothing listens on yet. A test that binds the addresses it
/// picks only later uses an IP of its own (127.0.0.0/8 is all loopback), so that no test
/// running alongside is handed the same port meanwhile.
pub fn free_address_on(ip: &str) -> String {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("a free port");
    listener.local_addr().expect("an address").to_string()
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
