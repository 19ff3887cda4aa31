//! Helpers for integration tests: start real `ferrite` processes on free loopback ports, talk to
//! them, and stop them when the test ends (also when it panics).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the `ferrite` binary: `FERRITE_BIN` when set (to test another build); else the one
/// cargo built for this test (tests of the server crate, which owns the binary); else `ferrite`
/// in the test binary's target directory (`target/<profile>/deps/<test>` →
/// `target/<profile>/ferrite`), which `cargo build --bins` (scripts/test.sh) puts there for the
/// other crates' tests.
pub fn ferrite_bin() -> String {
    if let Some(p) = std::env::var_os("FERRITE_BIN").filter(|p| !p.is_empty()) {
        return p.to_string_lossy().into_owned();
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_ferrite") {
        return p.to_string();
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("test binary inside target/<profile>/deps");
    let bin = profile_dir.join(format!("ferrite{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no ferrite binary at {}: build it first (`cargo build --release --bin ferrite`, same \
         profile as the tests) or set FERRITE_BIN",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// A `ferrite` process; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub metrics_port: Option<u16>,
    /// Lines the server printed on stderr (its log), collected in the background.
    log: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    /// The data directory this server was given (persistence is on by default).
    pub dir: Option<std::path::PathBuf>,
    /// A temporary data directory owned by this server, deleted when it is dropped.
    _temp_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts with default settings, a free port, metrics off and its own temporary data
    /// directory (deleted when the server is dropped).
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts with extra command-line arguments (`--port 0` and `--metrics-addr off` are added
    /// unless given; `--dir <a new temporary directory>` unless `--dir` or `--appendonly` is
    /// given, so that no two servers share data and no test leaves a directory behind).
    pub fn start_with(extra: &[&str]) -> Server {
        let temp = (!extra.contains(&"--dir") && !extra.contains(&"--appendonly")).then(|| {
            tempfile::Builder::new()
                .prefix("ferrite-test-data-")
                .tempdir()
                .expect("temporary data directory")
        });
        let mut args: Vec<&str> = extra.to_vec();
        let temp_path = temp
            .as_ref()
            .map(|t| t.path().to_string_lossy().into_owned());
        if let Some(p) = &temp_path {
            args.extend(["--dir", p.as_str()]);
        }
        let mut s = Server::spawn(&args);
        s._temp_dir = temp;
        s
    }

    /// Starts on the data directory `dir` (which the caller keeps: restart tests start a new
    /// server on the directory the previous one left), with extra arguments.
    pub fn start_in(dir: &std::path::Path, extra: &[&str]) -> Server {
        let d = dir.to_string_lossy().into_owned();
        let mut args: Vec<&str> = vec!["--dir", d.as_str()];
        args.extend_from_slice(extra);
        Server::spawn(&args)
    }

    fn spawn(extra: &[&str]) -> Server {
        let dir = extra
            .windows(2)
            .find(|w| w[0] == "--dir")
            .map(|w| std::path::PathBuf::from(w[1]));
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.contains(&"--port") {
            args.extend(["--port".into(), "0".into()]);
        }
        if !extra.contains(&"--metrics-addr") {
            args.extend(["--metrics-addr".into(), "off".into()]);
        }
        if !extra.contains(&"--log-level") {
            args.extend(["--log-level".into(), "warn".into()]);
        }
        let mut child = Command::new(ferrite_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferrite");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().push(line);
            }
        });
        let wants_metrics = !args
            .windows(2)
            .any(|w| w[0] == "--metrics-addr" && w[1] == "off");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let port_of = |s: &str| {
                    s.trim_end_matches("/metrics")
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok())
                };
                if let Some(rest) = line.strip_prefix("Ferrite ready to accept connections on ") {
                    let _ = tx.send((true, port_of(rest)));
                } else if let Some(rest) = line.strip_prefix("Ferrite metrics on http://") {
                    let _ = tx.send((false, port_of(rest)));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut port = None;
        let mut metrics_port = None;
        while Instant::now() < deadline
            && (port.is_none() || (wants_metrics && metrics_port.is_none()))
        {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((true, p)) => port = p,
                Ok((false, p)) => metrics_port = p,
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "ferrite exited with {status} before it was ready: {:?}",
                            log.lock()
                        );
                    }
                }
            }
        }
        let port = port.unwrap_or_else(|| panic!("ferrite did not become ready: {:?}", log.lock()));
        Server {
            child,
            port,
            metrics_port,
            log,
            dir,
            _temp_dir: None,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A redis-rs connection.
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        client.get_connection().expect("connect")
    }

    /// A redis-rs connection speaking RESP3.
    pub fn conn3(&self) -> redis::Connection {
        let client = redis::Client::open(format!("{}?protocol=resp3", self.url())).expect("client");
        client.get_connection().expect("connect")
    }

    /// A raw TCP stream to the server.
    pub fn tcp(&self) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(self.addr()).expect("tcp connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    /// Waits for the process to exit by itself (e.g. after SHUTDOWN).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes and reads whatever comes back until the peer closes or `timeout` passes.
pub fn raw_exchange(stream: &mut std::net::TcpStream, data: &[u8], timeout: Duration) -> Vec<u8> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(timeout)).ok();
    let _ = stream.write_all(data);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// Reads exactly one RESP reply line-oriented enough for simple replies: returns bytes read
/// until `expect_len` bytes or timeout.
pub fn read_n(stream: &mut std::net::TcpStream, n: usize, timeout: Duration) -> Vec<u8> {
    use std::io::Read;
    stream.set_read_timeout(Some(timeout)).ok();
    let mut out = vec![0u8; 0];
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while out.len() < n && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(_) => break,
        }
    }
    out
}
