//! What a plain redis-rs client sees at a cutover (docs/clients.md cites this test): an error
//! of kind `Server(Moved)` whose detail is `tenant:<id> <addr>` (`redirect_node()` is None: it
//! expects a slot number), `Server(TryAgain)` on a target still importing, and after
//! `CLIENT CAPA redirect` an `Extension` error with code `REDIRECT`. The recommended handling:
//! take the address from the detail and reconnect there with the same credentials.

use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::common::Server;
use crate::{cutover, migrate_to_live_sync, tenant_with_keys};

fn tenant_url(s: &Server, resp3: bool) -> String {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    format!("redis://acme:pw@127.0.0.1:{}/{proto}", s.port)
}

fn get(con: &mut redis::Connection, key: &str) -> Result<Option<String>, RedisError> {
    redis::cmd("GET").arg(key).query(con)
}

/// The recommended handling for redis-rs: on MOVED, reconnect to the address in the detail.
fn new_home(e: &RedisError) -> Option<String> {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::Moved) => {
            let detail = e.detail()?;
            let (target, addr) = detail.split_once(' ')?;
            target.strip_prefix("tenant:")?;
            Some(addr.to_string())
        }
        ErrorKind::Extension if e.code() == Some("REDIRECT") => {
            e.detail().map(|a| a.trim().to_string())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_gets_a_moved_error_it_does_not_follow() {
    let src = Server::start();
    let dst = Server::start();
    tenant_with_keys(&src, 500).await;
    let id = migrate_to_live_sync(&src, &dst).await;

    // Before the cutover, the target answers TRYAGAIN to the tenant.
    let mut on_target = redis::Client::open(tenant_url(&dst, false))
        .unwrap()
        .get_connection()
        .expect("AUTH works on the importing target");
    let e = get(&mut on_target, "k1").unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::TryAgain),
        "{e}"
    );

    let mut resp2 = redis::Client::open(tenant_url(&src, false))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut resp3 = redis::Client::open(tenant_url(&src, true))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut capa = redis::Client::open(tenant_url(&src, false))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("CAPA")
        .arg("redirect")
        .query(&mut capa)
        .unwrap();
    assert_eq!(get(&mut resp2, "k1").unwrap().as_deref(), Some("v1"));

    cutover(&src, &id).await;

    for con in [&mut resp2, &mut resp3] {
        let e = get(con, "k1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Server(ServerErrorKind::Moved), "{e:?}");
        assert_eq!(e.code(), Some("MOVED"));
        let want = format!("tenant:acme {}", dst.addr());
        assert_eq!(e.detail(), Some(want.as_str()));
        assert_eq!(e.redirect_node(), None, "not a cluster slot");
        assert_eq!(e.to_string(), format!("Moved: {want}"));
        assert_eq!(new_home(&e), Some(dst.addr()));
    }
    let e = get(&mut capa, "k1").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Extension, "{e:?}");
    assert_eq!(e.code(), Some("REDIRECT"));
    assert_eq!(e.to_string(), format!("\"REDIRECT\": {}", dst.addr()));
    assert_eq!(e.detail(), Some(dst.addr().as_str()));
    assert_eq!(new_home(&e), Some(dst.addr()));

    // Reconnecting with the same credentials at the new home works.
    let home = new_home(&get(&mut resp2, "k1").unwrap_err()).unwrap();
    let mut moved = redis::Client::open(format!("redis://acme:pw@{home}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(get(&mut moved, "k1").unwrap().as_deref(), Some("v1"));
    assert_eq!(
        get(&mut on_target, "k499").unwrap().as_deref(),
        Some("v499")
    );
}
