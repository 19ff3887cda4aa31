//! End-to-end tests of `ferrite-cli`, driven as a user would: one-shot commands and their exit
//! codes, the interactive prompt inside tmux, the migration subcommands against two real
//! `ferrite` processes, and the backup subcommands.

#[path = "../common/mod.rs"]
mod common;

mod backup;
mod migrate;
mod oneshot;
mod repl;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;

pub fn cli_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferrite-cli")
}

/// The `ferrite` server binary beside `ferrite-cli` (same target directory; Cargo only gives a
/// crate's tests the paths of that crate's own binaries).
pub fn ferrite_bin() -> PathBuf {
    PathBuf::from(cli_bin()).with_file_name("ferrite")
}

/// Starts a server, failing clearly when the server binary has not been built.
pub fn server(extra: &[&str]) -> Server {
    let bin = ferrite_bin();
    assert!(
        std::env::var_os("FERRITE_BIN").is_some() || bin.exists(),
        "{} is missing: run `cargo build --release --bins` first (scripts/test.sh does)",
        bin.display()
    );
    Server::start_with(extra)
}

/// What one run of the CLI did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    /// Standard output as text (bytes that are not UTF-8 shown as U+FFFD; see `stdout_bytes`).
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

/// A CLI command with a clean environment (no password from the caller's environment, no
/// history written to the real home).
pub fn cli_command(args: &[&str]) -> Command {
    let mut c = Command::new(cli_bin());
    c.args(args)
        .env_remove("FERRITE_CLI_AUTH")
        .env("FERRITE_CLI_HISTFILE", "/dev/null");
    c
}

/// Collects a child's stdout and stderr in the background.
fn collect(
    child: &mut Child,
) -> (
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<String>,
) {
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let a = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let b = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    (a, b)
}

/// Waits for a child, killing it (and failing the test) after `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the CLI with `args` (and `stdin`, if any) and waits at most a minute.
pub fn run(args: &[&str], stdin: Option<&str>) -> Run {
    run_cmd(cli_command(args), stdin)
}

/// Runs a prepared CLI command, feeding it `stdin`, and waits at most a minute.
pub fn run_cmd(cmd: Command, stdin: Option<&str>) -> Run {
    run_cmd_bytes(cmd, stdin.map(str::as_bytes))
}

/// Like [`run_cmd`], with any bytes on standard input.
pub fn run_cmd_bytes(mut cmd: Command, stdin: Option<&[u8]>) -> Run {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrite-cli");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let (out, err) = collect(&mut child);
    let code = wait_child(&mut child, Duration::from_secs(60), &what);
    let stdout_bytes = out.join().unwrap_or_default();
    Run {
        code,
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stdout_bytes,
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs the CLI against `s` (`-p <port>` first) as administrator: the server's administrator
/// secret comes through `FERRITE_CLI_AUTH`, so an `-a` among `args` takes precedence.
pub fn cli(s: &Server, args: &[&str]) -> Run {
    let port = s.port.to_string();
    let mut all = vec!["-p", port.as_str()];
    all.extend_from_slice(args);
    run_cmd(admin_cli_command(s, &all), None)
}

/// A CLI command (see [`cli_command`]) that authenticates as `s`'s administrator unless `args`
/// give `-a`.
pub fn admin_cli_command(s: &Server, args: &[&str]) -> Command {
    let mut c = cli_command(args);
    c.env("FERRITE_CLI_AUTH", s.admin_secret());
    c
}

/// Like [`cli`], and the command must succeed.
pub fn cli_ok(s: &Server, args: &[&str]) -> String {
    let r = cli(s, args);
    assert_eq!(r.code, 0, "ferrite-cli {args:?} failed: {r:?}");
    r.stdout
}

/// A port nothing listens on, below the kernel's ephemeral range: while a test relies on it
/// staying unused (or restarts a server on it), the kernel hands it to no other test's server or
/// client. Each call tries a different port.
pub fn free_port() -> u16 {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let lower = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let base = lower.saturating_sub(10_000).max(1024);
    let span = u32::from(lower.saturating_sub(base).max(1));
    for _ in 0..100 {
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let offset = (std::process::id().wrapping_mul(7919).wrapping_add(n * 131)) % span;
        let port = base + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {lower}");
}
