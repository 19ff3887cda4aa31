//! The isolation benchmark: how much one tenant's heaviest commands slow down another tenant.
//! Not a test: it starts a `ferrite` (and a `redis-server` for reference), loads a "hot" tenant,
//! and while connections of the hot tenant run heavy commands in a loop, a "victim" tenant's
//! connection sends GETs at a fixed rate and records their latency. It prints one JSON object
//! per (server, scenario) on stdout; `scripts/bench-isolation.sh` runs it and builds the table in
//! `docs/benchmarks.md`.
//!
//! ```sh
//! cargo bench -p ferrite-server --bench isolation
//! BENCH_KEYS=100000 BENCH_SECS=2 cargo bench -p ferrite-server --bench isolation   # quick
//! ```
//!
//! The victim sends a PING (BENCH_VICTIM=GET: a GET) every BENCH_INTERVAL_US µs (1000). A reply that takes longer than that
//! also stands for the requests that would have been sent meanwhile, each waiting a little less
//! (HdrHistogram's correction for coordinated omission), so a stall counts for every request it
//! would have delayed, not once.
//!
//! Scenarios (`BENCH_SCENARIOS`, comma-separated; default all):
//! - `idle`: no load (the floor).
//! - `keys`: one hot connection runs `KEYS *` over BENCH_KEYS keys in a loop.
//! - `keys_x4`: four hot connections do the same at once (three of them wait for the tenant).
//! - `glob`: `KEYS '*aaaa…b'` (a BENCH_PATTERN-byte pattern) against a BENCH_NAME-byte key
//!   name: quadratic in a backtracking matcher.
//! - `sunionstore`: `SUNIONSTORE` of a BENCH_SET-member set.
//! - `all`: four hot connections: KEYS *, the glob, SUNIONSTORE and SMEMBERS at once.
//!
//! On Redis the hot "tenant" is database 0 and the victim database 1 of the same server (Redis
//! has one thread, so this is the comparison a Redis user has: a shared instance). Also:
//! BENCH_SKIP=redis|ferrite, FERRITE_BIN, BENCH_FERRITE_ARGS (e.g. "--threads 1").

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Server;

type Res<T> = Result<T, String>;

const ADMIN_PASSWORD: &str = "bench-admin";

struct Settings {
    keys: usize,
    set: usize,
    name: usize,
    pattern: usize,
    secs: f64,
    interval: Duration,
    scenarios: Vec<String>,
    skip: String,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        let all = "idle,keys,keys_x4,glob,sunionstore,all";
        Settings {
            keys: env("BENCH_KEYS", 1_000_000),
            set: env("BENCH_SET", 1_000_000),
            name: env("BENCH_NAME", 200_000),
            pattern: env("BENCH_PATTERN", 20_000),
            secs: env("BENCH_SECS", 5.0),
            interval: Duration::from_micros(env("BENCH_INTERVAL_US", 1000)),
            scenarios: env("BENCH_SCENARIOS", all.to_string())
                .split(',')
                .map(str::to_string)
                .collect(),
            skip: env("BENCH_SKIP", String::new()),
        }
    }
}

/// A blocking RESP connection that sends commands and skips over replies without building them
/// (a KEYS reply of a million names costs the client little).
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Conn {
    fn open(addr: &str) -> Res<Conn> {
        let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let r = BufReader::with_capacity(1 << 20, s.try_clone().map_err(|e| e.to_string())?);
        Ok(Conn {
            w: s,
            r,
            line: Vec::new(),
        })
    }

    fn send(&mut self, args: &[&[u8]]) -> Res<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&buf).map_err(|e| e.to_string())
    }

    /// Reads one reply; returns the first line of it (errors become `Err`).
    fn skip_reply(&mut self) -> Res<String> {
        let first = self.read_line()?;
        let head = first.clone();
        if head.starts_with('-') {
            return Err(head);
        }
        self.skip_rest(&head)?;
        Ok(head)
    }

    fn skip_rest(&mut self, head: &str) -> Res<()> {
        let n = |s: &str| s[1..].parse::<i64>().map_err(|e| format!("{s}: {e}"));
        match head.as_bytes().first() {
            Some(b'$') => {
                let len = n(head)?;
                if len >= 0 {
                    let mut left = len as usize + 2;
                    while left > 0 {
                        let buf = self.r.fill_buf().map_err(|e| e.to_string())?;
                        if buf.is_empty() {
                            return Err("connection closed".into());
                        }
                        let k = buf.len().min(left);
                        self.r.consume(k);
                        left -= k;
                    }
                }
            }
            Some(b'*') | Some(b'%') | Some(b'~') => {
                let count = n(head)? * if head.starts_with('%') { 2 } else { 1 };
                for _ in 0..count.max(0) {
                    let h = self.read_line()?;
                    if h.starts_with('-') {
                        return Err(h);
                    }
                    self.skip_rest(&h)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn read_line(&mut self) -> Res<String> {
        self.line.clear();
        let n = self
            .r
            .read_until(b'\n', &mut self.line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        Ok(String::from_utf8_lossy(&self.line).trim_end().to_string())
    }

    fn call(&mut self, args: &[&[u8]]) -> Res<String> {
        self.send(args)?;
        self.skip_reply()
    }
}

/// A server under test and how its connections reach the hot and the victim "tenant".
struct Target {
    name: &'static str,
    addr: String,
    /// Commands that bind a new connection to the hot / victim tenant.
    hot: Vec<Vec<Vec<u8>>>,
    victim: Vec<Vec<Vec<u8>>>,
}

impl Target {
    fn connect(&self, hot: bool) -> Res<Conn> {
        let mut c = Conn::open(&self.addr)?;
        for cmd in if hot { &self.hot } else { &self.victim } {
            let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
            c.call(&args)?;
        }
        Ok(c)
    }
}

fn words(s: &[&str]) -> Vec<Vec<u8>> {
    s.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// The glob pattern and the key name it is matched against (neither matches).
fn glob_case(s: &Settings) -> (Vec<u8>, Vec<u8>) {
    let mut pattern = b"*".to_vec();
    pattern.extend(std::iter::repeat_n(b'a', s.pattern));
    pattern.push(b'b');
    (pattern, vec![b'a'; s.name])
}

fn load(t: &Target, s: &Settings) -> Res<()> {
    let started = Instant::now();
    let mut c = t.connect(true)?;
    // Pipelined MSETs of 1000 keys.
    let mut sent = 0;
    let mut pending = 0;
    while sent < s.keys {
        let n = 1000.min(s.keys - sent);
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in sent..sent + n {
            args.push(format!("key:{i:08}").into_bytes());
            args.push(b"value".to_vec());
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        c.send(&refs)?;
        pending += 1;
        sent += n;
        if pending == 16 {
            for _ in 0..pending {
                c.skip_reply()?;
            }
            pending = 0;
        }
    }
    for _ in 0..pending {
        c.skip_reply()?;
    }
    let mut added = 0;
    while added < s.set {
        let n = 1000.min(s.set - added);
        let mut args: Vec<Vec<u8>> = vec![b"SADD".to_vec(), b"bigset".to_vec()];
        args.extend((added..added + n).map(|i| format!("member:{i:08}").into_bytes()));
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        c.call(&refs)?;
        added += n;
    }
    let (_, name) = glob_case(s);
    c.call(&[b"SET", &name, b"x"])?;
    let mut v = t.connect(false)?;
    v.call(&[b"SET", b"victim:key", b"value"])?;
    eprintln!(
        "[bench-isolation] {}: loaded {} keys and a {}-member set in {:.1}s",
        t.name,
        s.keys,
        s.set,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The heavy commands of a scenario, one list per hot connection (each loops over its list).
fn heavy(scenario: &str, s: &Settings) -> Vec<Vec<Vec<Vec<u8>>>> {
    let (pattern, _) = glob_case(s);
    let keys = || words(&["KEYS", "*"]);
    let glob = || vec![b"KEYS".to_vec(), pattern.clone()];
    let sunion = || words(&["SUNIONSTORE", "bench:dst", "bigset"]);
    match scenario {
        "keys" => vec![vec![keys()]],
        "keys_x4" => vec![vec![keys()]; 4],
        "glob" => vec![vec![glob()]],
        "sunionstore" => vec![vec![sunion()]],
        "all" => vec![
            vec![keys()],
            vec![glob()],
            vec![sunion()],
            vec![words(&["SMEMBERS", "bigset"])],
        ],
        _ => Vec::new(),
    }
}

struct Outcome {
    latencies_us: Vec<u64>,
    heavy_ops: u64,
    heavy_errors: Vec<String>,
    wall: f64,
}

fn run_scenario(t: &Target, s: &Settings, scenario: &str) -> Res<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for list in heavy(scenario, s) {
        let mut c = t.connect(true)?;
        let stop = stop.clone();
        let ops = ops.clone();
        workers.push(std::thread::spawn(move || -> Vec<String> {
            let mut errors = Vec::new();
            'outer: while !stop.load(Ordering::Relaxed) {
                for cmd in &list {
                    let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
                    match c.call(&args) {
                        Ok(_) => {
                            ops.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.push(e);
                            break 'outer;
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                }
            }
            errors
        }));
    }
    // Let the heavy commands start before measuring.
    if !workers.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut v = t.connect(false)?;
    // PING (the issue's measure: only the worker threads are shared) or GET (also the victim's
    // own keyspace lock and admission).
    let victim: &[&[u8]] = match std::env::var("BENCH_VICTIM").as_deref() {
        Ok("GET") => &[b"GET", b"victim:key"],
        _ => &[b"PING"],
    };
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(s.secs);
    let mut latencies = Vec::new();
    let mut due = Duration::ZERO;
    while due < deadline {
        let now = started.elapsed();
        if now < due {
            std::thread::sleep(due - now);
        }
        let sent = Instant::now();
        v.call(victim)?;
        let took = sent.elapsed();
        latencies.push(took.as_micros() as u64);
        // The requests that would have been sent while this one waited (one every interval)
        // would have waited too, each a little less: count them (HdrHistogram's correction for
        // coordinated omission), then carry on from now rather than replaying the backlog.
        let mut missed = took.saturating_sub(s.interval);
        while !missed.is_zero() {
            latencies.push(missed.as_micros() as u64);
            missed = missed.saturating_sub(s.interval);
        }
        due = (due + s.interval).max(started.elapsed());
    }
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut heavy_errors = Vec::new();
    for w in workers {
        heavy_errors.extend(w.join().map_err(|_| "heavy client panicked".to_string())?);
    }
    Ok(Outcome {
        latencies_us: latencies,
        heavy_ops: ops.load(Ordering::Relaxed),
        heavy_errors,
        wall,
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn report(server: &str, scenario: &str, o: &mut Outcome, s: &Settings) {
    o.latencies_us.sort_unstable();
    let l = &o.latencies_us;
    println!(
        "{{\"server\":\"{server}\",\"scenario\":\"{scenario}\",\"requests\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"heavy_ops\":{},\"heavy_per_s\":{:.2},\"secs\":{:.2},\"keys\":{},\"set\":{},\"errors\":{:?}}}",
        l.len(),
        percentile(l, 0.5),
        percentile(l, 0.99),
        percentile(l, 0.999),
        percentile(l, 1.0),
        o.heavy_ops,
        o.heavy_ops as f64 / o.wall,
        o.wall,
        s.keys,
        s.set,
        o.heavy_errors.first().cloned().unwrap_or_default(),
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Res<(Redis, String)> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))?;
    let redis = Redis(child);
    let addr = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(mut c) = Conn::open(&addr)
            && c.call(&[b"PING"]).is_ok()
        {
            return Ok((redis, addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("redis-server did not start".into())
}

fn bench(t: &Target, s: &Settings) -> Res<()> {
    load(t, s)?;
    for scenario in &s.scenarios {
        let mut o = run_scenario(t, s, scenario)?;
        report(t.name, scenario, &mut o, s);
        eprintln!(
            "[bench-isolation] {} {scenario}: victim p99 {:.2} ms, max {:.2} ms, {} heavy commands",
            t.name,
            percentile(&o.latencies_us, 0.99),
            percentile(&o.latencies_us, 1.0),
            o.heavy_ops
        );
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; there are no other arguments.
    let s = Settings::from_env();
    let mut failed = false;
    if s.skip != "ferrite" {
        let extra: Vec<String> = std::env::var("BENCH_FERRITE_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut args: Vec<&str> = vec!["--requirepass", ADMIN_PASSWORD];
        args.extend(extra.iter().map(String::as_str));
        let server = Server::start_with(&args);
        let addr = server.addr();
        let admin = || -> Res<()> {
            let mut c = Conn::open(&addr)?;
            c.call(&[b"AUTH", ADMIN_PASSWORD.as_bytes()])?;
            c.call(&[b"TENANT.CREATE", b"hot", b"PASSWORD", b"hot-pw"])?;
            c.call(&[b"TENANT.CREATE", b"victim", b"PASSWORD", b"victim-pw"])?;
            Ok(())
        };
        let t = Target {
            name: "ferrite",
            addr: addr.clone(),
            hot: vec![words(&["AUTH", "hot", "hot-pw"])],
            victim: vec![words(&["AUTH", "victim", "victim-pw"])],
        };
        if let Err(e) = admin().and_then(|()| bench(&t, &s)) {
            eprintln!("[bench-isolation] ferrite failed: {e}");
            failed = true;
        }
        drop(server);
    }
    if s.skip != "redis" {
        match start_redis() {
            Ok((redis, addr)) => {
                let t = Target {
                    name: "redis",
                    addr,
                    hot: vec![words(&["SELECT", "0"])],
                    victim: vec![words(&["SELECT", "1"])],
                };
                if let Err(e) = bench(&t, &s) {
                    eprintln!("[bench-isolation] redis failed: {e}");
                    failed = true;
                }
                drop(redis);
            }
            Err(e) => {
                eprintln!("[bench-isolation] {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
