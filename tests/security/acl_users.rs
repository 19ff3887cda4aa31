//! ACL users (ACL SETUSER) live inside one tenant: they narrow what the tenant may do and never
//! reach another tenant's keyspace or the administrator's commands — not directly, not inside
//! MULTI, not from a script. They persist with the tenant catalog, passwords as salted hashes.

use crate::common::Server;

fn query<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The error text of a command that must fail (code and message).
fn error(c: &mut redis::Connection, args: &[&str]) -> String {
    match redis::cmd(args[0]).arg(&args[1..]).query::<redis::Value>(c) {
        Ok(v) => panic!("{args:?} succeeded: {v:?}"),
        Err(e) => format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or("")),
    }
}

fn auth(server: &Server, user: &str, password: &str) -> redis::Connection {
    let mut c = server.anon_conn();
    let ok: String = query(&mut c, &["AUTH", user, password]);
    assert_eq!(ok, "OK");
    c
}

fn auth_fails(server: &Server, user: &str, password: &str) {
    let mut c = server.anon_conn();
    let e = error(&mut c, &["AUTH", user, password]);
    assert!(e.starts_with("WRONGPASS"), "AUTH {user}: {e}");
}

/// Two tenants; tenant a creates a user with every right its rules can give (`+@all ~*
/// allchannels`). That user reaches a's keys only, and nothing administrative: not directly, not
/// in MULTI, not from a script. Names never cross tenants.
#[test]
fn a_tenants_acl_user_stays_inside_the_tenant() {
    let server = Server::start();
    let mut admin = server.conn();
    for t in ["a", "b"] {
        let _: () = query(&mut admin, &["TENANT.CREATE", t, "PASSWORD", "pw"]);
    }
    let mut b = server.tenant_conn("b", "pw");
    let _: () = query(&mut b, &["SET", "secret", "b-data"]);
    let mut a = server.tenant_conn("a", "pw");
    let _: () = query(&mut a, &["SET", "mine", "a-data"]);
    let ok: String = query(
        &mut a,
        &[
            "ACL",
            "SETUSER",
            "bob",
            "on",
            ">bobpw",
            "+@all",
            "~*",
            "allchannels",
        ],
    );
    assert_eq!(ok, "OK");

    // bob is a's user: `a:bob`. Not b's, not default's.
    auth_fails(&server, "b:bob", "bobpw");
    auth_fails(&server, "bob", "bobpw");
    auth_fails(&server, "a:bob", "wrong");
    let mut bob = auth(&server, "a:bob", "bobpw");
    let who: String = query(&mut bob, &["ACL", "WHOAMI"]);
    assert_eq!(who, "bob");
    let mine: String = query(&mut bob, &["GET", "mine"]);
    assert_eq!(mine, "a-data");
    let theirs: Option<String> = query(&mut bob, &["GET", "secret"]);
    assert_eq!(theirs, None, "b's key is not in a's keyspace");
    // Everything administrative stays refused, whatever the rules say.
    for cmd in [
        &["TENANT.USE", "b"][..],
        &["TENANT.LIST"],
        &["TENANT.CREATE", "c"],
        &["CONFIG", "SET", "maxclients", "1"],
        &["SHUTDOWN", "NOSAVE"],
    ] {
        assert!(error(&mut bob, cmd).starts_with("NOPERM"), "{cmd:?}");
    }
    // ... inside MULTI (refused when queued: the transaction is discarded) ...
    let _: () = query(&mut bob, &["MULTI"]);
    assert!(error(&mut bob, &["TENANT.USE", "b"]).starts_with("NOPERM"));
    assert!(error(&mut bob, &["EXEC"]).starts_with("EXECABORT"));
    // ... and from a script, which reaches a's keyspace only.
    let e = error(
        &mut bob,
        &["EVAL", "return redis.call('TENANT.USE', 'b')", "0"],
    );
    assert!(e.contains("not allowed") || e.contains("NOPERM"), "{e}");
    let v: Option<String> = query(
        &mut bob,
        &["EVAL", "return redis.call('GET', 'secret')", "0"],
    );
    assert_eq!(v, None);
    // A FLUSHALL by bob empties a only.
    let _: () = query(&mut bob, &["FLUSHALL"]);
    let left: String = query(&mut b, &["GET", "secret"]);
    assert_eq!(left, "b-data");

    // Users bob creates are a's too; b's users are b's.
    let _: () = query(
        &mut bob,
        &["ACL", "SETUSER", "eve", "on", ">evepw", "+get", "~*"],
    );
    auth_fails(&server, "b:eve", "evepw");
    let _eve = auth(&server, "a:eve", "evepw");
    let _: () = query(
        &mut b,
        &["ACL", "SETUSER", "eve", "on", ">other", "+@all", "~*"],
    );
    auth_fails(&server, "b:eve", "evepw");
    let _ = auth(&server, "b:eve", "other");
    // Each tenant lists its own users; the administrator (bound to default) lists none of them.
    let users: Vec<String> = query(&mut a, &["ACL", "USERS"]);
    assert_eq!(users, ["a", "bob", "eve"]);
    let users: Vec<String> = query(&mut b, &["ACL", "USERS"]);
    assert_eq!(users, ["b", "eve"]);
    let users: Vec<String> = query(&mut admin, &["ACL", "USERS"]);
    assert!(!users.iter().any(|u| u == "bob" || u == "eve"), "{users:?}");
    // A name that would address another tenant's user is refused.
    let e = error(&mut a, &["ACL", "SETUSER", "b:eve", "on", "nopass"]);
    assert!(e.contains("':'"), "{e}");
    let e = error(&mut a, &["ACL", "SETUSER", "default", "on", "nopass"]);
    assert!(e.contains("reserved"), "{e}");
}

/// A narrow user: commands, keys and channels are checked for requests, queued commands (when
/// queued and again at EXEC) and each call of a script.
#[test]
fn a_narrow_users_limits_hold_in_multi_and_scripts() {
    let server = Server::start();
    let mut admin = server.conn();
    let _: () = query(&mut admin, &["TENANT.CREATE", "t", "PASSWORD", "pw"]);
    let mut owner = server.tenant_conn("t", "pw");
    let _: () = query(
        &mut owner,
        &[
            "ACL", "SETUSER", "app", "on", ">apppw", "-@all", "+get", "+set", "+multi", "+exec",
            "+eval", "+publish", "~app:*", "&app.*",
        ],
    );
    let mut app = auth(&server, "t:app", "apppw");
    let _: () = query(&mut app, &["SET", "app:1", "v"]);
    assert!(error(&mut app, &["SET", "other", "v"]).starts_with("NOPERM"));
    assert!(error(&mut app, &["DEL", "app:1"]).starts_with("NOPERM"));
    assert!(error(&mut app, &["PUBLISH", "news", "m"]).starts_with("NOPERM"));
    let n: i64 = query(&mut app, &["PUBLISH", "app.events", "m"]);
    assert_eq!(n, 0);
    // MULTI: a refused command dooms the transaction.
    let _: () = query(&mut app, &["MULTI"]);
    let q: String = query(&mut app, &["SET", "app:2", "v"]);
    assert_eq!(q, "QUEUED");
    assert!(error(&mut app, &["SET", "other", "v"]).starts_with("NOPERM"));
    assert!(error(&mut app, &["EXEC"]).starts_with("EXECABORT"));
    let exists: i64 = query(&mut owner, &["EXISTS", "app:2", "other"]);
    assert_eq!(exists, 0, "nothing of the refused transaction ran");
    // Rules changed after queueing are applied at EXEC.
    let _: () = query(&mut app, &["MULTI"]);
    let _: String = query(&mut app, &["SET", "app:3", "v"]);
    let _: () = query(&mut owner, &["ACL", "SETUSER", "app", "-set"]);
    // The entry is a NOPERM error (redis-rs may report an error inside EXEC's array as the
    // query's error).
    match redis::cmd("EXEC").query::<redis::Value>(&mut app) {
        Ok(redis::Value::Array(replies)) => assert!(
            matches!(&replies[0], redis::Value::ServerError(e) if e.code() == "NOPERM"),
            "{replies:?}"
        ),
        Ok(other) => panic!("EXEC: {other:?}"),
        Err(e) => assert_eq!(e.code(), Some("NOPERM"), "{e}"),
    }
    let exists: i64 = query(&mut owner, &["EXISTS", "app:3"]);
    assert_eq!(exists, 0);
    let _: () = query(&mut owner, &["ACL", "SETUSER", "app", "+set"]);
    // Scripts: each call is checked like the command alone.
    let e = error(
        &mut app,
        &["EVAL", "return redis.call('SET', 'other', 'v')", "0"],
    );
    assert!(e.starts_with("NOPERM") && e.contains("key"), "{e}");
    let e = error(
        &mut app,
        &["EVAL", "return redis.call('DEL', 'app:1')", "0"],
    );
    assert!(e.starts_with("NOPERM") && e.contains("'del'"), "{e}");
    let ok: String = query(
        &mut app,
        &[
            "EVAL",
            "return redis.call('SET', KEYS[1], 'v')",
            "1",
            "app:4",
        ],
    );
    assert_eq!(ok, "OK");
    // EVAL itself is checked with its keys.
    assert!(error(&mut app, &["EVAL", "return 1", "1", "other"]).starts_with("NOPERM"));
    let allowed: Option<i64> = query(
        &mut app,
        &[
            "EVAL",
            "return redis.acl_check_cmd('set', 'other', 'v')",
            "0",
        ],
    );
    assert_eq!(allowed, None);
    let allowed: i64 = query(
        &mut app,
        &[
            "EVAL",
            "return redis.acl_check_cmd('set', 'app:9', 'v')",
            "0",
        ],
    );
    assert_eq!(allowed, 1);
    let exists: i64 = query(&mut owner, &["EXISTS", "other"]);
    assert_eq!(exists, 0);
    // The tenant's own login and the administrator are not limited by the users' rules.
    let _: () = query(&mut owner, &["SET", "other", "v"]);
    // DELUSER closes the user's connections at their next command.
    let n: i64 = query(&mut owner, &["ACL", "DELUSER", "app"]);
    assert_eq!(n, 1);
    assert!(redis::cmd("PING").query::<String>(&mut app).is_err());
    auth_fails(&server, "t:app", "apppw");
}

/// A tenant cannot grow memory or the catalog without bound through users.
#[test]
fn acl_users_are_bounded_per_tenant() {
    let server = Server::start();
    let mut admin = server.conn();
    let _: () = query(&mut admin, &["TENANT.CREATE", "t", "PASSWORD", "pw"]);
    let mut owner = server.tenant_conn("t", "pw");
    for i in 0..100 {
        let _: () = query(&mut owner, &["ACL", "SETUSER", &format!("u{i}")]);
    }
    let e = error(&mut owner, &["ACL", "SETUSER", "one-too-many"]);
    assert!(e.contains("too many ACL users"), "{e}");
    let long = format!("~{}", "k".repeat(20_000));
    let e = error(&mut owner, &["ACL", "SETUSER", "u1", &long]);
    assert!(e.contains("exceed"), "{e}");
    // The other tenants are unaffected.
    let _: () = query(&mut admin, &["ACL", "SETUSER", "fine", "on", "nopass"]);
}

/// Users persist with the tenant catalog (passwords as salted hashes: the password is nowhere
/// in the data directory) and work after a restart.
#[test]
fn acl_users_survive_a_restart_and_their_passwords_are_not_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    const PASSWORD: &str = "Acl-User-Password-90517";
    {
        let server = Server::start_in(dir.path(), &[]);
        let mut admin = server.conn();
        let _: () = query(&mut admin, &["TENANT.CREATE", "t", "PASSWORD", "pw"]);
        let mut owner = server.tenant_conn("t", "pw");
        let _: () = query(
            &mut owner,
            &[
                "ACL",
                "SETUSER",
                "app",
                "on",
                &format!(">{PASSWORD}"),
                "+get",
                "~k*",
            ],
        );
        let _: () = query(
            &mut admin,
            &["ACL", "SETUSER", "plain", "on", ">x", "+@all", "~*"],
        );
        let mut other = server.tenant_conn("t", "pw");
        let _: () = query(&mut other, &["SET", "k1", "v"]);
    }
    let mut stored = Vec::new();
    for entry in walk(dir.path()) {
        stored.extend(std::fs::read(entry).unwrap_or_default());
    }
    assert!(
        !stored
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes()),
        "the user's password is stored in the data directory"
    );
    let server = Server::start_in(dir.path(), &[]);
    let mut app = auth(&server, "t:app", PASSWORD);
    let v: String = query(&mut app, &["GET", "k1"]);
    assert_eq!(v, "v");
    assert!(error(&mut app, &["SET", "k1", "w"]).starts_with("NOPERM"));
    let _plain = auth(&server, "plain", "x");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
