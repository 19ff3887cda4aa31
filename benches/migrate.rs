//! The migration benchmark: live tenant migrations between two real `ferrite` processes on
//! loopback, idle and under a paced background write load. Not a test: it measures and prints
//! one JSON object per line on stdout (progress goes to stderr); `scripts/bench-migrate.sh` runs
//! it next to the Redis references and builds the table in `docs/benchmarks.md`.
//!
//! ```sh
//! cargo bench -p ferrite-server --bench migrate                     # every scenario, full size
//! BENCH_KEYS=100000 BENCH_SCENARIOS=idle,load cargo bench -p ferrite-server --bench migrate
//! ```
//!
//! Scenarios (`BENCH_SCENARIOS`, comma-separated; default all):
//! - `idle`: BENCH_KEYS string keys of BENCH_VALUE bytes, migrated with no other traffic.
//! - `mixed`: the same number of keys, a fifth each strings, hashes, lists, sets, sorted sets.
//! - `load`: like `idle` under BENCH_RATE (20k) writes/s to the tenant; watches the live-sync
//!   lag for BENCH_STEADY_SECS before cutting over, then checks every acknowledged write.
//! - `heavy`: like `load` at BENCH_HEAVY_RATE (100k) writes/s: does the migration complete?
//! - `cutovers`: a tenant of BENCH_CUTOVER_KEYS keys moved back and forth BENCH_CUTOVERS times
//!   under BENCH_RATE writes/s; downtime and verify time per migration.
//! - `hot` (not in the default list): hot large collections — a hash of BENCH_HOT_FIELDS (1M)
//!   fields, a sorted set and a list of a tenth of that, under BENCH_HOT_RATE (1000) HSET/s plus
//!   as many ZINCRBY and RPUSH+LPOP: how long after the snapshot until `lag_bytes` < 1 MB, the
//!   worst lag after that, bytes sent against data + changes, `downtime_ms`, VERIFY.
//!
//! Also: BENCH_VALUE (100), BENCH_MIGRATE_ARGS (extra TENANT.MIGRATE arguments, e.g.
//! "PARALLEL 8"), BENCH_PAUSE_SECS (sleep before migrating, printing both pids, so that `perf
//! record -p` can attach). The `ferrite` binary is the one cargo builds for this package (or
//! `FERRITE_BIN`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use ferrite_client::{Client, ClientError, ConnectOptions, Connection, Frame, value};

type Res<T> = Result<T, String>;

const TENANT: &str = "bench";
const PASSWORD: &str = "pw";
/// Status polls while waiting for a phase (short, so phase boundaries are timed to a few ms).
const POLL: Duration = Duration::from_millis(5);
/// A migration counts as caught up once STATUS shows at most this many undelivered changed keys
/// (the default `cutover_max_lag`, so CUTOVER accepts it) and a lag under 100 ms.
const CAUGHT_UP_KEYS: u64 = 1000;
const CAUGHT_UP_SECS: f64 = 0.1;
/// The key the end-to-end lag probe writes (deleted again before the cutover).
const PROBE_KEY: &str = "bench:probe";

/// Settings from the environment.
#[derive(Debug, Clone)]
struct Opts {
    keys: u64,
    value: usize,
    rate: u64,
    heavy_rate: u64,
    steady: Duration,
    cutover_keys: u64,
    cutovers: usize,
    scenarios: Vec<String>,
    /// Sleep between loading and migrating in the single-migration scenarios (for `perf -p`).
    pause: Duration,
    /// Extra TENANT.MIGRATE arguments (e.g. "PARALLEL 8 BATCH_SIZE 2000").
    migrate_args: Vec<String>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

impl Opts {
    fn from_env() -> Opts {
        let scenarios = std::env::var("BENCH_SCENARIOS")
            .unwrap_or_else(|_| "idle,mixed,load,heavy,cutovers".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Opts {
            keys: env_u64("BENCH_KEYS", 1_000_000),
            value: env_u64("BENCH_VALUE", 100) as usize,
            rate: env_u64("BENCH_RATE", 20_000),
            heavy_rate: env_u64("BENCH_HEAVY_RATE", 100_000),
            steady: Duration::from_secs(env_u64("BENCH_STEADY_SECS", 5)),
            cutover_keys: env_u64("BENCH_CUTOVER_KEYS", 100_000),
            cutovers: env_u64("BENCH_CUTOVERS", 100) as usize,
            scenarios,
            pause: Duration::from_secs(env_u64("BENCH_PAUSE_SECS", 0)),
            migrate_args: std::env::var("BENCH_MIGRATE_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// One JSON object, built field by field (numbers, strings, booleans only).
#[derive(Default)]
struct Json(String);

impl Json {
    fn new(scenario: &str) -> Json {
        let mut j = Json::default();
        j.s("bench", "ferrite").s("scenario", scenario);
        j
    }

    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        let _ = write!(self.0, "\"{k}\":");
    }

    fn s(&mut self, k: &str, v: &str) -> &mut Json {
        self.key(k);
        let escaped: String = v
            .chars()
            .flat_map(|c| match c {
                '"' => vec!['\\', '"'],
                '\\' => vec!['\\', '\\'],
                c if c.is_control() => vec![' '],
                c => vec![c],
            })
            .collect();
        let _ = write!(self.0, "\"{escaped}\"");
        self
    }

    fn n(&mut self, k: &str, v: f64) -> &mut Json {
        self.key(k);
        if v.is_finite() {
            // Debug keeps the decimal point of whole numbers ("1.0"), so readers see a float.
            let _ = write!(self.0, "{:?}", (v * 1000.0).round() / 1000.0);
        } else {
            self.0.push_str("null");
        }
        self
    }

    fn i(&mut self, k: &str, v: u64) -> &mut Json {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    fn b(&mut self, k: &str, v: bool) -> &mut Json {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    fn print(&mut self) {
        self.0.push('}');
        println!("{}", self.0);
    }
}

/// When the benchmark started: log lines carry the offset, to line up writer stalls with
/// migration phases.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn log(msg: impl AsRef<str>) {
    let t = EPOCH.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[bench-migrate {t:8.3}] {}", msg.as_ref());
}

/// Write rounds slower than this are logged (with the time, to match them to a phase).
const SLOW_ROUND_MS: f64 = 20.0;

/// Nearest-rank percentile of unsorted samples (NaN when there are none).
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn mb(bytes: f64) -> f64 {
    bytes / 1_000_000.0
}

// ---------------------------------------------------------------------------------------------
// Servers and commands

fn start_server(config: Option<&std::path::Path>) -> Server {
    match config {
        Some(p) => Server::start_with(&["--config", &p.to_string_lossy()]),
        None => Server::start(),
    }
}

async fn admin(s: &Server) -> Res<Connection> {
    Connection::connect(
        ConnectOptions::new(s.addr())
            .password(s.admin_secret())
            .command_timeout(Duration::from_secs(300)),
    )
    .await
    .map_err(|e| format!("admin connection to {}: {e}", s.addr()))
}

async fn tenant_conn(addr: &str) -> Res<Connection> {
    Connection::connect(
        ConnectOptions::new(addr)
            .tenant(TENANT, PASSWORD)
            .command_timeout(Duration::from_secs(120)),
    )
    .await
    .map_err(|e| format!("tenant connection to {addr}: {e}"))
}

async fn cmd(c: &mut Connection, args: &[&str]) -> Res<Frame> {
    c.cmd(args).await.map_err(|e| format!("{args:?}: {e}"))
}

/// A map reply as text fields.
fn fields(f: &Frame) -> HashMap<String, String> {
    value::as_pairs(f)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = value::as_string(&v)
                .or_else(|_| value::as_int(&v).map(|n| n.to_string()))
                .unwrap_or_else(|_| value::display(&v));
            (k, text)
        })
        .collect()
}

fn num(f: &HashMap<String, String>, k: &str) -> f64 {
    f.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

async fn status(c: &mut Connection, id: &str) -> Res<HashMap<String, String>> {
    Ok(fields(&cmd(c, &["TENANT.MIGRATE.STATUS", id]).await?))
}

/// Resident and peak resident memory of a process, in bytes (from /proc/<pid>/status).
fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Samples a process's RSS every few milliseconds until stopped; returns the highest sample.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss(pid).0);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss(pid).0)
        });
        RssSampler { stop, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Data

fn key(i: u64) -> String {
    format!("key:{i}")
}

/// A value of exactly `len` bytes that starts with `tag` (so reads can be checked).
fn padded(tag: &str, len: usize) -> Vec<u8> {
    let mut v = tag.as_bytes().to_vec();
    v.resize(len.max(tag.len()), b'x');
    v
}

/// The commands that create key `i`: strings only, or a fifth each of five types (each value
/// about `len` bytes of payload, members of `len / 5` bytes).
fn create_cmds(i: u64, len: usize, mixed: bool) -> Vec<Vec<Vec<u8>>> {
    let k = key(i).into_bytes();
    if !mixed || i.is_multiple_of(5) {
        return vec![vec![b"SET".to_vec(), k, padded(&format!("v{i}:"), len)]];
    }
    let part = (len / 5).max(4);
    let members: Vec<Vec<u8>> = (0..5).map(|m| padded(&format!("{m}:{i}:"), part)).collect();
    let mut c: Vec<Vec<u8>> = Vec::with_capacity(12);
    match i % 5 {
        1 => {
            c.extend([b"HSET".to_vec(), k]);
            for (m, v) in members.into_iter().enumerate() {
                c.extend([format!("f{m}").into_bytes(), v]);
            }
        }
        2 => {
            c.extend([b"RPUSH".to_vec(), k]);
            c.extend(members);
        }
        3 => {
            c.extend([b"SADD".to_vec(), k]);
            c.extend(members);
        }
        _ => {
            c.extend([b"ZADD".to_vec(), k]);
            for (m, v) in members.into_iter().enumerate() {
                c.extend([(m as f64 * 1.5).to_string().into_bytes(), v]);
            }
        }
    }
    vec![c]
}

/// Creates the tenant on `s` and loads `n` keys through pipelines.
async fn load_tenant(s: &Server, n: u64, len: usize, mixed: bool) -> Res<f64> {
    let mut a = admin(s).await?;
    cmd(&mut a, &["TENANT.CREATE", TENANT, "PASSWORD", PASSWORD]).await?;
    let mut c = tenant_conn(&s.addr()).await?;
    let t = Instant::now();
    let chunk = 5000;
    let mut i = 0;
    while i < n {
        let cmds: Vec<Vec<Vec<u8>>> = (i..(i + chunk).min(n))
            .flat_map(|k| create_cmds(k, len, mixed))
            .collect();
        let replies = c.pipeline(&cmds).await.map_err(|e| format!("load: {e}"))?;
        if let Some(Err(e)) = replies.into_iter().find(Result::is_err) {
            return Err(format!("load: {e}"));
        }
        i += chunk;
    }
    let dbsize = value::as_int(&cmd(&mut c, &["DBSIZE"]).await?).unwrap_or(-1);
    if dbsize != n as i64 {
        return Err(format!("loaded {dbsize} keys, expected {n}"));
    }
    let secs = t.elapsed().as_secs_f64();
    log(format!(
        "loaded {n} {} keys on {} in {secs:.2} s",
        if mixed { "mixed" } else { "string" },
        s.addr()
    ));
    Ok(secs)
}

// ---------------------------------------------------------------------------------------------
// Background writer

/// xorshift64*: a tiny deterministic generator for key choice.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What a writer did.
#[derive(Default)]
struct WriterReport {
    sent: u64,
    acked: u64,
    errors: u64,
    /// Writes the pacing skipped because the writer had fallen more than 100 ms behind.
    skipped: u64,
    secs: f64,
    /// Round trip of each pipelined round, in ms.
    rounds_ms: Vec<f64>,
    /// Last acknowledged sequence number per key index (None: outcome unknown).
    last: HashMap<u64, Option<u64>>,
    last_error: Option<String>,
    redirects: u64,
}

/// Writes SET key:<i> to random existing keys (those with `i % writers == which`) at `rate`
/// per second, pipelining what is due every millisecond, until `stop`. Follows the tenant
/// through cutovers (ferrite-client follows MOVED and retries TRYAGAIN).
async fn writer(
    addr: String,
    keys: u64,
    len: usize,
    rate: u64,
    which: u64,
    writers: u64,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let mut r = WriterReport::default();
    let opts = ConnectOptions::new(addr)
        .tenant(TENANT, PASSWORD)
        .command_timeout(Duration::from_secs(30));
    let mut c = match Client::connect(opts).await {
        Ok(c) => c,
        Err(e) => {
            r.last_error = Some(e.to_string());
            return r;
        }
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (which + 1));
    let per_writer_keys = (keys / writers).max(1);
    let max_behind = (rate / 10).max(1);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (rate as f64 * start.elapsed().as_secs_f64()) as u64;
        let mut n = due.saturating_sub(r.sent + r.skipped);
        if n > max_behind {
            r.skipped += n - max_behind;
            n = max_behind;
        }
        if n == 0 {
            continue;
        }
        let mut idx = Vec::with_capacity(n as usize);
        let mut cmds: Vec<[Vec<u8>; 3]> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let i = (rng.next() % per_writer_keys) * writers + which;
            seq += 1;
            idx.push((i, seq));
            cmds.push([
                b"SET".to_vec(),
                key(i).into_bytes(),
                padded(&format!("w{seq}:"), len),
            ]);
        }
        let t = Instant::now();
        let replies = c.pipeline(&cmds).await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        r.rounds_ms.push(ms);
        if ms > SLOW_ROUND_MS {
            log(format!(
                "writer {which}: a round of {n} SETs took {ms:.1} ms"
            ));
        }
        r.sent += n;
        match replies {
            Ok(replies) => {
                for ((i, s), rep) in idx.into_iter().zip(replies) {
                    match rep {
                        Ok(_) => {
                            r.acked += 1;
                            r.last.insert(i, Some(s));
                        }
                        Err(e) => {
                            r.errors += 1;
                            r.last.insert(i, None);
                            r.last_error = Some(e.to_string());
                        }
                    }
                }
            }
            Err(e) => {
                r.errors += n;
                for (i, _) in idx {
                    r.last.insert(i, None);
                }
                r.last_error = Some(e.to_string());
            }
        }
    }
    r.secs = start.elapsed().as_secs_f64();
    r.redirects = c.redirects();
    r
}

/// A paced write load split over enough connections to sustain its rate.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WriterReport>>,
}

impl Load {
    fn start(addr: &str, keys: u64, len: usize, rate: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = rate.div_ceil(25_000).max(1);
        let tasks = (0..writers)
            .map(|w| {
                tokio::spawn(writer(
                    addr.to_string(),
                    keys,
                    len,
                    rate / writers,
                    w,
                    writers,
                    stop.clone(),
                ))
            })
            .collect();
        Load { stop, tasks }
    }

    async fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = WriterReport::default();
        for t in self.tasks {
            let r = t.await.unwrap_or_else(|e| WriterReport {
                last_error: Some(format!("writer task: {e}")),
                errors: 1,
                ..WriterReport::default()
            });
            all.sent += r.sent;
            all.acked += r.acked;
            all.errors += r.errors;
            all.skipped += r.skipped;
            all.secs = all.secs.max(r.secs);
            all.rounds_ms.extend(r.rounds_ms);
            all.last.extend(r.last);
            all.redirects += r.redirects;
            if r.last_error.is_some() {
                all.last_error = r.last_error;
            }
        }
        all
    }
}

/// Reads back every key the writers acknowledged from the tenant's current home; returns how
/// many did not hold the last acknowledged value.
async fn check_writes(addr: &str, len: usize, w: &WriterReport) -> Res<(u64, u64)> {
    let mut c = Client::connect(ConnectOptions::new(addr).tenant(TENANT, PASSWORD))
        .await
        .map_err(|e| format!("check: {e}"))?;
    let known: Vec<(u64, u64)> = w
        .last
        .iter()
        .filter_map(|(i, s)| s.map(|s| (*i, s)))
        .collect();
    let mut bad = 0;
    for chunk in known.chunks(5000) {
        let cmds: Vec<[String; 2]> = chunk.iter().map(|(i, _)| ["GET".into(), key(*i)]).collect();
        let replies = c.pipeline(&cmds).await.map_err(|e| format!("check: {e}"))?;
        for ((i, s), r) in chunk.iter().zip(replies) {
            let got = r.ok().and_then(|f| value::as_bytes(&f).ok().flatten());
            if got.as_deref() != Some(padded(&format!("w{s}:"), len).as_slice()) {
                if bad < 5 {
                    log(format!(
                        "lost write: key:{i} should hold w{s}:..., holds {:?}",
                        got.map(|g| String::from_utf8_lossy(&g[..g.len().min(24)]).into_owned())
                    ));
                }
                bad += 1;
            }
        }
    }
    Ok((known.len() as u64, bad))
}

fn writer_fields(j: &mut Json, w: &WriterReport, target_rate: u64) {
    let rounds = &w.rounds_ms;
    j.i("write_rate_target", target_rate)
        .n("write_rate_achieved", w.acked as f64 / w.secs.max(1e-9))
        .i("writes_acked", w.acked)
        .i("write_errors", w.errors)
        .i("writes_skipped_behind", w.skipped)
        .n("write_round_p50_ms", percentile(rounds, 50.0))
        .n("write_round_p99_ms", percentile(rounds, 99.0))
        .n("write_round_max_ms", percentile(rounds, 100.0))
        .i("client_redirects", w.redirects);
    if let Some(e) = &w.last_error {
        j.s("write_last_error", e);
    }
}

// ---------------------------------------------------------------------------------------------
// One migration, timed

/// Timings of one migration.
#[derive(Default)]
struct Timed {
    snapshot_s: f64,
    /// From the end of the snapshot to the first STATUS that showed the target caught up.
    catchup_s: f64,
    /// Bytes of batches the target acknowledged by the end of the snapshot.
    snapshot_wire_bytes: f64,
    /// Lag samples (ms, keys) taken while watching live sync.
    lag_ms: Vec<f64>,
    lag_keys: Vec<f64>,
    /// How long live sync was watched before the cutover.
    watch_s: f64,
    /// Probe writes: from the source's reply to the value showing in the target's staged copy.
    probe_ms: Vec<f64>,
    cutover_call_ms: f64,
    cutover_attempts: u64,
    forced: bool,
    downtime_ms: f64,
    total_s: f64,
    /// Snapshot + catch-up + cutover call: the total without the lag-watching window.
    total_min_s: f64,
    verify_s: f64,
    verify_ok: bool,
    verify: HashMap<String, String>,
    keys_migrated: u64,
}

/// Migrates the tenant from `src` to `dst`: waits for live sync and catch-up, watches the lag
/// for `watch`, cuts over (retrying while the lag is too high, FORCE after `force_after`), then
/// VERIFY.
async fn migrate_once(
    src: &Server,
    dst: &Server,
    extra: &[String],
    watch: Duration,
    force_after: Duration,
) -> Res<Timed> {
    let mut a = admin(src).await?;
    let dst_addr = dst.addr();
    let mut args: Vec<&str> = vec!["TENANT.MIGRATE", TENANT, "TARGET", &dst_addr];
    args.extend(extra.iter().map(String::as_str));
    let t0 = Instant::now();
    log(format!("migrating {} -> {}", src.addr(), dst.addr()));
    let id = fields(&cmd(&mut a, &args).await?)
        .get("migration_id")
        .cloned()
        .ok_or("TENANT.MIGRATE returned no migration_id")?;
    let mut out = Timed::default();
    let deadline = t0 + Duration::from_secs(600);
    // Snapshot.
    let mut s;
    loop {
        s = status(&mut a, &id).await?;
        match s.get("state").map(String::as_str) {
            Some("live_sync") => break,
            Some("failed" | "cancelled") => {
                return Err(format!("migration {id} stopped during the snapshot: {s:?}"));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(format!("snapshot did not finish in 600 s: {s:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
    out.snapshot_s = t0.elapsed().as_secs_f64();
    log(format!("{id}: snapshot done in {:.3} s", out.snapshot_s));
    out.snapshot_wire_bytes = num(&s, "bytes_synced");
    // Catch-up.
    let t1 = Instant::now();
    loop {
        if num(&s, "lag_keys") <= CAUGHT_UP_KEYS as f64 && num(&s, "lag_seconds") < CAUGHT_UP_SECS {
            break;
        }
        if s.get("state").map(String::as_str) != Some("live_sync") {
            return Err(format!("migration {id} left live sync: {s:?}"));
        }
        if t1.elapsed() > force_after {
            log(format!(
                "not caught up after {:.0} s (lag_keys {}, lag_seconds {}); cutting over anyway",
                force_after.as_secs_f64(),
                s["lag_keys"],
                s["lag_seconds"]
            ));
            break;
        }
        tokio::time::sleep(POLL).await;
        s = status(&mut a, &id).await?;
    }
    out.catchup_s = t1.elapsed().as_secs_f64();
    let ready = t0.elapsed().as_secs_f64();
    // Steady live sync: STATUS's lag (age of the oldest change not yet shipped), and a probe
    // that measures end to end: write a value on the source, poll the target's staged copy.
    out.watch_s = watch.as_secs_f64();
    if !watch.is_zero() {
        let import_id = s.get("import_id").cloned().unwrap_or_default();
        let mut t = tenant_conn(&src.addr()).await?;
        let mut d = admin(dst).await?;
        let tw = Instant::now();
        let mut n = 0u64;
        while tw.elapsed() < watch {
            tokio::time::sleep(Duration::from_millis(10)).await;
            s = status(&mut a, &id).await?;
            out.lag_ms.push(num(&s, "lag_seconds") * 1000.0);
            out.lag_keys.push(num(&s, "lag_keys"));
            n += 1;
            let tag = format!("probe-{n}");
            cmd(&mut t, &["SET", PROBE_KEY, &tag]).await?;
            let written = Instant::now();
            loop {
                let f = cmd(&mut d, &["TENANT.IMPORT.FETCH", &import_id, PROBE_KEY]).await?;
                let seen = value::as_array(&f)
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .and_then(|e| value::as_array(&e).ok())
                    .and_then(|e| e.get(1).and_then(|b| value::as_bytes(b).ok().flatten()))
                    .is_some_and(|b| b.windows(tag.len()).any(|w| w == tag.as_bytes()));
                if seen {
                    out.probe_ms.push(written.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                if written.elapsed() > Duration::from_secs(5) {
                    return Err(format!("{tag} did not reach the target within 5 s"));
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        cmd(&mut t, &["DEL", PROBE_KEY]).await?;
    }
    // Cutover: refused while the lag is above cutover_max_lag; retried, then forced.
    let tc = Instant::now();
    log(format!("{id}: cutover"));
    let reply = loop {
        out.cutover_attempts += 1;
        let force = tc.elapsed() > force_after;
        let mut args = vec!["TENANT.MIGRATE.CUTOVER", id.as_str()];
        if force {
            args.push("FORCE");
            out.forced = true;
        }
        match a.cmd(&args).await {
            Ok(f) => break fields(&f),
            Err(ClientError::Server(msg)) if msg.contains("above cutover_max_lag") && !force => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("CUTOVER {id}: {e}")),
        }
    };
    let done = t0.elapsed().as_secs_f64();
    out.cutover_call_ms = tc.elapsed().as_secs_f64() * 1000.0;
    out.total_s = done;
    out.total_min_s = ready + tc.elapsed().as_secs_f64();
    if reply.get("status").map(String::as_str) != Some("completed") {
        return Err(format!("CUTOVER {id} answered {reply:?}"));
    }
    out.downtime_ms = num(&reply, "downtime_ms");
    log(format!("{id}: completed, downtime {} ms", out.downtime_ms));
    out.keys_migrated = num(&reply, "keys_migrated") as u64;
    let tv = Instant::now();
    let v = fields(&cmd(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await?);
    out.verify_s = tv.elapsed().as_secs_f64();
    out.verify_ok = v.get("checksum_match").map(String::as_str) == Some("true")
        || v.get("status").map(String::as_str) == Some("verified");
    out.verify = v;
    Ok(out)
}

fn timed_fields(j: &mut Json, t: &Timed, keys: u64, logical_bytes: f64) {
    j.n("snapshot_s", t.snapshot_s)
        .n("snapshot_keys_per_s", keys as f64 / t.snapshot_s)
        .n("snapshot_mb_per_s", mb(logical_bytes) / t.snapshot_s)
        .n(
            "snapshot_wire_mb_per_s",
            mb(t.snapshot_wire_bytes) / t.snapshot_s,
        )
        .n("catchup_s", t.catchup_s)
        .n("cutover_call_ms", t.cutover_call_ms)
        .i("cutover_attempts", t.cutover_attempts)
        .b("cutover_forced", t.forced)
        .n("downtime_ms", t.downtime_ms)
        .n("total_s", t.total_s)
        .n("total_without_watch_s", t.total_min_s)
        .n("watch_s", t.watch_s)
        .n("verify_s", t.verify_s)
        .b("verify_ok", t.verify_ok)
        .s(
            "verify_sample",
            t.verify.get("sample_verified").map_or("", String::as_str),
        )
        .i("keys_migrated", t.keys_migrated);
    if !t.lag_ms.is_empty() {
        j.n("lag_p50_ms", percentile(&t.lag_ms, 50.0))
            .n("lag_p99_ms", percentile(&t.lag_ms, 99.0))
            .n("lag_max_ms", percentile(&t.lag_ms, 100.0))
            .n("lag_keys_p50", percentile(&t.lag_keys, 50.0))
            .n("lag_keys_max", percentile(&t.lag_keys, 100.0))
            .i("lag_samples", t.lag_ms.len() as u64)
            .n("probe_p50_ms", percentile(&t.probe_ms, 50.0))
            .n("probe_p99_ms", percentile(&t.probe_ms, 99.0))
            .n("probe_max_ms", percentile(&t.probe_ms, 100.0));
    }
}

/// Bytes of keys and values the tenant holds (what the migration has to move).
fn logical_bytes(keys: u64, len: usize) -> f64 {
    let key_bytes: u64 = (0..keys).map(|i| key(i).len() as u64).sum();
    (key_bytes + keys * len as u64) as f64
}

async fn target_dbsize(dst: &Server) -> Res<i64> {
    let mut c = tenant_conn(&dst.addr()).await?;
    value::as_int(&cmd(&mut c, &["DBSIZE"]).await?).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// One 1M-key migration between two fresh servers, optionally under a write load.
async fn single(o: &Opts, name: &str, mixed: bool, rate: u64) -> Res<()> {
    log(format!("scenario {name}: starting two servers"));
    let src = start_server(None);
    let dst = start_server(None);
    load_tenant(&src, o.keys, o.value, mixed).await?;
    let load = (rate > 0).then(|| Load::start(&src.addr(), o.keys, o.value, rate));
    if load.is_some() {
        // Let the load reach its pace before the migration starts.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !o.pause.is_zero() {
        log(format!(
            "pausing {:.0} s before migrating (to attach a profiler): source pid {}, target pid {}",
            o.pause.as_secs_f64(),
            src.pid(),
            dst.pid()
        ));
        tokio::time::sleep(o.pause).await;
    }
    let (rss_before, _) = rss(src.pid());
    let (dst_before, _) = rss(dst.pid());
    let sampler = RssSampler::start(src.pid());
    let dst_sampler = RssSampler::start(dst.pid());
    let watch = if rate > 0 { o.steady } else { Duration::ZERO };
    let result = migrate_once(&src, &dst, &o.migrate_args, watch, Duration::from_secs(30)).await;
    let peak = sampler.finish();
    let dst_peak = dst_sampler.finish();
    // Writes go on for a moment at the new home, through the redirect.
    if load.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let writes = match load {
        Some(l) => Some(l.stop().await),
        None => None,
    };
    let t = result?;
    let dbsize = target_dbsize(&dst).await?;
    let mut j = Json::new(name);
    j.i("keys", o.keys)
        .i("value_bytes", o.value as u64)
        .b("mixed_types", mixed)
        .s("migrate_args", &o.migrate_args.join(" "));
    timed_fields(&mut j, &t, o.keys, logical_bytes(o.keys, o.value));
    j.i("target_dbsize", dbsize.max(0) as u64)
        .b("target_has_every_key", dbsize == o.keys as i64)
        .n("src_rss_before_mb", mb(rss_before as f64))
        .n("src_rss_peak_mb", mb(peak as f64))
        .n(
            "src_rss_overhead_mb",
            mb(peak.saturating_sub(rss_before) as f64),
        )
        .n(
            "src_rss_overhead_pct",
            peak.saturating_sub(rss_before) as f64 / rss_before.max(1) as f64 * 100.0,
        )
        .n("dst_rss_before_mb", mb(dst_before as f64))
        .n("dst_rss_peak_mb", mb(dst_peak as f64));
    if let Some(w) = &writes {
        writer_fields(&mut j, w, rate);
        let (checked, lost) = check_writes(&dst.addr(), o.value, w).await?;
        j.i("writes_checked", checked).i("writes_lost", lost);
    }
    j.print();
    Ok(())
}

/// A smaller tenant moved back and forth between two servers under the write load.
async fn cutovers(o: &Opts) -> Res<()> {
    log(format!(
        "scenario cutovers: {} migrations of {} keys under {} writes/s",
        o.cutovers, o.cutover_keys, o.rate
    ));
    // A short retention: each completed migration keeps a frozen copy of the tenant on its
    // source for VERIFY; a hundred copies held for the default hour would only measure memory.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = dir.path().join("ferrite.toml");
    std::fs::write(&conf, "[tenancy.migration]\nretention_secs = 20\n")
        .map_err(|e| e.to_string())?;
    let servers = [start_server(Some(&conf)), start_server(Some(&conf))];
    load_tenant(&servers[0], o.cutover_keys, o.value, false).await?;
    let load = Load::start(&servers[0].addr(), o.cutover_keys, o.value, o.rate);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut runs = Vec::new();
    let mut failure = None;
    for n in 0..o.cutovers {
        let (src, dst) = (&servers[n % 2], &servers[(n + 1) % 2]);
        match migrate_once(
            src,
            dst,
            &o.migrate_args,
            Duration::ZERO,
            Duration::from_secs(30),
        )
        .await
        {
            Ok(t) => {
                if !t.verify_ok {
                    log(format!(
                        "migration {n}: VERIFY did not match: {:?}",
                        t.verify
                    ));
                }
                runs.push(t);
            }
            Err(e) => {
                failure = Some(format!("migration {n}: {e}"));
                break;
            }
        }
        if n % 10 == 9 {
            log(format!("{} cutovers done", n + 1));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w = load.stop().await;
    let home = &servers[runs.len() % 2];
    let (checked, lost) = check_writes(&home.addr(), o.value, &w).await?;
    let dbsize = target_dbsize(home).await?;
    let col = |f: fn(&Timed) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let downtime = col(|t| t.downtime_ms);
    let total = col(|t| t.total_s);
    let verify = col(|t| t.verify_s);
    let snapshot = col(|t| t.snapshot_s);
    let call = col(|t| t.cutover_call_ms);
    let mut j = Json::new("cutovers");
    j.i("keys", o.cutover_keys)
        .i("value_bytes", o.value as u64)
        .i("cutovers", runs.len() as u64)
        .i("cutovers_planned", o.cutovers as u64)
        .n("downtime_p50_ms", percentile(&downtime, 50.0))
        .n("downtime_p99_ms", percentile(&downtime, 99.0))
        .n("downtime_max_ms", percentile(&downtime, 100.0))
        .n(
            "downtime_mean_ms",
            downtime.iter().sum::<f64>() / downtime.len().max(1) as f64,
        )
        .n("cutover_call_p50_ms", percentile(&call, 50.0))
        .n("cutover_call_p99_ms", percentile(&call, 99.0))
        .n("snapshot_p50_s", percentile(&snapshot, 50.0))
        .n("total_p50_s", percentile(&total, 50.0))
        .n("total_p99_s", percentile(&total, 99.0))
        .n("verify_p50_s", percentile(&verify, 50.0))
        .n("verify_p99_s", percentile(&verify, 99.0))
        .i(
            "verify_failures",
            runs.iter().filter(|t| !t.verify_ok).count() as u64,
        )
        .i("final_dbsize", dbsize.max(0) as u64);
    writer_fields(&mut j, &w, o.rate);
    j.i("writes_checked", checked).i("writes_lost", lost);
    if let Some(f) = &failure {
        j.s("error", f);
    }
    j.print();
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Hot large collections: see the module documentation (`hot`).
async fn hot(fields_n: u64, rate: u64, steady: Duration) -> Res<()> {
    log(format!(
        "scenario hot: a {fields_n}-field hash (and a sorted set and a list of {}) under {rate} HSET/s",
        fields_n / 10
    ));
    let src = start_server(None);
    let dst = start_server(None);
    let mut a = admin(&src).await?;
    cmd(&mut a, &["TENANT.CREATE", TENANT, "PASSWORD", PASSWORD]).await?;
    let mut c = tenant_conn(&src.addr()).await?;
    let mut data = 0u64;
    let small = (fields_n / 10).max(1000);
    let mut batch: Vec<Vec<String>> = Vec::new();
    for start in (0..fields_n).step_by(1000) {
        let mut h = vec!["HSET".to_string(), "hot:hash".into()];
        for i in start..(start + 1000).min(fields_n) {
            let (f, v) = (format!("field:{i:08}"), format!("value-{i:08}"));
            data += (f.len() + v.len()) as u64;
            h.extend([f, v]);
        }
        batch.push(h);
        if start < small {
            let mut z = vec!["ZADD".to_string(), "hot:zset".into()];
            let mut l = vec!["RPUSH".to_string(), "hot:list".into()];
            for i in start..(start + 1000).min(small) {
                let (m, e) = (format!("member:{i:08}"), format!("item:{i:08}"));
                data += (m.len() + 8 + e.len()) as u64;
                z.extend([i.to_string(), m]);
                l.push(e);
            }
            batch.push(z);
            batch.push(l);
        }
        if batch.len() >= 50 {
            c.pipeline(&std::mem::take(&mut batch))
                .await
                .map_err(|e| format!("load: {e}"))?;
        }
    }
    c.pipeline(&batch).await.map_err(|e| format!("load: {e}"))?;
    log(format!("loaded {data} bytes of elements"));
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (stop, changes, addr) = (stop.clone(), changes.clone(), src.addr());
        tokio::spawn(async move {
            let Ok(mut c) = tenant_conn(&addr).await else {
                return;
            };
            let tick = Duration::from_millis(10);
            let per_tick = (rate / 100).max(1);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let mut cmds: Vec<Vec<String>> = Vec::new();
                for _ in 0..per_tick {
                    n += 1;
                    let f = format!("field:{:08}", n.wrapping_mul(7919) % fields_n);
                    cmds.push(vec!["HSET".into(), "hot:hash".into(), f, format!("v{n}")]);
                    let m = format!("member:{:08}", n.wrapping_mul(104_729) % small);
                    cmds.push(vec!["ZINCRBY".into(), "hot:zset".into(), "1".into(), m]);
                    cmds.push(vec!["RPUSH".into(), "hot:list".into(), format!("new:{n}")]);
                    cmds.push(vec!["LPOP".into(), "hot:list".into()]);
                }
                let bytes: usize = cmds.iter().flatten().map(String::len).sum();
                changes.fetch_add(bytes as u64, Ordering::Relaxed);
                let _ = c.pipeline(&cmds).await;
                tokio::time::sleep(tick.saturating_sub(t0.elapsed())).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dst_addr = dst.addr();
    let t0 = Instant::now();
    let id = fields(&cmd(&mut a, &["TENANT.MIGRATE", TENANT, "TARGET", &dst_addr]).await?)
        .get("migration_id")
        .cloned()
        .ok_or("TENANT.MIGRATE returned no migration_id")?;
    let mut s = status(&mut a, &id).await?;
    while s.get("state").map(String::as_str) != Some("live_sync") {
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(format!("no live sync after 600 s: {s:?}"));
        }
        tokio::time::sleep(POLL).await;
        s = status(&mut a, &id).await?;
    }
    let snapshot_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    while num(&s, "lag_bytes") >= (1u64 << 20) as f64 {
        if t1.elapsed() > Duration::from_secs(300) {
            return Err(format!("lag_bytes not under 1 MB after 300 s: {s:?}"));
        }
        tokio::time::sleep(POLL).await;
        s = status(&mut a, &id).await?;
    }
    let converge_s = t1.elapsed().as_secs_f64();
    log(format!(
        "{id}: lag under 1 MB {converge_s:.2} s after the snapshot"
    ));
    let mut worst = 0f64;
    let tw = Instant::now();
    while tw.elapsed() < steady {
        s = status(&mut a, &id).await?;
        worst = worst.max(num(&s, "lag_bytes"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    while num(&s, "lag_keys") > 0.0 {
        tokio::time::sleep(POLL).await;
        s = status(&mut a, &id).await?;
    }
    let sent = num(&s, "bytes_sent");
    let changed = changes.load(Ordering::Relaxed) as f64;
    let cut = fields(&cmd(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await?);
    let v = fields(&cmd(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await?);
    let mut j = Json::new("hot");
    j.i("hash_fields", fields_n)
        .i("zset_members", small)
        .i("list_items", small)
        .i("hset_per_s", rate)
        .n("data_mb", mb(data as f64))
        .n("changes_mb", mb(changed))
        .n("bytes_sent_mb", mb(sent))
        .n(
            "sent_over_data_plus_changes",
            sent / (data as f64 + changed),
        )
        .n("snapshot_s", snapshot_s)
        .n("lag_under_1mb_after_snapshot_s", converge_s)
        .n("lag_bytes_max_after", worst)
        .n("downtime_ms", num(&cut, "downtime_ms"))
        .b(
            "verify_ok",
            v.get("status").map(String::as_str) == Some("verified"),
        );
    j.print();
    Ok(())
}

async fn run(o: Opts) -> bool {
    log(format!("{o:?}"));
    let mut ok = true;
    for s in &o.scenarios {
        let r = match s.as_str() {
            "idle" => single(&o, "idle", false, 0).await,
            "mixed" => single(&o, "mixed", true, 0).await,
            "load" => single(&o, "load", false, o.rate).await,
            "heavy" => single(&o, "heavy", false, o.heavy_rate).await,
            "cutovers" => cutovers(&o).await,
            "hot" => {
                hot(
                    env_u64("BENCH_HOT_FIELDS", 1_000_000),
                    env_u64("BENCH_HOT_RATE", 1000),
                    o.steady,
                )
                .await
            }
            other => Err(format!(
                "unknown scenario '{other}' (idle, mixed, load, heavy, cutovers, hot)"
            )),
        };
        if let Err(e) = r {
            log(format!("scenario {s} FAILED: {e}"));
            Json::new(s).s("error", &e).print();
            ok = false;
        }
    }
    ok
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // must not start a minutes-long benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benches/migrate.rs is a benchmark: run it with `cargo bench --bench migrate`");
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(format!("cannot start a runtime: {e}"));
            std::process::exit(2);
        }
    };
    let ok = rt.block_on(run(Opts::from_env()));
    std::process::exit(if ok { 0 } else { 1 });
}
