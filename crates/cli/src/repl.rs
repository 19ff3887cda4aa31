//! The interactive prompt (rustyline: history in `~/.ferrite_cli_history`, Tab completes command
//! names), the same loop over standard input when it is not a terminal, and redis-cli's rules for
//! splitting a line into arguments.

use std::borrow::Cow;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use ferrite_client::value;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};
use tokio::runtime::Runtime;

use crate::args::{BackupCli, MigrateCli};
use crate::output::Format;
use crate::session::{Failure, Session, connection_message, error_text, exit};

/// Used when the server does not answer `COMMAND LIST` (e.g. an older Redis).
#[rustfmt::skip]
const BUILTIN_COMMANDS: &[&str] = &[
    "append", "auth", "client", "command", "config", "copy", "dbsize", "decr", "decrby", "del",
    "echo", "exists", "expire", "expireat", "expiretime", "flushall", "flushdb", "get", "getdel",
    "getex", "getrange", "getset", "hdel", "hello", "hexists", "hget", "hgetall", "hincrby",
    "hincrbyfloat", "hkeys", "hlen", "hmget", "hmset", "hrandfield", "hscan", "hset", "hsetnx",
    "hstrlen", "hvals", "incr", "incrby", "incrbyfloat", "info", "keys", "lindex", "linsert",
    "llen", "lmove", "lpop", "lpos", "lpush", "lpushx", "lrange", "lrem", "lset", "ltrim", "mget",
    "mset", "msetnx", "multi", "exec", "discard", "watch", "unwatch", "persist", "pexpire",
    "pexpireat", "pexpiretime", "ping", "psetex", "pttl", "quit", "randomkey", "rename",
    "renamenx", "reset", "rpop", "rpoplpush", "rpush", "rpushx", "sadd", "scan", "scard", "sdiff",
    "sdiffstore", "select", "set", "setex", "setnx", "setrange", "shutdown", "sinter",
    "sintercard", "sinterstore", "sismember", "smembers", "smismember", "smove", "spop",
    "srandmember", "srem", "sscan", "strlen", "sunion", "sunionstore", "tenant.create",
    "tenant.delete", "tenant.digest", "tenant.info", "tenant.list", "tenant.migrate",
    "tenant.migrate.approve", "tenant.migrate.cancel", "tenant.migrate.cutover",
    "tenant.migrate.pause", "tenant.migrate.reject", "tenant.migrate.resume",
    "tenant.migrate.status", "tenant.migrate.stop", "tenant.migrate.rollback", "tenant.migrate.finalize", "tenant.migrate.update",
    "tenant.migrate.verify", "tenant.use", "time", "touch", "ttl", "type", "unlink", "zadd",
    "zcard", "zcount", "zincrby", "zmscore", "zpopmax", "zpopmin", "zrandmember", "zrange",
    "zrangebyscore", "zrank", "zrem", "zremrangebyrank", "zremrangebyscore", "zrevrange",
    "zrevrank", "zscan", "zscore",
];

/// Words the CLI handles itself.
const LOCAL_COMMANDS: &[&str] = &["backup", "clear", "exit", "help", "migrate", "quit"];

const MIGRATE_SUBCOMMANDS: &[&str] = &[
    "cancel", "cutover", "pause", "resume", "start", "status", "verify", "watch",
];

const BACKUP_SUBCOMMANDS: &[&str] = &["create", "delete", "info", "list", "restore"];

const HELP: &str = "\
Type a command as you would in redis-cli, e.g. SET greeting hello (Tab completes command names).
  migrate start|status|watch|cutover|verify|pause|resume|cancel ...   migrations (migrate --help)
  backup create|list|info|restore|delete ...   backups (backup --help)
  AUTH <tenant> <password>    reconnect as a tenant
  clear                       clear the screen
  quit | exit                 leave (so do Ctrl-D and Ctrl-C)";

/// Splits a line like redis-cli (`sdssplitargs`): the server's own inline-command splitter.
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    ferrite_protocol::request::split_command_line(line).map_err(|_| "Invalid argument(s)")
}

/// Words after which (or `word=` in front of) a line carries a secret.
const SECRET_WORDS: &[&str] = &[
    "auth",
    "password",
    "requirepass",
    "--target-password",
    "migration-token",
];

/// Lines that carry secrets are kept out of the history file (as redis-cli does for AUTH),
/// whether the secret follows the word or is joined to it (`--target-password=pw`).
fn is_sensitive(args: &[Vec<u8>]) -> bool {
    args.iter().any(|a| {
        let w = String::from_utf8_lossy(a).to_ascii_lowercase();
        let word = w.split_once('=').map_or(w.as_str(), |(word, _)| word);
        SECRET_WORDS.contains(&word)
    })
}

fn history_path() -> Option<PathBuf> {
    match std::env::var_os("FERRITE_CLI_HISTFILE") {
        Some(p) if p.is_empty() || p == "/dev/null" => None,
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ferrite_cli_history")),
    }
}

/// Command names for completion: the server's `COMMAND LIST`, or the built-in list.
async fn command_names(s: &mut Session) -> Vec<String> {
    let from_server: Vec<String> = match s.cmd(&["COMMAND", "LIST"]).await {
        Ok(f) => value::as_array(&f)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| value::as_string(n).ok())
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut names = if from_server.is_empty() {
        BUILTIN_COMMANDS.iter().map(|s| s.to_string()).collect()
    } else {
        from_server
    };
    names.extend(LOCAL_COMMANDS.iter().map(|s| s.to_string()));
    names.sort();
    names.dedup();
    names
}

/// Completes the command name (first word) and `migrate`'s or `backup`'s subcommand (second
/// word).
struct CommandHelper {
    /// Lower-case names, sorted.
    commands: Vec<String>,
}

impl Completer for CommandHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let prefix = &before[start..];
        let earlier: Vec<&str> = before[..start].split_whitespace().collect();
        let pool: Vec<&str> = match earlier.as_slice() {
            [] => self.commands.iter().map(String::as_str).collect(),
            [first] if first.eq_ignore_ascii_case("migrate") => MIGRATE_SUBCOMMANDS.to_vec(),
            [first] if first.eq_ignore_ascii_case("backup") => BACKUP_SUBCOMMANDS.to_vec(),
            _ => return Ok((pos, Vec::new())),
        };
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        // Answer in the case the user types in: `hge` → `hgetall`, `HGE` → `HGETALL`.
        let upper = prefix.chars().any(|c| c.is_ascii_uppercase());
        let lower_prefix = prefix.to_ascii_lowercase();
        let candidates = pool
            .into_iter()
            .filter(|c| c.starts_with(&lower_prefix))
            .map(|c| {
                let name = if upper {
                    c.to_ascii_uppercase()
                } else {
                    c.to_string()
                };
                Pair {
                    display: name.clone(),
                    replacement: format!("{name} "),
                }
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for CommandHelper {
    type Hint = String;
}

impl Highlighter for CommandHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        Cow::Borrowed(line)
    }
}

impl Validator for CommandHelper {}

impl Helper for CommandHelper {}

fn prompt(s: &Session) -> String {
    match &s.tenant {
        Some(t) => format!("{}[{t}]> ", s.addr()),
        None => format!("{}> ", s.addr()),
    }
}

/// What one input line asked for.
enum Step {
    Continue,
    Quit,
}

/// Parses a `migrate ...` or `backup ...` line with its own parser (`P`) and runs it; usage
/// errors are printed with the usage and the prompt goes on.
fn run_subcommands<P: Parser + CommandFactory, F>(args: &[Vec<u8>], run: F) -> (Step, bool)
where
    F: FnOnce(P) -> Result<u8, Failure>,
{
    let words: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    match P::try_parse_from(words) {
        Ok(parsed) => match run(parsed) {
            Ok(code) => (Step::Continue, code != exit::OK),
            Err(f) => {
                eprintln!("{}", f.message);
                (Step::Continue, true)
            }
        },
        Err(e) => {
            let failed = e.use_stderr();
            let _ = e.print();
            if failed && !e.to_string().contains("Usage:") {
                eprintln!("\n{}", P::command().render_usage());
            }
            (Step::Continue, failed)
        }
    }
}

/// Runs one line (shared by the prompt and stdin mode). Returns whether the line failed.
fn run_line(rt: &Runtime, s: &mut Session, args: &[Vec<u8>], format: Format) -> (Step, bool) {
    let word = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    match word.as_str() {
        "quit" | "exit" if args.len() == 1 => return (Step::Quit, false),
        "help" if args.len() == 1 => {
            outln!("{HELP}");
            return (Step::Continue, false);
        }
        "clear" if args.len() == 1 => {
            out!("\x1b[H\x1b[2J");
            return (Step::Continue, false);
        }
        "migrate" => {
            return run_subcommands::<MigrateCli, _>(args, |m| {
                let format = if m.json { Format::Json } else { format };
                rt.block_on(crate::migrate::run(s, m.cmd, format))
            });
        }
        "backup" => {
            return run_subcommands::<BackupCli, _>(args, |b| {
                let format = if b.json { Format::Json } else { format };
                rt.block_on(crate::backup::run(s, b.cmd, format))
            });
        }
        "auth" if matches!(args.len(), 2 | 3) => return (Step::Continue, reauth(rt, s, args)),
        _ => {}
    }
    let before = s.addr().to_string();
    let r = rt.block_on(s.cmd(args));
    if s.addr() != before {
        outln!("-> Redirected to {}", s.addr());
    }
    match r {
        Ok(f) => {
            crate::emit_bytes(&crate::render_reply(args, &f, format));
            (Step::Continue, false)
        }
        Err(e) if e.is_connection_error() => {
            outln!(
                "{}; reconnecting on the next command",
                connection_message(&e, s.addr())
            );
            (Step::Continue, true)
        }
        Err(e) => {
            outln!("{}", error_text(&e, format));
            (Step::Continue, true)
        }
    }
}

/// `AUTH` reconnects with the new credentials, so that they survive reconnects and redirects and
/// the prompt shows the tenant.
fn reauth(rt: &Runtime, s: &mut Session, args: &[Vec<u8>]) -> bool {
    let text = |i: usize| String::from_utf8_lossy(&args[i]).into_owned();
    let mut opts = s.options.clone();
    opts.addr = s.addr().to_string();
    if args.len() == 3 && text(1) != "default" {
        opts = opts.tenant(text(1), text(2));
    } else {
        opts.tenant = None;
        opts = opts.password(text(args.len() - 1));
    }
    match rt.block_on(Session::connect(opts, s.resp2())) {
        Ok(n) => {
            *s = n;
            outln!("OK");
            false
        }
        Err(f) => {
            outln!("{}", f.message);
            true
        }
    }
}

/// The interactive prompt. Errors are printed and the prompt goes on; a lost connection is
/// re-established by the next command.
pub fn interactive(rt: &Runtime, mut s: Session, format: Format) -> Result<u8, Failure> {
    let commands = rt.block_on(command_names(&mut s));
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .history_ignore_space(true)
        .build();
    let mut ed: Editor<CommandHelper, DefaultHistory> = Editor::with_config(config)
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot open the terminal: {e}")))?;
    ed.set_helper(Some(CommandHelper { commands }));
    let history = history_path();
    if let Some(p) = &history {
        // A missing history file is the normal first run.
        let _ = ed.load_history(p);
    }
    loop {
        let line = match ed.readline(&prompt(&s)) {
            Ok(line) => line,
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => break,
            Err(e) => {
                return Err(Failure::new(
                    exit::FAILED,
                    format!("cannot read input: {e}"),
                ));
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let args = match split_args(line.as_bytes()) {
            Ok(a) => a,
            Err(msg) => {
                outln!("{msg}");
                continue;
            }
        };
        if !is_sensitive(&args) {
            let _ = ed.add_history_entry(line.as_str());
            if let Some(p) = &history {
                // Saved after every line so a killed session keeps its history; a read-only home
                // only costs the history.
                let _ = ed.save_history(p);
            }
        }
        if let (Step::Quit, _) = run_line(rt, &mut s, &args, format) {
            break;
        }
    }
    Ok(exit::OK)
}

/// Standard input is not a terminal: run one command per line, print replies, exit 1 if any
/// command failed (3 if the server cannot be reached). Lines are bytes: values need not be
/// UTF-8.
pub fn from_stdin(rt: &Runtime, mut s: Session, format: Format) -> Result<u8, Failure> {
    use std::io::BufRead;
    let mut failed = false;
    let mut input = std::io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::new(exit::FAILED, format!("cannot read input: {e}")))?;
        if n == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let args = match split_args(text) {
            Ok(a) => a,
            Err(msg) => {
                eprintln!("{msg}: {}", String::from_utf8_lossy(text));
                failed = true;
                continue;
            }
        };
        let word = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        if matches!(word.as_str(), "quit" | "exit") && args.len() == 1 {
            break;
        }
        if matches!(word.as_str(), "migrate" | "backup" | "auth") {
            let (step, f) = run_line(rt, &mut s, &args, format);
            failed |= f;
            if let Step::Quit = step {
                break;
            }
            continue;
        }
        match rt.block_on(s.cmd(&args)) {
            Ok(f) => crate::emit_bytes(&crate::render_reply(&args, &f, format)),
            Err(e) if e.is_connection_error() => {
                return Err(Failure::from_client(&e, s.addr()));
            }
            Err(e) => {
                eprintln!("{}", error_text(&e, format));
                failed = true;
            }
        }
    }
    Ok(if failed { exit::FAILED } else { exit::OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_args(line.as_bytes())
            .expect("valid")
            .into_iter()
            .map(|w| String::from_utf8_lossy(&w).into_owned())
            .collect()
    }

    #[test]
    fn splits_like_redis_cli() {
        assert_eq!(words("  SET  k v "), ["SET", "k", "v"]);
        assert_eq!(words(r#"SET k "a b\n\x41""#), ["SET", "k", "a b\nA"]);
        assert_eq!(words(r#"SET k 'it\'s "x"'"#), ["SET", "k", "it's \"x\""]);
        assert_eq!(words(r#"SET k """#), ["SET", "k", ""]);
        assert!(split_args(br#"SET k "open"#).is_err());
        assert!(split_args(br#"SET k "a"b"#).is_err());
        assert!(words("").is_empty());
        // Quotes may start in the middle of a word; a closing quote must end it.
        assert_eq!(words(r#"SET q1 a"b c""#), ["SET", "q1", "ab c"]);
        assert_eq!(words(r#"SET q2 x'y z' w"#), ["SET", "q2", "xy z", "w"]);
        assert_eq!(words(r#"SET q3 a"b\x41""#), ["SET", "q3", "abA"]);
        assert!(split_args(br#"SET q1 a"b c"d"#).is_err());
        assert!(split_args(br#"SET q1 'b c'd"#).is_err());
        assert!(split_args(br#"SET q1 a"b c"#).is_err());
        // Escapes at the edges: `\x` without hex digits is `x`; a lone backslash before the
        // end leaves the quote open.
        assert_eq!(words(r#"SET k "\xZZ\q""#), ["SET", "k", "xZZq"]);
        assert!(split_args(br#"SET k "abc\"#).is_err());
        // Bytes, not UTF-8: a non-UTF-8 byte is an ordinary byte of the word.
        assert_eq!(
            split_args(b"SET bin \xff\xfe").unwrap()[2],
            b"\xff\xfe".to_vec()
        );
    }

    #[test]
    fn secrets_stay_out_of_history() {
        let s = |l: &str| is_sensitive(&split_args(l.as_bytes()).expect("valid"));
        assert!(s("AUTH acme pw"));
        assert!(s("TENANT.CREATE acme PASSWORD pw"));
        assert!(s("migrate start acme h:1 --target-password x"));
        assert!(s("migrate start acme h:1 --target-password=x"));
        assert!(s("migrate start acme h:1 --TARGET-PASSWORD=x --mode live"));
        assert!(!s("SET k v"));
        assert!(!s("SET password-reset v"));
    }

    #[test]
    fn completes_in_the_users_case() {
        let h = CommandHelper {
            commands: vec!["get".into(), "getdel".into(), "hgetall".into()],
        };
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, c) = h.complete("HGETA", 5, &ctx).expect("complete");
        assert_eq!(start, 0);
        assert_eq!(c[0].replacement, "HGETALL ");
        let (_, c) = h.complete("get", 3, &ctx).expect("complete");
        assert_eq!(c.len(), 2);
        let (start, c) = h.complete("migrate st", 10, &ctx).expect("complete");
        assert_eq!(start, 8);
        let names: Vec<&str> = c.iter().map(|p| p.display.as_str()).collect();
        assert_eq!(names, ["start", "status"]);
        let (start, c) = h.complete("BACKUP RE", 9, &ctx).expect("complete");
        assert_eq!(start, 7);
        let names: Vec<&str> = c.iter().map(|p| p.display.as_str()).collect();
        assert_eq!(names, ["RESTORE"]);
        let (_, c) = h.complete("SET ke", 6, &ctx).expect("complete");
        assert!(c.is_empty(), "arguments are not completed");
    }
}
