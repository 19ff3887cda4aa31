//! TENANT.BACKUP, TENANT.BACKUP.LIST/INFO/DELETE/JOBS and TENANT.RESTORE: syntax and replies.
//!
//! ```text
//! TENANT.BACKUP <tenant> [NAME <name>] [FORMAT native|rdb]
//! TENANT.BACKUP.LIST [<tenant>]
//! TENANT.BACKUP.INFO <id>
//! TENANT.BACKUP.DELETE <id>
//! TENANT.BACKUP.JOBS
//! TENANT.RESTORE <tenant> BACKUP <id> [AS <new-tenant>] [REPLACE]
//! TENANT.RESTORE <tenant> RDB <path> [REPLACE]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_tenancy::Registry;

use super::jobs::{Job, JobKind};
use super::store::{self, Format, Found};
use crate::cmd::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::Flow;
use crate::errors;
use crate::shared::Shared;

/// Where a restore reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A backup of the backup directory, by id.
    Backup(String),
    /// A Redis RDB file on the server's filesystem, and which of its databases to load (`DB
    /// <n>`; none: database 0, refusing a file with keys elsewhere).
    Rdb(PathBuf, Option<u64>),
}

/// A parsed backup command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Backup {
        tenant: String,
        name: Option<String>,
        format: Format,
    },
    List {
        tenant: Option<String>,
    },
    Info {
        id: String,
    },
    Delete {
        id: String,
    },
    Jobs,
    Restore {
        /// The tenant the backup is of (and, without AS, the one written).
        tenant: String,
        source: Source,
        /// Restore into this tenant instead (created if missing).
        as_tenant: Option<String>,
        replace: bool,
    },
}

fn tenant_id(args: &Args<'_>, i: usize) -> Result<String, ErrorReply> {
    Registry::validate_id(args.get(i))
        .map(str::to_string)
        .map_err(|e| errors::tenancy(&e))
}

fn backup_id(args: &Args<'_>, i: usize) -> Result<String, ErrorReply> {
    store::parse_id(args.get(i))
        .map(str::to_string)
        .map_err(ErrorReply::err)
}

/// Parses a backup command (`name` is its lower-case table name; arity was checked).
pub fn parse(name: &str, args: &Args<'_>) -> Result<Request, ErrorReply> {
    match name {
        "tenant.backup" => {
            let tenant = tenant_id(args, 1)?;
            let (mut name, mut format) = (None, Format::Native);
            let mut i = 2;
            while i < args.len() {
                if i + 1 >= args.len() {
                    return Err(ErrorReply::syntax());
                }
                if args.is(i, "NAME") {
                    name = Some(backup_id(args, i + 1)?);
                } else if args.is(i, "FORMAT") {
                    format = Format::parse(args.get(i + 1)).ok_or_else(|| {
                        ErrorReply::err(format!(
                            "unknown backup format '{}': use native or rdb",
                            args.text(i + 1)
                        ))
                    })?;
                } else {
                    return Err(ErrorReply::syntax());
                }
                i += 2;
            }
            Ok(Request::Backup {
                tenant,
                name,
                format,
            })
        }
        "tenant.backup.list" => match args.len() {
            1 => Ok(Request::List { tenant: None }),
            2 => Ok(Request::List {
                tenant: Some(tenant_id(args, 1)?),
            }),
            _ => Err(ErrorReply::syntax()),
        },
        "tenant.backup.info" => Ok(Request::Info {
            id: backup_id(args, 1)?,
        }),
        "tenant.backup.delete" => Ok(Request::Delete {
            id: backup_id(args, 1)?,
        }),
        "tenant.backup.jobs" => Ok(Request::Jobs),
        "tenant.restore" => {
            let tenant = tenant_id(args, 1)?;
            if args.len() < 4 {
                return Err(ErrorReply::syntax());
            }
            let mut source = if args.is(2, "BACKUP") {
                Source::Backup(backup_id(args, 3)?)
            } else if args.is(2, "RDB") {
                let path = std::str::from_utf8(args.get(3))
                    .map_err(|_| ErrorReply::err("the RDB path must be UTF-8"))?;
                if path.is_empty() {
                    return Err(ErrorReply::err("the RDB path cannot be empty"));
                }
                Source::Rdb(PathBuf::from(path), None)
            } else {
                return Err(ErrorReply::syntax());
            };
            let (mut as_tenant, mut replace) = (None, false);
            let mut i = 4;
            while i < args.len() {
                if args.is(i, "REPLACE") {
                    replace = true;
                    i += 1;
                } else if args.is(i, "DB") && i + 1 < args.len() {
                    let Source::Rdb(_, db) = &mut source else {
                        return Err(ErrorReply::err(
                            "DB is for RDB files: TENANT.RESTORE <tenant> RDB <path> DB <n>",
                        ));
                    };
                    let n = std::str::from_utf8(args.get(i + 1))
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())
                        .ok_or_else(|| ErrorReply::err("DB must be a database number"))?;
                    *db = Some(n);
                    i += 2;
                } else if args.is(i, "AS") && i + 1 < args.len() {
                    if matches!(source, Source::Rdb(..)) {
                        // The tenant named is the one written: AS would say it twice.
                        return Err(ErrorReply::err(
                            "AS is for backups: TENANT.RESTORE <tenant> RDB <path> loads into <tenant>",
                        ));
                    }
                    as_tenant = Some(tenant_id(args, i + 1)?);
                    i += 2;
                } else {
                    return Err(ErrorReply::syntax());
                }
            }
            Ok(Request::Restore {
                tenant,
                source,
                as_tenant,
                replace,
            })
        }
        _ => Err(ErrorReply::err(format!("unknown backup command '{name}'"))),
    }
}

/// Runs a backup command.
pub async fn run(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    name: &str,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let proto = st.proto;
    match parse(name, &args)? {
        Request::Backup {
            tenant,
            name,
            format,
        } => {
            let t = sh
                .registry
                .get(&tenant)
                .ok_or_else(|| ErrorReply::err(format!("no such tenant '{tenant}'")))?;
            let found = super::take_backup(sh, &t, name, format, false).await?;
            ReplyWriter::new(out, proto).bulk_str(&found.meta.id);
        }
        Request::List { tenant } => {
            let dir = store::dir(sh);
            let only = tenant.clone();
            let (found, bad) =
                tokio::task::spawn_blocking(move || store::list(&dir, only.as_deref()))
                    .await
                    .map_err(|e| ErrorReply::err(format!("cannot list backups: {e}")))?;
            let running: Vec<Arc<Job>> = sh
                .backup_jobs
                .list()
                .into_iter()
                .filter(|j| j.kind == JobKind::Backup)
                .filter(|j| tenant.as_deref().is_none_or(|t| j.tenant == t))
                .collect();
            let mut w = ReplyWriter::new(out, proto);
            w.array(found.len() + bad.len() + running.len());
            for f in &found {
                describe(&mut w, f);
            }
            for j in &running {
                describe_job(&mut w, j);
            }
            for b in &bad {
                w.str_map(&[
                    ("id", b.id.as_str()),
                    ("status", "unreadable"),
                    ("path", &b.path.display().to_string()),
                    ("error", &b.error),
                ]);
            }
        }
        Request::Info { id } => {
            if let Some(j) = sh.backup_jobs.backup(&id) {
                describe_job(&mut ReplyWriter::new(out, proto), &j);
                return Ok(Flow::Continue);
            }
            let dir = store::dir(sh);
            let lookup = id.clone();
            let found = tokio::task::spawn_blocking(move || store::find(&dir, &lookup))
                .await
                .map_err(|e| ErrorReply::err(format!("cannot read backup '{id}': {e}")))?
                .map_err(|e| ErrorReply::err(format!("backup '{id}' cannot be read: {e}")))?
                .ok_or_else(|| no_such_backup(&id))?;
            describe(&mut ReplyWriter::new(out, proto), &found);
        }
        Request::Delete { id } => {
            if sh.backup_jobs.backup(&id).is_some() {
                return Err(ErrorReply::err(format!(
                    "backup '{id}' is being written: delete it when it is done"
                )));
            }
            let dir = store::dir(sh);
            if !store::delete(&dir, &id).map_err(ErrorReply::err)? {
                return Err(no_such_backup(&id));
            }
            tracing::info!(backup = %id, "backup deleted");
            ReplyWriter::new(out, proto).ok();
        }
        Request::Jobs => {
            let jobs = sh.backup_jobs.list();
            let mut w = ReplyWriter::new(out, proto);
            w.array(jobs.len());
            for j in &jobs {
                describe_job(&mut w, j);
            }
        }
        Request::Restore {
            tenant,
            source,
            as_tenant,
            replace,
        } => {
            let done = super::restore(sh, &tenant, source, as_tenant.as_deref(), replace).await?;
            let mut w = ReplyWriter::new(out, proto);
            w.map(5);
            w.bulk_str("tenant");
            w.bulk_str(&done.tenant);
            w.bulk_str("source");
            w.bulk_str(&done.source);
            w.bulk_str("keys");
            w.int(done.keys as i64);
            w.bulk_str("digest");
            w.bulk_str(&done.digest);
            w.bulk_str("took_ms");
            w.int(done.took_ms as i64);
        }
    }
    Ok(Flow::Continue)
}

pub fn no_such_backup(id: &str) -> ErrorReply {
    ErrorReply::err(format!("no such backup '{id}'"))
}

/// A finished backup as a map.
fn describe(w: &mut ReplyWriter<'_>, f: &Found) {
    let m = &f.meta;
    w.map(11);
    w.bulk_str("id");
    w.bulk_str(&m.id);
    w.bulk_str("tenant");
    w.bulk_str(&m.tenant);
    w.bulk_str("status");
    w.bulk_str("complete");
    w.bulk_str("format");
    w.bulk_str(m.format.name());
    w.bulk_str("path");
    w.bulk_str(&f.path.display().to_string());
    w.bulk_str("size");
    w.int(f.size as i64);
    w.bulk_str("keys");
    w.int(m.keys as i64);
    w.bulk_str("digest");
    w.bulk_str(&m.digest);
    w.bulk_str("created");
    w.bulk_str(&crate::timefmt::rfc3339_ms(m.created_ms));
    w.bulk_str("created_ms");
    w.int(m.created_ms as i64);
    w.bulk_str("scheduled");
    w.int(i64::from(m.scheduled));
}

/// A running job as a map.
fn describe_job(w: &mut ReplyWriter<'_>, j: &Job) {
    w.map(10);
    w.bulk_str("id");
    w.bulk_str(&j.id);
    w.bulk_str("kind");
    w.bulk_str(j.kind.name());
    w.bulk_str("tenant");
    w.bulk_str(&j.tenant);
    w.bulk_str("status");
    w.bulk_str("running");
    w.bulk_str("phase");
    w.bulk_str(j.progress.phase());
    w.bulk_str("done_keys");
    w.int(j.progress.done.load(Relaxed) as i64);
    w.bulk_str("total_keys");
    w.int(j.progress.total.load(Relaxed) as i64);
    w.bulk_str("done_bytes");
    w.int(j.progress.done_bytes.load(Relaxed) as i64);
    w.bulk_str("total_bytes");
    w.int(j.progress.total_bytes.load(Relaxed) as i64);
    w.bulk_str("elapsed_ms");
    w.int(j.started.elapsed().as_millis() as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<Request, String> {
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for w in words {
            ranges.push((data.len(), data.len() + w.len()));
            data.extend_from_slice(w.as_bytes());
        }
        let a = Args::new(&data, &ranges);
        parse(&words[0].to_ascii_lowercase(), &a).map_err(|e| e.to_string())
    }

    #[test]
    fn backup_syntax() {
        assert_eq!(
            parse_words(&["tenant.backup", "acme"]).unwrap(),
            Request::Backup {
                tenant: "acme".into(),
                name: None,
                format: Format::Native
            }
        );
        assert_eq!(
            parse_words(&["tenant.backup", "acme", "format", "RDB", "NAME", "n1"]).unwrap(),
            Request::Backup {
                tenant: "acme".into(),
                name: Some("n1".into()),
                format: Format::Rdb
            }
        );
        assert!(parse_words(&["tenant.backup", "acme", "NAME"]).is_err());
        assert!(
            parse_words(&["tenant.backup", "acme", "FORMAT", "tar"])
                .unwrap_err()
                .contains("unknown backup format")
        );
        assert!(
            parse_words(&["tenant.backup", "acme", "NAME", "../x"])
                .unwrap_err()
                .contains("invalid backup id")
        );
        assert!(parse_words(&["tenant.backup", "a/b"]).is_err());
    }

    #[test]
    fn restore_syntax() {
        assert_eq!(
            parse_words(&[
                "tenant.restore",
                "acme",
                "BACKUP",
                "b1",
                "AS",
                "acme2",
                "REPLACE"
            ])
            .unwrap(),
            Request::Restore {
                tenant: "acme".into(),
                source: Source::Backup("b1".into()),
                as_tenant: Some("acme2".into()),
                replace: true
            }
        );
        assert_eq!(
            parse_words(&["tenant.restore", "acme", "rdb", "/tmp/dump.rdb"]).unwrap(),
            Request::Restore {
                tenant: "acme".into(),
                source: Source::Rdb("/tmp/dump.rdb".into(), None),
                as_tenant: None,
                replace: false
            }
        );
        assert_eq!(
            parse_words(&[
                "tenant.restore",
                "acme",
                "rdb",
                "/tmp/d.rdb",
                "db",
                "3",
                "replace"
            ])
            .unwrap(),
            Request::Restore {
                tenant: "acme".into(),
                source: Source::Rdb("/tmp/d.rdb".into(), Some(3)),
                as_tenant: None,
                replace: true
            }
        );
        assert!(parse_words(&["tenant.restore", "acme", "RDB", "x", "DB", "-1"]).is_err());
        assert!(parse_words(&["tenant.restore", "acme", "BACKUP", "b1", "DB", "1"]).is_err());
        assert!(
            parse_words(&["tenant.restore", "acme", "BACKUP", "../../etc"])
                .unwrap_err()
                .contains("invalid backup id")
        );
        assert!(parse_words(&["tenant.restore", "acme", "RDB", "x", "AS", "b"]).is_err());
        assert!(parse_words(&["tenant.restore", "acme", "BACKUP", "b1", "AS"]).is_err());
        assert!(parse_words(&["tenant.restore", "acme", "FILE", "b1"]).is_err());
        assert!(parse_words(&["tenant.restore", "acme", "BACKUP", "b1", "AS", "bad/id"]).is_err());
    }

    #[test]
    fn list_info_delete_syntax() {
        assert_eq!(
            parse_words(&["tenant.backup.list"]).unwrap(),
            Request::List { tenant: None }
        );
        assert_eq!(
            parse_words(&["tenant.backup.list", "acme"]).unwrap(),
            Request::List {
                tenant: Some("acme".into())
            }
        );
        assert!(parse_words(&["tenant.backup.info", "../secret"]).is_err());
        assert!(parse_words(&["tenant.backup.delete", ".."]).is_err());
        assert_eq!(parse_words(&["tenant.backup.jobs"]).unwrap(), Request::Jobs);
    }
}
