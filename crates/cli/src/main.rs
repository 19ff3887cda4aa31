//! `ferrite-cli`: a redis-cli for Ferrite.
//!
//! - [`args`]: flags (`-h -p -a --user -2 -3 --raw --json`) and the `migrate` subcommands.
//! - [`session`]: the connection (through `ferrite-client`, which follows moved tenants) and
//!   how failures map to exit codes.
//! - [`output`]: redis-cli's reply formats, `--raw` and `--json`.
//! - [`repl`]: the interactive prompt (history, completion, reconnects) and line splitting.
//! - [`migrate`]: `migrate start|status|cutover|verify|pause|resume|cancel`.
//! - [`watch`]: `migrate watch`, the live progress view.
//! - [`backup`]: `backup create|list|info|restore|delete`.
//! - [`progress`]: progress bars for commands that reply when their work is done (TENANT.BACKUP,
//!   TENANT.RESTORE), drawn from TENANT.BACKUP.JOBS polled on a second connection.

/// `print!` that ends the program quietly (exit 1) when stdout is gone, e.g. piped into `head`,
/// where `print!` would panic.
macro_rules! out {
    ($($arg:tt)*) => { $crate::emit(format_args!($($arg)*)) };
}

/// `println!` with the same behaviour as [`out!`].
macro_rules! outln {
    () => { $crate::emit(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::emit(format_args!("{}\n", format_args!($($arg)*))) };
}

mod args;
mod backup;
mod migrate;
mod output;
mod progress;
mod repl;
mod session;
mod watch;

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::{BackupCli, Cli, MigrateCli};
use crate::output::Format;
use crate::session::{Failure, Session, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrite-cli: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let raw = cli.format() == Format::Raw;
    let code = match run(cli, &rt) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("{}", if raw { f.raw_message() } else { &f.message });
            f.code
        }
    };
    // Output may be a closed pipe (`ferrite-cli ... | head -1`); nothing useful to do then.
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

/// Writes to stdout; a closed stdout ends the program (nobody is reading any more).
pub fn emit(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(i32::from(exit::FAILED));
    }
}

/// [`emit`] for bytes (replies need not be UTF-8).
pub fn emit_bytes(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(i32::from(exit::FAILED));
    }
}

/// Prints clap's message: usage errors exit 2 (on stderr), `--help`/`--version` exit 0.
fn usage(e: clap::Error) -> ExitCode {
    ExitCode::from(usage_code(e, Cli::command()))
}

/// Like [`usage`]; every usage error shows the usage line (clap leaves it out of some, such as
/// an invalid port number).
fn usage_code(e: clap::Error, mut cmd: clap::Command) -> u8 {
    let _ = e.print();
    if !e.use_stderr() {
        return exit::OK;
    }
    if !e.to_string().contains("Usage:") {
        eprintln!("\n{}", cmd.render_usage());
    }
    exit::USAGE
}

fn run(cli: Cli, rt: &tokio::runtime::Runtime) -> Result<u8, Failure> {
    let opts = session::options(&cli.conn);
    let format = cli.format();
    if cli
        .command
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("migrate"))
    {
        let m = match MigrateCli::try_parse_from(&cli.command) {
            Ok(m) => m,
            Err(e) => return Ok(usage_code(e, MigrateCli::command())),
        };
        let mut s = rt.block_on(Session::connect(opts, cli.conn.resp2))?;
        let format = if m.json { Format::Json } else { format };
        return rt.block_on(migrate::run(&mut s, m.cmd, format));
    }
    if cli
        .command
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("backup"))
    {
        let b = match BackupCli::try_parse_from(&cli.command) {
            Ok(b) => b,
            Err(e) => return Ok(usage_code(e, BackupCli::command())),
        };
        let mut s = rt.block_on(Session::connect(opts, cli.conn.resp2))?;
        let format = if b.json { Format::Json } else { format };
        return rt.block_on(backup::run(&mut s, b.cmd, format));
    }
    if !cli.command.is_empty() {
        let args: Vec<&[u8]> = cli.command.iter().map(|a| a.as_bytes()).collect();
        let mut s = rt.block_on(Session::connect(opts, cli.conn.resp2))?;
        return rt.block_on(one_shot(&mut s, &args, format));
    }
    let s = rt.block_on(Session::connect_for_auth(opts, cli.conn.resp2))?;
    if std::io::stdin().is_terminal() {
        repl::interactive(rt, s, format)
    } else {
        repl::from_stdin(rt, s, format)
    }
}

/// Runs one command and prints its reply; an error reply goes to stderr with exit code 1.
async fn one_shot(s: &mut Session, args: &[&[u8]], format: Format) -> Result<u8, Failure> {
    let reply = s.run(args).await?;
    emit_bytes(&render_reply(args, &reply, format));
    Ok(exit::OK)
}

/// The reply as redis-cli would print it for this command.
pub fn render_reply<A: AsRef<[u8]>>(
    args: &[A],
    reply: &ferrite_client::Frame,
    format: Format,
) -> Vec<u8> {
    if output::prints_verbatim(args) {
        output::render_verbatim(reply, format)
    } else {
        output::render(reply, format)
    }
}
