//! Failed AUTH is rate-limited per client address and user name, with the defaults
//! (`server.auth_failure_limit 10`, `server.auth_block_max_ms 10000`).

use std::time::{Duration, Instant};

use crate::common::Server;
use crate::util::wait_until;

fn auth(c: &mut redis::Connection, user: &str, pw: &str) -> Result<(), String> {
    redis::cmd("AUTH")
        .arg(&[user, pw])
        .query::<()>(c)
        .map_err(|e| e.to_string())
}

fn stat(c: &mut redis::Connection, name: &str) -> u64 {
    let text: String = redis::cmd("INFO").arg("stats").query(c).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A guesser gets 10 free tries at tenant `acme`'s password, then its attempts are refused
/// unchecked (even the right password) for 100 ms, 200 ms, ... Eight connections guessing in
/// parallel for 3 s get a few dozen passwords checked at most, not the ~10^4 an unlimited
/// server answers in that time. The administrator, on the same address, logs
/// in meanwhile with the secret; after the guesser stops, the tenant logs in again once the
/// last block ends (it never lasts forever).
#[test]
fn failed_auth_is_rate_limited_per_address_and_user() {
    let s = Server::start();
    let mut admin = s.conn();
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(&["acme", "PASSWORD", "right-password"])
        .query(&mut admin)
        .unwrap();

    let mut g = s.anon_conn();
    for i in 0..10 {
        let e = auth(&mut g, "acme", &format!("guess{i}")).unwrap_err();
        assert!(e.contains("WRONGPASS"), "{e}");
    }
    // The 11th failure starts a block: the right password is refused unchecked now.
    assert!(
        auth(&mut g, "acme", "guess10")
            .unwrap_err()
            .contains("WRONGPASS")
    );
    let e = auth(&mut g, "acme", "right-password").unwrap_err();
    assert!(e.contains("too many failed authentication attempts"), "{e}");

    // Parallel guessers from the same address share the budget.
    let stop = Instant::now() + Duration::from_secs(3);
    let guessers: Vec<_> = (0..8)
        .map(|n| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let (mut checked, mut refused) = (0u64, 0u64);
                let mut i = 0;
                while Instant::now() < stop {
                    i += 1;
                    match auth(&mut c, "acme", &format!("p{n}-{i}")) {
                        Err(e) if e.contains("WRONGPASS") => checked += 1,
                        Err(e) if e.contains("too many failed") => refused += 1,
                        other => panic!("{other:?}"),
                    }
                }
                (checked, refused)
            })
        })
        .collect();
    // Meanwhile the administrator (same address, another user) is not locked out.
    std::thread::sleep(Duration::from_millis(500));
    let mut late_admin = s.anon_conn();
    auth(&mut late_admin, "default", s.admin_secret()).unwrap();
    let (checked, refused) = guessers
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    // Blocks of 100+200+400+800+1600 ms cover 3.1 s: one attempt is checked as each block
    // ends (up to one per connection if all eight race for it): at most 5 x 8.
    assert!(checked <= 40, "{checked} passwords checked in 3 s");
    assert!(refused > 100, "the guessers ran: {refused} refused");
    assert!(stat(&mut admin, "auth_refused") >= refused);
    assert!(stat(&mut admin, "auth_failures") >= 11 + checked);

    // Blocks are bounded: the tenant gets in within auth_block_max_ms (10 s) of the last failure.
    let mut t = s.anon_conn();
    wait_until(Duration::from_secs(12), "the block to end", || {
        auth(&mut t, "acme", "right-password").ok()
    });
    let pong: String = redis::cmd("PING").query(&mut t).unwrap();
    assert_eq!(pong, "PONG");
}
