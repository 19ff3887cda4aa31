//! `ferrite-cli migrate ...`: the TENANT.MIGRATE* commands with readable output and exit codes a
//! script can test (`verify` exits 0 only when the checksums matched).

use std::collections::HashMap;
use std::time::Duration;

use ferrite_client::{Frame, value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::args::{MigrateCmd, host_port_flags};
use crate::output::{self, Format};
use crate::session::{Failure, Session, exit};

/// One migration as TENANT.MIGRATE.STATUS reports it (fields as text, in the server's order).
#[derive(Debug, Clone)]
pub struct Status {
    fields: Vec<(String, String)>,
    index: HashMap<String, usize>,
    /// The reply itself, for `--json`.
    pub frame: Frame,
}

/// States after which nothing more happens without an operator.
pub const FINAL_STATES: &[&str] = &[
    "completed",
    "verified",
    "failed",
    "cancelled",
    "stopped",
    "rolled_back",
];

impl Status {
    pub fn from_frame(f: &Frame) -> Result<Status, Failure> {
        let pairs = value::as_pairs(f).map_err(|e| {
            Failure::command(format!("unexpected TENANT.MIGRATE.STATUS reply: {e}"))
        })?;
        Ok(Status::from_pairs(pairs, f.clone()))
    }

    fn from_pairs(pairs: Vec<(String, Frame)>, frame: Frame) -> Status {
        let fields: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k, field_text(&v)))
            .collect();
        let index = fields
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        Status {
            fields,
            index,
            frame,
        }
    }

    /// A field's text ("" when absent).
    pub fn get(&self, k: &str) -> &str {
        self.index.get(k).map_or("", |&i| self.fields[i].1.as_str())
    }

    pub fn num(&self, k: &str) -> f64 {
        self.get(k).trim_end_matches('%').parse().unwrap_or(0.0)
    }

    pub fn id(&self) -> &str {
        self.get("migration_id")
    }

    pub fn state(&self) -> &str {
        self.get("state")
    }

    pub fn is_final(&self) -> bool {
        FINAL_STATES.contains(&self.state())
    }

    /// Ended the way the operator wanted.
    pub fn succeeded(&self) -> bool {
        matches!(
            self.state(),
            "completed" | "verified" | "stopped" | "rolled_back"
        )
    }

    /// Time left until the server's estimated completion, as text ("-" when unknown).
    pub fn eta(&self) -> String {
        if self.is_final() {
            return "-".into();
        }
        let at = self.get("estimated_completion");
        match OffsetDateTime::parse(at, &Rfc3339) {
            Ok(t) => {
                let left = (t - OffsetDateTime::now_utc()).as_seconds_f64();
                if left < 1.0 {
                    "<1s".into()
                } else {
                    duration(left)
                }
            }
            Err(_) => "-".into(),
        }
    }

    /// The line printed when the migration has ended: id, tenant, [`Status::outcome_detail`].
    pub fn outcome(&self) -> String {
        format!(
            "{} {} {}",
            self.id(),
            self.get("tenant"),
            self.outcome_detail()
        )
    }

    /// How the migration ended ("completed: 1,000 keys moved to ...").
    pub fn outcome_detail(&self) -> String {
        match self.state() {
            "completed" | "verified" => {
                let mut s = format!(
                    "{}: {} keys moved to {}",
                    self.state(),
                    grouped(self.num("keys_synced") as u64),
                    self.get("target")
                );
                if !self.get("downtime_ms").is_empty() {
                    s.push_str(&format!(", writes paused {} ms", self.get("downtime_ms")));
                }
                s.push_str(&format!(
                    ", took {}",
                    duration(self.num("duration_seconds"))
                ));
                s
            }
            "failed" => format!("failed: {}", self.get("error")),
            "cancelled" => "cancelled; the source keeps the tenant".into(),
            "stopped" => match self.get("consistent_as_of") {
                "" => format!(
                    "stopped; the source keeps the tenant, the copy on {} may miss {} key(s)",
                    self.get("target"),
                    self.get("possibly_missing_keys")
                ),
                at => format!(
                    "stopped; the source keeps the tenant, the copy on {} is consistent as of {at}",
                    self.get("target")
                ),
            },
            other => other.to_string(),
        }
    }
}

/// Fields the server sends as text that are numbers (`progress` with a `%`): `--json` gives
/// them as JSON numbers (null when empty, e.g. `downtime_ms` before the cutover).
const NUMERIC_TEXT_FIELDS: &[&str] = &[
    "progress",
    "lag_seconds",
    "catch_up_seconds",
    "keys_per_sec",
    "bytes_per_sec",
    "downtime_ms",
    "duration_seconds",
    "keys_migrated",
    "keys_source",
    "keys_target",
    "sample_skipped",
];

/// A migration reply in `format`; with `--json`, numbers sent as text become JSON numbers.
pub fn render(f: &Frame, format: Format) -> Vec<u8> {
    match format {
        Format::Json => {
            let mut v = output::to_json(f);
            json_numbers(&mut v);
            output::json_line(&v)
        }
        other => output::render(f, other),
    }
}

/// Turns the [`NUMERIC_TEXT_FIELDS`] of every object in `v` into numbers.
fn json_numbers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Array(items) => items.iter_mut().for_each(json_numbers),
        Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                if !NUMERIC_TEXT_FIELDS.contains(&k.as_str()) {
                    json_numbers(field);
                    continue;
                }
                let Value::String(text) = field else {
                    continue;
                };
                let t = text.trim().trim_end_matches('%');
                let number = if t.is_empty() {
                    Some(Value::Null)
                } else if let Ok(n) = t.parse::<i64>() {
                    Some(Value::from(n))
                } else {
                    t.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                };
                // Anything else (never sent today) stays text rather than being lost.
                if let Some(n) = number {
                    *field = n;
                }
            }
        }
        _ => {}
    }
}

/// A status field as text: strings as they are, numbers and booleans printed.
fn field_text(f: &Frame) -> String {
    match f {
        Frame::Array { .. } | Frame::Set { .. } | Frame::Map { .. } => value::display(f),
        other => value::as_string(other)
            .or_else(|_| value::as_int(other).map(|n| n.to_string()))
            .unwrap_or_else(|_| value::display(other)),
    }
}

/// 1234567 → "1,234,567".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes with a binary unit ("1.5 MiB").
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds as "850ms", "12.3s", "4m05s", "2h03m".
pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0}ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = secs as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let s = secs as u64;
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Keys per second in short form ("950", "12.3K", "1.2M").
pub fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.1}M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1}K", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

pub async fn fetch_status(s: &mut Session, id: &str) -> Result<Status, Failure> {
    let f = s.run(&["TENANT.MIGRATE.STATUS", id]).await?;
    Status::from_frame(&f)
}

/// TENANT.MIGRATE.STATUS ALL (or GROUP): the totals, and every migration's STATUS.
pub struct Overview {
    /// The aggregate fields (`migrations_total`, `state_<state>`, `keys_per_sec`,
    /// `bytes_per_sec`, `estimated_completion`…), read like one migration's.
    pub totals: Status,
    pub migrations: Vec<Status>,
    /// The reply itself, for `--json`.
    pub frame: Frame,
}

impl Overview {
    pub fn from_frame(f: &Frame) -> Result<Overview, Failure> {
        let bad = |e: ferrite_client::ClientError| {
            Failure::command(format!("unexpected TENANT.MIGRATE.STATUS ALL reply: {e}"))
        };
        let mut totals = Vec::new();
        let mut migrations = Vec::new();
        for (k, v) in value::as_pairs(f).map_err(bad)? {
            if k == "migrations" {
                for item in value::as_array(&v).map_err(bad)? {
                    migrations.push(Status::from_frame(&item)?);
                }
            } else {
                totals.push((k, v));
            }
        }
        Ok(Overview {
            totals: Status::from_pairs(totals, f.clone()),
            migrations,
            frame: f.clone(),
        })
    }

    /// Migrations in `states`, from the per-state counts.
    pub fn count(&self, states: &[&str]) -> u64 {
        states
            .iter()
            .map(|s| self.totals.num(&format!("state_{s}")) as u64)
            .sum()
    }

    /// The totals on one line: counts by stage, keys, rates and the ETA of everything.
    pub fn totals_line(&self) -> String {
        format!(
            "migrations={} running={} queued={} waiting={} awaiting_approval={} completed={} failed={} cancelled={} keys={}/{} keys_per_sec={} bytes_per_sec={} eta={}",
            self.totals.get("migrations_total"),
            self.count(&["syncing", "live_sync", "paused", "cutting_over"]),
            self.count(&["queued", "approved"]),
            self.count(&["waiting"]),
            self.count(&["awaiting_approval"]),
            self.count(&["completed", "verified"]),
            self.count(&["failed"]),
            self.count(&["cancelled"]),
            self.totals.get("keys_synced"),
            self.totals.get("keys_total"),
            self.totals.get("keys_per_sec"),
            self.totals.get("bytes_per_sec"),
            self.totals.eta()
        )
    }
}

pub async fn fetch_all(s: &mut Session) -> Result<Overview, Failure> {
    let f = s.run(&["TENANT.MIGRATE.STATUS", "ALL"]).await?;
    Overview::from_frame(&f)
}

/// Runs one `migrate` subcommand; returns the exit code.
pub async fn run(s: &mut Session, cmd: MigrateCmd, format: Format) -> Result<u8, Failure> {
    match cmd {
        MigrateCmd::Start {
            tenant,
            target,
            mode,
            parallel,
            batch_size,
            timeout,
            rate: rate_limit,
            conflict,
            target_password,
            patterns,
            retention,
            quiet,
        } => {
            let mut args = vec![
                "TENANT.MIGRATE".to_string(),
                tenant.clone(),
                "TARGET".into(),
                target.clone(),
                "MODE".into(),
                mode.name().into(),
            ];
            if !patterns.is_empty() {
                args.push("PATTERNS".into());
                args.extend(patterns.iter().cloned());
            }
            let mut opt = |name: &str, v: Option<String>| {
                if let Some(v) = v {
                    args.push(name.into());
                    args.push(v);
                }
            };
            opt("PARALLEL", parallel.map(|n| n.to_string()));
            opt("BATCH_SIZE", batch_size.map(|n| n.to_string()));
            opt("TIMEOUT", timeout.map(|n| n.to_string()));
            opt("RATE", rate_limit.map(|n| n.to_string()));
            opt("AUTH", target_password);
            opt("CONFLICT", conflict.map(|c| c.name().to_string()));
            opt("RETENTION", retention.map(|n| n.to_string()));
            let f = s.run(&args).await?;
            let fields = Status::from_frame(&f)?;
            let id = fields.id();
            if id.is_empty() {
                return Err(Failure::command("the server did not return a migration id"));
            }
            match format {
                Format::Json => crate::emit_bytes(&render(&f, Format::Json)),
                Format::Raw => outln!("{id}"),
                Format::Pretty if quiet => outln!("{id}"),
                Format::Pretty => {
                    outln!(
                        "Started migration {id}: tenant {tenant} -> {target} ({}, {})",
                        mode.name(),
                        fields.state()
                    );
                    outln!(
                        "Follow it with: ferrite-cli {} migrate watch {id}",
                        host_port_flags(&s.origin)
                    );
                }
            }
            Ok(exit::OK)
        }
        MigrateCmd::Status { id: Some(id), .. } => {
            let st = fetch_status(s, &id).await?;
            match format {
                Format::Pretty => out!("{}", block(&st)),
                other => crate::emit_bytes(&render(&st.frame, other)),
            }
            Ok(exit::OK)
        }
        MigrateCmd::Status { id: None, .. } => {
            let overview = fetch_all(s).await?;
            match format {
                Format::Pretty if overview.migrations.is_empty() => {
                    outln!("No migrations on {}.", s.addr())
                }
                Format::Pretty => {
                    out!("{}", table(&overview.migrations));
                    outln!("Totals: {}", overview.totals_line());
                }
                other => crate::emit_bytes(&render(&overview.frame, other)),
            }
            Ok(exit::OK)
        }
        MigrateCmd::Watch {
            id,
            all,
            interval_ms,
            timeout_s,
        } => {
            crate::watch::run(
                s,
                id,
                all,
                Duration::from_millis(interval_ms),
                timeout_s.map(Duration::from_secs),
                format,
            )
            .await
        }
        MigrateCmd::Cutover {
            id,
            force,
            pattern,
            retry,
            target_password,
        } => {
            let mut args = vec!["TENANT.MIGRATE.CUTOVER", id.as_str()];
            if let Some(p) = &pattern {
                args.extend(["PATTERN", p.as_str()]);
            }
            if retry {
                args.push("RETRY");
            }
            if let Some(pw) = &target_password {
                args.extend(["AUTH", pw.as_str()]);
            }
            if force {
                args.push("FORCE");
            }
            let f = s.run(&args).await?;
            let r = Status::from_frame(&f)?;
            match format {
                Format::Pretty => match &pattern {
                    Some(p) => outln!(
                        "Cutover of {id}, pattern '{p}': {}. {} keys migrated; writes to the pattern's keys were paused for {} ms.",
                        r.get("status"),
                        grouped(r.num("keys_migrated") as u64),
                        r.get("downtime_ms")
                    ),
                    None => outln!(
                        "Cutover of {id}: {}. {} keys migrated; the tenant's writes were paused for {} ms.",
                        r.get("status"),
                        grouped(r.num("keys_migrated") as u64),
                        r.get("downtime_ms")
                    ),
                },
                other => crate::emit_bytes(&render(&f, other)),
            }
            Ok(exit::OK)
        }
        MigrateCmd::Verify { id, pattern } => {
            let mut args = vec!["TENANT.MIGRATE.VERIFY", id.as_str()];
            if let Some(p) = &pattern {
                args.extend(["PATTERN", p.as_str()]);
            }
            let f = s.run(&args).await?;
            let r = Status::from_frame(&f)?;
            let verified = r.get("status") == "verified";
            match format {
                Format::Pretty => {
                    outln!("Verification of {id}: {}", r.get("status"));
                    outln!(
                        "  keys      source {} · target {}",
                        grouped(r.num("keys_source") as u64),
                        grouped(r.num("keys_target") as u64)
                    );
                    let checksum = match r.get("checksum_match") {
                        "1" | "true" => "match",
                        _ => "MISMATCH",
                    };
                    outln!("  checksum  {checksum}");
                    outln!(
                        "  sample    {} keys equal ({} skipped: changed on the target since cutover)",
                        r.get("sample_verified"),
                        r.get("sample_skipped")
                    );
                    let buckets = r.get("mismatched_buckets");
                    if !matches!(buckets, "" | "[]") {
                        outln!("  differing digest buckets: {buckets}");
                    }
                    let patterns = r.get("mismatched_patterns");
                    if !matches!(patterns, "" | "[]") {
                        outln!("  differing patterns: {patterns}");
                    }
                }
                other => crate::emit_bytes(&render(&f, other)),
            }
            if verified {
                Ok(exit::OK)
            } else {
                eprintln!("verification of {id} failed: status {}", r.get("status"));
                Ok(exit::FAILED)
            }
        }
        MigrateCmd::Pause { id } => {
            simple(s, "TENANT.MIGRATE.PAUSE", &id, None, "paused", format).await
        }
        MigrateCmd::Resume {
            id,
            target_password,
        } => {
            let auth = target_password.as_deref();
            simple(s, "TENANT.MIGRATE.RESUME", &id, auth, "resumed", format).await
        }
        MigrateCmd::Cancel {
            id,
            target_password,
        } => {
            let auth = target_password.as_deref();
            let code = simple(s, "TENANT.MIGRATE.CANCEL", &id, auth, "cancelled", format).await?;
            if format == Format::Pretty {
                // What the target kept (its import, when it could not be dropped).
                let st =
                    Status::from_frame(&s.run(&["TENANT.MIGRATE.STATUS", id.as_str()]).await?)?;
                if !st.get("error").is_empty() {
                    outln!("  {}", st.get("error"));
                }
            }
            Ok(code)
        }
        MigrateCmd::Stop { id, immediate } => {
            let how = if immediate { "IMMEDIATE" } else { "GRACEFUL" };
            let f = s.run(&["TENANT.MIGRATE.STOP", id.as_str(), how]).await?;
            let r = Status::from_frame(&f)?;
            match format {
                Format::Pretty => {
                    outln!(
                        "Sync {id} stopped ({}); the source keeps the tenant.",
                        r.get("mode")
                    );
                    if r.get("consistent_as_of").is_empty() {
                        outln!(
                            "  the target may be missing {} key(s): {}",
                            grouped(r.num("possibly_missing_keys") as u64),
                            r.get("possibly_missing_sample")
                        );
                    } else {
                        // No digest when the target takes writes too (CONFLICT): the
                        // copies differ by design.
                        let digest = match r.get("digest") {
                            "" => String::new(),
                            d => format!(", digest {d}"),
                        };
                        outln!(
                            "  the target's copy is consistent as of {} ({} keys{digest})",
                            r.get("consistent_as_of"),
                            grouped(r.num("keys") as u64)
                        );
                    }
                    outln!("  target copy: {}", r.get("target_copy"));
                }
                other => crate::emit_bytes(&render(&f, other)),
            }
            Ok(exit::OK)
        }
        MigrateCmd::Rollback { id } => {
            let f = s.run(&["TENANT.MIGRATE.ROLLBACK", id.as_str()]).await?;
            let r = Status::from_frame(&f)?;
            match format {
                Format::Pretty => outln!(
                    "Migration {id} {}: this server owns the tenant again ({} keys); its writes were paused for {} ms on the new owner.",
                    r.get("status").replace('_', " "),
                    grouped(r.num("keys") as u64),
                    r.get("downtime_ms")
                ),
                other => crate::emit_bytes(&render(&f, other)),
            }
            Ok(exit::OK)
        }
        MigrateCmd::Finalize { id } => {
            simple(
                s,
                "TENANT.MIGRATE.FINALIZE",
                &id,
                None,
                "finalized (backup ended, old copies released)",
                format,
            )
            .await
        }
    }
}

/// `<command> <id> [AUTH <password>]`, answered `OK`.
async fn simple(
    s: &mut Session,
    command: &str,
    id: &str,
    auth: Option<&str>,
    done: &str,
    format: Format,
) -> Result<u8, Failure> {
    let mut args = vec![command, id];
    if let Some(pw) = auth {
        args.extend(["AUTH", pw]);
    }
    let f = s.run(&args).await?;
    match format {
        Format::Pretty => outln!("Migration {id} {done}."),
        other => crate::emit_bytes(&render(&f, other)),
    }
    Ok(exit::OK)
}

/// One migration as a block of labelled lines.
pub fn block(st: &Status) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("  {label:<9} {text}\n"));
    };
    let head = format!(
        "Migration {}: tenant {} -> {} ({}, {} streams x {} keys)\n",
        st.id(),
        st.get("tenant"),
        st.get("target"),
        st.get("mode"),
        st.get("parallel"),
        st.get("batch_size")
    );
    line(
        "state",
        format!("{} (phase {})", st.state(), st.get("phase")),
    );
    line(
        "progress",
        format!(
            "{} · {} / {} keys · {} synced",
            st.get("progress"),
            grouped(st.num("keys_synced") as u64),
            grouped(st.num("keys_total") as u64),
            bytes(st.num("bytes_synced"))
        ),
    );
    line(
        "lag",
        format!(
            "{} keys · {} · {} s ({})",
            grouped(st.num("lag_keys") as u64),
            bytes(st.num("lag_bytes")),
            st.get("lag_seconds"),
            st.get("lag_trend")
        ),
    );
    line(
        "rate",
        format!("{} keys/s · ETA {}", rate(st.num("keys_per_sec")), st.eta()),
    );
    if !st.get("catch_up_seconds").is_empty() {
        line(
            "catch-up",
            format!("{} to catch up", duration(st.num("catch_up_seconds"))),
        );
    }
    if !st.get("conflict_policy").is_empty() {
        line(
            "conflicts",
            format!(
                "{} ({}){}",
                st.get("conflicts"),
                st.get("conflict_policy"),
                match st.get("conflict_sample") {
                    "" => String::new(),
                    keys => format!(" · latest: {keys}"),
                }
            ),
        );
    }
    if !st.get("consistent_as_of").is_empty() {
        line(
            "copy",
            format!("consistent as of {}", st.get("consistent_as_of")),
        );
    } else if st.state() == "stopped" {
        line(
            "copy",
            format!("may miss {} key(s)", st.get("possibly_missing_keys")),
        );
    }
    if !st.get("backup_state").is_empty() {
        // After a cutover: the old source as a backup, for ROLLBACK.
        let mut text = st.get("backup_state").to_string();
        if st.get("backup_state") == "streaming" {
            text.push_str(&format!(
                " · lag {} s · {} records · {}",
                st.get("backup_lag_seconds"),
                grouped(st.num("backup_lag_records") as u64),
                bytes(st.num("backup_lag_bytes"))
            ));
        }
        if !st.get("backup_until").is_empty()
            && !matches!(st.get("backup_state"), "ended" | "rolled_back")
        {
            text.push_str(&format!(" · until {}", st.get("backup_until")));
        }
        if !st.get("backup_error").is_empty() {
            text.push_str(&format!(" · {}", st.get("backup_error")));
        }
        line("backup", text);
    }
    line(
        "started",
        format!(
            "{} · running for {}",
            st.get("started_at"),
            duration(st.num("duration_seconds"))
        ),
    );
    if !st.get("downtime_ms").is_empty() {
        line("downtime", format!("{} ms", st.get("downtime_ms")));
    }
    if st.num("reconnects") > 0.0 {
        line("reconnects", st.get("reconnects").to_string());
    }
    if !st.get("error").is_empty() {
        line("error", st.get("error").to_string());
    }
    format!("{head}{out}")
}

/// Several migrations as a table.
pub fn table(all: &[Status]) -> String {
    let header = [
        "ID", "TENANT", "TARGET", "STATE", "PHASE", "PROGRESS", "KEYS", "LAG KEYS", "LAG",
        "KEYS/S", "ETA",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for st in all {
        rows.push(vec![
            st.id().to_string(),
            st.get("tenant").to_string(),
            st.get("target").to_string(),
            st.state().to_string(),
            st.get("phase").to_string(),
            st.get("progress").to_string(),
            format!(
                "{}/{}",
                grouped(st.num("keys_synced") as u64),
                grouped(st.num("keys_total") as u64)
            ),
            grouped(st.num("lag_keys") as u64),
            format!("{}s", st.get("lag_seconds")),
            rate(st.num("keys_per_sec")),
            st.eta(),
        ]);
    }
    let mut out = crate::output::columns(header.len(), &rows);
    for st in all.iter().filter(|st| !st.get("error").is_empty()) {
        out.push_str(&format!("{}: {}\n", st.id(), st.get("error")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pairs: &[(&str, &str)]) -> Status {
        let data = pairs
            .iter()
            .map(|(k, v)| {
                (
                    Frame::BlobString {
                        data: k.as_bytes().to_vec().into(),
                        attributes: None,
                    },
                    Frame::BlobString {
                        data: v.as_bytes().to_vec().into(),
                        attributes: None,
                    },
                )
            })
            .collect();
        Status::from_frame(&Frame::Map {
            data,
            attributes: None,
        })
        .expect("status")
    }

    #[test]
    fn json_has_numbers_for_numeric_fields() {
        let st = status(&[
            ("migration_id", "mig_1"),
            ("tenant", "123"),
            ("progress", "45.5%"),
            ("keys_per_sec", "14400"),
            ("lag_seconds", "0.250"),
            ("downtime_ms", ""),
            ("lag_trend", "stable"),
        ]);
        let v: serde_json::Value =
            serde_json::from_slice(&render(&st.frame, Format::Json)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "migration_id": "mig_1",
                "tenant": "123",
                "progress": 45.5,
                "keys_per_sec": 14400,
                "lag_seconds": 0.25,
                "downtime_ms": null,
                "lag_trend": "stable",
            })
        );
        let list = Frame::Array {
            data: vec![st.frame.clone()],
            attributes: None,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&render(&list, Format::Json)).expect("json");
        assert_eq!(v[0]["progress"], 45.5);
        assert_eq!(
            render(&st.frame, Format::Raw),
            output::render(&st.frame, Format::Raw)
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(duration(0.25), "250ms");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(rate(12345.0), "12.3K");
    }

    #[test]
    fn blocks_tables_and_outcomes() {
        let st = status(&[
            ("migration_id", "mig_1"),
            ("tenant", "acme"),
            ("target", "127.0.0.1:7000"),
            ("state", "failed"),
            ("phase", "stopped"),
            ("progress", "40%"),
            ("keys_synced", "400"),
            ("keys_total", "1000"),
            ("error", "target 127.0.0.1:7000 is unreachable"),
        ]);
        assert!(st.is_final() && !st.succeeded());
        assert_eq!(st.num("progress"), 40.0);
        assert_eq!(
            st.outcome(),
            "mig_1 acme failed: target 127.0.0.1:7000 is unreachable"
        );
        let b = block(&st);
        assert!(
            b.starts_with("Migration mig_1: tenant acme -> 127.0.0.1:7000"),
            "{b}"
        );
        assert!(b.contains("400 / 1,000 keys"), "{b}");
        let t = table(std::slice::from_ref(&st));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID     TENANT  TARGET"), "{t}");
        assert!(
            lines[1].starts_with("mig_1  acme    127.0.0.1:7000  failed"),
            "{t}"
        );
        assert_eq!(st.eta(), "-");
    }

    #[test]
    fn blocks_show_the_backup_after_a_cutover() {
        let mut pairs = vec![
            ("migration_id", "mig_2"),
            ("tenant", "acme"),
            ("target", "127.0.0.1:7000"),
            ("state", "completed"),
            ("phase", "done"),
            ("backup_state", "streaming"),
            ("backup_lag_seconds", "0.250"),
            ("backup_lag_records", "1200"),
            ("backup_lag_bytes", "2048"),
            ("backup_until", "2026-12-04T14:00:00.000Z"),
        ];
        let b = block(&status(&pairs));
        assert!(
            b.contains("backup    streaming · lag 0.250 s · 1,200 records"),
            "{b}"
        );
        assert!(b.contains("until 2026-12-04T14:00:00.000Z"), "{b}");
        pairs[5] = ("backup_state", "broken");
        pairs.push(("backup_error", "the new owner did not answer within 5 s"));
        let b = block(&status(&pairs));
        assert!(
            b.contains(
                "backup    broken · until 2026-12-04T14:00:00.000Z · the new owner did not answer"
            ),
            "{b}"
        );
        let done = status(&[("migration_id", "mig_2"), ("state", "rolled_back")]);
        assert!(done.is_final() && done.succeeded());
        // No backup line when the migration keeps none.
        let none = status(&[("migration_id", "mig_3"), ("state", "completed")]);
        assert!(!block(&none).contains("backup"));
    }
}
