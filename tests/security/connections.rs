//! Connection limits: `maxclients` holds exactly under a burst, and idle connections are closed
//! after Redis's `timeout`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::Server;

/// 120 clients connect at once to a server with `maxclients 50`: exactly 50 are served (a burst
/// used to get 58–62 in, because slots were counted only once each connection's task ran).
#[test]
fn maxclients_is_exact_under_a_burst() {
    let s = Server::start_with(&["--maxclients", "50"]);
    let addr = s.addr();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(120));
    let clients: Vec<_> = (0..120)
        .map(|_| {
            let addr = addr.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut c = std::net::TcpStream::connect(&addr).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = c.write_all(b"PING\r\n");
                let mut buf = [0u8; 64];
                let n = c.read(&mut buf).unwrap_or(0);
                let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                // Held open until every thread has its answer.
                (reply, c)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let served = results.iter().filter(|(r, _)| r == "+PONG\r\n").count();
    let refused = results
        .iter()
        .filter(|(r, _)| r == "-ERR max number of clients reached\r\n")
        .count();
    assert_eq!(
        (served, refused),
        (50, 70),
        "{:?}",
        results.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    drop(results);
    // Slots come back when connections close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = s.tcp();
        let _ = c.write_all(b"PING\r\n");
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        if &buf[..n] == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_closed(c: &mut std::net::TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 16];
    matches!(c.read(&mut buf), Ok(0))
}

/// `timeout` is 0 by default (idle connections stay, as in Redis); with CONFIG SET timeout 1 an
/// idle connection is closed within a few seconds while a busy one stays.
#[test]
fn idle_connections_are_closed_after_timeout() {
    let s = Server::start();
    let mut admin = s.conn();
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg(&["GET", "timeout"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(v, ["timeout", "0"]);
    let mut idle = s.tcp();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !is_closed(&mut idle),
        "the default closed an idle connection"
    );

    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "timeout", "1"])
        .query(&mut admin)
        .unwrap();
    let mut idle = s.tcp();
    let mut busy = s.anon_conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _: String = redis::cmd("PING").query(&mut busy).unwrap();
        let _: String = redis::cmd("PING").query(&mut admin).unwrap();
        if is_closed(&mut idle) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle connection was not closed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _: String = redis::cmd("PING").query(&mut busy).unwrap();
}
