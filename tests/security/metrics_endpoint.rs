//! The metrics endpoint serves a bounded number of connections, each for a bounded time
//! (defaults: `metrics.max_connections 16`, `metrics.timeout_ms 5000`).

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::Server;

use crate::common::metrics_response as scrape;

/// Strangers open 40 connections to the metrics endpoint and send nothing. 16 are held (until
/// the 5 s timeout closes them), the other 24 are answered `503` and closed at once; the
/// server's own port keeps working throughout, and once the slow ones are gone a scrape works
/// and counts the refusals.
#[test]
fn the_metrics_endpoint_serves_a_bounded_number_of_connections() {
    let s = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let port = s.metrics_port.expect("metrics port");
    let opened = Instant::now();
    let mut held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Refusals are written at once; give the accept loop a moment to reach all 40.
    std::thread::sleep(Duration::from_millis(1000));
    let mut refused = Vec::new();
    let mut waiting = 0;
    for (i, c) in held.iter_mut().enumerate() {
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 128];
        match c.read(&mut buf) {
            Ok(n) => {
                assert!(
                    n == 0 || buf[..n].starts_with(b"HTTP/1.1 503"),
                    "{}",
                    String::from_utf8_lossy(&buf[..n])
                );
                refused.push(i);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => waiting += 1,
            Err(e) => panic!("{e}"),
        }
        c.set_nonblocking(false).unwrap();
    }
    assert_eq!((waiting, refused.len()), (16, 24), "refused: {refused:?}");
    // The endpoint is full, the server is not.
    let mut admin = s.conn();
    let pong: String = redis::cmd("PING").query(&mut admin).unwrap();
    assert_eq!(pong, "PONG");
    // A scrape while full is refused too.
    assert!(scrape(port).starts_with("HTTP/1.1 503"));
    // After metrics.timeout_ms the silent ones are closed, and scraping works again.
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(9),
        "held for {took:?}"
    );
    let page = scrape(port);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let rejected: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("ferrite_metrics_connections_rejected_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the refusal counter");
    assert_eq!(rejected, 25);
}
