//! `ferrite-cli migrate ...` during a real migration between two servers: start, a watch whose
//! piped output shows the live sync, status, cutover, the watch ending with the outcome, verify,
//! INFO replication on the target; and a cancelled migration making watch exit non-zero.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::Server;
use crate::{admin_cli_command, cli, cli_ok, run, run_cmd, server, wait_child};

/// Loads `n` string keys as tenant `acme` through the CLI's standard-input mode.
fn load(s: &Server, tenant: &str, n: usize) {
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("SET key:{i} value-{i}\n"));
    }
    let port = s.port.to_string();
    let r = run(&["-p", &port, "--user", tenant, "-a", "pw"], Some(&input));
    assert_eq!(r.code, 0, "loading keys: {}", r.stderr);
    assert_eq!(r.stdout.lines().count(), n);
}

/// The id from `migrate start`'s "Started migration <id>: ..." line.
fn started_id(out: &str) -> String {
    let rest = out
        .lines()
        .find_map(|l| l.strip_prefix("Started migration "))
        .unwrap_or_else(|| panic!("no start line in {out:?}"));
    rest.split(':').next().unwrap_or_default().to_string()
}

#[test]
fn start_watch_cutover_verify() {
    let src = server(&[]);
    let dst = server(&[]);
    cli_ok(&src, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    load(&src, "acme", 3000);

    let target = dst.addr();
    let out = cli_ok(
        &src,
        &[
            "migrate",
            "start",
            "acme",
            &target,
            "--parallel",
            "2",
            "--batch-size",
            "250",
        ],
    );
    let id = started_id(&out);
    assert!(id.starts_with("mig"), "{out}");
    assert!(out.contains(&format!("acme -> {target}")), "{out}");

    // Watch every migration, stdout piped: one plain line per migration and refresh.
    let port = src.port.to_string();
    let mut watch = admin_cli_command(
        &src,
        &[
            "-p",
            &port,
            "migrate",
            "watch",
            "--all",
            "--interval-ms",
            "100",
            "--timeout-s",
            "120",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start watch");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = watch.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let live_line = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let live = line.contains(&id)
                    && line.contains("state=live_sync")
                    && line.contains("phase=live_sync");
                seen.push(line.clone());
                if live {
                    break line;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("watch ended before live_sync: {seen:?}")
            }
        }
        assert!(Instant::now() < deadline, "no live_sync line: {seen:?}");
    };
    // Each refresh starts with the totals of every migration (the dashboard's top line).
    let totals = seen
        .iter()
        .rev()
        .find(|l| l.contains("] totals "))
        .unwrap_or_else(|| panic!("no totals line: {seen:?}"));
    for field in [
        "migrations=1",
        "running=1",
        "queued=0",
        "waiting=0",
        "keys=3000/3000",
        "keys_per_sec=",
        "bytes_per_sec=",
        "eta=",
    ] {
        assert!(totals.contains(field), "{field} missing from {totals}");
    }
    for field in [
        " acme ",
        "phase=live_sync",
        "progress=100%",
        "keys=3000/3000",
        "keys_per_sec=",
        "lag_keys=",
        "lag_bytes=",
        "lag_seconds=",
        "eta=",
    ] {
        assert!(
            live_line.contains(field),
            "{field} missing from {live_line}"
        );
    }

    // Writes during the live sync are carried over.
    let as_acme = ["--user", "acme", "-a", "pw"];
    let mut args = as_acme.to_vec();
    args.extend(["SET", "during", "live-sync"]);
    cli_ok(&src, &args);

    let status = cli_ok(&src, &["migrate", "status", &id]);
    assert!(status.contains("state     live_sync"), "{status}");
    // keys_total is the tenant's key count now: the 3,000 loaded plus the one just written.
    assert!(status.contains("3,001"), "{status}");
    let table = cli_ok(&src, &["migrate", "status", "--all"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("Totals: migrations=1 running=1 queued=0"),
        "{table}"
    );
    let all: serde_json::Value =
        serde_json::from_str(&cli_ok(&src, &["--json", "migrate", "status", "--all"]))
            .expect("json status --all");
    assert_eq!(all["migrations_total"], 1, "{all}");
    assert_eq!(all["state_live_sync"], 1, "{all}");
    assert!(all["bytes_per_sec"].is_number(), "{all}");
    assert_eq!(all["migrations"][0]["tenant"], "acme", "{all}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("live_sync")),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&src, &["--json", "migrate", "status", &id]))
            .expect("json status");
    assert_eq!(json["tenant"], "acme");
    assert_eq!(json["keys_total"], 3001);
    // Numbers the server sends as text are JSON numbers; text stays text.
    // 100 once the write above has been acknowledged, a hair below while it is in flight.
    assert!(
        json["progress"].as_f64().is_some_and(|p| p > 99.0),
        "{json}"
    );
    assert!(json["keys_per_sec"].is_u64(), "{json}");
    assert!(json["lag_seconds"].is_number(), "{json}");
    assert!(json["duration_seconds"].is_number(), "{json}");
    assert_eq!(json["downtime_ms"], serde_json::Value::Null, "{json}");
    assert_eq!(json["lag_trend"].as_str().map(str::is_empty), Some(false));

    let out = cli_ok(&src, &["migrate", "cutover", &id]);
    assert!(
        out.starts_with(&format!("Cutover of {id}: completed.")),
        "{out}"
    );

    // The watch sees the end, prints the outcome and exits 0.
    let code = wait_child(&mut watch, Duration::from_secs(30), "migrate watch");
    let _ = reader.join();
    seen.extend(rx.try_iter());
    assert_eq!(code, 0, "watch output: {seen:?}");
    let outcome = seen.last().cloned().unwrap_or_default();
    assert!(
        outcome.starts_with(&format!(
            "{id} acme completed: 3,001 keys moved to {target}"
        )),
        "{seen:?}"
    );

    let out = cli_ok(&src, &["migrate", "verify", &id]);
    assert!(
        out.starts_with(&format!("Verification of {id}: verified")),
        "{out}"
    );
    assert!(out.contains("checksum  match"), "{out}");
    // Watching a finished migration reports its outcome at once.
    let out = cli_ok(&src, &["migrate", "watch", &id]);
    assert!(out.contains(&format!("{id} acme verified")), "{out}");

    let info = cli_ok(&dst, &["INFO", "replication"]);
    let import = info
        .lines()
        .find(|l| l.starts_with("import0:"))
        .unwrap_or_else(|| panic!("no import line: {info}"));
    assert!(import.contains("tenant=acme"), "{import}");
    assert!(import.contains(&format!("migration={id}")), "{import}");

    // The tenant's data now answers from the target; the CLI follows the source's -MOVED.
    let mut args = as_acme.to_vec();
    args.extend(["GET", "during"]);
    assert_eq!(cli_ok(&src, &args), "\"live-sync\"\n");
    assert_eq!(cli_ok(&dst, &args), "\"live-sync\"\n");

    // Operations that no longer fit the state fail with the server's reason.
    let r = cli(&src, &["migrate", "cutover", &id]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("(error) ERR migration"), "{r:?}");
}

#[test]
fn cancelled_migration_makes_watch_fail() {
    let src = server(&[]);
    let dst = server(&[]);
    cli_ok(&src, &["TENANT.CREATE", "beta", "PASSWORD", "pw"]);
    load(&src, "beta", 200);
    // Started while nothing runs, `watch --all` waits for a migration instead of ending.
    let port = src.port.to_string();
    let mut watch_all = admin_cli_command(
        &src,
        &[
            "-p",
            &port,
            "migrate",
            "watch",
            "--all",
            "--interval-ms",
            "100",
            "--timeout-s",
            "120",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start watch --all");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = watch_all.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("watch --all says it waits");
    assert!(first.contains("waiting for one to start"), "{first}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        watch_all.try_wait().expect("try_wait").is_none(),
        "watch --all did not end while nothing was running"
    );
    let id = cli_ok(&src, &["migrate", "start", "beta", &dst.addr(), "--quiet"])
        .trim()
        .to_string();
    assert!(id.starts_with("mig") && !id.contains(' '), "{id}");
    let state = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = cli_ok(&src, &["--json", "migrate", "status", &id]);
            let v: serde_json::Value = serde_json::from_str(&out).expect("json status");
            if v["state"] == want {
                return;
            }
            assert!(Instant::now() < deadline, "never {want}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    state("live_sync");
    // A live migration waits for its cutover: watch gives up after its timeout with exit 4.
    let r = cli(&src, &["migrate", "watch", &id, "--timeout-s", "1"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains(&format!("{id} is live_sync")), "{r:?}");
    assert_eq!(
        cli_ok(&src, &["migrate", "pause", &id]),
        format!("Migration {id} paused.\n")
    );
    state("paused");
    assert_eq!(
        cli_ok(&src, &["migrate", "resume", &id]),
        format!("Migration {id} resumed.\n")
    );
    state("live_sync");
    // --target-password reaches the server as AUTH: this migration was started without one,
    // so both are refused there and change nothing.
    let r = cli(&src, &["migrate", "cancel", &id, "--target-password", "x"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("AUTH applies to CANCEL"), "{r:?}");
    let r = cli(
        &src,
        &[
            "migrate",
            "cutover",
            &id,
            "--retry",
            "--target-password",
            "x",
        ],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("AUTH applies to CUTOVER RETRY"), "{r:?}");
    state("live_sync");
    let out = cli_ok(&src, &["migrate", "cancel", &id]);
    assert_eq!(out, format!("Migration {id} cancelled.\n"));
    let r = cli(
        &src,
        &[
            "migrate",
            "watch",
            &id,
            "--interval-ms",
            "100",
            "--timeout-s",
            "30",
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains(&format!("{id} beta cancelled")), "{r:?}");
    let r = cli(&src, &["migrate", "verify", &id]);
    assert_ne!(r.code, 0, "a cancelled migration does not verify: {r:?}");
    // The `watch --all` started before the migration followed it to its end.
    let code = wait_child(
        &mut watch_all,
        Duration::from_secs(30),
        "migrate watch --all",
    );
    let _ = reader.join();
    let seen: Vec<String> = rx.try_iter().collect();
    assert_eq!(code, 1, "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.contains(&id) && l.contains("state=live_sync")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("{id} beta cancelled"))),
        "{seen:?}"
    );
    // Nothing is running now: plain watch has nothing to wait for; --all waits until its
    // timeout (exit 4).
    assert!(cli_ok(&src, &["migrate", "watch"]).starts_with("No running migrations"));
    assert_eq!(cli_ok(&src, &["--json", "migrate", "watch"]), "[]\n");
    let r = cli(&src, &["migrate", "watch", "--all", "--timeout-s", "1"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.contains("waiting for one to start"), "{r:?}");
    assert!(r.stderr.contains("no migration started"), "{r:?}");
    // A target that does not answer is refused at start.
    let nowhere = format!("127.0.0.1:{}", crate::free_port());
    let r = cli(&src, &["migrate", "start", "beta", &nowhere]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(&nowhere), "{r:?}");
}

#[test]
fn the_follow_hint_names_an_ipv6_host_correctly() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let src = server(&["--bind", "::1"]);
    let dst = server(&[]);
    let port = src.port.to_string();
    let on_src = |args: &[&str]| {
        let mut all = vec!["-h", "::1", "-p", &port];
        all.extend_from_slice(args);
        let r = run_cmd(admin_cli_command(&src, &all), None);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        r.stdout
    };
    on_src(&["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    let out = on_src(&["migrate", "start", "acme", &dst.addr()]);
    let id = started_id(&out);
    assert!(
        out.contains(&format!(
            "Follow it with: ferrite-cli -h ::1 -p {port} migrate watch {id}\n"
        )),
        "{out}"
    );
    on_src(&["migrate", "cancel", &id]);
}

#[test]
fn a_continuous_sync_is_started_shown_and_stopped() {
    let src = server(&[]);
    let dst = server(&[]);
    cli_ok(&src, &["TENANT.CREATE", "gamma", "PASSWORD", "pw"]);
    load(&src, "gamma", 300);
    let r = cli(
        &src,
        &[
            "migrate",
            "start",
            "gamma",
            &dst.addr(),
            "--conflict",
            "source-wins",
        ],
    );
    assert_ne!(r.code, 0, "CONFLICT needs --mode continuous: {r:?}");
    assert!(r.stderr.contains("MODE continuous"), "{r:?}");
    let r = cli(
        &src,
        &[
            "migrate",
            "start",
            "gamma",
            &dst.addr(),
            "--conflict",
            "manual",
        ],
    );
    assert_eq!(r.code, 2, "an unknown policy is a usage error: {r:?}");
    let id = cli_ok(
        &src,
        &[
            "migrate",
            "start",
            "gamma",
            &dst.addr(),
            "--mode",
            "continuous",
            "--conflict",
            "newest-wins",
            "-q",
        ],
    )
    .trim()
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&cli_ok(&src, &["--json", "migrate", "status", &id]))
                .expect("json status");
        if v["state"] == "live_sync" && v["lag_keys"] == 0 {
            assert_eq!(v["mode"], "continuous");
            assert_eq!(v["conflict_policy"], "newest_wins");
            assert_eq!(v["catch_up_seconds"], 0.0, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let block = cli_ok(&src, &["migrate", "status", &id]);
    assert!(
        block.contains("catch-up") && block.contains("conflicts"),
        "{block}"
    );
    let out = cli_ok(&src, &["migrate", "stop", &id]);
    assert!(
        out.starts_with(&format!(
            "Sync {id} stopped (graceful); the source keeps the tenant."
        )),
        "{out}"
    );
    assert!(out.contains("consistent as of"), "{out}");
    assert!(out.contains("target copy: kept"), "{out}");
    let r = cli(&src, &["migrate", "watch", &id, "--timeout-s", "10"]);
    assert_eq!(r.code, 0, "stopped is a successful end: {r:?}");
    assert!(r.stdout.contains("consistent as of"), "{r:?}");
    let r = cli(&src, &["migrate", "stop", &id, "--immediate"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("is stopped"), "{r:?}");
}

/// `MODE incremental` through the CLI: start with `--patterns`, cut one pattern over with
/// `cutover --pattern`, then one-shot commands as the tenant follow the per-key redirect (a
/// moved key is read from the target, the others from the source), a command over both sides
/// exits 1 with the CROSSSLOT error, and `verify --pattern` checks the moved pattern.
#[test]
fn incremental_cutover_by_pattern_and_per_key_redirects() {
    let src = server(&[]);
    let dst = server(&[]);
    cli_ok(&src, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    load(&src, "acme", 200);
    let out = cli_ok(
        &src,
        &[
            "migrate",
            "start",
            "acme",
            &dst.addr(),
            "--mode",
            "incremental",
            "--patterns",
            "key:1*",
        ],
    );
    let id = started_id(&out);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cli_ok(&src, &["migrate", "status", &id]);
        if status.contains("live_sync") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reached live sync: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli_ok(&src, &["migrate", "cutover", &id, "--pattern", "key:1*"]);
    assert!(out.contains("pattern 'key:1*': pattern_moved"), "{out}");
    assert!(out.contains("111 keys migrated"), "{out}");

    let port = src.port.to_string();
    let as_tenant = |args: &[&str]| {
        let mut all = vec!["-p", port.as_str(), "--user", "acme", "-a", "pw", "--raw"];
        all.extend_from_slice(args);
        run(&all, None)
    };
    let r = as_tenant(&["GET", "key:15"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "value-15"), "{r:?}");
    let r = as_tenant(&["GET", "key:25"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "value-25"), "{r:?}");
    let r = as_tenant(&["SET", "key:1new", "written-through-the-cli"]);
    assert_eq!(r.code, 0, "{r:?}");
    let on_target = dst.port.to_string();
    let r = run(
        &[
            "-p", &on_target, "--user", "acme", "-a", "pw", "--raw", "GET", "key:1new",
        ],
        None,
    );
    assert_eq!(r.stdout.trim(), "written-through-the-cli", "{r:?}");
    let r = as_tenant(&["MGET", "key:15", "key:25"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("CROSSSLOT"), "{r:?}");

    let out = cli_ok(&src, &["migrate", "verify", &id, "--pattern", "key:1*"]);
    assert!(out.contains("verified"), "{out}");
    let out = cli_ok(&src, &["migrate", "cutover", &id, "--pattern", "*"]);
    assert!(out.contains("completed"), "{out}");
    let out = cli_ok(&src, &["migrate", "verify", &id]);
    assert!(out.contains("verified"), "{out}");
}
