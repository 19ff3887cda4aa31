//! Command-line arguments: redis-cli's connection flags, then either a command to run once or
//! nothing (the REPL). `migrate ...` and `backup ...` have parsers of their own, chosen by the
//! first word.

use std::ffi::OsString;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

const AFTER_HELP: &str = "\
Without a command, ferrite-cli starts an interactive prompt (or, when standard input is not a
terminal, runs one command per input line).

Migration commands (run `ferrite-cli migrate --help`):
  migrate start <tenant> <host:port> [--mode live|fast|continuous] [--conflict source-wins|target-wins|newest-wins] [--parallel n] [--batch-size n] [--rate b/s]
  migrate status [<id>|--all]       migrate watch [<id>|--all] [--interval-ms n] [--timeout-s n]
  migrate cutover <id> [--force]    migrate verify <id>
  migrate pause|resume|cancel <id>  migrate stop <id> [--immediate]
  migrate rollback <id>             migrate finalize <id>   (start --retention s: the backup's life)

Backup commands (run `ferrite-cli backup --help`):
  backup create <tenant> [--name id] [--format native|rdb]   backup list [<tenant>]
  backup restore <tenant> <id> [--as <new-tenant>] [--replace]
  backup restore <tenant> --rdb <path> [--db n] [--replace]
  backup info <id>                  backup delete <id>

Exit codes: 0 success, 1 the command failed (error on stderr), 2 usage error,
3 cannot connect, 4 `migrate watch` timed out.

Examples:
  ferrite-cli SET greeting hello
  ferrite-cli --user acme -a s3cret --raw GET greeting
  ferrite-cli -p 6380 --json HGETALL user:1
  ferrite-cli migrate start acme 10.0.0.2:6379 --parallel 8
  ferrite-cli migrate watch --all
  ferrite-cli backup create acme && ferrite-cli backup list acme";

/// `ferrite-cli [options] [command [args...]]`.
#[derive(Debug, Parser)]
#[command(
    name = "ferrite-cli",
    version,
    about = "Command-line client for Ferrite (and any Redis-protocol server), with live migration views",
    disable_help_flag = true,
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Print replies bare, one value per line (no quotes, no types).
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,

    /// Print each reply as JSON (maps as objects).
    #[arg(long)]
    pub json: bool,

    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,

    /// The command and its arguments; without one, an interactive prompt starts. Arguments
    /// are bytes, as the shell passes them (`$'\xff'` is one byte, not UTF-8).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        value_parser = clap::value_parser!(OsString)
    )]
    pub command: Vec<OsString>,
}

impl Cli {
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else if self.raw {
            Format::Raw
        } else {
            Format::Pretty
        }
    }
}

/// Where to connect and as whom.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Server hostname.
    #[arg(short = 'h', long = "host", default_value = "127.0.0.1")]
    pub host: String,

    /// Server port.
    #[arg(short = 'p', long = "port", default_value_t = 6379)]
    pub port: u16,

    /// Password: the tenant's with --user, otherwise the server's requirepass.
    #[arg(
        short = 'a',
        long = "pass",
        env = "FERRITE_CLI_AUTH",
        hide_env_values = true
    )]
    pub password: Option<String>,

    /// Tenant to act as (AUTH <tenant> <password>); needs -a.
    #[arg(long = "user", value_name = "TENANT", requires = "password")]
    pub user: Option<String>,

    /// Speak RESP2 (no HELLO; replies as RESP2 sends them).
    #[arg(short = '2', conflicts_with = "resp3")]
    pub resp2: bool,

    /// Speak RESP3 (the default; falls back to RESP2 when the server lacks HELLO).
    #[arg(short = '3')]
    pub resp3: bool,
}

impl ConnArgs {
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            // A bare IPv6 address needs brackets before the port.
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `-h <host> -p <port>` for an address (`host:port` or `[v6]:port`), to print a command line
/// that reaches the same server.
pub fn host_port_flags(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            format!("-h {host} -p {port}")
        }
        None => format!("-h {addr}"),
    }
}

/// `ferrite-cli migrate ...`.
#[derive(Debug, Parser)]
#[command(
    name = "ferrite-cli migrate",
    bin_name = "ferrite-cli migrate",
    about = "Start, inspect, watch and finish live tenant migrations (run against the source server)"
)]
pub struct MigrateCli {
    /// Print replies as JSON (`watch`: one JSON status list per refresh).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub cmd: MigrateCmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Snapshot, then a live change stream, then a brief cutover.
    Live,
    /// Suspend the tenant's writes, copy, switch.
    Fast,
    /// Snapshot, then keep the target in sync until `migrate stop` (or a cutover).
    Continuous,
    /// Sync everything, then move key patterns one at a time (`--patterns`, `cutover --pattern`).
    Incremental,
}

/// TENANT.MIGRATE ... CONFLICT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Conflict {
    /// The source's change overwrites the target's.
    #[value(name = "source-wins")]
    Source,
    /// The target's change is kept.
    #[value(name = "target-wins")]
    Target,
    /// The later change by modification time (the source's within a second of clock skew).
    #[value(name = "newest-wins")]
    Newest,
}

impl Conflict {
    /// The server's name for it (TENANT.MIGRATE ... CONFLICT).
    pub fn name(self) -> &'static str {
        match self {
            Conflict::Source => "source_wins",
            Conflict::Target => "target_wins",
            Conflict::Newest => "newest_wins",
        }
    }
}

impl Mode {
    /// The server's name for it (TENANT.MIGRATE ... MODE).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Fast => "fast",
            Mode::Continuous => "continuous",
            Mode::Incremental => "incremental",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MigrateCmd {
    /// Start moving a tenant to another server; prints the migration id.
    Start {
        /// The tenant to move.
        tenant: String,
        /// The target server, host:port.
        target: String,
        #[arg(long, value_enum, default_value_t = Mode::Live)]
        mode: Mode,
        /// Parallel streams to the target (1-64; server default when omitted).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        parallel: Option<u32>,
        /// Keys per batch (1-100000; server default when omitted).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: Option<u32>,
        /// Fail the migration when the target cannot be reached for this many seconds.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// Limit shipping to this many bytes per second (0 = no limit).
        #[arg(long, value_name = "BYTES_PER_SEC")]
        rate: Option<u64>,
        /// With --mode continuous: serve the target's copy (reads and writes) while it is
        /// synced, and resolve keys both sides changed this way.
        #[arg(long, value_enum)]
        conflict: Option<Conflict>,
        /// The target's password (its requirepass), when no migration token is configured.
        #[arg(long, value_name = "PASSWORD")]
        target_password: Option<String>,
        /// `--mode incremental`: the key patterns, moved one at a time; a key belongs to the
        /// first that matches it, keys matching none to an implicit last `*`.
        #[arg(long, value_name = "GLOB", num_args = 1..)]
        patterns: Vec<String>,
        /// How long the old source stays a backup after the cutover, for `migrate rollback`
        /// (0: no backup; server default rollback_retention_secs when omitted).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=2_592_000))]
        retention: Option<u64>,
        /// Print only the migration id.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show one migration, or all of them as a table.
    Status {
        /// Migration id (all migrations when omitted).
        #[arg(conflicts_with = "all")]
        id: Option<String>,
        /// Show every migration.
        #[arg(long)]
        all: bool,
    },
    /// Live view of running migrations until they finish (exit 0 when all completed).
    Watch {
        /// Migration id (every running migration when omitted; ends at once if none is).
        #[arg(conflicts_with = "all")]
        id: Option<String>,
        /// Watch every running migration, including ones started while watching; with none
        /// running yet, wait for one (until Ctrl-C or --timeout-s).
        #[arg(long)]
        all: bool,
        /// Refresh interval.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
        interval_ms: u64,
        /// Give up (exit 4) after this many seconds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_s: Option<u64>,
    },
    /// Hand the tenant over to the target (the source answers -MOVED afterwards).
    Cutover {
        id: String,
        /// Cut over even when the lag is above cutover_max_lag.
        #[arg(long)]
        force: bool,
        /// Incremental migrations: hand over only this pattern's keys (the last one completes
        /// the migration).
        #[arg(long, value_name = "GLOB", conflicts_with = "retry")]
        pattern: Option<String>,
        /// After a failed cutover: re-ask the target to activate, or resume and cut over once
        /// live again (CUTOVER RETRY).
        #[arg(long)]
        retry: bool,
        /// With --retry: the target's password, for a migration started with one after this
        /// server restarted (restarts do not keep it).
        #[arg(long, value_name = "PASSWORD", requires = "retry")]
        target_password: Option<String>,
    },
    /// Compare source and target checksums (exit 0 only when verified).
    Verify {
        id: String,
        /// Incremental migrations: verify only this (moved) pattern's keys.
        #[arg(long, value_name = "GLOB")]
        pattern: Option<String>,
    },
    /// Stop shipping changes for now (changes are still captured).
    Pause { id: String },
    /// Resume a paused migration, retry a failed one.
    Resume {
        id: String,
        /// The target's password, for a migration started with one after this server
        /// restarted (restarts do not keep it).
        #[arg(long, value_name = "PASSWORD")]
        target_password: Option<String>,
    },
    /// Stop the migration; the source keeps the tenant, the target drops its copy.
    Cancel {
        id: String,
        /// The target's password, for a migration started with one after this server
        /// restarted: without it the target's copy is left to its reaper.
        #[arg(long, value_name = "PASSWORD")]
        target_password: Option<String>,
    },
    /// End a continuous sync; the source keeps the tenant, the target keeps its copy.
    Stop {
        id: String,
        /// Stop now and list what the target may be missing (default: graceful, the target
        /// consistent as of a reported instant).
        #[arg(long)]
        immediate: bool,
    },
    /// After a cutover: move the tenant back to this server (the old source, kept up to date
    /// as a backup), with a cutover's guarantees.
    Rollback { id: String },
    /// After a cutover: declare the migration final (ends the backup, frees the old copies).
    Finalize { id: String },
}

/// `ferrite-cli backup ...`.
#[derive(Debug, Parser)]
#[command(
    name = "ferrite-cli backup",
    bin_name = "ferrite-cli backup",
    about = "Back up tenants, list and inspect backups, restore and delete them (as administrator)"
)]
pub struct BackupCli {
    /// Print replies as JSON objects (`list`: an array of them).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub cmd: BackupCmd,
}

/// The file format of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackupFormat {
    /// Ferrite's own checksummed format.
    Native,
    /// A Redis RDB file that redis-server loads.
    Rdb,
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Back up a tenant while it keeps serving (waits until the file is complete; prints the id).
    Create {
        /// The tenant to back up.
        tenant: String,
        /// The backup's id (default: backup_<yyyymmddThhmmssZ>_<tenant>).
        #[arg(long, value_name = "ID")]
        name: Option<String>,
        #[arg(long, value_enum, default_value_t = BackupFormat::Native)]
        format: BackupFormat,
        /// Print only the backup id.
        #[arg(short, long)]
        quiet: bool,
        /// No progress bar (there is none anyway when stdout is not a terminal).
        #[arg(long)]
        no_progress: bool,
    },
    /// List backups (of one tenant), oldest first, with the ones being written.
    List {
        /// Only this tenant's backups.
        tenant: Option<String>,
    },
    /// Show one backup.
    Info { id: String },
    /// Replace a tenant's data with a backup of it (or with a Redis RDB file on the server).
    Restore {
        /// The tenant the backup is of (and, without --as, the one whose data is replaced).
        tenant: String,
        /// The backup id.
        #[arg(required_unless_present = "rdb")]
        id: Option<String>,
        /// Restore into this tenant instead (created if missing).
        #[arg(long = "as", value_name = "TENANT", conflicts_with = "rdb")]
        as_tenant: Option<String>,
        /// Replace the data of a destination that holds keys.
        #[arg(long)]
        replace: bool,
        /// Load this Redis RDB file (a path on the server) into <TENANT> instead of a backup.
        #[arg(long, value_name = "PATH", conflicts_with = "id")]
        rdb: Option<String>,
        /// With --rdb: the file's database to load (default 0, refusing keys elsewhere).
        #[arg(long, value_name = "N", requires = "rdb", conflicts_with = "id")]
        db: Option<u64>,
        /// No progress bar (there is none anyway when stdout is not a terminal).
        #[arg(long)]
        no_progress: bool,
    },
    /// Delete a backup's files.
    Delete { id: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
        MigrateCli::command().debug_assert();
        BackupCli::command().debug_assert();
    }

    #[test]
    fn backup_arguments() {
        let parse = |words: &[&str]| BackupCli::try_parse_from(words).map(|b| b.cmd);
        match parse(&[
            "backup",
            "restore",
            "acme",
            "b1",
            "--as",
            "acme2",
            "--replace",
        ]) {
            Ok(BackupCmd::Restore {
                tenant,
                id,
                as_tenant,
                replace,
                rdb,
                ..
            }) => {
                assert_eq!(tenant, "acme");
                assert_eq!(id.as_deref(), Some("b1"));
                assert_eq!(as_tenant.as_deref(), Some("acme2"));
                assert!(replace && rdb.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&[
                "backup",
                "restore",
                "acme",
                "--rdb",
                "/tmp/d.rdb",
                "--db",
                "2"
            ]),
            Ok(BackupCmd::Restore {
                id: None,
                db: Some(2),
                ..
            })
        ));
        // A restore needs a backup or a file, not both; --as and --db fit only one of them.
        assert!(parse(&["backup", "restore", "acme"]).is_err());
        assert!(parse(&["backup", "restore", "acme", "b1", "--rdb", "/x"]).is_err());
        assert!(parse(&["backup", "restore", "acme", "--rdb", "/x", "--as", "b"]).is_err());
        assert!(parse(&["backup", "restore", "acme", "b1", "--db", "1"]).is_err());
        assert!(matches!(
            parse(&[
                "backup", "create", "acme", "--format", "rdb", "--name", "n1", "-q"
            ]),
            Ok(BackupCmd::Create {
                format: BackupFormat::Rdb,
                quiet: true,
                ..
            })
        ));
        assert!(parse(&["backup", "create", "acme", "--format", "tar"]).is_err());
        assert!(BackupCli::try_parse_from(["backup", "--json", "list"]).is_ok_and(|b| b.json));
        assert!(BackupCli::try_parse_from(["backup", "list", "--json"]).is_ok_and(|b| b.json));
    }

    #[test]
    fn command_words_are_not_options() {
        let cli = Cli::try_parse_from(["ferrite-cli", "-p", "7000", "SET", "k", "-1", "--raw"])
            .expect("parse");
        assert_eq!(cli.conn.port, 7000);
        assert_eq!(cli.command, ["SET", "k", "-1", "--raw"]);
        assert!(!cli.raw);
    }

    #[test]
    fn command_words_may_be_any_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let bin = std::ffi::OsStr::from_bytes(b"\xff\x00a");
        let cli = Cli::try_parse_from([
            std::ffi::OsStr::new("ferrite-cli"),
            std::ffi::OsStr::new("SET"),
            std::ffi::OsStr::new("k"),
            bin,
        ])
        .expect("non-UTF-8 arguments are accepted");
        assert_eq!(cli.command[2].as_bytes(), b"\xff\x00a");
    }

    #[test]
    fn hints_name_ipv6_hosts_without_brackets() {
        assert_eq!(host_port_flags("127.0.0.1:6379"), "-h 127.0.0.1 -p 6379");
        assert_eq!(host_port_flags("[::1]:20106"), "-h ::1 -p 20106");
        assert_eq!(
            host_port_flags("[fe80::1%eth0]:7000"),
            "-h fe80::1%eth0 -p 7000"
        );
        assert_eq!(host_port_flags("db.example:1"), "-h db.example -p 1");
    }

    #[test]
    fn user_needs_password() {
        assert!(Cli::try_parse_from(["ferrite-cli", "--user", "acme", "PING"]).is_err());
        assert!(Cli::try_parse_from(["ferrite-cli", "-2", "-3"]).is_err());
        assert!(
            Cli::try_parse_from(["ferrite-cli", "--bogus", "PING"]).is_err(),
            "an unknown flag before the command is a usage error, not a command"
        );
    }
}
