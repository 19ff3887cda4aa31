//! Bad input to TENANT.MIGRATE*: each a clear error, and nothing changed on either side.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::LONG;
use crate::common::Server;
use crate::util::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A real redis-server on a free port (killed on drop). It accepts the test servers' migration
/// token as a user, so that what the source finds out is that it is not a Ferrite server.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let token_user = format!(">{}", crate::common::TEST_MIGRATION_TOKEN);
        let child = Command::new("redis-server")
            .args([
                "--user",
                "ferrite-migration",
                "on",
                &token_user,
                "~*",
                "+@all",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let src = Server::start();
    let dst = Server::start();
    let locked = Server::start_with(&["--requirepass", "secret"]);
    let redis = Redis::start();
    let mut a = admin(&src).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(&src, "acme", "pw").await;
    ok(&mut t, &["SET", "k", "v"]).await;
    let digest = digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await);
    let closed = format!("127.0.0.1:{}", free_port());
    let redis_addr = format!("127.0.0.1:{}", redis.1);
    let locked_addr = locked.addr();
    let own = src.addr();
    let dst_addr = dst.addr();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["TENANT.MIGRATE", "ghost", "TARGET", &dst_addr],
            "no such tenant 'ghost'",
        ),
        (
            vec!["TENANT.MIGRATE", "bad id", "TARGET", &dst_addr],
            "invalid tenant id",
        ),
        (
            vec!["TENANT.MIGRATE", "acme", "TARGET", &closed],
            "is unreachable",
        ),
        (
            vec!["TENANT.MIGRATE", "acme", "TARGET", "nonsense"],
            "invalid target address",
        ),
        (
            vec!["TENANT.MIGRATE", "acme", "TARGET", &redis_addr],
            "is not a Ferrite server",
        ),
        (
            vec!["TENANT.MIGRATE", "acme", "TARGET", &locked_addr],
            "refused authentication",
        ),
        (
            vec![
                "TENANT.MIGRATE",
                "acme",
                "TARGET",
                &locked_addr,
                "AUTH",
                "wrong",
            ],
            "refused authentication",
        ),
        (
            vec!["TENANT.MIGRATE", "acme", "TARGET", &own],
            "to the server it is on",
        ),
        (
            vec![
                "TENANT.MIGRATE",
                "acme",
                "TARGET",
                &dst_addr,
                "PARALLEL",
                "0",
            ],
            "PARALLEL must be between 1 and 64",
        ),
        (
            vec![
                "TENANT.MIGRATE",
                "acme",
                "TARGET",
                &dst_addr,
                "MODE",
                "teleport",
            ],
            "invalid MODE",
        ),
        (
            vec!["TENANT.MIGRATE", "acme", "TARGET", &dst_addr, "BATCH_SIZE"],
            "syntax error",
        ),
        (
            vec!["TENANT.MIGRATE", "acme", "DESTINATION", &dst_addr],
            "syntax error",
        ),
        (
            vec!["TENANT.MIGRATE.STATUS", "mig_nope"],
            "no such migration 'mig_nope'",
        ),
        (
            vec!["TENANT.MIGRATE.CUTOVER", "mig_nope"],
            "no such migration",
        ),
    ];
    for (args, want) in &cases {
        let e = err(&mut a, args).await;
        assert!(e.contains(want), "{args:?}: got {e:?}, want {want:?}");
    }
    // Nothing changed: no migration recorded, the source is as before, the targets hold nothing.
    let all = fields(&ok(&mut a, &["TENANT.MIGRATE.STATUS", "ALL"]).await);
    assert_eq!(all["migrations_total"], "0", "{all:?}");
    assert_eq!(
        digest_of(&ok(&mut a, &["TENANT.DIGEST", "acme"]).await),
        digest
    );
    for s in [&dst, &locked] {
        let mut d = ferrite_client::Connection::connect(
            ferrite_client::ConnectOptions::new(s.addr()).password("secret"),
        )
        .await
        .or(
            ferrite_client::Connection::connect(ferrite_client::ConnectOptions::new(s.addr()))
                .await,
        )
        .unwrap();
        let e = err(&mut d, &["TENANT.INFO", "acme"]).await;
        assert!(e.contains("no such tenant"), "{e}");
    }

    // With the right password the locked target works.
    let id = migrate(&mut a, "acme", &locked, &["AUTH", "secret"]).await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    // A second migration of a tenant already migrating is refused.
    let e = err(&mut a, &["TENANT.MIGRATE", "acme", "TARGET", &dst_addr]).await;
    assert!(e.contains("already being migrated"), "{e}");
    ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    // CUTOVER / PAUSE / RESUME on a finished migration: errors naming the state.
    for op in [
        "TENANT.MIGRATE.CUTOVER",
        "TENANT.MIGRATE.PAUSE",
        "TENANT.MIGRATE.RESUME",
        "TENANT.MIGRATE.CANCEL",
    ] {
        let e = err(&mut a, &[op, &id]).await;
        assert!(e.contains("is completed"), "{op}: {e}");
    }
    // A moved tenant cannot be migrated again from here.
    let e = err(&mut a, &["TENANT.MIGRATE", "acme", "TARGET", &dst_addr]).await;
    assert!(e.contains("is moved"), "{e}");
    // Internal import commands are refused to tenant connections.
    ok(
        &mut admin(&dst).await,
        &["TENANT.CREATE", "t", "PASSWORD", "pw"],
    )
    .await;
    let mut tc = tenant_conn(&dst, "t", "pw").await;
    let e = err(&mut tc, &["TENANT.IMPORT.ABORT", "imp_x"]).await;
    assert!(e.contains("no permission"), "{e}");
}
