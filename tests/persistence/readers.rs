//! Under `appendfsync always` no client reads a write before it is durable: a reader's reply
//! that may reflect another connection's write waits for that write's group commit, as in
//! Redis (every reply of an event-loop pass follows the pass's AOF fsync). The server runs with
//! the test hook `FERRITE_TEST_FSYNC_DELAY_MS`, which makes every fsync of a log sleep first,
//! so that a reader can act while a writer's commit is in flight.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis::Value;

use crate::common::Server;
use crate::util::*;

/// How long each fsync of a log sleeps first.
const FSYNC_DELAY: Duration = Duration::from_millis(1500);
/// When the reader asks, after the writer sent its write (the write has run by then; its
/// fsync has not ended).
const READ_AFTER: Duration = Duration::from_millis(300);

fn start(dir: &std::path::Path, policy: &str) -> Server {
    let hook = format!("FERRITE_TEST_FSYNC_DELAY_MS={}", FSYNC_DELAY.as_millis());
    // Several workers: the writer's worker is busy in the fsync while the reader's runs.
    let s = Server::start_in_wrapped(
        &["env", &hook],
        dir,
        &["--appendfsync", policy, "--threads", "4"],
    );
    ok(&mut s.conn(), &["TENANT.CREATE", "rd", "PASSWORD", "pw-rd"]);
    s
}

/// Sends `SET key value` on its own thread; the receiver gets the reply (or the error) and when
/// it came, counted from `t0`.
fn set_in_background(
    mut c: redis::Connection,
    key: &'static str,
    t0: Instant,
) -> mpsc::Receiver<(redis::RedisResult<Value>, Duration)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = cmd(&mut c, &["SET", key, "v"]);
        let _ = tx.send((r, t0.elapsed()));
    });
    rx
}

/// Runs `read` on `reader` while another connection's `SET key v` waits for its fsync (sent
/// `READ_AFTER` before); checks the read's reply went out only once that write was durable
/// (with its writer's reply, within scheduling noise: without the rule it came about
/// `READ_AFTER` after the write), and returns it.
fn read_during_commit(
    s: &Server,
    reader: &mut redis::Connection,
    key: &'static str,
    what: &str,
    read: impl FnOnce(&mut redis::Connection) -> Value,
) -> Value {
    let writer = tenant_conn(s, "rd", "pw-rd");
    let t0 = Instant::now();
    let wrote = set_in_background(writer, key, t0);
    std::thread::sleep(READ_AFTER);
    let got = read(reader);
    let read_at = t0.elapsed();
    let (w, wrote_at) = wrote.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(w.unwrap(), Value::Okay);
    assert!(
        wrote_at >= FSYNC_DELAY,
        "the writer's reply came after {wrote_at:?}, before its fsync could end"
    );
    assert!(
        read_at + Duration::from_millis(100) >= wrote_at,
        "{what} showed the write after {read_at:?}; it was durable only after {wrote_at:?}"
    );
    got
}

fn v() -> Value {
    Value::BulkString(b"v".to_vec())
}

/// A GET on a second connection while the writer's commit is in flight: its reply (which
/// shows the write) comes only once the fsync is done, not before the writer's own reply.
/// MGET, EXISTS, a transaction and a script follow the same rule. Once the write is on disk, a
/// GET does not wait at all.
#[test]
fn under_always_a_reader_never_sees_a_write_before_it_is_durable() {
    let dir = data_dir();
    let s = start(dir.path(), "always");
    let mut reader = tenant_conn(&s, "rd", "pw-rd");
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let got = read_during_commit(&s, &mut reader, "k", "GET", |c| {
        cmd(c, &["GET", "k"]).unwrap()
    });
    assert_eq!(got, v(), "the GET ran after the SET");

    // Nothing pending: a read does not wait (and causes no fsync).
    let mut adm = s.conn();
    let fsyncs = |adm: &mut redis::Connection| -> u64 {
        info(adm, "persistence")["aof_fsyncs"].parse().unwrap()
    };
    let before = fsyncs(&mut adm);
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(cmd(&mut reader, &["GET", "k"]).unwrap(), v());
    }
    let took = started.elapsed();
    assert!(
        took < FSYNC_DELAY / 2,
        "20 GETs with nothing pending took {took:?}"
    );
    assert_eq!(fsyncs(&mut adm), before, "the reads caused fsyncs");

    let got = read_during_commit(&s, &mut reader, "k2", "MGET+EXISTS", |c| {
        let mut p = redis::pipe();
        p.cmd("MGET").arg("k").arg("k2");
        p.cmd("EXISTS").arg("k2");
        Value::Array(p.query(c).unwrap())
    });
    assert_eq!(
        got,
        Value::Array(vec![Value::Array(vec![v(), v()]), Value::Int(1)])
    );

    let got = read_during_commit(&s, &mut reader, "k3", "MULTI/GET/EXEC", |c| {
        let mut p = redis::pipe();
        p.atomic().cmd("GET").arg("k3");
        Value::Array(p.query(c).unwrap())
    });
    assert_eq!(got, Value::Array(vec![v()]));

    let got = read_during_commit(&s, &mut reader, "k4", "EVAL", |c| {
        cmd(c, &["EVAL", "return redis.call('GET', KEYS[1])", "1", "k4"]).unwrap()
    });
    assert_eq!(got, v());

    // An administrator's digest of the tenant covers its writes only once they are durable.
    let mut adm2 = s.conn();
    adm2.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let before_digest = digest(&mut adm2, "rd");
    read_during_commit(&s, &mut adm2, "k5", "TENANT.DIGEST", |c| {
        let (keys, d) = digest(c, "rd");
        assert_eq!(keys, before_digest.0 + 1, "the digest ran after the SET");
        assert_ne!(d, before_digest.1);
        Value::Nil
    });
}

/// The server is killed while a write's fsync is in flight and a reader's GET (which ran after
/// the write) waits: the reader gets no reply at all — it never saw the write that was not
/// durable.
#[test]
fn a_crash_during_the_commit_leaves_the_reader_without_a_reply() {
    let dir = data_dir();
    let s = start(dir.path(), "always");
    let writer = tenant_conn(&s, "rd", "pw-rd");
    let mut reader = tenant_conn(&s, "rd", "pw-rd");
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t0 = Instant::now();
    let wrote = set_in_background(writer, "doomed", t0);
    std::thread::sleep(READ_AFTER);
    let (tx, rx) = mpsc::channel();
    let reading = std::thread::spawn(move || {
        let r = cmd(&mut reader, &["GET", "doomed"]);
        let _ = tx.send(t0.elapsed());
        r
    });
    // Killed while the fsync sleeps (it ends at FSYNC_DELAY at the earliest).
    assert!(
        rx.recv_timeout(FSYNC_DELAY / 3).is_err(),
        "the GET was answered while the write's fsync was in flight"
    );
    assert!(
        t0.elapsed() < FSYNC_DELAY,
        "too slow to kill during the fsync"
    );
    sigkill(s);
    let read = reading.join().unwrap();
    assert!(
        read.is_err(),
        "the reader got {read:?} from a server killed before the write was durable"
    );
    assert!(
        wrote
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .0
            .is_err(),
        "the writer was acknowledged before the fsync ended"
    );
}

/// `everysec` gives no such guarantee, and costs readers nothing: a GET during the fsync
/// thread's (slow) fsync of a fresh write answers at once.
#[test]
fn under_everysec_readers_do_not_wait_for_the_fsync() {
    let dir = data_dir();
    let s = start(dir.path(), "everysec");
    let mut writer = tenant_conn(&s, "rd", "pw-rd");
    let mut reader = tenant_conn(&s, "rd", "pw-rd");
    for i in 0..20 {
        let key = format!("e{i}");
        let started = Instant::now();
        ok(&mut writer, &["SET", &key, "v"]);
        assert_eq!(
            cmd(&mut reader, &["GET", &key]).unwrap(),
            Value::BulkString(b"v".to_vec())
        );
        let took = started.elapsed();
        assert!(
            took < FSYNC_DELAY / 2,
            "SET and GET under everysec took {took:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A read that ends inside a request (its rest has not arrived) ran no command: it has no reply
/// to hold back, so it does not wait for the fsync of other connections' writes before reading
/// on. The request, once complete, waits only for the writes logged before it ran: here its
/// reply comes with the first writer's fsync, not after a second writer's (sent after the
/// request was complete), which is where a wait at the partial read put it.
#[test]
fn under_always_a_partial_request_does_not_wait_for_others_fsync() {
    use std::io::{Read, Write};

    let dir = data_dir();
    let s = start(dir.path(), "always");
    let mut reader = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reply = [0u8; 64];
    reader
        .write_all(b"*3\r\n$4\r\nAUTH\r\n$2\r\nrd\r\n$5\r\npw-rd\r\n")
        .unwrap();
    let n = reader.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"+OK\r\n");

    // Both writers connect first: an AUTH while a write's fsync is in flight waits for it too.
    let (w1, w2) = (
        tenant_conn(&s, "rd", "pw-rd"),
        tenant_conn(&s, "rd", "pw-rd"),
    );
    let t0 = Instant::now();
    let first = set_in_background(w1, "p1", t0);
    std::thread::sleep(Duration::from_millis(300));
    // The first writer's fsync is in flight: half a PING.
    reader.write_all(b"*1\r\n$4\r\nPI").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    reader.write_all(b"NG\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // A second write, after the PING was complete: its fsync starts when the first ends.
    let second = set_in_background(w2, "p2", t0);
    let n = reader.read(&mut reply).unwrap();
    let pong_at = t0.elapsed();
    assert_eq!(&reply[..n], b"+PONG\r\n");
    let (r1, first_at) = first.recv_timeout(Duration::from_secs(20)).unwrap();
    let (r2, second_at) = second.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!((r1.unwrap(), r2.unwrap()), (Value::Okay, Value::Okay));
    assert!(
        second_at >= 2 * FSYNC_DELAY,
        "the second write was acknowledged after {second_at:?}, before two fsyncs could end"
    );
    assert!(
        pong_at + Duration::from_millis(100) >= first_at,
        "the PING was answered after {pong_at:?}, before the write logged before it was durable ({first_at:?})"
    );
    assert!(
        pong_at < first_at + FSYNC_DELAY / 2,
        "the PING was answered after {pong_at:?}: it waited for the second write's fsync (first write durable after {first_at:?}, second after {second_at:?})"
    );
}
