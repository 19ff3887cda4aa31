//! Exhaustion before (and without) authentication: the request parser keeps its position across
//! reads, and unauthenticated connections may send only small requests (Redis since
//! CVE-2021-32675).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::Server;

fn read_until_closed(c: &mut std::net::TcpStream) -> Vec<u8> {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Before AUTH, a request may have at most 10 arguments of at most 16 KB, with Redis's errors;
/// AUTH itself works, and after it the usual limits apply.
#[test]
fn unauthenticated_requests_are_limited_like_redis() {
    let s = Server::start_with(&["--requirepass", "secret"]);
    for (request, error) in [
        (
            &b"*11\r\n"[..],
            "-ERR Protocol error: unauthenticated multibulk length\r\n",
        ),
        (
            b"*2\r\n$4\r\nAUTH\r\n$300000000\r\n",
            "-ERR Protocol error: unauthenticated bulk length\r\n",
        ),
    ] {
        let mut c = s.tcp();
        c.write_all(request).unwrap();
        let got = read_until_closed(&mut c);
        assert_eq!(String::from_utf8_lossy(&got), error);
    }
    let mut c = s.tcp();
    let mut req = b"*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n*12\r\n".to_vec();
    for _ in 0..12 {
        req.extend_from_slice(b"$1\r\nx\r\n");
    }
    c.write_all(&req).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = [0u8; 64];
    let mut n = 0;
    while n < 5 + 12 {
        n += c.read(&mut got[n..]).unwrap();
    }
    let got = String::from_utf8_lossy(&got[..n]);
    assert!(got.starts_with("+OK\r\n-ERR unknown command 'x'"), "{got}");
}

/// Six strangers each start a 300 MB AUTH argument: none of it is buffered, so the server's
/// memory does not move (it grew by 1.8 GB before the limit). Under an address-space limit so
/// that a server without the limit fails by dying, not by taking the machine down.
#[test]
fn pending_auth_arguments_cannot_grow_memory() {
    let s = Server::start_with_memory_limit(
        1536 * 1024,
        &["--requirepass", "secret", "--threads", "2"],
    );
    let before = s.rss_kib();
    let chunk = vec![b'p'; 1 << 20];
    let strangers: Vec<_> = (0..6)
        .map(|_| {
            let mut c = s.tcp();
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = c.write_all(b"*2\r\n$4\r\nAUTH\r\n$300000000\r\n");
                for _ in 0..300 {
                    if c.write_all(&chunk).is_err() {
                        break;
                    }
                }
                read_until_closed(&mut c)
            })
        })
        .collect();
    for t in strangers {
        let got = t.join().unwrap();
        assert!(
            String::from_utf8_lossy(&got).contains("unauthenticated bulk length"),
            "{got:?}"
        );
    }
    let grown_mib = s.rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB");
    let mut admin = s.conn();
    let pong: String = redis::cmd("PING").query(&mut admin).unwrap();
    assert_eq!(pong, "PONG");
}

/// Four tenant connections each send a 4M-argument request whose first 500k arguments arrive at
/// once and the rest one byte per millisecond. Re-reading every header on each read made each
/// such byte cost milliseconds of CPU (both cores busy, another tenant's PING p99 at ~100 ms);
/// keeping the parser's position makes it cost what any small read costs.
#[test]
fn a_request_trickling_in_byte_by_byte_costs_little() {
    let s = Server::start_with(&["--threads", "2"]);
    let mut admin = s.conn();
    for t in ["slow", "victim"] {
        let _: () = redis::cmd("TENANT.CREATE")
            .arg(&[t, "PASSWORD", "pw"])
            .query(&mut admin)
            .unwrap();
    }
    let mut prefix = b"*3\r\n$4\r\nAUTH\r\n$4\r\nslow\r\n$2\r\npw\r\n*4000000\r\n".to_vec();
    for _ in 0..500_000 {
        prefix.extend_from_slice(b"$1\r\na\r\n");
    }
    let trickle_for = Duration::from_secs(3);
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let mut c = s.tcp();
        c.set_nodelay(true).unwrap();
        c.write_all(&prefix).unwrap();
        attackers.push(c);
    }
    // Let the server take in the prefixes before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = s.cpu_time();
    let started = Instant::now();
    let trickler = std::thread::spawn(move || {
        let arg = b"$1\r\na\r\n";
        let mut i = 0;
        while started.elapsed() < trickle_for {
            for c in &mut attackers {
                let _ = c.write_all(&arg[i % arg.len()..i % arg.len() + 1]);
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        attackers
    });
    let mut victim = s.tenant_conn("victim", "pw");
    let mut rtts = Vec::new();
    while started.elapsed() < trickle_for {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query(&mut victim).unwrap();
        rtts.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    let _attackers = trickler.join().unwrap();
    let cpu = s.cpu_time().saturating_sub(cpu_before);
    rtts.sort();
    let p99 = rtts[rtts.len() * 99 / 100];
    eprintln!("trickling for {trickle_for:?}: server CPU {cpu:?}, victim PING p99 {p99:?}");
    assert!(
        cpu < Duration::from_millis(1500),
        "the server used {cpu:?} of CPU in {trickle_for:?} of trickling"
    );
    assert!(p99 < Duration::from_millis(50), "PING p99 {p99:?}");
}
