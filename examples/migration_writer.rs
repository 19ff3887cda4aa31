//! A writer that keeps writing and reading back through a live tenant migration.
//!
//! ```sh
//! cargo run --release --example migration_writer -- \
//!     --addr 127.0.0.1:6379 --tenant acme-corp --password s3cret [--seconds 60] [--keys 1000]
//! # in another terminal:
//! redis-cli TENANT.MIGRATE acme-corp TARGET 127.0.0.1:6380   # ... then TENANT.MIGRATE.CUTOVER
//! ```
//!
//! Each step writes `writer:<n>` = `<step>` and reads it back. Every second it prints the counts
//! and the server it is connected to, which switches from the source to the target at the
//! cutover (ferrite-client follows `-MOVED` by itself). `--addr` may be given several times: the
//! first address that accepts the tenant is used. It exits with status 1 if any operation failed
//! or a read did not return what was written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_client::{Client, ClientError, ConnectOptions};

/// What to run against.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Candidate addresses of the tenant's server; the first that accepts the tenant is used.
    pub addrs: Vec<String>,
    pub tenant: String,
    pub password: String,
    /// Distinct keys written (round robin).
    pub keys: u64,
    /// Stop after this long (None: until stopped).
    pub duration: Option<Duration>,
    /// How often to report progress.
    pub report_every: Duration,
}

/// Counts so far.
#[derive(Debug, Clone, Default)]
pub struct WriterReport {
    pub writes: u64,
    pub reads: u64,
    /// Operations that returned an error (after ferrite-client's redirects and retries).
    pub failed: u64,
    /// Reads that did not return the value just written.
    pub mismatches: u64,
    /// Redirects the client followed.
    pub redirects: u64,
    /// The server the client is connected to now.
    pub addr: String,
    /// Last acknowledged value per key, for checking the data afterwards.
    pub written: HashMap<String, String>,
    /// The last error seen, if any.
    pub last_error: Option<String>,
}

impl WriterReport {
    pub fn line(&self) -> String {
        format!(
            "writes={} reads={} failed={} mismatches={} redirects={} connected to {}",
            self.writes, self.reads, self.failed, self.mismatches, self.redirects, self.addr
        )
    }
}

/// Connects to the first address that accepts the tenant.
async fn connect(cfg: &WriterConfig) -> Result<Client, ClientError> {
    let mut last = None;
    for addr in &cfg.addrs {
        match Client::connect(ConnectOptions::new(addr).tenant(&cfg.tenant, &cfg.password)).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Unexpected("no --addr given".into())))
}

/// Writes and reads back until `stop` is set or the duration passes, calling `progress` every
/// `report_every`. Errors are counted (and reported), not fatal: the point is to show that
/// there are none.
pub async fn run_writer(
    cfg: &WriterConfig,
    stop: &AtomicBool,
    mut progress: impl FnMut(&WriterReport),
) -> Result<WriterReport, ClientError> {
    let mut c = connect(cfg).await?;
    let started = Instant::now();
    let mut next_report = started + cfg.report_every;
    let mut r = WriterReport {
        addr: c.addr().to_string(),
        ..WriterReport::default()
    };
    let mut step: u64 = 0;
    while !stop.load(Ordering::Relaxed) && cfg.duration.is_none_or(|d| started.elapsed() < d) {
        let key = format!("writer:{}", step % cfg.keys.max(1));
        let value = step.to_string();
        match c.set(&key, &value).await {
            Ok(()) => {
                r.writes += 1;
                r.written.insert(key.clone(), value.clone());
                match c.get(&key).await {
                    Ok(got) => {
                        r.reads += 1;
                        if got.as_deref() != Some(value.as_str()) {
                            r.mismatches += 1;
                            r.last_error = Some(format!("{key}: wrote {value}, read {got:?}"));
                        }
                    }
                    Err(e) => {
                        r.failed += 1;
                        r.last_error = Some(e.to_string());
                    }
                }
            }
            Err(e) => {
                r.failed += 1;
                // The outcome of a failed SET is unknown: forget what we knew about the key.
                r.written.remove(&key);
                r.last_error = Some(e.to_string());
            }
        }
        step += 1;
        if Instant::now() >= next_report {
            r.redirects = c.redirects();
            r.addr = c.addr().to_string();
            progress(&r);
            next_report += cfg.report_every;
        }
    }
    r.redirects = c.redirects();
    r.addr = c.addr().to_string();
    progress(&r);
    Ok(r)
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<WriterConfig, String> {
    let mut cfg = WriterConfig {
        addrs: Vec::new(),
        tenant: String::new(),
        password: String::new(),
        keys: 1000,
        duration: None,
        report_every: Duration::from_secs(1),
    };
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => cfg.addrs.push(value()?),
            "--tenant" => cfg.tenant = value()?,
            "--password" => cfg.password = value()?,
            "--keys" => cfg.keys = value()?.parse().map_err(|_| "--keys: not a number")?,
            "--seconds" => {
                let s: f64 = value()?.parse().map_err(|_| "--seconds: not a number")?;
                cfg.duration = Some(Duration::from_secs_f64(s.max(0.0)));
            }
            "--report-ms" => {
                let ms: u64 = value()?.parse().map_err(|_| "--report-ms: not a number")?;
                cfg.report_every = Duration::from_millis(ms.max(1));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if cfg.addrs.is_empty() || cfg.tenant.is_empty() {
        return Err(
            "usage: migration_writer --addr HOST:PORT [--addr ...] --tenant ID \
                    --password PW [--keys N] [--seconds S] [--report-ms MS]"
                .into(),
        );
    }
    Ok(cfg)
}

#[cfg(not(test))]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::Relaxed);
        }
    });
    match run_writer(&cfg, &stop, |r| println!("{}", r.line())).await {
        Ok(r) => {
            if let Some(e) = &r.last_error {
                eprintln!("last error: {e}");
            }
            if r.failed == 0 && r.mismatches == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_arguments() {
        let args = |v: &[&str]| super::parse_args(v.iter().map(|s| s.to_string()));
        let cfg = args(&[
            "--addr",
            "a:1",
            "--addr",
            "b:2",
            "--tenant",
            "t",
            "--password",
            "p",
            "--seconds",
            "1.5",
        ])
        .unwrap();
        assert_eq!(cfg.addrs, ["a:1", "b:2"]);
        assert_eq!(cfg.duration, Some(std::time::Duration::from_millis(1500)));
        assert!(args(&["--tenant", "t"]).unwrap_err().starts_with("usage"));
        assert!(args(&["--addr"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--bogus"]).unwrap_err().contains("unknown"));
    }
}
