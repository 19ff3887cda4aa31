//! `ferrite-cli backup ...` against a real server: create → list → info → restore as a new
//! tenant (whose keys are the backup's, not what was written after it) → delete; `--json`, `-q`,
//! the errors a user meets (unknown backup, a destination with keys, bad arguments); and the
//! progress bar's path in a real terminal (tmux).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Server;
use crate::{admin_cli_command, cli, cli_bin, cli_ok, run, run_cmd, server};

/// Loads `n` string keys into `tenant` through the CLI's standard-input mode.
fn load(s: &Server, tenant: &str, n: usize) {
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("SET key:{i} value-{i}\n"));
    }
    let port = s.port.to_string();
    let r = run(&["-p", &port, "--user", tenant, "-a", "pw"], Some(&input));
    assert_eq!(r.code, 0, "loading keys: {}", r.stderr);
}

/// Runs `commands` (one per line) as administrator inside `tenant` (TENANT.USE first) and
/// returns the `--raw` replies, one line each, without TENANT.USE's.
fn as_admin_in(s: &Server, tenant: &str, commands: &[&str]) -> Vec<String> {
    let port = s.port.to_string();
    let input = format!("TENANT.USE {tenant}\n{}\n", commands.join("\n"));
    let r = run_cmd(admin_cli_command(s, &["-p", &port, "--raw"]), Some(&input));
    assert_eq!(r.code, 0, "{commands:?} in {tenant}: {r:?}");
    r.stdout.lines().skip(1).map(str::to_string).collect()
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn create_list_info_restore_as_new_tenant_delete() {
    let s = server(&[]);
    cli_ok(&s, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    load(&s, "acme", 3000);

    // create: one line with the details, and how to restore it.
    let out = cli_ok(&s, &["backup", "create", "acme"]);
    let first = out.lines().next().unwrap_or_default();
    let id = first
        .strip_prefix("Created backup ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no Created line: {out}"))
        .to_string();
    assert!(id.starts_with("backup_") && id.ends_with("_acme"), "{out}");
    assert!(
        first.contains(" of tenant acme: 3,000 keys, ") && first.contains("(native) in "),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Restore it with: ferrite-cli -h 127.0.0.1 -p {} backup restore acme {id} [--as <new-tenant>]\n",
            s.port
        )),
        "{out}"
    );
    // Stdout is a pipe here: no progress bar, no terminal escapes.
    assert!(!out.contains('\x1b') && !out.contains('\r'), "{out:?}");

    // A write after the backup must not come back with the restore.
    cli_ok(
        &s,
        &["--user", "acme", "-a", "pw", "SET", "after", "backup"],
    );

    // -q prints only the id; --json the backup as INFO describes it.
    let named = cli_ok(
        &s,
        &["backup", "create", "acme", "--name", "nightly-1", "-q"],
    );
    assert_eq!(named, "nightly-1\n");
    let rdb = json(&cli_ok(
        &s,
        &[
            "backup", "create", "acme", "--name", "as-rdb", "--format", "rdb", "--json",
        ],
    ));
    assert_eq!(rdb["id"], "as-rdb");
    assert_eq!(rdb["format"], "rdb");
    assert_eq!(rdb["keys"], 3001);
    assert_eq!(rdb["status"], "complete");

    // list: a table, oldest first; --json an array of objects; --raw the ids.
    let table = cli_ok(&s, &["backup", "list", "acme"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("complete"),
        "{table}"
    );
    assert!(
        lines[1].contains("3,000") && lines[1].contains("native"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("nightly-1 ") && lines[2].contains("3,001"),
        "{table}"
    );
    assert!(
        lines[3].starts_with("as-rdb ") && lines[3].contains(" rdb "),
        "{table}"
    );
    let listed = json(&cli_ok(&s, &["backup", "list", "--json"]));
    let ids: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [id.as_str(), "nightly-1", "as-rdb"], "{listed}");
    assert_eq!(
        cli_ok(&s, &["--raw", "backup", "list"]),
        format!("{id}\nnightly-1\nas-rdb\n")
    );
    assert_eq!(
        cli_ok(&s, &["backup", "list", "nobody"]),
        format!("No backups of tenant nobody on 127.0.0.1:{}.\n", s.port)
    );

    // info: a block; --json (also over RESP2) an object with numbers.
    let info = cli_ok(&s, &["backup", "info", &id]);
    assert!(
        info.starts_with(&format!("Backup {id} of tenant acme: complete\n")),
        "{info}"
    );
    assert!(info.contains("  keys      3,000\n"), "{info}");
    assert!(info.contains("  format    native\n"), "{info}");
    assert!(info.contains(&format!("{id}.fbak")), "{info}");
    for proto in ["-2", "-3"] {
        let j = json(&cli_ok(&s, &[proto, "--json", "backup", "info", &id]));
        assert_eq!(j["keys"], 3000, "{proto}: {j}");
        assert_eq!(j["tenant"], "acme", "{proto}: {j}");
        assert!(j["size"].as_u64().is_some_and(|n| n > 0), "{proto}: {j}");
    }

    // restore as a new tenant: its keys are the backup's.
    let out = cli_ok(&s, &["backup", "restore", "acme", &id, "--as", "acme2"]);
    assert!(
        out.starts_with(&format!(
            "Restored backup {id} into tenant acme2: 3,000 keys in "
        )),
        "{out}"
    );
    assert_eq!(
        as_admin_in(
            &s,
            "acme2",
            &["DBSIZE", "GET key:0", "GET key:2999", "EXISTS after"]
        ),
        ["3000", "value-0", "value-2999", "0"]
    );
    // Its digest is the one the backup recorded.
    let digest = json(&cli_ok(&s, &["--json", "backup", "info", &id]))["digest"].clone();
    assert!(digest.as_str().is_some_and(|d| !d.is_empty()), "{digest}");

    // Again into the same tenant: refused without --replace (exit 1, the server's words and
    // the flag to use), then done with it; the RDB backup restores too.
    let r = cli(
        &s,
        &["backup", "restore", "acme", "as-rdb", "--as", "acme2"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("(error) BUSYKEY tenant 'acme2' holds 3000 keys"),
        "{r:?}"
    );
    assert!(r.stderr.contains("--replace"), "{r:?}");
    let j = json(&cli_ok(
        &s,
        &[
            "backup",
            "restore",
            "acme",
            "as-rdb",
            "--as",
            "acme2",
            "--replace",
            "--json",
        ],
    ));
    assert_eq!(j["tenant"], "acme2");
    assert_eq!(j["source"], "as-rdb");
    assert_eq!(j["keys"], 3001);
    assert!(j["took_ms"].is_u64(), "{j}");
    assert_eq!(
        as_admin_in(&s, "acme2", &["DBSIZE", "GET after"]),
        ["3001", "backup"]
    );
    // restore --rdb: any RDB file on the server (here the RDB backup's own file).
    let rdb = json(&cli_ok(&s, &["--json", "backup", "info", "as-rdb"]))["path"]
        .as_str()
        .expect("path")
        .to_string();
    let j = json(&cli_ok(
        &s,
        &["backup", "restore", "acme3", "--rdb", &rdb, "--json"],
    ));
    assert_eq!(j["tenant"], "acme3");
    assert_eq!(j["source"], format!("rdb:{rdb}"));
    assert_eq!(j["keys"], 3001);
    assert_eq!(
        as_admin_in(&s, "acme3", &["DBSIZE", "GET after"]),
        ["3001", "backup"]
    );

    // delete: gone from info and list; deleting again fails with the server's error.
    assert_eq!(
        cli_ok(&s, &["backup", "delete", &id]),
        format!("Deleted backup {id}.\n")
    );
    let r = cli(&s, &["backup", "info", &id]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr, format!("(error) ERR no such backup '{id}'\n"));
    let r = cli(&s, &["backup", "delete", &id]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no such backup"), "{r:?}");
    assert_eq!(
        cli_ok(&s, &["--raw", "backup", "list"]),
        "nightly-1\nas-rdb\n"
    );
    // The original tenant was never touched.
    assert_eq!(as_admin_in(&s, "acme", &["DBSIZE"]), ["3001"]);
}

#[test]
fn errors_and_usage() {
    let s = server(&[]);
    cli_ok(&s, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    // Server refusals: exit 1 with `(error) <text>` (bare with --raw).
    for (args, text) in [
        (
            &["backup", "create", "nobody"][..],
            "ERR no such tenant 'nobody'",
        ),
        (&["backup", "info", "../etc"], "invalid backup id"),
        (
            &["backup", "restore", "acme", "missing", "--as", "acme2"],
            "ERR no such backup 'missing'",
        ),
        (
            &[
                "backup",
                "restore",
                "acme",
                "--rdb",
                "/nonexistent/dump.rdb",
            ],
            "/nonexistent/dump.rdb",
        ),
    ] {
        let r = cli(&s, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.starts_with("(error) "), "{args:?}: {r:?}");
        assert!(r.stderr.contains(text), "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
    let r = cli(&s, &["--raw", "backup", "info", "missing"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "ERR no such backup 'missing'\n")
    );
    // A name that exists is refused.
    cli_ok(&s, &["backup", "create", "acme", "--name", "b1"]);
    let r = cli(&s, &["backup", "create", "acme", "--name", "b1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("already exists"), "{r:?}");
    // Usage errors: exit 2 with the usage, nothing sent.
    for args in [
        &["backup"][..],
        &["backup", "restore", "acme"],
        &["backup", "restore", "acme", "b1", "--rdb", "/x"],
        &["backup", "restore", "acme", "b1", "--db", "1"],
        &["backup", "create", "acme", "--format", "zip"],
        &["backup", "frobnicate"],
    ] {
        let r = cli(&s, args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("Usage: ferrite-cli backup"),
            "{args:?}: {r:?}"
        );
    }
    let help = cli_ok(&s, &["backup", "--help"]);
    for sub in ["create", "list", "info", "restore", "delete"] {
        assert!(help.contains(sub), "{help}");
    }
    // Not administrator: the server's refusal.
    let r = cli(&s, &["--user", "acme", "-a", "pw", "backup", "list"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("(error) "), "{r:?}");
    // The prompt's standard-input mode runs backup lines too.
    let port = s.port.to_string();
    let r = run_cmd(
        admin_cli_command(&s, &["-p", &port]),
        Some("backup list acme\nbackup info nope\n"),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.starts_with("ID "), "{r:?}");
    assert!(r.stderr.contains("no such backup 'nope'"), "{r:?}");
}

/// Loads `n` string keys into `tenant` quickly (pipelines of 10,000 SETs).
fn load_fast(s: &Server, tenant: &str, n: usize) {
    let mut c = s.tenant_conn(tenant, "pw");
    let mut i = 0;
    while i < n {
        let mut p = redis::pipe();
        for k in i..n.min(i + 10_000) {
            p.cmd("SET")
                .arg(format!("key:{k}"))
                .arg(format!("value-{k}"))
                .ignore();
        }
        p.query::<()>(&mut c).expect("load keys");
        i += 10_000;
    }
}

/// In a terminal, `create` and `restore` draw their bar while they wait (from
/// TENANT.BACKUP.JOBS, with the key counts) and clear it before printing the result (the same
/// lines as without a terminal).
#[test]
fn progress_bar_in_a_terminal_leaves_the_result() {
    let s = server(&[]);
    cli_ok(&s, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    load_fast(&s, "acme", 500_000);
    let tmux = TmuxServer {
        socket: format!("ferrite-cli-backup-test-{}", std::process::id()),
    };
    let script = format!(
        "export FERRITE_CLI_AUTH='{secret}' FERRITE_CLI_HISTFILE=/dev/null; \
         {bin} -p {port} backup create acme --name tty1 --format rdb; echo EXIT1=$?; \
         {bin} -p {port} backup restore acme tty1 --as tty2; echo EXIT2=$?; sleep 60",
        secret = s.admin_secret(),
        bin = cli_bin(),
        port = s.port
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "30",
        "-s",
        "main",
        &script,
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Lines of the screen that showed the backup's bar with its key counts.
    let mut bars = Vec::new();
    let screen = loop {
        let out = tmux.run(&["capture-pane", "-p", "-t", "main"]);
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if screen.contains("EXIT2=") {
            break screen;
        }
        if let Some(bar) = screen
            .lines()
            .find(|l| l.contains("Backing up acme") && l.contains("/500,000 keys"))
        {
            bars.push(bar.to_string());
        }
        assert!(Instant::now() < deadline, "no result; screen:\n{screen}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !bars.is_empty(),
        "the backup's bar never showed; the end:\n{screen}"
    );
    assert!(
        bars.iter().all(|b| b.contains("% · writing · ")),
        "{bars:?}"
    );
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines[0].starts_with("Created backup tty1 of tenant acme: 500,000 keys"),
        "{screen}"
    );
    assert!(lines[1].starts_with("Restore it with: "), "{screen}");
    assert_eq!(lines[2], "EXIT1=0", "{screen}");
    assert!(
        lines[3].starts_with("Restored backup tty1 into tenant tty2: 500,000 keys"),
        "{screen}"
    );
    assert_eq!(lines[4], "EXIT2=0", "{screen}");
    assert!(
        !screen.contains("Backing up") && !screen.contains("Restoring"),
        "the bar was not cleared: {screen}"
    );
    assert_eq!(as_admin_in(&s, "tty2", &["DBSIZE"]), ["500000"]);
}

/// A tmux server of the test's own (its own socket), killed when the test ends.
struct TmuxServer {
    socket: String,
}

impl TmuxServer {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("tmux must be installed (scripts/test.sh installs it)")
    }
}

impl Drop for TmuxServer {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}
