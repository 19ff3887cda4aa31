//! `migrate watch`: polls TENANT.MIGRATE.STATUS and shows one progress bar per migration,
//! redrawn in place (or, when stdout is not a terminal, one plain line per migration and
//! refresh), until every watched migration has reached a final state. With `--all` it also
//! waits for a migration to start when none is running yet.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ferrite_client::Frame;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::migrate::{
    self, Overview, Status, bytes, duration, fetch_all, fetch_status, grouped, rate,
};
use crate::output::Format;
use crate::session::{Failure, Session, exit};

/// How long polls may keep failing on connection errors before watch gives up (exit 3).
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// One watched migration.
struct Tracked {
    id: String,
    last: Status,
    /// Its outcome has been shown.
    reported: bool,
}

/// Where the view goes.
enum View {
    /// Bars redrawn in place.
    Live(Box<LiveView>),
    /// One line per migration and refresh.
    Plain,
    /// One JSON document per refresh.
    Json,
}

struct LiveView {
    multi: MultiProgress,
    header: ProgressBar,
    bars: Vec<(String, ProgressBar)>,
    running: ProgressStyle,
    done: ProgressStyle,
}

impl LiveView {
    fn new() -> Option<LiveView> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let header = multi.add(ProgressBar::new(0));
        header.set_style(ProgressStyle::with_template("{msg}").ok()?);
        let running = ProgressStyle::with_template("{prefix}\n  {bar:30.cyan/blue} {msg}")
            .ok()?
            .progress_chars("█▉▊▋▌▍▎▏░");
        let done = ProgressStyle::with_template("{prefix}\n  {msg}").ok()?;
        Some(LiveView {
            multi,
            header,
            bars: Vec::new(),
            running,
            done,
        })
    }

    fn bar(&mut self, st: &Status) -> ProgressBar {
        if let Some((_, b)) = self.bars.iter().find(|(id, _)| id == st.id()) {
            return b.clone();
        }
        let b = self.multi.add(ProgressBar::new(1000));
        b.set_style(self.running.clone());
        b.set_prefix(format!(
            "● {}  {} -> {}  ({})",
            st.get("tenant"),
            st.id(),
            st.get("target"),
            st.get("mode")
        ));
        self.bars.push((st.id().to_string(), b.clone()));
        b
    }
}

/// The progress part of a line: progress, phase, state, rate, lag and ETA.
fn summary(st: &Status) -> String {
    format!(
        "{:>4} · {} · {} · {}/{} keys · {} keys/s · lag {} keys / {} / {}s · ETA {}",
        st.get("progress"),
        st.get("phase"),
        st.state(),
        grouped(st.num("keys_synced") as u64),
        grouped(st.num("keys_total") as u64),
        rate(st.num("keys_per_sec")),
        grouped(st.num("lag_keys") as u64),
        bytes(st.num("lag_bytes")),
        st.get("lag_seconds"),
        st.eta()
    )
}

/// A plain refresh line, stable enough to grep: `key=value` fields after the id and tenant.
fn plain_line(elapsed: Duration, st: &Status) -> String {
    format!(
        "[{:>7.1}s] {} {} state={} phase={} progress={} keys={}/{} keys_per_sec={} lag_keys={} lag_bytes={} lag_seconds={} eta={}",
        elapsed.as_secs_f64(),
        st.id(),
        st.get("tenant"),
        st.state(),
        st.get("phase"),
        st.get("progress"),
        st.get("keys_synced"),
        st.get("keys_total"),
        st.get("keys_per_sec"),
        st.get("lag_keys"),
        st.get("lag_bytes"),
        st.get("lag_seconds"),
        st.eta()
    )
}

/// Watches one migration (`id`) or every running one (`None`) until all have ended; with
/// `all`, nothing running yet means waiting for one to start (until Ctrl-C or the timeout)
/// rather than ending at once. Exit 0 when all completed (or verified), 1 when any failed or was
/// cancelled, 4 on timeout.
pub async fn run(
    s: &mut Session,
    id: Option<String>,
    all: bool,
    interval: Duration,
    timeout: Option<Duration>,
    format: Format,
) -> Result<u8, Failure> {
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let mut view = match format {
        Format::Json => View::Json,
        _ if std::io::stdout().is_terminal() => {
            LiveView::new().map_or(View::Plain, |v| View::Live(Box::new(v)))
        }
        _ => View::Plain,
    };
    let mut tracked: Vec<Tracked> = Vec::new();
    // With --all: migrations that had already ended when watching began are not watched.
    let mut ignored: HashSet<String> = HashSet::new();
    let mut first = true;
    let mut waiting_shown = false;
    let mut failing_since: Option<Instant> = None;
    loop {
        let polled = match &id {
            Some(id) => fetch_status(s, id).await.map(|st| (vec![st], None)),
            None => fetch_all(s).await.map(|o| (o.migrations.clone(), Some(o))),
        };
        let (statuses, overview) = match polled {
            Ok(v) => {
                failing_since = None;
                v
            }
            Err(f) if f.code == exit::CONNECT => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GIVE_UP_AFTER {
                    return Err(f);
                }
                match &view {
                    View::Live(v) => v.header.set_message(format!("{} (retrying)", f.message)),
                    _ => eprintln!("{} (retrying)", f.message),
                }
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(f) => return Err(f),
        };
        for st in statuses {
            if let Some(t) = tracked.iter_mut().find(|t| t.id == st.id()) {
                t.last = st;
            } else if id.is_none() && first && st.is_final() {
                ignored.insert(st.id().to_string());
            } else if !ignored.contains(st.id()) {
                tracked.push(Tracked {
                    id: st.id().to_string(),
                    last: st,
                    reported: false,
                });
            }
        }
        first = false;
        if tracked.is_empty() && !all {
            match view {
                View::Json => outln!("[]"),
                _ => outln!("No running migrations on {}.", s.addr()),
            }
            return Ok(exit::OK);
        }
        if tracked.is_empty() {
            let waiting = format!(
                "No running migrations on {} yet; waiting for one to start (Ctrl-C to stop).",
                s.addr()
            );
            match &view {
                View::Live(v) => v.header.set_message(waiting),
                // One JSON document per refresh, as when migrations are running.
                View::Json => outln!("[]"),
                View::Plain if !waiting_shown => outln!("{waiting}"),
                View::Plain => {}
            }
            waiting_shown = true;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if let View::Live(v) = &view {
                    v.multi.clear().ok();
                }
                return Err(Failure::new(
                    exit::TIMEOUT,
                    format!(
                        "timed out after {}: no migration started on {}",
                        duration(started.elapsed().as_secs_f64()),
                        s.addr()
                    ),
                ));
            }
            tokio::time::sleep(interval).await;
            continue;
        }
        show(
            &mut view,
            s.addr(),
            interval,
            started.elapsed(),
            &mut tracked,
            overview.as_ref(),
        );
        if tracked.iter().all(|t| t.last.is_final()) {
            return Ok(finish(view, &tracked));
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            let running: Vec<String> = tracked
                .iter()
                .filter(|t| !t.last.is_final())
                .map(|t| format!("{} is {}", t.id, t.last.state()))
                .collect();
            if let View::Live(v) = &view {
                v.multi.clear().ok();
            }
            return Err(Failure::new(
                exit::TIMEOUT,
                format!(
                    "timed out after {}: {}",
                    duration(started.elapsed().as_secs_f64()),
                    running.join(", ")
                ),
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// The dashboard's totals (`--all`): counts by stage, summed rates, the ETA of everything.
fn totals_summary(o: &Overview) -> String {
    format!(
        "{} migrations · {} running · {} queued · {} waiting · {} awaiting approval · {} done · {} failed · {} keys/s · {}/s · ETA {}",
        o.totals.get("migrations_total"),
        o.count(&["syncing", "live_sync", "paused", "cutting_over"]),
        o.count(&["queued", "approved"]),
        o.count(&["waiting"]),
        o.count(&["awaiting_approval"]),
        o.count(&["completed", "verified"]),
        o.count(&["failed"]),
        rate(o.totals.num("keys_per_sec")),
        bytes(o.totals.num("bytes_per_sec")),
        o.totals.eta()
    )
}

fn show(
    view: &mut View,
    addr: &str,
    interval: Duration,
    elapsed: Duration,
    tracked: &mut [Tracked],
    overview: Option<&Overview>,
) {
    match view {
        View::Live(v) => {
            let running = tracked.iter().filter(|t| !t.last.is_final()).count();
            let totals = overview
                .map(|o| format!("\n{}", totals_summary(o)))
                .unwrap_or_default();
            v.header.set_message(format!(
                "Migrations on {addr} · {running} running · refresh every {} ms · {}{totals}",
                interval.as_millis(),
                duration(elapsed.as_secs_f64())
            ));
            for t in tracked.iter_mut() {
                let bar = v.bar(&t.last);
                if t.last.is_final() {
                    if !t.reported {
                        bar.set_position(if t.last.succeeded() {
                            1000
                        } else {
                            bar.position()
                        });
                        bar.set_style(v.done.clone());
                        let mark = if t.last.succeeded() { "✔" } else { "✘" };
                        bar.finish_with_message(format!("{mark} {}", t.last.outcome_detail()));
                        t.reported = true;
                    }
                } else {
                    bar.set_position((t.last.num("progress") * 10.0).clamp(0.0, 1000.0) as u64);
                    bar.set_message(summary(&t.last));
                }
            }
        }
        View::Plain => {
            if let Some(o) = overview {
                outln!(
                    "[{:>7.1}s] totals {}",
                    elapsed.as_secs_f64(),
                    o.totals_line()
                );
            }
            for t in tracked.iter_mut() {
                if t.reported {
                    continue;
                }
                outln!("{}", plain_line(elapsed, &t.last));
                if t.last.is_final() {
                    outln!("{}", t.last.outcome());
                    t.reported = true;
                }
            }
        }
        View::Json => {
            let list = Frame::Array {
                data: tracked.iter().map(|t| t.last.frame.clone()).collect(),
                attributes: None,
            };
            crate::emit_bytes(&migrate::render(&list, Format::Json));
            for t in tracked.iter_mut() {
                t.reported |= t.last.is_final();
            }
        }
    }
}

/// Prints the outcome lines and picks the exit code.
fn finish(view: View, tracked: &[Tracked]) -> u8 {
    if let View::Live(v) = view {
        v.header.finish();
        drop(v);
        for t in tracked {
            outln!("{}", t.last.outcome());
        }
    }
    if tracked.iter().all(|t| t.last.succeeded()) {
        exit::OK
    } else {
        exit::FAILED
    }
}
