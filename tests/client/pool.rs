//! The pool across a server restart: the server is killed and a new one started on the same
//! port; the pool replaces its dead connections by itself.

use std::time::{Duration, Instant};

use ferrite_client::{ConnectOptions, Pool, PoolOptions};

use crate::common::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_serves_again_after_a_server_restart() {
    let mut s = Server::start();
    let port = s.port.to_string();
    let pool = Pool::connect(
        ConnectOptions::new(s.addr()),
        PoolOptions::new()
            .max_size(4)
            .checkout_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(1))
            .command_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    // Fill the pool: four connections in use at once, then idle.
    {
        let mut held = Vec::new();
        for i in 0..4 {
            let mut c = pool.get().await.unwrap();
            c.set(format!("k{i}"), "before").await.unwrap();
            held.push(c);
        }
    }
    let st = pool.status();
    assert_eq!((st.idle, st.created, st.discarded), (4, 4, 0), "{st:?}");

    s.kill();
    // While nothing listens, a command fails with the server and command named.
    let e = pool.cmd(&["GET", "k0"]).await.unwrap_err();
    assert!(e.is_connection_error(), "{e:?}");
    assert_eq!(e.server_addr(), Some(s.addr().as_str()));
    assert!(e.to_string().contains(&s.addr()), "{e}");

    let restarted = Server::start_with(&["--port", &port]);
    assert_eq!(restarted.addr(), s.addr());
    // No persistence: the new server is empty. Every command succeeds on its first try.
    let t = Instant::now();
    for i in 0..20 {
        let mut c = pool.get().await.unwrap();
        let key = format!("k{}", i % 4);
        assert_eq!(c.get(&key).await.unwrap(), None, "fresh server");
        c.set(&key, "after").await.unwrap();
        assert_eq!(c.get(&key).await.unwrap().as_deref(), Some("after"));
        c.del(&[&key]).await.unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    let st = pool.status();
    assert!(
        st.discarded >= 4,
        "the dead connections were dropped: {st:?}"
    );
    assert!(st.created >= 5, "new connections were made: {st:?}");
    assert_eq!(st.in_use, 0);
    assert_eq!(st.addr, restarted.addr());

    // Concurrent users after the restart: the pool stays within its bound.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for j in 0..25 {
                    let mut c = pool.get().await.unwrap();
                    assert_eq!(c.incr(format!("n{i}")).await.unwrap(), j + 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let st = pool.status();
    assert!(st.idle <= 4 && st.in_use == 0, "{st:?}");
}
