//! `ferrite`: the server binary. Loads the configuration, sets up logging, runs the server until
//! SIGINT, SIGTERM or SHUTDOWN.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ferrite_server::{Config, StartOptions};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

#[derive(Parser, Debug)]
#[command(
    name = "ferrite",
    version,
    about = "Ferrite: a Redis-protocol key-value server with live tenant migration"
)]
struct Cli {
    /// Configuration file (TOML); without it the built-in defaults apply.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    bind: Option<String>,
    /// Port to listen on (0 = any free port, printed at startup).
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// Administrator password.
    #[arg(long)]
    requirepass: Option<String>,
    /// File holding the administrator secret (created when missing) when there is no
    /// requirepass.
    #[arg(long, value_name = "FILE")]
    admin_secret_file: Option<String>,
    /// Prometheus endpoint as host:port, or `off`.
    #[arg(long, value_name = "HOST:PORT|off")]
    metrics_addr: Option<String>,
    /// Log level or tracing filter.
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Worker threads (0 = all cores but one, at least one; one runs on the current-thread scheduler).
    #[arg(long)]
    threads: Option<usize>,
    /// Maximum simultaneous clients.
    #[arg(long)]
    maxclients: Option<usize>,
    /// Shared secret for migrations between servers.
    #[arg(long)]
    migration_token: Option<String>,
    /// Data directory (persistence.dir).
    #[arg(long, value_name = "PATH")]
    dir: Option<String>,
    /// When writes are forced to disk: always, everysec or no (persistence.appendfsync).
    #[arg(long, value_name = "always|everysec|no")]
    appendfsync: Option<String>,
    /// Keep data on disk: yes or no (persistence.enabled; `no` runs as a cache).
    #[arg(long, value_name = "yes|no")]
    appendonly: Option<String>,
    /// Checks a data directory (no server is started) and exits: 0 when it loads, 1 when not.
    #[arg(long, value_name = "DIR")]
    check_data: Option<std::path::PathBuf>,
    /// With --check-data: cut a damaged log at its last good record (what follows is lost).
    #[arg(long, requires = "check_data")]
    repair: bool,
}

/// SIGXFSZ (file size limit exceeded) on Linux.
#[cfg(unix)]
const SIGXFSZ: i32 = 25;

fn load(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(v) = &cli.bind {
        cfg.server.bind = v.clone();
    }
    if let Some(v) = cli.port {
        cfg.server.port = v;
    }
    if let Some(v) = &cli.requirepass {
        cfg.server.requirepass = v.clone();
    }
    if let Some(v) = &cli.admin_secret_file {
        cfg.server.admin_secret_file = v.clone();
    }
    if let Some(v) = &cli.metrics_addr {
        cfg.metrics.addr = v.clone();
    }
    if let Some(v) = &cli.log_level {
        cfg.log.level = v.clone();
    }
    if let Some(v) = &cli.log_format {
        cfg.log.format = v.clone();
    }
    if let Some(v) = cli.threads {
        cfg.server.threads = v;
    }
    if let Some(v) = cli.maxclients {
        cfg.server.maxclients = v;
    }
    if let Some(v) = &cli.migration_token {
        cfg.tenancy.migration.token = v.clone();
    }
    if let Some(v) = &cli.dir {
        cfg.persistence.dir = v.clone();
    }
    if let Some(v) = &cli.appendfsync {
        cfg.persistence.appendfsync = v.clone();
    }
    if let Some(v) = &cli.appendonly {
        cfg.persistence.enabled = match v.as_str() {
            "yes" | "true" => true,
            "no" | "false" => false,
            other => return Err(format!("--appendonly: '{other}' must be yes or no")),
        };
    }
    cfg.validate()
        .map_err(|(key, msg)| format!("command line: `{key}`: {msg}"))?;
    Ok(cfg)
}

/// `ferrite --check-data <dir> [--repair]`.
fn check_data(dir: &std::path::Path, repair: bool) -> ExitCode {
    match ferrite_persistence::check::check(dir, repair) {
        Ok(report) => {
            for line in &report.lines {
                println!("{line}");
            }
            if report.problems == 0 {
                println!(
                    "{}: OK{}",
                    dir.display(),
                    if report.repaired > 0 {
                        format!(" ({} problem(s) repaired)", report.repaired)
                    } else {
                        String::new()
                    }
                );
                ExitCode::SUCCESS
            } else {
                println!(
                    "{}: {} problem(s){}",
                    dir.display(),
                    report.problems,
                    if repair {
                        ""
                    } else {
                        "; run again with --repair to fix what can be fixed"
                    }
                );
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ferrite: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.check_data {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(EnvFilter::new("warn"))
            .try_init();
        return check_data(dir, cli.repair);
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrite: configuration error: {e}");
            return ExitCode::from(2);
        }
    };

    // Validated when the configuration was loaded; "info" is only a fallback.
    let filter = ferrite_server::config::log_filter(&cfg.log.level)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    if cfg.log.format == "json" {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    let set_log_level = Box::new(move |level: &str| {
        let f = ferrite_server::config::log_filter(level)
            .and_then(|f| EnvFilter::try_new(f).map_err(|e| e.to_string()))?;
        reload.reload(f).map_err(|e| e.to_string())
    });

    // One worker runs on tokio's current-thread scheduler: its tasks wake each other without
    // cross-thread notifications (no eventfd write, no futex) and the tenant's data, Lua
    // states and connections stay in one core's cache. That is safe because no async task
    // blocks its thread waiting for a keyspace lock (`Keyspace::lock` is only for other
    // threads; this thread is marked so a violation is reported). More workers run on the
    // multi-thread scheduler.
    let workers = cfg.worker_threads();
    let mut rt = if workers == 1 {
        ferrite_storage::keyspace::mark_async_worker();
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        rt.worker_threads(workers);
        rt
    };
    rt.enable_all();
    // The request path reads `quanta`'s clock (the TSC, where it is usable); its calibration
    // (up to 200 ms) happens at the first read: here, before any client is served.
    let _ = quanta::Instant::now();
    if let Some(spin) = ferrite_server::idle_spin::IdleSpin::new(cfg.server.idle_spin_us) {
        rt.on_thread_park(move || spin.before_park());
        rt.on_thread_unpark(move || spin.after_unpark());
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrite: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let server = match ferrite_server::start(
            cfg,
            StartOptions {
                set_log_level: Some(set_log_level),
                admin_secret: None,
            },
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ferrite: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Where the secret is, never the secret itself (stdout may end up in a log).
        if let Some((path, created)) = &server.admin_secret_file {
            let what = if *created { "created" } else { "kept" };
            println!(
                "Ferrite administrator secret {what} in {}: AUTH <its content> to administer (e.g. redis-cli -a \"$(cat {})\")",
                path.display(),
                path.display()
            );
        }
        // Tests and scripts read this line to learn the port when started with --port 0.
        println!("Ferrite ready to accept connections on {}", server.addr);
        if let Some(m) = server.metrics_addr {
            println!("Ferrite metrics on http://{m}/metrics");
        }
        // A file-size limit (RLIMIT_FSIZE) must make a write fail with EFBIG, which the server
        // handles like a full disk, instead of killing the process with SIGXFSZ.
        #[cfg(unix)]
        let _file_size_signal =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ));
        let shared = server.shared().clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; shutting down");
            shared.begin_shutdown();
        });
        server.wait().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
