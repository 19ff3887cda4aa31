//! Requests larger than their budgets: a request is read whole before it runs, so a client could
//! make the server hold as much as it sends. `*9 DEL` with eight arguments of 400 MB each took
//! the server to 3 GB and the allocation aborted it, with every tenant's data. An unfinished
//! request is bounded by `client-query-buffer-limit`, and large input buffers are counted in the
//! tenant's and the server's client-memory budgets like unsent replies (docs/security.md).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::Server;
use crate::util::{info, wait_until};

const MB: usize = 1_000_000;

/// A connection that has sent AUTH `tenant` `password` (and read its +OK), or none.
fn client(s: &Server, auth: Option<(&str, &str)>) -> TcpStream {
    let mut c = s.tcp();
    if let Some((tenant, password)) = auth {
        let auth = format!(
            "*3\r\n$4\r\nAUTH\r\n${}\r\n{tenant}\r\n${}\r\n{password}\r\n",
            tenant.len(),
            password.len()
        );
        c.write_all(auth.as_bytes()).unwrap();
        let mut ok = [0u8; 5];
        c.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
    }
    c
}

/// Sends the start of `SET k <value of declared bytes>` and `sent` bytes of the value. False
/// when the server closed the connection before it had all of them.
fn send_unfinished(c: &mut TcpStream, declared: usize, sent: usize) -> bool {
    let head = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${declared}\r\n");
    if c.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let chunk = vec![b'x'; 1 << 20];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        if c.write_all(&chunk[..n]).is_err() {
            return false;
        }
        left -= n;
    }
    true
}

/// Whether the server has closed `c` (it sends nothing to a connection it keeps).
fn closed(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 64];
    match c.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected reply {:?}", String::from_utf8_lossy(&b[..n])),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn info_field(admin: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let fields = info(admin, section);
    fields
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {fields:?}"))
}

fn config_set(admin: &mut redis::Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", name, value])
        .query(admin)
        .unwrap();
}

/// Waits until no connection's buffers are counted any more.
fn wait_released(admin: &mut redis::Connection) {
    wait_until(Duration::from_secs(10), "client memory released", || {
        (info_field(admin, "memory", "mem_clients_normal") == 0).then_some(())
    });
}

/// Waits until the server has counted `at_least` bytes of client memory (it has read what was
/// sent).
fn wait_counted(admin: &mut redis::Connection, at_least: u64) {
    wait_until(Duration::from_secs(10), "the input to be counted", || {
        (info_field(admin, "memory", "mem_clients_normal") >= at_least).then_some(())
    });
}

/// The crash, with the default settings, under an address-space limit: a build without
/// the input budgets dies of the failed allocation (3.2 GB asked for); with them the connection
/// is closed at the server's `maxmemory-clients` (1 GB by default) and the server serves on.
#[test]
fn a_request_past_the_default_input_budgets_closes_the_connection_and_the_server_survives() {
    let mut s = Server::start_with_memory_limit(3 * 1024 * 1024, &[]);
    let mut admin = s.conn();
    let mut other = s.anon_conn();
    let _: () = redis::cmd("SET")
        .arg("kept")
        .arg("v")
        .query(&mut other)
        .unwrap();

    let mut c = client(&s, None);
    let arg = 400 * MB;
    let mut sent_all = c.write_all(b"*9\r\n$3\r\nDEL\r\n").is_ok();
    let chunk = vec![b'x'; 1 << 20];
    'args: for _ in 0..8 {
        if !sent_all {
            break;
        }
        sent_all = c.write_all(format!("${arg}\r\n").as_bytes()).is_ok();
        let mut left = arg;
        while sent_all && left > 0 {
            let n = left.min(chunk.len());
            if c.write_all(&chunk[..n]).is_err() {
                sent_all = false;
                break 'args;
            }
            left -= n;
        }
        sent_all = sent_all && c.write_all(b"\r\n").is_ok();
    }
    assert!(!sent_all, "the server read all 3.2 GB of one request");
    assert!(closed(&mut c));
    assert!(s.is_running(), "the server died: {:?}", s.log());
    let v: String = redis::cmd("GET").arg("kept").query(&mut other).unwrap();
    assert_eq!(v, "v");
    assert_eq!(
        info_field(
            &mut admin,
            "stats",
            "client_query_buffer_limit_disconnections"
        ),
        1
    );
    assert!(
        s.log()
            .iter()
            .any(|l| l.contains("input buffer limit reached") && l.contains("maxmemory_clients")),
        "{:?}",
        s.log()
    );
    // The closed connection's buffer is no longer counted.
    wait_released(&mut admin);
    s.kill();
}

/// `client-query-buffer-limit` bounds an unfinished request (as in Redis); complete requests,
/// however many are pipelined at once, are not held against it.
#[test]
fn an_unfinished_request_past_client_query_buffer_limit_closes_the_connection() {
    let s = Server::start();
    let mut admin = s.conn();
    config_set(&mut admin, "client-query-buffer-limit", "4mb");
    let limit: Vec<String> = redis::cmd("CONFIG")
        .arg(&["GET", "client-query-buffer-limit"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(limit, ["client-query-buffer-limit", "4194304"]);
    let refused: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg(&["SET", "client-query-buffer-limit", "1000"])
        .query(&mut admin);
    assert!(refused.is_err());

    // 8 MB of complete requests in one write, and one 3 MB request: all served.
    let mut c = client(&s, None);
    let value = vec![b'v'; 4000];
    let mut pipeline = Vec::new();
    for i in 0..2000 {
        let key = format!("k{i}");
        pipeline.extend(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$4000\r\n", key.len()).bytes());
        pipeline.extend_from_slice(&value);
        pipeline.extend(b"\r\n");
    }
    let big = 3 * MB;
    let mut big_set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${big}\r\n").into_bytes();
    big_set.extend(vec![b'b'; big]);
    big_set.extend(b"\r\n");
    let mut reader = c.try_clone().unwrap();
    let replies = std::thread::spawn(move || {
        let mut got = vec![0u8; 2001 * 5];
        reader.read_exact(&mut got).map(|()| got)
    });
    c.write_all(&pipeline).unwrap();
    c.write_all(&big_set).unwrap();
    let got = replies.join().unwrap().expect("2001 replies");
    assert_eq!(got, b"+OK\r\n".repeat(2001));

    // 6 MB of a request that is not finished: closed.
    // The server may close before it has read all of it.
    let _ = send_unfinished(&mut c, 10 * MB, 6 * MB);
    assert!(closed(&mut c), "the connection is still open");
    assert_eq!(
        info_field(
            &mut admin,
            "stats",
            "client_query_buffer_limit_disconnections"
        ),
        1
    );
    let mut other = s.anon_conn();
    let n: usize = redis::cmd("STRLEN").arg("big").query(&mut other).unwrap();
    assert_eq!(n, big);
}

/// Opens connections (authenticated as `auth`) that each send 6 MB of an unfinished request,
/// until the server closes one; returns the ones it kept, after checking that the closed one was
/// the one that took the counted buffers past `budget`. An input buffer's size depends on how
/// its reads went (6–12 MB for 6 MB), so the test does not assume how many fit.
fn fill_until_closed(
    s: &Server,
    admin: &mut redis::Connection,
    auth: Option<(&str, &str)>,
    budget: u64,
) -> Vec<TcpStream> {
    let mut kept = Vec::new();
    let mut counted = info_field(admin, "memory", "mem_clients_normal");
    for _ in 0..8 {
        let mut c = client(s, auth);
        let all = send_unfinished(&mut c, 10 * MB, 6 * MB);
        if !all || closed(&mut c) {
            // Its buffer grows by doubling: 6 MB may take up to twice that (plus a read).
            assert!(
                counted + 2 * (6 * MB as u64 + 512 * 1024) > budget,
                "closed with {counted} bytes counted, budget {budget}"
            );
            let after = info_field(admin, "memory", "mem_clients_normal");
            assert!(after <= budget, "{after} bytes counted, budget {budget}");
            assert!(!kept.is_empty(), "the first 6 MB request was refused");
            for k in &mut kept {
                assert!(!closed(k), "a connection within the budget was closed");
            }
            return kept;
        }
        wait_counted(admin, counted + 6 * MB as u64);
        counted = info_field(admin, "memory", "mem_clients_normal");
        assert!(
            counted <= budget,
            "{counted} bytes counted, budget {budget}"
        );
        kept.push(c);
    }
    panic!("eight 6 MB requests were kept within a budget of {budget} bytes");
}

/// A tenant's unfinished requests are charged to it: a tenant with MAXMEMORY 20mb may hold
/// 20 MB in its connections' buffers, so one of its connections sending 6 MB each is closed
/// once they pass that, while another tenant's connection holding as much is not.
#[test]
fn a_tenants_unfinished_requests_are_charged_to_the_tenant() {
    let s = Server::start();
    let mut admin = s.conn();
    for (t, pw, quota) in [("a", "apw", "20mb"), ("b", "bpw", "0")] {
        let _: () = redis::cmd("TENANT.CREATE")
            .arg(&[t, "PASSWORD", pw, "MAXMEMORY", quota])
            .query(&mut admin)
            .unwrap();
    }
    let budget = 20 * 1024 * 1024;
    let mut held = fill_until_closed(&s, &mut admin, Some(("a", "apw")), budget);
    // Another tenant is not charged for a's buffers.
    let before = info_field(&mut admin, "memory", "mem_clients_normal");
    let mut b = client(&s, Some(("b", "bpw")));
    assert!(send_unfinished(&mut b, 10 * MB, 6 * MB));
    wait_counted(&mut admin, before + 6 * MB as u64);
    assert!(!closed(&mut b));
    // Alone, a held request can be finished (its buffer grows to 10 MB) and runs.
    let with_b = info_field(&mut admin, "memory", "mem_clients_normal");
    let mut first = held.remove(0);
    let others = held.len() as u64;
    drop(held);
    wait_until(
        Duration::from_secs(10),
        "the other buffers released",
        || {
            let now = info_field(&mut admin, "memory", "mem_clients_normal");
            (now + others * 6 * MB as u64 <= with_b).then_some(())
        },
    );
    first.write_all(&vec![b'x'; 4 * MB]).unwrap();
    first.write_all(b"\r\n").unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = [0u8; 5];
    first.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n");
    let mut a = s.tenant_conn("a", "apw");
    let n: usize = redis::cmd("STRLEN").arg("k").query(&mut a).unwrap();
    assert_eq!(n, 10 * MB);
    assert!(
        info_field(
            &mut admin,
            "stats",
            "client_query_buffer_limit_disconnections"
        ) >= 1
    );
}

/// All connections' input buffers together stay within `maxmemory-clients`, are reported in
/// INFO memory's `mem_clients_normal`, and are given back when the connections close.
#[test]
fn all_connections_unfinished_requests_stay_within_maxmemory_clients() {
    let s = Server::start();
    let mut admin = s.conn();
    config_set(&mut admin, "maxmemory-clients", "20mb");
    let held = fill_until_closed(&s, &mut admin, None, 20 * 1024 * 1024);
    // Ordinary clients go on while the budget is full.
    let mut other = s.anon_conn();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut other)
        .unwrap();
    drop(held);
    wait_released(&mut admin);
}

/// Many connections cannot get around the budget between them: 300 connections each sending
/// 1 MB of an unfinished request hold at most `maxmemory-clients` plus 64 KB each (what any
/// connection may hold), not 300 MB.
#[test]
fn many_connections_cannot_hold_more_than_the_budget_between_them() {
    let s = Server::start();
    let mut admin = s.conn();
    config_set(&mut admin, "maxmemory-clients", "16mb");
    let before = s.rss_kib();
    let mut conns: Vec<TcpStream> = (0..300).map(|_| client(&s, None)).collect();
    for c in &mut conns {
        c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = send_unfinished(c, 2 * MB, MB);
    }
    std::thread::sleep(Duration::from_millis(500));
    let counted = info_field(&mut admin, "memory", "mem_clients_normal");
    assert!(counted <= 16 * 1024 * 1024, "{counted} bytes counted");
    let grown_mib = s.rss_kib().saturating_sub(before) / 1024;
    // 300 × 64 KB is 19 MB; with the budget and the allocator's slack well under 100 MB.
    assert!(grown_mib < 100, "RSS grew by {grown_mib} MiB");
    let open = conns.iter_mut().map(closed).filter(|&gone| !gone).count();
    assert!(open < 100, "{open} of 300 connections kept 1 MB each");
    let mut other = s.anon_conn();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut other)
        .unwrap();
}

/// The default `client-query-buffer-limit` (1 GB) on its own: with `maxmemory-clients` off, an
/// unfinished request is still closed once it passes 1 GB.
#[test]
fn the_default_query_buffer_limit_closes_a_request_past_1gb() {
    let mut s = Server::start_with_memory_limit(4 * 1024 * 1024, &[]);
    let mut admin = s.conn();
    config_set(&mut admin, "maxmemory-clients", "0");
    let mut c = client(&s, None);
    // DEL with three arguments of 400 MB: 1.2 GB, every argument under proto-max-bulk-len.
    let mut sent_all = c.write_all(b"*4\r\n$3\r\nDEL\r\n").is_ok();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..3 {
        sent_all = sent_all && c.write_all(b"$400000000\r\n").is_ok();
        for _ in 0..400 * MB / chunk.len() {
            sent_all = sent_all && c.write_all(&chunk).is_ok();
        }
        sent_all = sent_all && c.write_all(&chunk[..400 * MB % chunk.len()]).is_ok();
        sent_all = sent_all && c.write_all(b"\r\n").is_ok();
    }
    assert!(
        !sent_all || closed(&mut c),
        "1.2 GB of one request was kept"
    );
    assert!(s.is_running(), "the server died: {:?}", s.log());
    assert!(
        s.log()
            .iter()
            .any(|l| l.contains("input buffer limit reached")
                && l.contains("client_query_buffer_limit")),
        "{:?}",
        s.log()
    );
    s.kill();
}
