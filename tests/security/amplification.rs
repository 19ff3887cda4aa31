//! Replies larger than the request: a tenant must not be able to make the server build a reply
//! past its output budget (the issue's crash: `SRANDMEMBER s -5000` with a 900 KB member asked
//! for 4.5 GB and the allocation aborted the process). The server runs under an address-space
//! limit here, so that on a build without the budget the test fails by the process dying,
//! instead of taking the machine down.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::{Server, resp_command as resp};

/// 1.5 GiB of address space: room for the server with two workers, far from the 4.5 GB (or
/// 15 TB) the attacks ask for.
const MEMORY_LIMIT_KIB: u64 = 1536 * 1024;
const MEMBER: usize = 900 * 1024;

/// Sends `requests` on a fresh connection authenticated as tenant `a`, then reads until the
/// server closes the connection; returns how many bytes came back. Panics if it stays open.
fn attack(s: &Server, requests: &[Vec<u8>]) -> usize {
    let mut c = s.tcp();
    c.write_all(&resp(&[b"AUTH", b"a", b"apw"])).unwrap();
    for r in requests {
        // The server may close before it has read everything.
        if c.write_all(r).is_err() {
            break;
        }
    }
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        assert!(Instant::now() < deadline, "the connection was not closed");
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got += n,
        }
    }
}

#[test]
fn replies_past_the_output_budget_close_the_connection_and_the_server_survives() {
    let mut s = Server::start_with_memory_limit(MEMORY_LIMIT_KIB, &["--threads", "2"]);
    let pid = s.pid();
    let mut admin = s.conn();
    // Room for the three 900 KB values the attacks read.
    for (t, pw, quota) in [("a", "apw", "4mb"), ("b", "bpw", "0")] {
        let _: () = redis::cmd("TENANT.CREATE")
            .arg(&[t, "PASSWORD", pw, "MAXMEMORY", quota])
            .query(&mut admin)
            .unwrap();
    }
    let mut b = s.tenant_conn("b", "bpw");
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query(&mut b)
            .unwrap();
    }
    let mut a = s.tenant_conn("a", "apw");
    let member = vec![b'm'; MEMBER];
    for cmd in [
        redis::cmd("SADD").arg("s").arg(&member[..]).clone(),
        redis::cmd("HSET")
            .arg("h")
            .arg("f")
            .arg(&member[..])
            .clone(),
        redis::cmd("ZADD").arg("z").arg(1).arg(&member[..]).clone(),
    ] {
        let n: i64 = cmd.query(&mut a).unwrap();
        assert_eq!(n, 1);
    }
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg(&member[..50_000])
        .query(&mut a)
        .unwrap();

    let mget: Vec<&[u8]> = std::iter::once(&b"MGET"[..])
        .chain(std::iter::repeat_n(&b"k"[..], 100_000))
        .collect();
    let attacks: Vec<Vec<Vec<u8>>> = vec![
        vec![resp(&[b"SRANDMEMBER", b"s", b"-5000"])],
        vec![resp(&[b"SRANDMEMBER", b"s", b"-16777216"])],
        vec![resp(&[b"HRANDFIELD", b"h", b"-5000", b"WITHVALUES"])],
        vec![resp(&[b"ZRANDMEMBER", b"z", b"-5000", b"WITHSCORES"])],
        vec![resp(&mget)],
        // Inside a transaction: every reply is buffered until EXEC ends.
        vec![
            resp(&[b"MULTI"]),
            resp(&[b"SRANDMEMBER", b"s", b"-3000"]),
            resp(&[b"SRANDMEMBER", b"s", b"-3000"]),
            resp(&[b"EXEC"]),
        ],
    ];
    for (i, requests) in attacks.iter().enumerate() {
        let started = Instant::now();
        let got = attack(&s, requests);
        assert!(
            s.is_running(),
            "attack {i} killed the server: {:?}",
            s.log()
        );
        assert!(
            got < 1024,
            "attack {i}: the cut reply was sent ({got} bytes)"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "attack {i} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(s.pid(), pid);
    // Every tenant's data is intact, and the attacker can go on within its budget.
    let mut b = s.tenant_conn("b", "bpw");
    for i in 0..100 {
        let v: String = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut b)
            .unwrap();
        assert_eq!(v, format!("v{i}"));
    }
    let mut a = s.tenant_conn("a", "apw");
    let picks: Vec<Vec<u8>> = redis::cmd("SRANDMEMBER")
        .arg("s")
        .arg(-3)
        .query(&mut a)
        .unwrap();
    assert_eq!(picks.len(), 3);
    let info: String = redis::cmd("INFO").arg("stats").query(&mut admin).unwrap();
    assert!(
        info.contains(&format!(
            "client_output_buffer_limit_disconnections:{}",
            attacks.len()
        )),
        "{info}"
    );
    s.kill();
}

/// Three connections of a 1 MB tenant pipeline GETs of a 900 KB value without reading: their
/// unsent replies are charged to the tenant, which may hold max(MAXMEMORY, 16 MB) of them, so
/// the server's memory stays flat instead of growing by gigabytes.
#[test]
fn unread_replies_are_charged_to_the_tenant() {
    let s = Server::start_with_memory_limit(MEMORY_LIMIT_KIB, &["--threads", "2"]);
    let mut admin = s.conn();
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(&["a", "PASSWORD", "apw", "MAXMEMORY", "1mb"])
        .query(&mut admin)
        .unwrap();
    let mut a = s.tenant_conn("a", "apw");
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'v'; MEMBER])
        .query(&mut a)
        .unwrap();
    let before = s.rss_kib();
    let gets: Vec<u8> = resp(&[b"GET", b"big"]).repeat(1000);
    let mut hogs = Vec::new();
    for _ in 0..3 {
        let mut c = s.tcp();
        c.write_all(&resp(&[b"AUTH", b"a", b"apw"])).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        // 1000 GETs are 900 MB of replies; nobody reads them.
        for _ in 0..3 {
            if c.write_all(&gets).is_err() {
                break;
            }
        }
        hogs.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown_mib = s.rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 200,
        "RSS grew by {grown_mib} MiB for replies nobody reads"
    );
    // The hogs were closed; the tenant still works.
    let mut a = s.tenant_conn("a", "apw");
    let n: usize = redis::cmd("STRLEN").arg("big").query(&mut a).unwrap();
    assert_eq!(n, MEMBER);
    let info: String = redis::cmd("INFO").arg("stats").query(&mut admin).unwrap();
    assert!(
        !info.contains("client_output_buffer_limit_disconnections:0\r"),
        "{info}"
    );
}

/// The server-wide budget (`maxmemory-clients`) holds for tenants without a quota (here the
/// `default` tenant), and CONFIG SET changes it at runtime.
#[test]
fn all_connections_together_stay_within_maxmemory_clients() {
    let s = Server::start_with_memory_limit(MEMORY_LIMIT_KIB, &["--threads", "2"]);
    let mut admin = s.conn();
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg(&["GET", "maxmemory-clients"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(v, ["maxmemory-clients", "1073741824"], "the default: 1 GiB");
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-clients", "64mb"])
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'v'; MEMBER])
        .query(&mut admin)
        .unwrap();
    let before = s.rss_kib();
    let gets: Vec<u8> = resp(&[b"GET", b"big"]).repeat(1000);
    let mut hogs = Vec::new();
    for _ in 0..3 {
        let mut c = s.tcp();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(&gets);
        hogs.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown_mib = s.rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 200, "RSS grew by {grown_mib} MiB");
    let n: usize = redis::cmd("STRLEN").arg("big").query(&mut admin).unwrap();
    assert_eq!(n, MEMBER);
}
