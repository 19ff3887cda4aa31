//! The `/metrics` page during and after a real migration: `promtool check metrics` finds nothing
//! to complain about on either server, and every metric the alert rules
//! (`deploy/prometheus/ferrite-alerts.yml`) and the Grafana dashboard use is exported, so no rule
//! or panel silently watches a name that does not exist.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;

use crate::common::Server;

const KEYS: usize = 3_000;
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/prometheus/ferrite-alerts.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/ferrite-migrations.json"
);

fn start() -> Server {
    Server::start_with(&["--metrics-addr", "127.0.0.1:0"])
}

/// `GET /metrics`; panics unless the answer is 200 with a body.
fn scrape(s: &Server) -> String {
    let resp = crate::common::metrics_response(s.metrics_port.expect("metrics port"));
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(!body.is_empty(), "empty /metrics page");
    body.to_string()
}

/// Runs `promtool check metrics` on the page (stdin) and requires exit 0 and no output at all:
/// promtool reports lint problems (missing HELP, counters without `_total`, non-base units...)
/// as text, sometimes with exit status 0.
fn promtool_check(page: &str, what: &str) {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {promtool} ({e}): install the prometheus package (scripts/test.sh does)"
            )
        });
    // A thread writes so that promtool's output cannot fill up and block both sides.
    let mut stdin = child.stdin.take().expect("promtool stdin");
    let input = page.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("promtool output");
    writer
        .join()
        .expect("writer thread")
        .expect("write page to promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics on the {what} page: {}\n{text}\n--- page ---\n{page}",
        out.status
    );
}

/// One sample line: metric name, labels, value.
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn samples(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line has a value");
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("bad value in {l:?}: {e}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            // Label values here are tenant ids, states and command names: no commas or quotes.
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("label k=v");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

/// The value of the one series `name{labels...}` (other labels allowed), if present.
fn value(page: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = page
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    assert!(found.len() <= 1, "{name}{labels:?} matches {found:?}");
    found.first().copied()
}

fn must(page: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(page, name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

/// The `ferrite_*` names in a piece of PromQL.
fn names_in(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("ferrite_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// Metric names used in the `expr` of the alert rules (not in comments or annotations).
fn alert_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(RULES).unwrap_or_else(|e| panic!("read {RULES}: {e}"));
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            // Block scalar: the lines indented deeper than `expr:`.
            while let Some(next) = lines.peek() {
                let deeper = next.len() - next.trim_start().len() > indent;
                if next.trim().is_empty() || deeper {
                    exprs.push(next.to_string());
                    lines.next();
                } else {
                    break;
                }
            }
        } else {
            exprs.push(rest.to_string());
        }
    }
    names_in(&exprs)
}

/// Metric names used in the panel queries of the Grafana dashboard (its `"expr"` lines; the
/// file is indented one key per line).
fn dashboard_metric_names() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("read {DASHBOARD}: {e}"));
    let exprs: Vec<String> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("\"expr\":"))
        .map(str::to_string)
        .collect();
    names_in(&exprs)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A map reply (RESP3 map or RESP2 flat array) as text fields.
fn fields(v: Value) -> HashMap<String, String> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| (as_text(k), as_text(v)))
            .collect(),
        Value::Array(items) => items
            .chunks(2)
            .map(|kv| (as_text(&kv[0]), kv.get(1).map(as_text).unwrap_or_default()))
            .collect(),
        other => panic!("expected a map reply, got {other:?}"),
    }
}

fn status(c: &mut redis::Connection, id: &str) -> HashMap<String, String> {
    fields(
        redis::cmd("TENANT.MIGRATE.STATUS")
            .arg(id)
            .query(c)
            .expect("TENANT.MIGRATE.STATUS"),
    )
}

fn wait_for(
    c: &mut redis::Connection,
    id: &str,
    what: &str,
    pred: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(c, id);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn metrics_pass_promtool_and_cover_the_alert_rules() {
    let names = alert_metric_names();
    for expected in [
        "ferrite_tenant_migration_progress",
        "ferrite_tenant_migration_state",
        "ferrite_tenant_migration_lag_keys",
        "ferrite_tenant_migration_cutover_downtime_seconds",
    ] {
        assert!(
            names.contains(expected),
            "{expected} not found in the rules' expressions: {names:?}"
        );
    }

    let src = start();
    let dst = start();
    // Before anything happened: both pages are clean too.
    promtool_check(&scrape(&src), "idle source");
    promtool_check(&scrape(&dst), "idle target");

    let mut adm = src.conn();
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(&["acme", "PASSWORD", "pw"])
        .query(&mut adm)
        .expect("TENANT.CREATE");
    let mut t = redis::Client::open(format!("redis://acme:pw@127.0.0.1:{}/", src.port))
        .expect("client")
        .get_connection()
        .expect("tenant connection");
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        pipe.set(format!("k:{i}"), format!("{i}-{}", "v".repeat(200)))
            .ignore();
    }
    let _: () = pipe.query(&mut t).expect("load keys");

    // RATE slows the snapshot (~0.7 MB at 200 kB/s: a few seconds) so that the page can be
    // scraped while the migration copies.
    let started = fields(
        redis::cmd("TENANT.MIGRATE")
            .arg(&["acme", "TARGET", &dst.addr(), "RATE", "200000"])
            .query(&mut adm)
            .expect("TENANT.MIGRATE"),
    );
    let id = started["migration_id"].clone();
    wait_for(&mut adm, &id, "the snapshot to be under way", |s| {
        s["state"] == "syncing" && s["keys_synced"].parse::<u64>().unwrap_or(0) > 0
    });
    let src_page = scrape(&src);
    let dst_page = scrape(&dst);
    let after = status(&mut adm, &id);
    promtool_check(&src_page, "source, syncing");
    promtool_check(&dst_page, "target, importing");
    // RATE makes the copy last seconds; a scrape taking milliseconds lands inside it.
    assert_eq!(
        after["state"], "syncing",
        "the snapshot ended before the scrape: {after:?}"
    );
    let sp = samples(&src_page);
    let progress = must(
        &sp,
        "ferrite_tenant_migration_progress",
        &[("tenant", "acme")],
    );
    assert!(progress > 0.0 && progress < 1.0, "progress {progress}");
    assert_eq!(
        must(
            &sp,
            "ferrite_tenant_migration_state",
            &[("tenant", "acme"), ("state", "syncing")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &sp,
            "ferrite_tenant_migration_phase",
            &[("tenant", "acme"), ("phase", "snapshot")]
        ),
        1.0
    );
    assert_eq!(must(&sp, "ferrite_migrations_active", &[]), 1.0);
    assert_eq!(
        must(&samples(&dst_page), "ferrite_imports_active", &[]),
        1.0
    );
    // The aggregate view: counts by state, what is left, the contention throttle (nothing is
    // loaded here: every priority at full speed).
    assert_eq!(must(&sp, "ferrite_migrations_known", &[]), 1.0);
    assert_eq!(
        must(&sp, "ferrite_migrations", &[("state", "syncing")]),
        1.0
    );
    assert_eq!(must(&sp, "ferrite_migrations", &[("state", "queued")]), 0.0);
    assert!(must(&sp, "ferrite_migrations_keys_remaining", &[]) > 0.0);
    for p in ["low", "normal", "high"] {
        assert_eq!(
            must(&sp, "ferrite_migrations_throttle_ratio", &[("priority", p)]),
            1.0
        );
    }

    // Live sync, with a few writes shipped as changes.
    wait_for(&mut adm, &id, "live_sync", |s| s["state"] == "live_sync");
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k:{i}"))
            .arg("changed")
            .query(&mut t)
            .expect("write during live sync");
    }
    let live = scrape(&src);
    promtool_check(&live, "source, live_sync");
    promtool_check(&scrape(&dst), "target, live_sync");
    let lp = samples(&live);
    assert_eq!(
        must(
            &lp,
            "ferrite_tenant_migration_state",
            &[("tenant", "acme"), ("state", "live_sync")]
        ),
        1.0
    );

    let cut = fields(
        redis::cmd("TENANT.MIGRATE.CUTOVER")
            .arg(&id)
            .query(&mut adm)
            .expect("TENANT.MIGRATE.CUTOVER"),
    );
    assert_eq!(cut["status"], "completed", "{cut:?}");
    let downtime_ms: f64 = cut["downtime_ms"].parse().expect("downtime_ms");

    let src_page = scrape(&src);
    let dst_page = scrape(&dst);
    promtool_check(&src_page, "source, after cutover");
    promtool_check(&dst_page, "target, after cutover");
    let sp = samples(&src_page);
    let dp = samples(&dst_page);
    assert_eq!(
        must(
            &sp,
            "ferrite_tenant_migration_progress",
            &[("tenant", "acme")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &sp,
            "ferrite_tenant_migration_state",
            &[("tenant", "acme"), ("state", "completed")]
        ),
        1.0
    );
    let downtime = must(
        &sp,
        "ferrite_tenant_migration_cutover_downtime_seconds",
        &[("tenant", "acme")],
    );
    assert!(
        (downtime - downtime_ms / 1000.0).abs() < 1e-6,
        "gauge {downtime} s, CUTOVER said {downtime_ms} ms"
    );
    let shipped = must(
        &sp,
        "ferrite_tenant_migration_keys_total",
        &[("tenant", "acme")],
    );
    assert!(shipped >= KEYS as f64, "keys shipped {shipped}");
    assert_eq!(must(&sp, "ferrite_migrations_active", &[]), 0.0);
    assert_eq!(
        must(&sp, "ferrite_migrations", &[("state", "completed")]),
        1.0
    );
    assert_eq!(must(&sp, "ferrite_migrations_keys_remaining", &[]), 0.0);
    assert_eq!(
        must(&sp, "ferrite_migrations_eta_seconds", &[]),
        0.0,
        "nothing left"
    );
    assert_eq!(
        must(&dp, "ferrite_tenant_keys", &[("tenant", "acme")]),
        KEYS as f64
    );
    assert_eq!(must(&dp, "ferrite_imports_active", &[]), 0.0);

    // Every name the rules use has a series on the source (where migration series live) now
    // that a migration ran to the end.
    let exported: BTreeSet<&str> = sp.iter().map(|s| s.name.as_str()).collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "alert rules use metrics the server does not export: {missing:?}\nexported: {exported:?}"
    );

    // The dashboard's queries too, over both servers (the target holds the tenant now).
    let exported: BTreeSet<&str> = sp.iter().chain(&dp).map(|s| s.name.as_str()).collect();
    let used = dashboard_metric_names();
    assert!(
        used.len() >= 20,
        "expected the dashboard's queries, found {used:?}"
    );
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the server does not export: {missing:?}\nexported: {exported:?}"
    );
}

/// The dashboard is well-formed JSON (as Grafana's import requires), checked by Python's parser.
#[test]
fn grafana_dashboard_is_valid_json() {
    let out = Command::new("python3")
        .args(["-m", "json.tool", DASHBOARD])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e})"));
    assert!(
        out.status.success(),
        "{DASHBOARD}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
