//! Client behaviour against scripted servers ([`crate::fake`]): handshake fallback, redirects,
//! TRYAGAIN backoff, pipelines across a move, cancellation, and the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::fake::{FakeServer, Req, Response, reply};
use crate::{
    Client, ClientError, ConnectOptions, Connection, Frame, Pipeline, Pool, PoolOptions,
    RedirectPolicy, value,
};

/// Answers the handshake like a RESP3 server with tenant AUTH.
fn handshake(r: &Req) -> Option<Response> {
    match r.name().as_str() {
        "HELLO" => Some(reply("%1\r\n+server\r\n+fake\r\n")),
        "AUTH" | "CLIENT" => Some(reply("+OK\r\n")),
        _ => None,
    }
}

fn fast_policy(timeout_ms: u64) -> RedirectPolicy {
    RedirectPolicy::default()
        .redirect_timeout(Duration::from_millis(timeout_ms))
        .backoff(Duration::from_millis(1), Duration::from_millis(20))
}

fn text(f: &Frame) -> String {
    value::display(f)
}

#[tokio::test]
async fn falls_back_to_resp2_when_hello_is_unknown() {
    let s = FakeServer::start(|r| match r.name().as_str() {
        "HELLO" => reply(
            "-ERR unknown command 'HELLO', with args beginning with: '3' 'AUTH' 'acme' 'pw' \r\n",
        ),
        "AUTH" => reply("+OK\r\n"),
        "GET" if r.args[1] == "k" => reply("$5\r\nhello\r\n"),
        // RESP2's nulls, which a RESP3 decoder would misread.
        "GET" => reply("$-1\r\n"),
        "MGET" => reply("*3\r\n$-1\r\n$1\r\nx\r\n*-1\r\n"),
        _ => reply("-ERR unexpected\r\n"),
    })
    .await;
    let opts = ConnectOptions::new(&s.addr).tenant("acme", "pw");
    let c = Connection::connect(opts.clone()).await.unwrap();
    assert!(!c.is_resp3());
    drop(c);
    let mut client = Client::connect(opts).await.unwrap();
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some("hello"));
    assert_eq!(client.get("nope").await.unwrap(), None);
    let f = client.cmd(&["MGET", "a", "b", "c"]).await.unwrap();
    assert_eq!(text(&f), "[(nil), x, (nil)]");
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some("hello"));
    let lines = s.lines();
    assert_eq!(
        lines[..3],
        [
            "HELLO 3 AUTH acme pw",
            "AUTH acme pw",
            "HELLO 3 AUTH acme pw"
        ]
    );
    assert_eq!(lines.last().map(String::as_str), Some("GET k"));
}

#[tokio::test]
async fn falls_back_to_resp2_on_noproto_and_reports_wrong_password_with_context() {
    let s = FakeServer::start(|r| match r.name().as_str() {
        "HELLO" => reply("-NOPROTO unsupported protocol version\r\n"),
        "AUTH" if r.args.get(2).map(String::as_str) == Some("pw") => reply("+OK\r\n"),
        "AUTH" => reply("-WRONGPASS invalid username-password pair\r\n"),
        _ => reply("+PONG\r\n"),
    })
    .await;
    let mut ok = Client::connect(ConnectOptions::new(&s.addr).tenant("acme", "pw"))
        .await
        .unwrap();
    ok.ping().await.unwrap();
    let e = Client::connect(ConnectOptions::new(&s.addr).tenant("acme", "nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGPASS"));
    assert_eq!(e.server_addr(), Some(s.addr.as_str()));
    assert_eq!(
        e.to_string(),
        format!(
            "WRONGPASS invalid username-password pair (server {}, command HELLO 3 AUTH)",
            s.addr
        )
    );
}

#[tokio::test]
async fn try_again_is_retried_with_growing_backoff_until_it_succeeds() {
    let refusals = Arc::new(AtomicUsize::new(5));
    let left = refusals.clone();
    let s = FakeServer::start(move |r| {
        handshake(r).unwrap_or_else(|| {
            if left
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                reply("-TRYAGAIN tenant 'acme' is being imported; retry shortly\r\n")
            } else {
                reply("$2\r\nv1\r\n")
            }
        })
    })
    .await;
    let mut c = Client::with_policy(
        ConnectOptions::new(&s.addr).tenant("acme", "pw"),
        RedirectPolicy::default()
            .redirect_timeout(Duration::from_secs(5))
            .backoff(Duration::from_millis(4), Duration::from_millis(1000)),
    )
    .await
    .unwrap();
    let t = Instant::now();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("v1"));
    // Five waits of 4, 8, 16, 32 and 64 ms: the backoff doubles.
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(124), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(s.commands(), vec!["GET k"; 6]);
    assert_eq!(c.redirects(), 0);
}

#[tokio::test]
async fn try_again_gives_up_after_the_redirect_timeout_with_a_clear_error() {
    let s = FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| reply("-TRYAGAIN tenant 'acme' is being imported\r\n"))
    })
    .await;
    let mut c = Client::with_policy(
        ConnectOptions::new(&s.addr).tenant("acme", "pw"),
        fast_policy(80),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let e = c.set("k", "v").await.unwrap_err();
    let took = t.elapsed();
    assert!(e.is_try_again(), "{e:?}");
    assert!(
        took >= Duration::from_millis(40) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "TRYAGAIN tenant 'acme' is being imported (server {}, command SET)",
            s.addr
        )
    );
    assert!(s.commands().len() >= 3, "retried: {:?}", s.commands());
}

#[tokio::test]
async fn moved_and_redirect_are_followed_with_the_same_credentials() {
    let home = FakeServer::start(|r| handshake(r).unwrap_or_else(|| reply("$3\r\nnew\r\n"))).await;
    let via_redirect = {
        let to = home.addr.clone();
        FakeServer::start(move |r| {
            handshake(r).unwrap_or_else(|| reply(format!("-REDIRECT {to}\r\n")))
        })
        .await
    };
    let old = {
        let to = via_redirect.addr.clone();
        FakeServer::start(move |r| {
            handshake(r).unwrap_or_else(|| reply(format!("-MOVED tenant:acme {to}\r\n")))
        })
        .await
    };
    let mut c = Client::connect(ConnectOptions::new(&old.addr).tenant("acme", "pw"))
        .await
        .unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("new"));
    assert_eq!(c.redirects(), 2);
    assert_eq!(c.addr(), home.addr);
    assert_eq!(home.lines(), ["HELLO 3 AUTH acme pw", "GET k"]);
    assert_eq!(old.commands(), ["GET k"]);
    // The next command goes straight to the new home.
    c.get("k2").await.unwrap();
    assert_eq!(old.commands(), ["GET k"]);
    assert_eq!(c.redirects(), 2);
}

/// `-MOVED tenant:<id>:key`: only that command goes to the other server (on a connection kept
/// for the next such command); the client stays at its home for the others.
#[tokio::test]
async fn a_per_key_move_sends_only_that_command_elsewhere() {
    let target = FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| match r.line().as_str() {
            "GET moved:1" | "GET moved:2" => reply("$6\r\nthere!\r\n"),
            // A key the target does not serve is sent back, per key.
            _ => reply("-MOVED tenant:acme:key 127.0.0.1:1\r\n"),
        })
    })
    .await;
    let source = {
        let to = target.addr.clone();
        FakeServer::start(move |r| {
            handshake(r).unwrap_or_else(|| match r.line().as_str() {
                "GET moved:1" | "GET moved:2" => reply(format!("-MOVED tenant:acme:key {to}\r\n")),
                _ => reply("$5\r\nhere!\r\n"),
            })
        })
        .await
    };
    let mut c = Client::connect(ConnectOptions::new(&source.addr).tenant("acme", "pw"))
        .await
        .unwrap();
    assert_eq!(c.get("moved:1").await.unwrap().as_deref(), Some("there!"));
    assert_eq!(c.addr(), source.addr, "the client stays at its home");
    assert_eq!(c.get("stays").await.unwrap().as_deref(), Some("here!"));
    assert_eq!(c.get("moved:2").await.unwrap().as_deref(), Some("there!"));
    assert_eq!(
        source.commands(),
        ["GET moved:1", "GET stays", "GET moved:2"]
    );
    assert_eq!(target.commands(), ["GET moved:1", "GET moved:2"]);
    assert_eq!(
        target.connections(),
        1,
        "one connection kept for per-key redirects"
    );
    assert_eq!(
        target.lines().first().map(String::as_str),
        Some("HELLO 3 AUTH acme pw"),
        "with the same credentials"
    );
    assert_eq!(c.redirects(), 2);
}

#[tokio::test]
async fn redirect_loops_end_with_too_many_redirects() {
    let port = Arc::new(parking_lot::Mutex::new(String::new()));
    let me = port.clone();
    let s = FakeServer::start(move |r| {
        handshake(r).unwrap_or_else(|| reply(format!("-MOVED tenant:acme {}\r\n", me.lock())))
    })
    .await;
    *port.lock() = s.addr.clone();
    let mut c = Client::with_policy(
        ConnectOptions::new(&s.addr),
        RedirectPolicy::default().max_redirects(3),
    )
    .await
    .unwrap();
    let e = c.incr("n").await.unwrap_err();
    assert!(
        matches!(e.root(), ClientError::TooManyRedirects(4)),
        "{e:?}"
    );
    assert_eq!(e.command(), Some("INCR"));
    assert_eq!(s.commands().len(), 4);
}

#[tokio::test]
async fn a_pipeline_resends_the_moved_commands_in_order_at_the_new_home() {
    let home = FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| match r.name().as_str() {
            "SET" => reply("+OK\r\n"),
            "GET" => reply(format!("${}\r\n{}\r\n", r.args[1].len(), r.args[1])),
            _ => reply("+PONG\r\n"),
        })
    })
    .await;
    let ran = Arc::new(AtomicUsize::new(0));
    let old = {
        let (to, ran) = (home.addr.clone(), ran.clone());
        FakeServer::start(move |r| {
            handshake(r).unwrap_or_else(|| {
                if r.name() == "PING" {
                    // Not a tenant command: runs even after the move.
                    return reply("+PONG\r\n");
                }
                if ran.fetch_add(1, SeqCst) < 2 {
                    reply("+OK\r\n")
                } else {
                    reply(format!("-MOVED tenant:acme {to}\r\n"))
                }
            })
        })
        .await
    };
    let mut c = Client::connect(ConnectOptions::new(&old.addr).tenant("acme", "pw"))
        .await
        .unwrap();
    let mut p = Pipeline::new();
    p.cmd(["SET", "a", "1"])
        .cmd(["SET", "b", "2"])
        .cmd(["SET", "c", "3"])
        .cmd(["PING"])
        .cmd(["GET", "a"])
        .cmd(["SET", "d", "4"]);
    let replies = c.run(&p).await.unwrap();
    let got: Vec<String> = replies.iter().map(|r| text(r.as_ref().unwrap())).collect();
    assert_eq!(got, ["OK", "OK", "OK", "PONG", "a", "OK"]);
    assert_eq!(
        old.commands(),
        ["SET a 1", "SET b 2", "SET c 3", "PING", "GET a", "SET d 4"]
    );
    assert_eq!(home.commands(), ["SET c 3", "GET a", "SET d 4"]);
    assert_eq!((c.redirects(), c.addr()), (1, home.addr.as_str()));
}

#[tokio::test]
async fn a_pipeline_does_not_resend_try_again_past_a_command_that_ran() {
    // Round one: the first two commands are refused, then the tenant activates and the third
    // runs. Re-sending the first two would run them after the third, so they fail instead.
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let s = FakeServer::start(move |r| {
        handshake(r).unwrap_or_else(|| {
            if seen2.fetch_add(1, SeqCst) < 2 {
                reply("-TRYAGAIN tenant 'acme' is being imported\r\n")
            } else {
                reply("_\r\n")
            }
        })
    })
    .await;
    let mut c = Client::with_policy(ConnectOptions::new(&s.addr), fast_policy(2000))
        .await
        .unwrap();
    let replies = c
        .pipeline(&[vec!["SET", "x", "1"], vec!["INCR", "y"], vec!["GET", "x"]])
        .await
        .unwrap();
    let e = replies[0].as_ref().unwrap_err();
    assert!(e.is_try_again() && e.command() == Some("SET"), "{e:?}");
    assert!(replies[1].as_ref().unwrap_err().is_try_again());
    assert!(matches!(replies[2], Ok(Frame::Null)));
    assert_eq!(s.commands(), ["SET x 1", "INCR y", "GET x"]);

    // All refused: all re-sent, in order, after a backoff.
    seen.store(0, SeqCst);
    let replies = c
        .pipeline(&[vec!["GET", "a"], vec!["GET", "b"]])
        .await
        .unwrap();
    assert!(replies.iter().all(|r| matches!(r, Ok(Frame::Null))));
    assert_eq!(s.commands()[3..], ["GET a", "GET b", "GET a", "GET b"]);
}

#[tokio::test]
async fn a_cancelled_command_does_not_leave_its_reply_for_the_next_one() {
    let s = FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| match r.name().as_str() {
            "SLOW" => Response::Delayed(Duration::from_millis(300), "+slow-reply\r\n".into()),
            _ => reply("+fast-reply\r\n"),
        })
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(&s.addr)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(50), c.cmd(&["SLOW"])).await;
    assert!(r.is_err(), "the slow command was cancelled");
    let f = c.cmd(&["FAST"]).await.unwrap();
    assert_eq!(text(&f), "fast-reply");
    assert_eq!(
        s.connections(),
        2,
        "a new connection after the cancelled call"
    );
}

#[tokio::test]
async fn errors_name_the_server_and_the_command() {
    let s = FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| match r.name().as_str() {
            "HANGUP" => Response::Close,
            _ => reply(format!(
                "-ERR unknown command '{}', with args beginning with: \r\n",
                r.args[0]
            )),
        })
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(&s.addr)).await.unwrap();
    let e = c.cmd(&["frobnicate", "secret-arg"]).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "ERR unknown command 'frobnicate', with args beginning with:  (server {}, command FROBNICATE)",
            s.addr
        )
    );
    assert!(!e.to_string().contains("secret-arg"));
    let e = c.cmd(&["HANGUP"]).await.unwrap_err();
    assert!(e.is_connection_error(), "{e:?}");
    assert_eq!(e.command(), Some("HANGUP"));
    // The next command reconnects by itself and gets the server's answer.
    assert_eq!(c.cmd(&["PING"]).await.unwrap_err().code(), Some("ERR"));
    assert_eq!(s.connections(), 2);

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = Client::connect(ConnectOptions::new(&closed))
        .await
        .unwrap_err();
    assert!(e.is_connection_error());
    assert!(
        e.to_string()
            .starts_with(&format!("cannot connect to {closed}: ")),
        "{e}"
    );
    assert!(
        e.to_string()
            .ends_with(&format!("(server {closed}, command connect)")),
        "{e}"
    );
}

#[tokio::test]
async fn the_pool_is_bounded_and_times_out_checkouts() {
    let s = FakeServer::start(|r| handshake(r).unwrap_or_else(|| reply("+PONG\r\n"))).await;
    let pool = Pool::new(
        ConnectOptions::new(&s.addr),
        PoolOptions::new()
            .max_size(2)
            .checkout_timeout(Duration::from_millis(100)),
    );
    let a = pool.get().await.unwrap();
    let mut b = pool.get().await.unwrap();
    b.ping().await.unwrap();
    let t = Instant::now();
    let e = pool.get().await.unwrap_err();
    assert!(
        matches!(e, ClientError::PoolTimeout { max_size: 2, .. }),
        "{e:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(90));
    assert!(e.to_string().contains("within 100 ms"), "{e}");
    assert_eq!(pool.status().in_use, 2);

    // A waiter gets the connection returned while it waits, and no new one is opened.
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| c.addr().to_string()) })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(a);
    assert_eq!(waiter.await.unwrap().unwrap(), s.addr);
    drop(b);
    let st = pool.status();
    assert_eq!((st.created, st.idle, st.in_use, st.discarded), (2, 2, 0, 0));
}

#[tokio::test]
async fn the_pool_discards_broken_connections_and_replaces_closed_ones() {
    let s = FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| match r.name().as_str() {
            "HANGUP" => Response::Close,
            _ => reply("+PONG\r\n"),
        })
    })
    .await;
    let pool = Pool::new(ConnectOptions::new(&s.addr), PoolOptions::new().max_size(4));
    {
        let mut c = pool.get().await.unwrap();
        assert!(c.cmd(&["HANGUP"]).await.unwrap_err().is_connection_error());
    }
    assert_eq!(pool.status().discarded, 1);
    assert_eq!(pool.status().idle, 0);
    {
        let (mut a, mut b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
        a.ping().await.unwrap();
        b.ping().await.unwrap();
    }
    assert_eq!(pool.status().idle, 2);
    // The server drops every connection (as a restart would): checkout notices, replaces them,
    // and the command succeeds without the caller retrying.
    s.close_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = pool.get().await.unwrap();
    c.ping().await.unwrap();
    let st = pool.status();
    assert_eq!((st.created, st.discarded), (4, 3), "{st:?}");

    // A guard dropped in the middle of a command is not put back.
    let slow = FakeServer::start(|r| {
        handshake(r)
            .unwrap_or_else(|| Response::Delayed(Duration::from_millis(300), "+late\r\n".into()))
    })
    .await;
    let pool = Pool::new(ConnectOptions::new(&slow.addr), PoolOptions::new());
    {
        let mut c = pool.get().await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(30), c.cmd(&["SLOW"])).await;
        assert!(r.is_err());
    }
    assert_eq!((pool.status().idle, pool.status().discarded), (0, 1));
}

#[tokio::test]
async fn pooled_connections_follow_the_tenant_and_new_ones_start_there() {
    let home = FakeServer::start(|r| handshake(r).unwrap_or_else(|| reply(":1\r\n"))).await;
    let old = {
        let to = home.addr.clone();
        FakeServer::start(move |r| {
            handshake(r).unwrap_or_else(|| reply(format!("-MOVED tenant:acme {to}\r\n")))
        })
        .await
    };
    let pool = Pool::new(
        ConnectOptions::new(&old.addr).tenant("acme", "pw"),
        PoolOptions::new().max_size(3),
    );
    {
        let mut a = pool.get().await.unwrap();
        assert_eq!(a.incr("n").await.unwrap(), 1);
    }
    assert_eq!(pool.status().redirects, 1);
    assert_eq!(pool.status().addr, home.addr);
    let (mut a, mut b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    assert_eq!(a.incr("n").await.unwrap() + b.incr("n").await.unwrap(), 2);
    assert_eq!(
        b.addr(),
        home.addr,
        "a new connection starts at the new home"
    );
    assert_eq!(old.commands(), ["INCR n"]);
    assert_eq!(old.connections(), 1);
}

/// An old home that holds transactions (MULTI, WATCH, queued INCRs) but refuses every command
/// of the tenant with `-MOVED` to `to`, as a source does after cutover.
async fn moved_source(to: String) -> FakeServer {
    FakeServer::start(move |r| {
        handshake(r).unwrap_or_else(|| match r.name().as_str() {
            "MULTI" | "WATCH" | "PING" => reply("+OK\r\n"),
            "INCR" => reply("+QUEUED\r\n"),
            _ => reply(format!("-MOVED tenant:acme {to}\r\n")),
        })
    })
    .await
}

/// A new home with no transaction of ours: EXEC fails as it would there.
async fn new_home() -> FakeServer {
    FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| match r.name().as_str() {
            "EXEC" => reply("-ERR EXEC without MULTI\r\n"),
            "GET" => reply("$1\r\n1\r\n"),
            "SET" => reply("+OK\r\n"),
            _ => reply(":1\r\n"),
        })
    })
    .await
}

fn moved_to(e: &ClientError) -> Option<&str> {
    match e.root() {
        ClientError::TransactionDiscarded { moved_to, .. } => moved_to.as_deref(),
        other => panic!("not a discarded transaction: {other:?}"),
    }
}

#[tokio::test]
async fn a_move_inside_multi_discards_the_transaction_and_moves_the_next_command() {
    let home = new_home().await;
    let old = moved_source(home.addr.clone()).await;
    let mut c = Client::connect(ConnectOptions::new(&old.addr).tenant("acme", "pw"))
        .await
        .unwrap();
    c.cmd(&["MULTI"]).await.unwrap();
    assert!(c.in_transaction());
    assert_eq!(text(&c.cmd(&["INCR", "n"]).await.unwrap()), "QUEUED");
    let e = c.cmd(&["EXEC"]).await.unwrap_err();
    assert!(e.is_transaction_discarded(), "{e:?}");
    assert!(!e.is_redirect() && !e.is_try_again() && !e.is_connection_error());
    assert_eq!(moved_to(&e), Some(home.addr.as_str()));
    let refusal = format!("MOVED tenant:acme {}", home.addr);
    assert_eq!(e.server_message(), Some(refusal.as_str()));
    assert_eq!(
        e.to_string(),
        format!(
            "transaction discarded because the tenant moved to {} (server replied: {refusal}); \
             nothing of it ran; start it again (server {}, command EXEC)",
            home.addr, old.addr
        )
    );
    // Nothing of the transaction went to the new home; the client left the transaction and
    // moved there for the next command.
    assert!(home.commands().is_empty(), "{:?}", home.commands());
    assert!(!c.in_transaction());
    assert_eq!((c.addr(), c.redirects()), (home.addr.as_str(), 1));
    assert_eq!(c.incr("n").await.unwrap(), 1);
    assert_eq!(home.commands(), ["INCR n"]);
    assert_eq!(old.commands(), ["MULTI", "INCR n", "EXEC"]);
}

#[tokio::test]
async fn a_move_while_keys_are_watched_is_not_followed() {
    let home = new_home().await;
    let old = moved_source(home.addr.clone()).await;
    let mut c = Client::connect(ConnectOptions::new(&old.addr))
        .await
        .unwrap();
    c.cmd(&["WATCH", "n"]).await.unwrap();
    assert!(c.in_transaction());
    let e = c.cmd(&["GET", "n"]).await.unwrap_err();
    assert_eq!(moved_to(&e), Some(home.addr.as_str()));
    assert!(home.commands().is_empty());
    // Out of the transaction now: the same refusal is followed as usual.
    let old2 = moved_source(home.addr.clone()).await;
    let mut c = Client::connect(ConnectOptions::new(&old2.addr))
        .await
        .unwrap();
    assert_eq!(c.get("n").await.unwrap().as_deref(), Some("1"));
    assert_eq!(home.commands(), ["GET n"]);
}

#[tokio::test]
async fn try_again_inside_multi_is_not_retried() {
    let s = FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| match r.name().as_str() {
            "MULTI" => reply("+OK\r\n"),
            "SET" => reply("+QUEUED\r\n"),
            "EXEC" => reply("-TRYAGAIN tenant 'acme' is switching servers; retry shortly\r\n"),
            _ => reply("+PONG\r\n"),
        })
    })
    .await;
    let mut c = Client::with_policy(ConnectOptions::new(&s.addr), fast_policy(2000))
        .await
        .unwrap();
    c.cmd(&["MULTI"]).await.unwrap();
    c.cmd(&["SET", "k", "v"]).await.unwrap();
    let e = c.cmd(&["EXEC"]).await.unwrap_err();
    assert_eq!(moved_to(&e), None);
    assert!(
        e.to_string().starts_with(
            "transaction discarded because the tenant is switching servers (server replied: \
             TRYAGAIN tenant 'acme' is switching servers; retry shortly)"
        ),
        "{e}"
    );
    assert_eq!(s.commands(), ["MULTI", "SET k v", "EXEC"], "EXEC sent once");
    // The connection that held the transaction was dropped; the next command uses a new one.
    assert!(!c.in_transaction());
    c.ping().await.unwrap();
    assert_eq!((s.connections(), c.addr()), (2, s.addr.as_str()));
}

#[tokio::test]
async fn a_lost_connection_inside_multi_is_reported_not_reconnected_around() {
    let s = FakeServer::start(|r| {
        handshake(r).unwrap_or_else(|| match r.name().as_str() {
            "MULTI" => reply("+OK\r\n"),
            "SET" => reply("+QUEUED\r\n"),
            "EXEC" => Response::Close,
            _ => reply("+PONG\r\n"),
        })
    })
    .await;
    let mut c = Client::connect(ConnectOptions::new(&s.addr)).await.unwrap();
    c.cmd(&["MULTI"]).await.unwrap();
    s.close_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Sent on a new connection, this SET would run at once instead of at EXEC.
    let e = c.cmd(&["SET", "k", "v"]).await.unwrap_err();
    assert!(e.is_transaction_discarded(), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "transaction discarded: the connection to {0} was lost; nothing of it ran; start it \
             again (server {0}, command SET)",
            s.addr
        )
    );
    assert_eq!(e.server_message(), None);
    assert_eq!(s.commands(), ["MULTI"]);
    c.ping().await.unwrap();

    // A connection lost at EXEC leaves the outcome unknown (an error for EXEC itself), but the
    // transaction is over either way: the next command runs normally.
    c.cmd(&["MULTI"]).await.unwrap();
    c.cmd(&["SET", "k", "v"]).await.unwrap();
    assert!(c.cmd(&["EXEC"]).await.unwrap_err().is_connection_error());
    assert!(!c.in_transaction());
    c.ping().await.unwrap();
}

#[tokio::test]
async fn a_pipeline_never_resends_part_of_a_transaction() {
    let home = new_home().await;
    let old = moved_source(home.addr.clone()).await;
    let mut c = Client::connect(ConnectOptions::new(&old.addr))
        .await
        .unwrap();
    let mut p = Pipeline::new();
    p.cmd(["SET", "a", "1"])
        .cmd(["MULTI"])
        .cmd(["INCR", "n"])
        .cmd(["EXEC"])
        .cmd(["GET", "a"]);
    let replies = c.run(&p).await.unwrap();
    assert_eq!(text(replies[0].as_ref().unwrap()), "OK");
    assert_eq!(text(replies[1].as_ref().unwrap()), "OK");
    assert_eq!(text(replies[2].as_ref().unwrap()), "QUEUED");
    let e = replies[3].as_ref().unwrap_err();
    assert_eq!(moved_to(e), Some(home.addr.as_str()));
    assert_eq!(e.command(), Some("EXEC"));
    assert_eq!(text(replies[4].as_ref().unwrap()), "1");
    // The commands outside the transaction were re-sent in order; nothing of the transaction.
    assert_eq!(home.commands(), ["SET a 1", "GET a"]);
    assert_eq!((c.addr(), c.redirects()), (home.addr.as_str(), 1));
    assert!(!c.in_transaction());

    // A pipeline that leaves a MULTI open on the old server while the client follows the tenant
    // for an earlier command: the next call reports the transaction as discarded.
    let old = moved_source(home.addr.clone()).await;
    let mut c = Client::connect(ConnectOptions::new(&old.addr))
        .await
        .unwrap();
    let replies = c
        .pipeline(&[vec!["SET", "b", "2"], vec!["MULTI"], vec!["INCR", "n"]])
        .await
        .unwrap();
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    assert_eq!(c.addr(), home.addr);
    assert!(c.in_transaction());
    let e = c.cmd(&["EXEC"]).await.unwrap_err();
    assert_eq!(moved_to(&e), Some(home.addr.as_str()));
    assert_eq!(home.commands()[2..], ["SET b 2"]);
    c.cmd(&["PING"]).await.unwrap();
}

#[tokio::test]
async fn a_pooled_connection_left_in_a_transaction_is_not_reused() {
    let s = FakeServer::start(|r| handshake(r).unwrap_or_else(|| reply("+OK\r\n"))).await;
    let pool = Pool::new(ConnectOptions::new(&s.addr), PoolOptions::new());
    {
        let mut c = pool.get().await.unwrap();
        c.cmd(&["MULTI"]).await.unwrap();
    }
    let st = pool.status();
    assert_eq!((st.idle, st.discarded), (0, 1), "{st:?}");
    {
        let mut c = pool.get().await.unwrap();
        c.cmd(&["MULTI"]).await.unwrap();
        c.cmd(&["EXEC"]).await.unwrap();
    }
    assert_eq!(pool.status().idle, 1);
}

#[tokio::test]
async fn a_server_that_is_down_fails_at_once_but_a_new_home_is_waited_for() {
    let s = FakeServer::start(|r| handshake(r).unwrap_or_else(|| reply("+PONG\r\n"))).await;
    let mut c = Client::with_policy(
        ConnectOptions::new(&s.addr),
        RedirectPolicy::default().redirect_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    c.ping().await.unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let t = Instant::now();
        let e = c.ping().await.unwrap_err();
        assert!(e.is_connection_error(), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    // A redirect to an address that starts listening a little later is still followed.
    let spare = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let old = moved_source(spare.clone()).await;
    let late = {
        let spare = spare.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            FakeServer::start_at(&spare, |r| {
                handshake(r).unwrap_or_else(|| reply("$4\r\nlate\r\n"))
            })
            .await
        })
    };
    let mut c = Client::with_policy(ConnectOptions::new(&old.addr), fast_policy(5000))
        .await
        .unwrap();
    let t = Instant::now();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("late"));
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    let late = late.await.unwrap();
    assert_eq!(late.commands(), ["GET k"]);
}

#[tokio::test]
async fn the_handshake_is_bounded_by_the_connect_timeout() {
    // Accepts and reads, never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = l.accept().await {
            held.push(sock);
        }
    });
    let t = Instant::now();
    let e = Client::connect(
        ConnectOptions::new(&addr)
            .password("pw")
            .connect_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(e.root(), ClientError::Timeout(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "timed out connecting to {addr}: no reply to the handshake (server {addr}, command connect)"
        )
    );
}

#[tokio::test]
async fn a_peer_that_is_not_a_redis_server_gets_a_plain_protocol_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let _http = tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let mut buf = [0u8; 512];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    for opts in [
        ConnectOptions::new(&addr),
        ConnectOptions::new(&addr).resp2().name("x"),
    ] {
        let e = Client::connect(opts).await.unwrap_err();
        assert!(e.is_connection_error(), "{e:?}");
        assert_eq!(
            e.root().to_string(),
            "protocol error: got \"H\" as reply type byte"
        );
    }
}

#[tokio::test]
async fn replies_are_decoded_in_the_protocol_hello_switched_to() {
    use std::collections::HashMap;
    let protos: Arc<parking_lot::Mutex<HashMap<usize, u8>>> = Arc::default();
    let s = {
        let protos = protos.clone();
        FakeServer::start(move |r| {
            let mut protos = protos.lock();
            let p = protos.entry(r.conn).or_insert(2);
            let three = *p == 3;
            match (r.name().as_str(), r.args.get(1).map(String::as_str)) {
                ("HELLO", Some("3")) if r.args.len() > 2 => reply("-WRONGPASS nope\r\n"),
                ("HELLO", Some("3")) => {
                    *p = 3;
                    reply("%1\r\n+proto\r\n:3\r\n")
                }
                ("HELLO", Some("2")) => {
                    *p = 2;
                    reply("*2\r\n+proto\r\n:2\r\n")
                }
                ("GET", _) if three => reply("_\r\n"),
                ("GET", _) => reply("$-1\r\n"),
                ("MGET", _) if three => reply("*2\r\n_\r\n$1\r\nx\r\n"),
                ("MGET", _) => reply("*2\r\n$-1\r\n$1\r\nx\r\n"),
                _ => reply("+OK\r\n"),
            }
        })
        .await
    };
    // RESP2 asked for: no HELLO at all.
    let mut c = Connection::connect(ConnectOptions::new(&s.addr).resp2().name("n"))
        .await
        .unwrap();
    assert!(!c.is_resp3());
    assert_eq!(s.lines(), ["CLIENT SETNAME n"]);
    assert_eq!(
        text(&c.cmd(&["MGET", "a", "b"]).await.unwrap()),
        "[(nil), x]"
    );
    // A failed HELLO 3 changes nothing.
    assert!(c.cmd(&["HELLO", "3", "AUTH", "u", "bad"]).await.is_err());
    assert!(matches!(c.cmd(&["GET", "a"]).await.unwrap(), Frame::Null));
    assert_eq!(text(&c.cmd(&["HELLO", "3"]).await.unwrap()), "{proto: 3}");
    assert!(c.is_resp3());
    assert_eq!(
        text(&c.cmd(&["MGET", "a", "b"]).await.unwrap()),
        "[(nil), x]"
    );
    // Also in the middle of a pipeline.
    for args in [
        &["HELLO", "2"][..],
        &["MGET", "a", "b"],
        &["HELLO", "3"],
        &["GET", "a"],
    ] {
        c.queue(args);
    }
    c.flush().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(text(&c.recv().await.unwrap()));
    }
    assert_eq!(got, ["[proto, 2]", "[(nil), x]", "{proto: 3}", "(nil)"]);
    assert!(c.is_resp3());
}
