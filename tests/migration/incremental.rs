//! `MODE incremental`: a tenant moved pattern by pattern under concurrent writers. Between
//! cutovers its keys are split between the two servers: each key is served by one of them,
//! clients are redirected per key (ferrite-client follows, redis-cli sees the error), commands
//! naming keys on both sides are refused, and the last pattern's cutover completes the
//! migration. Every acknowledged write is checked on the target afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrite_client::{Client, ClientError, ConnectOptions, Connection, Frame, value};

use crate::common::Server;
use crate::util::*;
use crate::writers::{check_model, writer};
use crate::{LONG, SHORT, now_ms};

const USERS: usize = 2_000;
const ORDERS: usize = 2_000;
const MISC: usize = 500;

async fn load_base(s: &Server) {
    let mut t = tenant_conn(s, "acme", "pw").await;
    let mut cmds = Vec::new();
    for i in 0..USERS {
        cmds.push(s_(&["SET", &format!("user:{i}"), &format!("u-{i}")]));
    }
    for i in 0..ORDERS {
        cmds.push(s_(&[
            "HSET",
            &format!("order:{i}"),
            "amount",
            &i.to_string(),
        ]));
    }
    for i in 0..MISC {
        cmds.push(s_(&["RPUSH", &format!("misc:{i}"), "a", &i.to_string()]));
    }
    load(&mut t, cmds).await;
}

/// The base data, key by key, on whichever server `t` is connected to (a ferrite-client
/// `Client`, which follows per-key redirects).
async fn check_base(t: &mut Client) {
    for i in 0..USERS {
        let v = t.cmd(&["GET", &format!("user:{i}")]).await.unwrap();
        assert_eq!(value::as_string(&v).unwrap(), format!("u-{i}"), "user:{i}");
    }
    for i in 0..ORDERS {
        let v = t
            .cmd(&["HGET", &format!("order:{i}"), "amount"])
            .await
            .unwrap();
        assert_eq!(value::as_string(&v).unwrap(), i.to_string(), "order:{i}");
    }
    for i in 0..MISC {
        let v = t
            .cmd(&["LRANGE", &format!("misc:{i}"), "0", "-1"])
            .await
            .unwrap();
        let v: Vec<String> = value::as_array(&v)
            .unwrap()
            .iter()
            .map(|f| value::as_string(f).unwrap())
            .collect();
        assert_eq!(v, ["a".to_string(), i.to_string()], "misc:{i}");
    }
}

fn s_(v: &[&str]) -> Vec<String> {
    s(v)
}

/// STATUS `patterns`: pattern → where its keys are served.
fn patterns_of(status: &Frame) -> Vec<(String, String)> {
    let pairs = value::as_pairs(status).unwrap();
    let (_, p) = pairs
        .into_iter()
        .find(|(k, _)| k == "patterns")
        .expect("STATUS of an incremental migration lists its patterns");
    value::as_pairs(&p)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, value::as_string(&v).unwrap()))
        .collect()
}

async fn cut_pattern(a: &mut Connection, id: &str, pattern: &str) -> HashMap<String, String> {
    for _ in 0..100 {
        match cmd(a, &["TENANT.MIGRATE.CUTOVER", id, "PATTERN", pattern]).await {
            Ok(r) => return fields(&r),
            Err(e) if e.to_string().contains("cutover_max_lag") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cutover of {pattern} failed: {e}"),
        }
    }
    panic!("cutover of {pattern} kept being refused for the lag");
}

fn redis_cli(s: &Server, args: &[&str]) -> String {
    let port = s.addr().rsplit(':').next().unwrap_or_default().to_string();
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port,
            "--no-auth-warning",
            "--user",
            "acme",
            "--pass",
            "pw",
        ])
        .args(args)
        .output()
        .expect("redis-cli is installed (scripts/test.sh installs redis-tools)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_migration_moves_pattern_by_pattern_under_writes() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    load_base(&src).await;
    let far = now_ms() + 86_400_000;

    // Writers w0, w1, w2 write `w<n>:*`: w0 and w1 have patterns of their own, w2 falls in the
    // implicit last pattern `*` with misc:*.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|n| tokio::spawn(writer(n, src.addr(), "acme", stop.clone(), far, false)))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let id = migrate(
        &mut a,
        "acme",
        &dst,
        &[
            "MODE",
            "incremental",
            "PATTERNS",
            "user:*",
            "w0:*",
            "order:*",
            "w1:*",
        ],
    )
    .await;
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let st = ok(&mut a, &["TENANT.MIGRATE.STATUS", &id]).await;
    assert_eq!(
        patterns_of(&st),
        [
            ("user:*", "here"),
            ("w0:*", "here"),
            ("order:*", "here"),
            ("w1:*", "here"),
            ("*", "here"),
        ]
        .map(|(p, o)| (p.to_string(), o.to_string()))
    );
    // A whole-tenant cutover is not how an incremental migration ends.
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id]).await;
    assert!(e.contains("pattern by pattern"), "{e}");

    // The first pattern, with the writers going on.
    let cut = cut_pattern(&mut a, &id, "user:*").await;
    assert_eq!(cut["status"], "pattern_moved", "{cut:?}");
    assert_eq!(cut["keys_migrated"], USERS.to_string());
    let cut = cut_pattern(&mut a, &id, "w0:*").await;
    assert_eq!(cut["status"], "pattern_moved", "{cut:?}");
    let st = ok(&mut a, &["TENANT.MIGRATE.STATUS", &id]).await;
    assert_eq!(
        patterns_of(&st)
            .iter()
            .map(|(_, o)| o.as_str())
            .collect::<Vec<_>>(),
        ["moved", "moved", "here", "here", "here"]
    );

    // Plain connections get the redirect per key, on both sides.
    let mut on_src = tenant_conn(&src, "acme", "pw").await;
    let mut on_dst = tenant_conn(&dst, "acme", "pw").await;
    match on_src.cmd(&["GET", "user:7"]).await {
        Err(ClientError::KeyMoved { tenant, addr }) => {
            assert_eq!(
                (tenant.as_str(), addr.as_str()),
                ("acme", dst.addr().as_str())
            );
        }
        other => panic!("GET of a moved key on the source: {other:?}"),
    }
    match on_dst.cmd(&["HGET", "order:7", "amount"]).await {
        Err(ClientError::KeyMoved { addr, .. }) => assert_eq!(addr, src.addr()),
        other => panic!("a key not moved yet, asked on the target: {other:?}"),
    }
    let v = ok(&mut on_dst, &["GET", "user:7"]).await;
    assert_eq!(value::as_string(&v).unwrap(), "u-7");
    let v = ok(&mut on_src, &["HGET", "order:7", "amount"]).await;
    assert_eq!(value::as_string(&v).unwrap(), "7");
    // redis-cli sees the redirect as an error naming the target.
    let out = redis_cli(&src, &["GET", "user:7"]);
    assert!(
        out.contains("MOVED tenant:acme:key") && out.contains(&dst.addr()),
        "{out}"
    );
    assert_eq!(redis_cli(&src, &["HGET", "order:3", "amount"]), "3");

    // Commands naming keys on both servers are refused, on both; so are whole-keyspace ones.
    for c in [&mut on_src, &mut on_dst] {
        let e = err(c, &["MGET", "user:1", "order:1"]).await;
        assert!(e.starts_with("CROSSSLOT"), "{e}");
        assert!(e.contains("'user:*'") && e.contains("'order:*'"), "{e}");
        let e = err(c, &["DBSIZE"]).await;
        assert!(e.starts_with("CROSSSLOT") && e.contains("'dbsize'"), "{e}");
        let e = err(c, &["KEYS", "*"]).await;
        assert!(e.starts_with("CROSSSLOT"), "{e}");
        let e = err(c, &["EVAL", "return 1", "2", "user:1", "order:1"]).await;
        assert!(e.starts_with("CROSSSLOT"), "{e}");
    }
    // A transaction over both sides is refused at EXEC and nothing of it runs.
    ok(&mut on_src, &["MULTI"]).await;
    ok(&mut on_src, &["SET", "order:1:note", "x"]).await;
    ok(&mut on_src, &["SET", "user:1", "changed"]).await;
    let e = err(&mut on_src, &["EXEC"]).await;
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    assert!(
        value::as_opt_string(&ok(&mut on_src, &["GET", "order:1:note"]).await)
            .unwrap()
            .is_none()
    );
    // A script reaching an undeclared key on the other server fails that call.
    let e = err(
        &mut on_src,
        &["EVAL", "return redis.call('GET', 'user:1')", "0"],
    )
    .await;
    assert!(e.contains("Script attempted to access"), "{e}");
    // A transaction whose keys all moved is redirected as a whole.
    ok(&mut on_src, &["MULTI"]).await;
    ok(&mut on_src, &["GET", "user:2"]).await;
    match on_src.cmd(&["EXEC"]).await {
        Err(ClientError::KeyMoved { .. }) => {}
        other => panic!("EXEC of moved keys: {other:?}"),
    }

    // ferrite-client follows per key and stays where it is.
    let mut c = Client::connect(ConnectOptions::new(src.addr()).tenant("acme", "pw"))
        .await
        .unwrap();
    let v = c.cmd(&["GET", "user:9"]).await.unwrap();
    assert_eq!(value::as_string(&v).unwrap(), "u-9");
    assert_eq!(
        c.addr(),
        src.addr(),
        "a per-key redirect does not move the client"
    );
    c.cmd(&["SET", "user:new", "on-target"]).await.unwrap();
    let v = ok(&mut on_dst, &["GET", "user:new"]).await;
    assert_eq!(value::as_string(&v).unwrap(), "on-target");
    let v = c.cmd(&["HGET", "order:9", "amount"]).await.unwrap();
    assert_eq!(value::as_string(&v).unwrap(), "9");

    // VERIFY per pattern: a moved pattern matches what the target activated; one that has not
    // moved cannot be verified yet.
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id, "PATTERN", "user:*"]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    assert_eq!(v["keys_source"], USERS.to_string());
    assert_eq!(v["keys_target"], USERS.to_string());
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.VERIFY", &id, "PATTERN", "order:*"],
    )
    .await;
    assert!(e.contains("has not moved yet"), "{e}");
    // Once a pattern is served by the target, CANCEL would lose its writes: refused.
    let e = err(&mut a, &["TENANT.MIGRATE.CANCEL", &id]).await;
    assert!(e.contains("partly handed over"), "{e}");
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.CUTOVER", &id, "PATTERN", "user:*"],
    )
    .await;
    assert!(e.contains("already moved"), "{e}");

    // The rest, the last one completing the migration.
    for p in ["order:*", "w1:*"] {
        let cut = cut_pattern(&mut a, &id, p).await;
        assert_eq!(cut["status"], "pattern_moved", "{p}: {cut:?}");
    }
    let cut = cut_pattern(&mut a, &id, "*").await;
    assert_eq!(cut["status"], "completed", "{cut:?}");
    let st = wait_state(&mut a, &id, "completed", SHORT).await;
    assert_eq!(st["progress"], "100%");

    // The writers carry on at the target for a moment, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut t = tenant_conn(&dst, "acme", "pw").await;
    for (n, w) in writers.into_iter().enumerate() {
        let (model, ops, redirects, _) = w.await.unwrap();
        assert!(ops > 0, "writer {n} wrote nothing");
        assert!(redirects > 0, "writer {n} never followed a redirect");
        check_model(&mut t, n, &model).await;
    }
    // The source answers for the whole tenant now.
    match on_src.cmd(&["GET", "misc:1"]).await {
        Err(ClientError::Moved { addr, .. }) => assert_eq!(addr, dst.addr()),
        other => panic!("after the last pattern: {other:?}"),
    }
    // Key by key on the target, and its digest equals a full recomputation.
    let mut c = Client::connect(ConnectOptions::new(dst.addr()).tenant("acme", "pw"))
        .await
        .unwrap();
    check_base(&mut c).await;
    let mut d = admin(&dst).await;
    assert_eq!(
        digest_of(&ok(&mut d, &["TENANT.DIGEST", "acme"]).await),
        digest_of(&ok(&mut d, &["TENANT.DIGEST", "acme", "FULL"]).await)
    );
    ok(&mut t, &["DBSIZE"]).await;
    // VERIFY of the whole: every pattern against what the target took over.
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
    assert_eq!(v["mismatched_patterns"], "[]", "{v:?}");
    for p in ["user:*", "order:*", "*"] {
        let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id, "PATTERN", p]).await);
        assert_eq!(v["status"], "verified", "{p}: {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_arguments_are_checked() {
    let src = Server::start();
    let dst = Server::start();
    let mut a = admin(&src).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let addr = dst.addr();
    let base = ["TENANT.MIGRATE", "acme", "TARGET", addr.as_str()];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let refused = |e: String, want: &str| assert!(e.contains(want), "{e} (wanted: {want})");
    let mut run = async |args: Vec<String>| -> String {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        err(&mut a, &args).await
    };
    refused(run(with(&["MODE", "incremental"])).await, "needs PATTERNS");
    refused(
        run(with(&["PATTERNS", "a:*"])).await,
        "MODE incremental only",
    );
    refused(
        run(with(&["MODE", "incremental", "PATTERNS"])).await,
        "syntax error",
    );
    refused(
        run(with(&["MODE", "incremental", "PATTERNS", "*", "a:*"])).await,
        "comes after '*'",
    );
    refused(
        run(with(&["MODE", "incremental", "PATTERNS", "a:*", "a:*"])).await,
        "given twice",
    );
    let long = "x".repeat(513);
    let e = {
        let mut args: Vec<String> = with(&["MODE", "incremental", "PATTERNS"]);
        args.push(long);
        run(args).await
    };
    refused(e, "longer than 512 bytes");
    let e = {
        let mut args: Vec<String> = with(&["MODE", "incremental", "PATTERNS"]);
        args.extend((0..64).map(|i| format!("p{i}:*")));
        run(args).await
    };
    refused(e, "too many patterns: at most 64");
    // Nothing was created by any of them.
    let all = ok(&mut a, &["TENANT.MIGRATE.STATUS", "ALL"]).await;
    let all = value::as_pairs(&all).unwrap();
    assert_eq!(value::field_int(&all, "migrations_total"), Some(0));

    // 63 patterns plus the implicit '*' is the limit, and works.
    let mut args: Vec<String> = with(&["MODE", "incremental", "PATTERNS"]);
    args.extend((0..63).map(|i| format!("p{i}:*")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = fields(&ok(&mut a, &args).await)["migration_id"].clone();
    wait_state(&mut a, &id, "live_sync", LONG).await;
    let e = err(
        &mut a,
        &["TENANT.MIGRATE.CUTOVER", &id, "PATTERN", "nope:*"],
    )
    .await;
    assert!(e.contains("has no pattern 'nope:*'"), "{e}");
    let e = err(&mut a, &["TENANT.MIGRATE.VERIFY", &id, "PATTERN", "nope:*"]).await;
    assert!(e.contains("has no pattern"), "{e}");
    let e = err(&mut a, &["TENANT.MIGRATE.VERIFY", &id, "PATTERN"]).await;
    assert!(e.contains("syntax error"), "{e}");
    // Before any pattern moved, CANCEL leaves the source as it was.
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &id]).await;
    wait_state(&mut a, &id, "cancelled", SHORT).await;
    let mut t = tenant_conn(&src, "acme", "pw").await;
    ok(&mut t, &["SET", "k", "v"]).await;
    ok(&mut t, &["DBSIZE"]).await;

    // PATTERN on a live migration is refused.
    let live = migrate(&mut a, "acme", &dst, &[]).await;
    wait_state(&mut a, &live, "live_sync", LONG).await;
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &live, "PATTERN", "a:*"]).await;
    assert!(e.contains("not incremental"), "{e}");
    ok(&mut a, &["TENANT.MIGRATE.CANCEL", &live]).await;
}
