//! Helpers for integration tests: start real `ferrite` processes on free loopback ports, talk to
//! them, and stop them when the test ends (also when it panics).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The worker count `FERRITE_TEST_THREADS` asks every test server to run with, if set.
pub fn test_threads() -> Option<String> {
    std::env::var("FERRITE_TEST_THREADS")
        .ok()
        .filter(|n| !n.is_empty())
}

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

/// The migration token every test server gets unless the test says otherwise (see
/// [`Server::start_with`]): test servers trust each other like the servers of one cluster.
pub const TEST_MIGRATION_TOKEN: &str = "ferrite-integration-test-token";

/// A `ferrite` process; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub metrics_port: Option<u16>,
    /// Lines the server printed on stderr (its log), collected in the background.
    log: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    /// The secret that makes a connection administrator (`AUTH <secret>`).
    admin_secret: String,
    /// Lines the server printed on stdout.
    stdout: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    /// This server's own directory (its administrator secret file, and its data: persistence
    /// is on by default, and every test server gets a directory of its own).
    data_dir: std::path::PathBuf,
    /// Remove `data_dir` on drop (it was made for this server).
    owns_data_dir: bool,
}

/// A fresh directory under the system temp dir for one test server.
fn fresh_data_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("ferrite-test-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the test server's data directory");
    dir
}

/// The value that follows `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

impl Server {
    /// Starts with default settings, a free port and metrics off.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts with extra command-line arguments. Added unless given: `--port 0`,
    /// `--metrics-addr off`, `--log-level warn`, `--admin-secret-file` in a directory of the
    /// server's own (the server creates the secret there; [`Server::conn`] authenticates with
    /// it), and `--migration-token` [`TEST_MIGRATION_TOKEN`] (unless the test chooses how servers
    /// authenticate: `--migration-token`, `--requirepass`, or a `--config` file that sets a
    /// token); and `--dir` the same directory (persistence keeps the server's data there)
    /// unless `--dir` or `--appendonly` is given. No two test servers share data, and none
    /// leaves a directory behind.
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_limited(None, extra)
    }

    /// Like [`Server::start_with`], with the process's address space limited to `kib` KiB
    /// (`ulimit -v`): a test that tries to make the server allocate without bound cannot take
    /// the machine down, and shows a crash as the process dying.
    pub fn start_with_memory_limit(kib: u64, extra: &[&str]) -> Server {
        Server::start_limited(Some(kib), extra)
    }

    fn start_limited(memory_kib: Option<u64>, extra: &[&str]) -> Server {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let data_dir = fresh_data_dir();
        if !extra.contains(&"--dir") && !extra.contains(&"--appendonly") {
            args.extend(["--dir".into(), data_dir.to_string_lossy().into_owned()]);
        }
        if !extra.contains(&"--admin-secret-file") {
            let file = data_dir.join("admin.secret");
            args.extend([
                "--admin-secret-file".into(),
                file.to_string_lossy().into_owned(),
            ]);
        }
        let config_sets_token = flag_value(&args, "--config")
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|text| text.lines().any(|l| l.trim_start().starts_with("token")));
        if !extra.contains(&"--migration-token")
            && !extra.contains(&"--requirepass")
            && !config_sets_token
        {
            args.extend(["--migration-token".into(), TEST_MIGRATION_TOKEN.into()]);
        }
        Server::spawn(args, None, data_dir, true, memory_kib)
    }

    /// Starts on the data directory `dir`, which the caller keeps (restart tests start a new
    /// server on what the previous one left): its data and its administrator secret live there,
    /// so [`Server::conn`] works across restarts. `--port 0`, `--metrics-addr off`,
    /// `--log-level warn` and the test migration token are added unless given.
    pub fn start_in(dir: &std::path::Path, extra: &[&str]) -> Server {
        Server::start_in_wrapped(&[], dir, extra)
    }

    /// [`Server::start_in`], with the server started through `wrapper` (a command that runs
    /// the server, such as `prlimit --fsize=N`).
    pub fn start_in_wrapped(wrapper: &[&str], dir: &std::path::Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec!["--dir".into(), dir.to_string_lossy().into_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--admin-secret-file") {
            let file = dir.join("admin.secret");
            args.extend([
                "--admin-secret-file".into(),
                file.to_string_lossy().into_owned(),
            ]);
        }
        if !extra.contains(&"--migration-token") && !extra.contains(&"--requirepass") {
            args.extend(["--migration-token".into(), TEST_MIGRATION_TOKEN.into()]);
        }
        Server::spawn_wrapped(wrapper, args, None, dir.to_path_buf(), false, None)
    }

    /// Starts in working directory `dir` with the built-in defaults of everything but `--port 0`,
    /// `--metrics-addr off` and `--log-level warn` (plus `extra`): no administrator secret file
    /// given, no migration token, as an operator's first `ferrite` does. `dir` is the caller's
    /// and stays; the administrator secret is read from `dir/data/admin.secret` once ready.
    pub fn start_in_dir(dir: &std::path::Path, extra: &[&str]) -> Server {
        let args = extra.iter().map(|s| s.to_string()).collect();
        Server::spawn(args, Some(dir), dir.to_path_buf(), false, None)
    }

    fn spawn(
        args: Vec<String>,
        cwd: Option<&std::path::Path>,
        data_dir: std::path::PathBuf,
        owns_data_dir: bool,
        memory_kib: Option<u64>,
    ) -> Server {
        Server::spawn_wrapped(&[], args, cwd, data_dir, owns_data_dir, memory_kib)
    }

    fn spawn_wrapped(
        wrapper: &[&str],
        mut args: Vec<String>,
        cwd: Option<&std::path::Path>,
        data_dir: std::path::PathBuf,
        owns_data_dir: bool,
        memory_kib: Option<u64>,
    ) -> Server {
        for (flag, default) in [
            ("--port", "0"),
            ("--metrics-addr", "off"),
            ("--log-level", "warn"),
        ] {
            if !args.iter().any(|a| a == flag) {
                args.extend([flag.to_string(), default.to_string()]);
            }
        }
        // FERRITE_TEST_THREADS=N runs a whole suite's servers with `--threads N` (e.g. 1: the
        // current-thread runtime) unless a test picks its own count.
        if let Some(n) = test_threads()
            && !args.iter().any(|a| a == "--threads")
        {
            args.extend(["--threads".to_string(), n]);
        }
        let mut command = match (memory_kib, wrapper.split_first()) {
            (Some(kib), _) => {
                // The shell sets the limit and becomes the server (same pid).
                let mut c = Command::new("sh");
                c.args(["-c", "ulimit -v \"$1\" && shift && exec \"$@\"", "sh"])
                    .arg(kib.to_string())
                    .arg(ferrite_bin());
                c
            }
            (None, Some((program, rest))) => {
                let mut c = Command::new(program);
                c.args(rest).arg(ferrite_bin());
                c
            }
            (None, None) => Command::new(ferrite_bin()),
        };
        command
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().expect("start ferrite");
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
        let stdout_lines = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let stdout_lines2 = stdout_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                stdout_lines2.lock().push(line.clone());
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
        let secret_file = match flag_value(&args, "--admin-secret-file") {
            Some(f) => std::path::PathBuf::from(f),
            None => cwd
                .unwrap_or(std::path::Path::new("."))
                .join("data/admin.secret"),
        };
        let admin_secret = match flag_value(&args, "--requirepass") {
            Some(pw) => pw.to_string(),
            None => std::fs::read_to_string(secret_file)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        };
        Server {
            child,
            port,
            metrics_port,
            log,
            stdout: stdout_lines,
            admin_secret,
            data_dir,
            owns_data_dir,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's URL without credentials (an unauthenticated connection).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The URL of an administrator connection (`AUTH <admin secret>` on connect).
    pub fn admin_url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/",
            urlencode(&self.admin_secret),
            self.port
        )
    }

    /// The secret that makes a connection administrator: `--requirepass` when the test gave
    /// one, else the one the server generated in its own directory.
    pub fn admin_secret(&self) -> &str {
        &self.admin_secret
    }

    /// This server's own directory, removed when the `Server` is dropped.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// A redis-rs administrator connection (authenticated with the administrator secret).
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.admin_url()).expect("client");
        client.get_connection().expect("connect")
    }

    /// A redis-rs administrator connection speaking RESP3.
    pub fn conn3(&self) -> redis::Connection {
        let client =
            redis::Client::open(format!("{}?protocol=resp3", self.admin_url())).expect("client");
        client.get_connection().expect("connect")
    }

    /// A redis-rs connection that has not authenticated: with the defaults, a user of the
    /// `default` tenant without administrator rights.
    pub fn anon_conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        client.get_connection().expect("connect")
    }

    /// A redis-rs connection authenticated as a tenant.
    pub fn tenant_conn(&self, tenant: &str, password: &str) -> redis::Connection {
        let url = format!(
            "redis://{}:{}@127.0.0.1:{}/",
            urlencode(tenant),
            urlencode(password),
            self.port
        );
        let client = redis::Client::open(url).expect("client");
        client.get_connection().expect("connect")
    }

    /// A raw TCP stream to the server that has authenticated as administrator (the `+OK` of
    /// its AUTH already read).
    pub fn admin_tcp(&self) -> std::net::TcpStream {
        use std::io::Write;
        let mut s = self.tcp();
        let secret = &self.admin_secret;
        write!(s, "*2\r\n$4\r\nAUTH\r\n${}\r\n{secret}\r\n", secret.len()).expect("send AUTH");
        let reply = read_n(&mut s, 5, Duration::from_secs(10));
        assert_eq!(reply, b"+OK\r\n", "administrator AUTH failed");
        s
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

    /// What the server printed on stdout (its ready lines, where the admin secret is).
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().clone()
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

    /// The server's resident memory in KiB (Linux: VmRSS of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// CPU time (user + system) the server has used, from /proc/<pid>/stat.
    pub fn cpu_time(&self) -> Duration {
        let ticks = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| {
                // Fields after the command name (which is in parentheses and may hold spaces).
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        // USER_HZ is 100 on every Linux configuration that matters here.
        Duration::from_millis(ticks * 10)
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
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Percent-encodes what a URL's user or password part cannot carry as is.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The whole HTTP response (status line and headers included) to `GET /metrics` on `port`;
/// a read error ends the response where it stopped (a refused scrape may be closed early).
pub fn metrics_response(port: u16) -> String {
    use std::io::{Read, Write};
    let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    t.set_read_timeout(Some(Duration::from_secs(10))).ok();
    t.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send request");
    let mut resp = String::new();
    let _ = t.read_to_string(&mut resp);
    resp
}

/// The /metrics page (body only) of a server started with a metrics address.
pub fn scrape(s: &Server) -> String {
    let resp = metrics_response(s.metrics_port.expect("metrics port"));
    resp.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// One request in RESP, as a client sends it: an array of bulk strings.
pub fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
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
