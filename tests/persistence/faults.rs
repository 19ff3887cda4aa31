//! Damaged files and a full disk: a torn tail is dropped with a log line; damage in the middle
//! refuses the start naming file and offset, and `--check-data --repair` fixes it; a full disk
//! refuses writes with -MISCONF, keeps reads, and writes resume once there is space again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use redis::Commands;

use crate::common::{Server, ferrite_bin, scrape};
use crate::crash::walk_files;
use crate::util::*;

/// The newest log file of the default tenant.
fn newest_log(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = walk_files(dir)
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("-default/") && p.extension().is_some_and(|e| e == "flog")
        })
        .collect();
    logs.sort();
    logs.pop().expect("a log file")
}

/// Where a log's records end: logs are preallocated, zeros follow their last frame (see
/// `format::FLAG_ZERO_TAIL`).
fn records_end(log: &Path) -> usize {
    let f = std::fs::File::open(log).unwrap();
    let len = f.metadata().unwrap().len();
    ferrite_persistence::log::records_end(&f, log, len).unwrap() as usize
}

/// `ferrite` run to completion with `args` (for failed starts and --check-data).
fn run_ferrite(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ferrite_bin())
        .args(args)
        .output()
        .expect("run ferrite");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_keys(s: &Server, n: usize) {
    let mut c = s.conn();
    for i in 0..n {
        let _: () = c.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
}

#[test]
fn a_torn_tail_is_dropped_with_a_log_line_and_the_server_starts() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &[]);
    write_keys(&s, 100);
    sigkill(s);
    // The last write, cut short by the crash: its last bytes never reached the file, whose
    // preallocated zeros are still there.
    let log = newest_log(dir.path());
    let mut bytes = std::fs::read(&log).unwrap();
    let end = records_end(&log);
    assert!(end < bytes.len(), "the log has no preallocated tail");
    bytes[end - 5..end].fill(0);
    std::fs::write(&log, &bytes).unwrap();
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    assert_eq!(c.get::<_, Option<String>>("k99").unwrap(), None);
    assert_eq!(c.get::<_, String>("k98").unwrap(), "v98");
    let log_line = s
        .log()
        .into_iter()
        .find(|l| l.contains("torn tail"))
        .unwrap_or_else(|| panic!("no log line about the torn tail: {:?}", s.log()));
    assert!(
        log_line.contains(&*log.to_string_lossy()) && log_line.contains("offset"),
        "{log_line}"
    );
    assert_eq!(info(&mut c, "persistence")["load_torn_tails"], "1");
    // The cut tail is gone for good: writes after it load again.
    let _: () = c.set("after", "1").unwrap();
    drop(c);
    sigkill(s);
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    assert_eq!(c.get::<_, String>("after").unwrap(), "1");
    assert_eq!(c.get::<_, String>("k98").unwrap(), "v98");
}

#[test]
fn damage_in_the_middle_refuses_the_start_and_the_checker_repairs_it() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &[]);
    write_keys(&s, 200);
    shutdown(s, &[]);
    let log = newest_log(dir.path());
    let mut bytes = std::fs::read(&log).unwrap();
    let at = records_end(&log) / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&log, &bytes).unwrap();
    let d = dir.path().to_string_lossy().into_owned();
    let secret = dir.path().join("admin.secret");
    let secret = secret.to_string_lossy();
    let (code, _, err) = run_ferrite(&[
        "--port",
        "0",
        "--metrics-addr",
        "off",
        "--dir",
        &d,
        "--admin-secret-file",
        &secret,
    ]);
    assert_ne!(code, 0, "the server started on a damaged log");
    assert!(
        err.contains(&*log.to_string_lossy()) && err.contains("corrupt at offset"),
        "{err}"
    );
    // The checker names it too, and changes nothing without --repair.
    let (code, out, _) = run_ferrite(&["--check-data", &d]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("corrupt at offset") && out.contains("--repair"),
        "{out}"
    );
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
    let (code, out, _) = run_ferrite(&["--check-data", &d, "--repair"]);
    assert_eq!(code, 0, "{out}");
    // The damaged records are told apart from the preallocated zeros after them.
    assert!(
        out.contains("cut at offset") && out.contains("preallocated zero bytes"),
        "{out}"
    );
    let (code, out, _) = run_ferrite(&["--check-data", &d]);
    assert_eq!(code, 0, "{out}");
    // The server starts with everything before the damage.
    let s = Server::start_in(dir.path(), &[]);
    let mut c = s.conn();
    assert_eq!(c.get::<_, String>("k0").unwrap(), "v0");
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(keys > 0 && keys < 200, "{keys} keys");
    for i in 0..keys {
        assert_eq!(
            c.get::<_, String>(format!("k{i}")).unwrap(),
            format!("v{i}")
        );
    }
    // A directory in use is not checked.
    let (code, _, err) = run_ferrite(&["--check-data", &d]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn a_damaged_snapshot_or_catalog_refuses_the_start() {
    let dir = data_dir();
    let s = Server::start_in(dir.path(), &[]);
    write_keys(&s, 100);
    let mut c = s.conn();
    ok(&mut c, &["SAVE"]);
    drop(c);
    shutdown(s, &[]);
    let snap = walk_files(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "fsnap"))
        .expect("a snapshot");
    let good = std::fs::read(&snap).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 20] ^= 1;
    std::fs::write(&snap, &bad).unwrap();
    let d = dir.path().to_string_lossy().into_owned();
    let (code, _, err) = run_ferrite(&["--port", "0", "--metrics-addr", "off", "--dir", &d]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&*snap.to_string_lossy()) && err.contains("offset"),
        "{err}"
    );
    let (code, out, _) = run_ferrite(&["--check-data", &d, "--repair"]);
    assert_eq!(code, 1, "a snapshot cannot be repaired: {out}");
    std::fs::write(&snap, &good).unwrap();
    let catalog = dir.path().join("catalog.fcat");
    let mut cat = std::fs::read(&catalog).unwrap();
    cat[12] ^= 0xff;
    std::fs::write(&catalog, &cat).unwrap();
    let (code, _, err) = run_ferrite(&["--port", "0", "--metrics-addr", "off", "--dir", &d]);
    assert_ne!(code, 0);
    assert!(err.contains("catalog.fcat"), "{err}");
}

/// A small real filesystem (tmpfs) mounted for the test, unmounted when dropped; None where
/// mounting is not permitted.
struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    fn mount(under: &Path, size: &str) -> Option<SmallFs> {
        let path = under.join("mnt");
        std::fs::create_dir_all(&path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs { path })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Fills `fs` with a ballast file until the disk is full; returns it.
fn fill_up(dir: &Path) -> PathBuf {
    use std::io::Write;
    let ballast = dir.join("ballast");
    let mut f = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..100_000 {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    for _ in 0..4096 {
        if f.write_all(&[0u8]).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    ballast
}

/// Writes until one fails; returns the acknowledged keys and the error of the first failure.
fn write_until_refused(s: &Server, value: &str) -> (Vec<String>, String) {
    let mut acked = Vec::new();
    let mut c = s.conn();
    for i in 0..5000 {
        let k = format!("big:{i}");
        let r: redis::RedisResult<()> = c.set(&k, value);
        match r {
            Ok(()) => acked.push(k),
            Err(e) => return (acked, e.to_string()),
        }
    }
    panic!("5000 writes of {} bytes went through", value.len());
}

/// Writes are refused with MISCONF, reads work, and writes come back by themselves.
fn refused_then_resumed(s: &Server, free_space: impl FnOnce()) -> Vec<String> {
    let value = "v".repeat(4096);
    let (mut acked, first) = write_until_refused(s, &value);
    eprintln!("first failure after {} writes: {first}", acked.len());
    let mut c = s.conn();
    let e = err(&mut c, &["SET", "x", "1"]);
    assert!(e.contains("MISCONF") && e.contains("AOF"), "{e}");
    // Reads keep working.
    assert_eq!(c.get::<_, String>("before").unwrap(), "1");
    let p = info(&mut c, "persistence");
    assert_eq!(p["aof_last_write_status"], "err");
    assert!(p.contains_key("aof_last_write_error"), "{p:?}");
    let page = scrape(s);
    assert_eq!(metric(&page, "ferrite_persistence_log_write_ok"), Some(0.0));
    assert!(metric(&page, "ferrite_persistence_write_errors_total").unwrap_or(0.0) >= 1.0);
    free_space();
    wait_until("writes to resume", Duration::from_secs(20), || {
        cmd(&mut c, &["SET", "resumed", "1"]).is_ok()
    });
    assert_eq!(info(&mut c, "persistence")["aof_last_write_status"], "ok");
    assert_eq!(
        metric(&scrape(s), "ferrite_persistence_log_write_ok"),
        Some(1.0)
    );
    for i in 0..20 {
        let k = format!("after:{i}");
        let _: () = c.set(&k, &value).unwrap();
        acked.push(k);
    }
    acked
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_writes_resume_when_space_returns() {
    let root = data_dir();
    match SmallFs::mount(root.path(), "16m")
        .filter(|_| std::env::var_os("FERRITE_TEST_NO_MOUNT").is_none())
    {
        Some(fs) => {
            let dir = fs.path.join("data");
            let s = Server::start_in(&dir, &["--metrics-addr", "127.0.0.1:0"]);
            let mut c = s.conn();
            let _: () = c.set("before", "1").unwrap();
            drop(c);
            let ballast = fill_up(&fs.path);
            let acked = refused_then_resumed(&s, || std::fs::remove_file(&ballast).unwrap());
            shutdown(s, &[]);
            let s = Server::start_in(&dir, &[]);
            let mut c = s.conn();
            for k in &acked {
                assert!(c.exists::<_, bool>(k).unwrap(), "{k} lost");
            }
            assert_eq!(c.get::<_, String>("resumed").unwrap(), "1");
            drop(c);
            drop(s);
            drop(fs);
        }
        None => {
            // No permission to mount: a file-size limit makes the log's write fail (EFBIG), the
            // same error path. Overwriting a few keys keeps the data small, so the recovery
            // snapshot fits under the limit and writes resume by themselves.
            eprintln!("tmpfs not permitted here; testing with RLIMIT_FSIZE instead");
            let dir = root.path().join("data");
            let s = Server::start_in_wrapped(&["prlimit", "--fsize=262144"], &dir, &[]);
            let mut c = s.conn();
            let _: () = c.set("before", "1").unwrap();
            drop(c);
            let value = "v".repeat(4096);
            let mut c = s.conn();
            let mut refused = None;
            for i in 0..200 {
                let r: redis::RedisResult<()> = c.set(format!("k{}", i % 5), &value);
                if let Err(e) = r {
                    refused = Some(e.to_string());
                    break;
                }
            }
            assert!(
                refused.is_some(),
                "writes past the file-size limit went through"
            );
            // The recovery snapshot (5 keys) fits: writes resume without anyone's help.
            let mut c = s.conn();
            wait_until("writes to resume", Duration::from_secs(20), || {
                cmd(&mut c, &["SET", "resumed", "1"]).is_ok()
            });
            assert_eq!(c.get::<_, String>("before").unwrap(), "1");
            shutdown(s, &[]);
            let s = Server::start_in(&dir, &[]);
            let mut c = s.conn();
            assert_eq!(c.get::<_, String>("resumed").unwrap(), "1");
        }
    }
}
