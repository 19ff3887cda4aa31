//! `ferrite-cli backup ...`: TENANT.BACKUP, TENANT.BACKUP.LIST/INFO/DELETE and TENANT.RESTORE
//! with readable output (a table for `list`, a block for `info`, one line for the rest), `--json`
//! objects, and progress bars for `create` and `restore` (`progress`).

use std::io::IsTerminal;
use std::time::Instant;

use ferrite_client::{Frame, value};

use crate::args::{BackupCmd, BackupFormat, host_port_flags};
use crate::migrate::{bytes, duration, grouped};
use crate::output::{self, Format};
use crate::progress::{self, Ours};
use crate::session::{Failure, Session, exit};

/// One map reply (a backup, a running job, a restore's result): its fields in the server's
/// order, read alike from RESP3 maps and RESP2 flat arrays.
#[derive(Debug, Clone)]
pub struct Record {
    fields: Vec<(String, Frame)>,
}

impl Record {
    /// `what` names the command in the error for a reply that is not a map.
    pub fn from_frame(f: &Frame, what: &str) -> Result<Record, Failure> {
        let fields = value::as_pairs(f)
            .map_err(|e| Failure::command(format!("unexpected {what} reply: {e}")))?;
        Ok(Record { fields })
    }

    fn get(&self, k: &str) -> Option<&Frame> {
        value::field(&self.fields, k)
    }

    /// A field as text ("" when absent): strings as they are, numbers printed.
    pub fn text(&self, k: &str) -> String {
        match self.get(k) {
            None => String::new(),
            Some(f) => value::as_string(f)
                .or_else(|_| value::as_int(f).map(|n| n.to_string()))
                .unwrap_or_else(|_| value::display(f)),
        }
    }

    /// A field as a count (None when absent, negative or not a number).
    pub fn int(&self, k: &str) -> Option<u64> {
        self.get(k)
            .and_then(|f| value::as_int(f).ok())
            .and_then(|n| u64::try_from(n).ok())
    }

    /// The record as one JSON object (also when RESP2 sent it as a flat array).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.fields
                .iter()
                .map(|(k, v)| (k.clone(), output::to_json(v)))
                .collect(),
        )
    }
}

/// Whether to draw a progress bar: only on a terminal, for the human format, unless turned off.
fn wants_progress(format: Format, no_progress: bool) -> bool {
    format == Format::Pretty && !no_progress && std::io::stdout().is_terminal()
}

/// Runs one `backup` subcommand; returns the exit code.
pub async fn run(s: &mut Session, cmd: BackupCmd, format: Format) -> Result<u8, Failure> {
    match cmd {
        BackupCmd::Create {
            tenant,
            name,
            format: file_format,
            quiet,
            no_progress,
        } => {
            let mut args = vec!["TENANT.BACKUP".to_string(), tenant.clone()];
            if let Some(n) = &name {
                args.extend(["NAME".into(), n.clone()]);
            }
            if file_format == BackupFormat::Rdb {
                args.extend(["FORMAT".into(), "rdb".into()]);
            }
            let watch = if wants_progress(format, no_progress) {
                Some(Ours::Backup {
                    tenant: tenant.clone(),
                    id: name.clone(),
                    before: match name {
                        Some(_) => Vec::new(),
                        None => progress::running_backups(s, &tenant).await,
                    },
                })
            } else {
                None
            };
            let started = Instant::now();
            let label = format!("Backing up {tenant}");
            let reply = progress::run_with_progress(s, &args, watch, &label).await?;
            let took = started.elapsed().as_secs_f64();
            let id = value::as_string(&reply)
                .map_err(|e| Failure::command(format!("unexpected TENANT.BACKUP reply: {e}")))?;
            if format == Format::Raw || (format == Format::Pretty && quiet) {
                outln!("{id}");
                return Ok(exit::OK);
            }
            // The backup is complete; its details come from INFO. Should that fail, the id is
            // still what the user needs.
            let info = match s.run(&["TENANT.BACKUP.INFO", id.as_str()]).await {
                Ok(f) => Record::from_frame(&f, "TENANT.BACKUP.INFO"),
                Err(f) => Err(f),
            };
            match (format, info) {
                (Format::Json, Ok(r)) => crate::emit_bytes(&output::json_line(&r.to_json())),
                (Format::Json, Err(f)) => {
                    eprintln!(
                        "backup {id} was written, but reading it back failed: {}",
                        f.message
                    );
                    crate::emit_bytes(&output::json_line(&serde_json::json!({ "id": id })));
                }
                (_, Ok(r)) => {
                    outln!("{}", created_line(&r, took));
                    outln!(
                        "Restore it with: ferrite-cli {} backup restore {tenant} {id} [--as <new-tenant>]",
                        host_port_flags(&s.origin)
                    );
                }
                (_, Err(f)) => {
                    outln!(
                        "Created backup {id} of tenant {tenant} in {}.",
                        duration(took)
                    );
                    eprintln!("reading it back failed: {}", f.message);
                }
            }
            Ok(exit::OK)
        }
        BackupCmd::List { tenant } => {
            let mut args = vec!["TENANT.BACKUP.LIST".to_string()];
            args.extend(tenant.clone());
            let f = s.run(&args).await?;
            let items = value::as_array(&f).map_err(|e| {
                Failure::command(format!("unexpected TENANT.BACKUP.LIST reply: {e}"))
            })?;
            let all = items
                .iter()
                .map(|i| Record::from_frame(i, "TENANT.BACKUP.LIST"))
                .collect::<Result<Vec<_>, _>>()?;
            match format {
                Format::Json => {
                    let list = all.iter().map(Record::to_json).collect();
                    crate::emit_bytes(&output::json_line(&serde_json::Value::Array(list)));
                }
                Format::Raw => {
                    for r in &all {
                        outln!("{}", r.text("id"));
                    }
                }
                Format::Pretty if all.is_empty() => match &tenant {
                    Some(t) => outln!("No backups of tenant {t} on {}.", s.addr()),
                    None => outln!("No backups on {}.", s.addr()),
                },
                Format::Pretty => out!("{}", table(&all)),
            }
            Ok(exit::OK)
        }
        BackupCmd::Info { id } => {
            let f = s.run(&["TENANT.BACKUP.INFO", id.as_str()]).await?;
            let r = Record::from_frame(&f, "TENANT.BACKUP.INFO")?;
            match format {
                Format::Json => crate::emit_bytes(&output::json_line(&r.to_json())),
                Format::Raw => crate::emit_bytes(&output::render(&f, Format::Raw)),
                Format::Pretty => out!("{}", block(&r)),
            }
            Ok(exit::OK)
        }
        BackupCmd::Restore {
            tenant,
            id,
            as_tenant,
            replace,
            rdb,
            db,
            no_progress,
        } => {
            let mut args = vec!["TENANT.RESTORE".to_string(), tenant.clone()];
            let source = match (&id, &rdb) {
                (_, Some(path)) => {
                    args.extend(["RDB".into(), path.clone()]);
                    if let Some(n) = db {
                        args.extend(["DB".into(), n.to_string()]);
                    }
                    format!("RDB file {path}")
                }
                (Some(id), None) => {
                    args.extend(["BACKUP".into(), id.clone()]);
                    format!("backup {id}")
                }
                // clap requires one of them.
                (None, None) => {
                    return Err(Failure::new(
                        exit::USAGE,
                        "restore what? give a backup id or --rdb <path>",
                    ));
                }
            };
            if let Some(t) = &as_tenant {
                args.extend(["AS".into(), t.clone()]);
            }
            if replace {
                args.push("REPLACE".into());
            }
            let dest = as_tenant.unwrap_or(tenant);
            let watch = wants_progress(format, no_progress).then(|| Ours::Restore {
                tenant: dest.clone(),
            });
            let label = format!("Restoring {source} into {dest}");
            let f = progress::run_with_progress(s, &args, watch, &label)
                .await
                .map_err(|mut f| {
                    // The server names its own REPLACE; say what it is on this command line.
                    if f.message.contains("BUSYKEY") && !replace {
                        f.message.push_str("\n(add --replace to replace them)");
                    }
                    f
                })?;
            let r = Record::from_frame(&f, "TENANT.RESTORE")?;
            match format {
                Format::Json => crate::emit_bytes(&output::json_line(&r.to_json())),
                Format::Raw => crate::emit_bytes(&output::render(&f, Format::Raw)),
                Format::Pretty => outln!("{}", restored_line(&r)),
            }
            Ok(exit::OK)
        }
        BackupCmd::Delete { id } => {
            let f = s.run(&["TENANT.BACKUP.DELETE", id.as_str()]).await?;
            match format {
                Format::Pretty => outln!("Deleted backup {id}."),
                other => crate::emit_bytes(&output::render(&f, other)),
            }
            Ok(exit::OK)
        }
    }
}

/// "Created backup <id> of tenant acme: 3,000 keys, 1.2 MiB (native) in 0.4s."
pub fn created_line(r: &Record, took_secs: f64) -> String {
    format!(
        "Created backup {} of tenant {}: {} keys, {} ({}) in {}.",
        r.text("id"),
        r.text("tenant"),
        grouped(r.int("keys").unwrap_or(0)),
        bytes(r.int("size").unwrap_or(0) as f64),
        r.text("format"),
        duration(took_secs)
    )
}

/// "Restored backup <id> into tenant acme2: 3,000 keys in 0.4s (digest ...)."
pub fn restored_line(r: &Record) -> String {
    let source = r.text("source");
    let source = match source.strip_prefix("rdb:") {
        Some(path) => format!("RDB file {path}"),
        None => format!("backup {source}"),
    };
    format!(
        "Restored {source} into tenant {}: {} keys in {} (digest {}).",
        r.text("tenant"),
        grouped(r.int("keys").unwrap_or(0)),
        duration(r.int("took_ms").unwrap_or(0) as f64 / 1000.0),
        r.text("digest")
    )
}

/// How far a running job is ("writing 40%", "waiting for the copy").
fn job_progress(r: &Record) -> String {
    let phase = r.text("phase");
    let done = r.int("done_keys").unwrap_or(0);
    match r.int("total_keys").unwrap_or(0) {
        0 => phase,
        total => format!("{phase} {}%", (done.min(total) * 100) / total),
    }
}

/// One backup (or a backup being written) as a block of labelled lines.
pub fn block(r: &Record) -> String {
    let mut out = format!(
        "Backup {} of tenant {}: {}\n",
        r.text("id"),
        r.text("tenant"),
        r.text("status")
    );
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("  {label:<9} {text}\n"));
    };
    if r.text("status") == "running" {
        line("phase", r.text("phase"));
        let done = r.int("done_keys").unwrap_or(0);
        line(
            "progress",
            match r.int("total_keys").unwrap_or(0) {
                0 => format!("{} keys", grouped(done)),
                total => format!(
                    "{} / {} keys ({}%)",
                    grouped(done),
                    grouped(total),
                    (done.min(total) * 100) / total
                ),
            },
        );
        line(
            "elapsed",
            duration(r.int("elapsed_ms").unwrap_or(0) as f64 / 1000.0),
        );
        return out;
    }
    line("format", r.text("format"));
    line("keys", grouped(r.int("keys").unwrap_or(0)));
    let size = r.int("size").unwrap_or(0);
    line(
        "size",
        format!("{} ({} bytes)", bytes(size as f64), grouped(size)),
    );
    let origin = if r.int("scheduled").unwrap_or(0) != 0 {
        "scheduled"
    } else {
        "TENANT.BACKUP"
    };
    line("created", format!("{} ({origin})", r.text("created")));
    line("digest", r.text("digest"));
    line("path", r.text("path"));
    if !r.text("error").is_empty() {
        line("error", r.text("error"));
    }
    out
}

/// Several backups as a table; unreadable files get their error under it.
pub fn table(all: &[Record]) -> String {
    let header = [
        "ID", "TENANT", "STATUS", "FORMAT", "KEYS", "SIZE", "CREATED", "BY",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    let dash = || "-".to_string();
    for r in all {
        let status = r.text("status");
        rows.push(match status.as_str() {
            "running" => vec![
                r.text("id"),
                r.text("tenant"),
                format!("running ({})", job_progress(r)),
                dash(),
                format!(
                    "{}/{}",
                    grouped(r.int("done_keys").unwrap_or(0)),
                    grouped(r.int("total_keys").unwrap_or(0))
                ),
                dash(),
                dash(),
                dash(),
            ],
            "complete" => vec![
                r.text("id"),
                r.text("tenant"),
                status,
                r.text("format"),
                grouped(r.int("keys").unwrap_or(0)),
                bytes(r.int("size").unwrap_or(0) as f64),
                r.text("created"),
                if r.int("scheduled").unwrap_or(0) != 0 {
                    "scheduled".into()
                } else {
                    "manual".into()
                },
            ],
            _ => vec![
                r.text("id"),
                dash(),
                status,
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
            ],
        });
    }
    let mut out = crate::output::columns(header.len(), &rows);
    for r in all.iter().filter(|r| !r.text("error").is_empty()) {
        out.push_str(&format!(
            "{}: {} ({})\n",
            r.text("id"),
            r.text("error"),
            r.text("path")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::BlobString {
            data: s.as_bytes().to_vec().into(),
            attributes: None,
        }
    }

    fn int(n: i64) -> Frame {
        Frame::Number {
            data: n,
            attributes: None,
        }
    }

    /// A RESP3 map of `pairs`; values that are numbers are sent as integers, as the server does.
    fn map(pairs: &[(&str, &str)]) -> Frame {
        Frame::Map {
            data: pairs
                .iter()
                .map(|(k, v)| (bulk(k), v.parse::<i64>().map_or_else(|_| bulk(v), int)))
                .collect(),
            attributes: None,
        }
    }

    fn complete() -> Frame {
        map(&[
            ("id", "backup_20261203T211600Z_acme"),
            ("tenant", "acme"),
            ("status", "complete"),
            ("format", "native"),
            ("path", "/data/backups/backup_20261203T211600Z_acme.fbak"),
            ("size", "1572864"),
            ("keys", "3000"),
            ("digest", "00ff"),
            ("created", "2026-12-03T21:16:00.123Z"),
            ("created_ms", "1796332560123"),
            ("scheduled", "0"),
        ])
    }

    fn running() -> Frame {
        map(&[
            ("id", "nightly"),
            ("kind", "backup"),
            ("tenant", "beta"),
            ("status", "running"),
            ("phase", "writing"),
            ("done_keys", "400"),
            ("total_keys", "1000"),
            ("elapsed_ms", "1500"),
        ])
    }

    fn unreadable() -> Frame {
        map(&[
            ("id", "broken"),
            ("status", "unreadable"),
            ("path", "/data/backups/broken.fbak"),
            ("error", "checksum mismatch in frame 3"),
        ])
    }

    fn record(f: &Frame) -> Record {
        Record::from_frame(f, "test").expect("record")
    }

    #[test]
    fn records_read_maps_and_resp2_arrays_alike() {
        let r = record(&complete());
        assert_eq!(r.text("tenant"), "acme");
        assert_eq!(r.text("keys"), "3000");
        assert_eq!(r.int("keys"), Some(3000));
        assert_eq!(r.int("missing"), None);
        assert_eq!(r.text("missing"), "");
        let flat = output::as_resp2(complete());
        let r2 = record(&flat);
        assert_eq!(
            r2.to_json(),
            r.to_json(),
            "RESP2 gives the same JSON object"
        );
        let j = r.to_json();
        assert_eq!(j["keys"], 3000);
        assert_eq!(j["created"], "2026-12-03T21:16:00.123Z");
        let e = Record::from_frame(&bulk("OK"), "TENANT.BACKUP.INFO").unwrap_err();
        assert_eq!(e.code, exit::FAILED);
        assert!(
            e.message.contains("unexpected TENANT.BACKUP.INFO reply"),
            "{e:?}"
        );
    }

    #[test]
    fn info_blocks() {
        let b = block(&record(&complete()));
        assert_eq!(
            b,
            "Backup backup_20261203T211600Z_acme of tenant acme: complete\n\
             \x20 format    native\n\
             \x20 keys      3,000\n\
             \x20 size      1.5 MiB (1,572,864 bytes)\n\
             \x20 created   2026-12-03T21:16:00.123Z (TENANT.BACKUP)\n\
             \x20 digest    00ff\n\
             \x20 path      /data/backups/backup_20261203T211600Z_acme.fbak\n"
        );
        let b = block(&record(&running()));
        assert!(
            b.starts_with("Backup nightly of tenant beta: running\n"),
            "{b}"
        );
        assert!(b.contains("  progress  400 / 1,000 keys (40%)\n"), "{b}");
        assert!(b.contains("  elapsed   1.5s\n"), "{b}");
    }

    #[test]
    fn list_tables() {
        let all: Vec<Record> = [complete(), running(), unreadable()]
            .iter()
            .map(record)
            .collect();
        let t = table(&all);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(
            lines[0].starts_with("ID                            TENANT  STATUS"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("backup_20261203T211600Z_acme  acme    complete"),
            "{t}"
        );
        assert!(
            lines[1].contains("3,000") && lines[1].contains("1.5 MiB"),
            "{t}"
        );
        assert!(
            lines[1].ends_with("2026-12-03T21:16:00.123Z  manual"),
            "{t}"
        );
        assert!(lines[2].contains("running (writing 40%)"), "{t}");
        assert!(lines[2].contains("400/1,000"), "{t}");
        assert!(
            lines[3].starts_with("broken ") && lines[3].contains("unreadable"),
            "{t}"
        );
        assert_eq!(
            lines[4],
            "broken: checksum mismatch in frame 3 (/data/backups/broken.fbak)"
        );
    }

    #[test]
    fn one_line_results() {
        assert_eq!(
            created_line(&record(&complete()), 0.25),
            "Created backup backup_20261203T211600Z_acme of tenant acme: 3,000 keys, 1.5 MiB (native) in 250ms."
        );
        let restored = map(&[
            ("tenant", "acme2"),
            ("source", "b1"),
            ("keys", "3000"),
            ("digest", "00ff"),
            ("took_ms", "1500"),
        ]);
        assert_eq!(
            restored_line(&record(&restored)),
            "Restored backup b1 into tenant acme2: 3,000 keys in 1.5s (digest 00ff)."
        );
        let from_rdb = map(&[
            ("tenant", "acme"),
            ("source", "rdb:/tmp/dump.rdb"),
            ("keys", "0"),
            ("digest", "0"),
            ("took_ms", "5"),
        ]);
        assert!(
            restored_line(&record(&from_rdb))
                .starts_with("Restored RDB file /tmp/dump.rdb into tenant acme: 0 keys in 5ms")
        );
    }
}
