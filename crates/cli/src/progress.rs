//! Progress bars for commands the server answers only when their work is done (TENANT.BACKUP,
//! TENANT.RESTORE): the command goes out on a connection of its own, and meanwhile the session's
//! connection polls TENANT.BACKUP.JOBS for the job the command started and draws a bar from it.
//! Without a terminal (or with `--no-progress`) the command is just sent and awaited.

use std::time::Duration;

use ferrite_client::{Frame, value};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backup::Record;
use crate::migrate::grouped;
use crate::session::{Failure, Session};

/// How long the command's own connection waits for its reply: a backup or restore takes as long
/// as its tenant needs (the session's usual 90 s would give up on a large one).
const LONG_COMMAND: Duration = Duration::from_secs(24 * 3600);

/// How often TENANT.BACKUP.JOBS is polled while the bar is shown.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// A poll that takes longer than this is abandoned (the bar just keeps its last state).
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// Which running job is the one this command started (TENANT.BACKUP.JOBS lists every job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ours {
    /// A backup of `tenant`: the job named `id` when the command gave a NAME, otherwise a backup
    /// job of the tenant that was not running yet when the command was sent (`before`).
    Backup {
        tenant: String,
        id: Option<String>,
        before: Vec<String>,
    },
    /// A restore into `tenant` (the server runs one per destination at a time).
    Restore { tenant: String },
}

impl Ours {
    pub fn matches(&self, job: &Record) -> bool {
        match self {
            Ours::Backup { tenant, id, before } => {
                job.text("kind") == "backup"
                    && job.text("tenant") == *tenant
                    && match id {
                        Some(id) => job.text("id") == *id,
                        None => !before.iter().any(|b| *b == job.text("id")),
                    }
            }
            Ours::Restore { tenant } => {
                job.text("kind") == "restore" && job.text("tenant") == *tenant
            }
        }
    }
}

/// The running jobs in a TENANT.BACKUP.JOBS reply (entries that are not maps are skipped).
pub fn parse_jobs(f: &Frame) -> Vec<Record> {
    value::as_array(f)
        .unwrap_or_default()
        .iter()
        .filter_map(|j| Record::from_frame(j, "TENANT.BACKUP.JOBS").ok())
        .collect()
}

/// What the bar shows for `job` (None: not listed yet, or already gone): how far it is, as
/// (done, total), when a total is known, and the text after the bar. A restore of an RDB file
/// goes by the bytes of the file read (known from the start, and counted smoothly), with the
/// keys loaded beside them; other jobs go by keys.
pub fn describe(job: Option<&Record>) -> (Option<(u64, u64)>, String) {
    let Some(job) = job else {
        return (None, "waiting for the server".into());
    };
    let phase = job.text("phase");
    let done = job.int("done_keys").unwrap_or(0);
    let keys = match job.int("total_keys").unwrap_or(0) {
        // The total is 0 until known (and for an empty tenant): just a count then.
        0 if done == 0 => None,
        0 => Some(format!("{} keys", grouped(done))),
        total => Some(format!("{}/{} keys", grouped(done), grouped(total))),
    };
    let with_keys = |rest: String| match &keys {
        Some(k) => format!("{phase} · {k}{rest}"),
        None if rest.is_empty() => phase.clone(),
        None => format!("{phase}{rest}"),
    };
    match (
        job.int("total_bytes").unwrap_or(0),
        job.int("total_keys").unwrap_or(0),
    ) {
        (0, 0) => (None, with_keys(String::new())),
        (0, total) => (Some((done.min(total), total)), with_keys(String::new())),
        (size, _) => {
            let read = job.int("done_bytes").unwrap_or(0).min(size);
            (
                Some((read, size)),
                with_keys(format!(
                    " · {}/{} read",
                    crate::migrate::bytes(read as f64),
                    crate::migrate::bytes(size as f64)
                )),
            )
        }
    }
}

/// The bar: a spinner while the total is unknown, a bar once it is.
struct Bar {
    bar: ProgressBar,
    spinner: ProgressStyle,
    counted: ProgressStyle,
    has_total: bool,
}

impl Bar {
    fn new(label: &str) -> Option<Bar> {
        let spinner =
            ProgressStyle::with_template("{spinner:.cyan} {prefix} · {msg} · {elapsed}").ok()?;
        let counted = ProgressStyle::with_template(
            "{spinner:.cyan} {prefix} {bar:30.cyan/blue} {percent:>3}% · {msg} · {elapsed} · ETA {eta}",
        )
        .ok()?
        .progress_chars("█▉▊▋▌▍▎▏░");
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        bar.set_style(spinner.clone());
        bar.set_prefix(label.to_string());
        bar.set_message("waiting for the server");
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(Bar {
            bar,
            spinner,
            counted,
            has_total: false,
        })
    }

    fn show(&mut self, job: Option<&Record>) {
        let (count, msg) = describe(job);
        match count {
            Some((done, total)) => {
                if !self.has_total {
                    self.bar.set_style(self.counted.clone());
                    self.has_total = true;
                }
                self.bar.set_length(total);
                self.bar.set_position(done);
            }
            None if self.has_total && job.is_some() => {
                self.bar.set_style(self.spinner.clone());
                self.has_total = false;
            }
            None => {}
        }
        self.bar.set_message(msg);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Runs `args` (a command that replies when its work is done) on a connection of its own and
/// returns its reply. With `watch`, a bar labelled `label` shows the job's progress meanwhile,
/// from TENANT.BACKUP.JOBS polled on `s`; polls that fail only leave the bar as it was.
pub async fn run_with_progress(
    s: &mut Session,
    args: &[String],
    watch: Option<Ours>,
    label: &str,
) -> Result<Frame, Failure> {
    let opts = s.options.clone().command_timeout(LONG_COMMAND);
    let mut worker = Session::connect(opts, s.resp2()).await?;
    let (Some(ours), Some(mut bar)) = (watch, Bar::new(label)) else {
        return worker.run(args).await;
    };
    let work = worker.run(args);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            reply = &mut work => {
                drop(bar);
                return reply;
            }
            _ = tick.tick() => {
                let polled = tokio::time::timeout(POLL_TIMEOUT, s.run(&["TENANT.BACKUP.JOBS"])).await;
                if let Ok(Ok(f)) = polled {
                    let jobs = parse_jobs(&f);
                    bar.show(jobs.iter().find(|j| ours.matches(j)));
                }
            }
        }
    }
}

/// The ids of `tenant`'s backup jobs running now (to tell ours apart once it starts); empty
/// when they cannot be read.
pub async fn running_backups(s: &mut Session, tenant: &str) -> Vec<String> {
    match tokio::time::timeout(POLL_TIMEOUT, s.run(&["TENANT.BACKUP.JOBS"])).await {
        Ok(Ok(f)) => parse_jobs(&f)
            .into_iter()
            .filter(|j| j.text("kind") == "backup" && j.text("tenant") == tenant)
            .map(|j| j.text("id"))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(pairs: &[(&str, &str)]) -> Record {
        let data = pairs
            .iter()
            .map(|(k, v)| {
                let value = match v.parse::<i64>() {
                    Ok(n) => Frame::Number {
                        data: n,
                        attributes: None,
                    },
                    Err(_) => Frame::BlobString {
                        data: v.as_bytes().to_vec().into(),
                        attributes: None,
                    },
                };
                (
                    Frame::BlobString {
                        data: k.as_bytes().to_vec().into(),
                        attributes: None,
                    },
                    value,
                )
            })
            .collect();
        Record::from_frame(
            &Frame::Map {
                data,
                attributes: None,
            },
            "test",
        )
        .expect("record")
    }

    #[test]
    fn finds_the_job_this_command_started() {
        let named = job(&[("id", "n1"), ("kind", "backup"), ("tenant", "acme")]);
        let other = job(&[("id", "old"), ("kind", "backup"), ("tenant", "acme")]);
        let restore = job(&[("id", "n1"), ("kind", "restore"), ("tenant", "acme")]);
        let ours = Ours::Backup {
            tenant: "acme".into(),
            id: Some("n1".into()),
            before: Vec::new(),
        };
        assert!(ours.matches(&named));
        assert!(!ours.matches(&other) && !ours.matches(&restore));
        // Without a name: any backup of the tenant that was not running before.
        let unnamed = Ours::Backup {
            tenant: "acme".into(),
            id: None,
            before: vec!["old".into()],
        };
        assert!(unnamed.matches(&named) && !unnamed.matches(&other));
        let into = |t: &str| Ours::Restore { tenant: t.into() };
        assert!(into("acme").matches(&restore));
        assert!(!into("acme2").matches(&restore) && !into("acme").matches(&named));
    }

    #[test]
    fn bar_text_follows_the_job() {
        assert_eq!(describe(None), (None, "waiting for the server".into()));
        let waiting = job(&[
            ("phase", "waiting for the copy"),
            ("done_keys", "0"),
            ("total_keys", "0"),
        ]);
        assert_eq!(
            describe(Some(&waiting)),
            (None, "waiting for the copy".into())
        );
        let writing = job(&[
            ("phase", "writing"),
            ("done_keys", "1200"),
            ("total_keys", "3000"),
        ]);
        assert_eq!(
            describe(Some(&writing)),
            (Some((1200, 3000)), "writing · 1,200/3,000 keys".into())
        );
        // An RDB file's total is unknown while it loads: a count, no bar.
        let loading = job(&[
            ("phase", "loading"),
            ("done_keys", "5000"),
            ("total_keys", "0"),
        ]);
        assert_eq!(
            describe(Some(&loading)),
            (None, "loading · 5,000 keys".into())
        );
        // A restore of an RDB file: by bytes read, from the start (its keys beside them).
        let from_rdb = job(&[
            ("phase", "loading"),
            ("done_keys", "0"),
            ("total_keys", "0"),
            ("done_bytes", "1048576"),
            ("total_bytes", "4194304"),
        ]);
        assert_eq!(
            describe(Some(&from_rdb)),
            (
                Some((1_048_576, 4_194_304)),
                "loading · 1.0 MiB/4.0 MiB read".into()
            )
        );
        let announced = job(&[
            ("phase", "loading"),
            ("done_keys", "65536"),
            ("total_keys", "100000"),
            ("done_bytes", "3145728"),
            ("total_bytes", "4194304"),
        ]);
        assert_eq!(
            describe(Some(&announced)),
            (
                Some((3_145_728, 4_194_304)),
                "loading · 65,536/100,000 keys · 3.0 MiB/4.0 MiB read".into()
            )
        );
        // Never past the end, whatever the counters say.
        let over = job(&[("phase", "x"), ("done_keys", "12"), ("total_keys", "10")]);
        assert_eq!(describe(Some(&over)).0, Some((10, 10)));
    }

    #[test]
    fn jobs_reply_parses_and_skips_what_is_not_a_map() {
        let list = Frame::Array {
            data: vec![
                Frame::Null,
                Frame::Array {
                    data: vec![
                        Frame::BlobString {
                            data: "kind".as_bytes().to_vec().into(),
                            attributes: None,
                        },
                        Frame::BlobString {
                            data: "restore".as_bytes().to_vec().into(),
                            attributes: None,
                        },
                    ],
                    attributes: None,
                },
            ],
            attributes: None,
        };
        let jobs = parse_jobs(&list);
        assert_eq!(jobs.len(), 1, "a RESP2 flat array is a map too");
        assert_eq!(jobs[0].text("kind"), "restore");
        assert!(parse_jobs(&Frame::Null).is_empty());
    }
}
