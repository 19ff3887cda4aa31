//! Secure by default: with the built-in settings a tenant password isolates, only the
//! administrator secret administers, and strangers cannot plant tenants.

use std::process::Command;

use crate::common::{Server, TEST_MIGRATION_TOKEN};

fn query(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn err_text(c: &mut redis::Connection, args: &[&str]) -> String {
    match query(c, args) {
        Ok(v) => panic!("{args:?} should have failed, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn two_tenants(s: &Server) {
    let mut admin = s.conn();
    for (t, pw) in [("a", "apw"), ("b", "bpw")] {
        query(&mut admin, &["TENANT.CREATE", t, "PASSWORD", pw]).unwrap();
    }
    let mut b = s.tenant_conn("b", "bpw");
    query(&mut b, &["SET", "bsecret", "b's data"]).unwrap();
}

/// The reproduction: `AUTH a apw`, `AUTH default x`, `TENANT.USE b`, `GET bsecret`.
/// Neither a tenant login nor any other credential makes a connection administrator; an
/// unauthenticated connection is not one either.
#[test]
fn a_tenant_never_becomes_administrator_without_the_secret() {
    let s = Server::start();
    two_tenants(&s);
    let mut a = s.tenant_conn("a", "apw");
    let e = err_text(&mut a, &["AUTH", "default", "x"]);
    assert!(e.contains("WRONGPASS"), "{e}");
    let e = err_text(&mut a, &["AUTH", "x"]);
    assert!(e.contains("WRONGPASS"), "{e}");
    let e = err_text(&mut a, &["TENANT.USE", "b"]);
    assert!(e.contains("no permission"), "{e}");
    assert_eq!(
        query(&mut a, &["GET", "bsecret"]).unwrap(),
        redis::Value::Nil,
        "a still reads its own keyspace"
    );
    assert_eq!(
        query(&mut a, &["TENANT.CURRENT"]).unwrap(),
        redis::Value::BulkString(b"a".to_vec())
    );

    let mut anon = s.anon_conn();
    for cmd in [
        &["TENANT.USE", "b"][..],
        &["TENANT.LIST"],
        &["CONFIG", "GET", "requirepass"],
        &["TENANT.CREATE", "mine"],
    ] {
        let e = err_text(&mut anon, cmd);
        assert!(e.contains("no permission"), "{cmd:?}: {e}");
    }
    // With the administrator secret the same connection administers.
    query(&mut anon, &["AUTH", s.admin_secret()]).unwrap();
    query(&mut anon, &["TENANT.USE", "b"]).unwrap();
    assert_eq!(
        query(&mut anon, &["GET", "bsecret"]).unwrap(),
        redis::Value::BulkString(b"b's data".to_vec())
    );
}

/// A stranger (or a tenant) cannot stage and activate a tenant of its choosing through the
/// internal import commands: they need the migration token or the administrator secret.
#[test]
fn strangers_cannot_plant_a_tenant_through_import() {
    let s = Server::start();
    two_tenants(&s);
    let begin = [
        "TENANT.IMPORT.BEGIN",
        "planted",
        "mig_x",
        "1",
        "127.0.0.1:1",
        "someone",
        "PASSWORD",
        "mine",
    ];
    let mut anon = s.anon_conn();
    let mut a = s.tenant_conn("a", "apw");
    for c in [&mut anon, &mut a] {
        for cmd in [&begin[..], &["TENANT.IMPORT.ACTIVATE", "imp_1"]] {
            let e = err_text(c, cmd);
            assert!(e.contains("no permission"), "{cmd:?}: {e}");
        }
    }
    let mut admin = s.conn();
    let e = err_text(&mut admin, &["TENANT.INFO", "planted"]);
    assert!(e.contains("no such tenant"), "{e}");
}

/// A peer server logged in with the migration token runs the import commands only: not the
/// `default` tenant's data, nothing administrative.
#[test]
fn a_migration_token_login_touches_no_data() {
    let s = Server::start();
    let mut admin = s.conn();
    query(&mut admin, &["SET", "in-default", "v"]).unwrap();
    let mut peer = s.anon_conn();
    query(
        &mut peer,
        &["AUTH", "ferrite-migration", TEST_MIGRATION_TOKEN],
    )
    .unwrap();
    for cmd in [
        &["GET", "in-default"][..],
        &["SET", "in-default", "overwritten"],
        &["KEYS", "*"],
        &["FLUSHALL"],
        &["CONFIG", "GET", "port"],
    ] {
        let e = err_text(&mut peer, cmd);
        assert!(e.contains("no permission"), "{cmd:?}: {e}");
    }
    assert_eq!(
        query(&mut peer, &["PING"]).unwrap(),
        redis::Value::SimpleString("PONG".into())
    );
    let e = err_text(&mut peer, &["TENANT.IMPORT.STATUS", "imp_none"]);
    assert!(
        !e.contains("no permission"),
        "import commands stay open to the peer: {e}"
    );
    assert_eq!(
        query(&mut admin, &["GET", "in-default"]).unwrap(),
        redis::Value::BulkString(b"v".to_vec())
    );
}

fn redis_cli(s: &Server, auth: Option<&str>, args: &[&str]) -> String {
    let mut c = Command::new("redis-cli");
    c.args(["-p", &s.port.to_string()]).args(args);
    c.env_remove("REDISCLI_AUTH");
    if let Some(secret) = auth {
        c.env("REDISCLI_AUTH", secret);
    }
    let out = c.output().expect("redis-cli is installed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The first start with no configuration at all: the server creates `data/admin.secret` (0600,
/// in a 0700 directory), says where it is without printing it, and the README's commands work as
/// written; a restart keeps the same secret.
#[test]
fn first_start_with_the_defaults_creates_a_private_secret_and_the_readme_works() {
    let dir = tempfile::tempdir().unwrap();
    let secret = {
        let s = Server::start_in_dir(dir.path(), &[]);
        let file = dir.path().join("data/admin.secret");
        let secret = std::fs::read_to_string(&file).unwrap().trim().to_string();
        assert_eq!(secret.len(), 64, "32 random bytes, hex");
        assert_eq!(s.admin_secret(), secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&file), 0o600);
            assert_eq!(mode(&dir.path().join("data")), 0o700);
        }
        let printed = s.stdout().join("\n");
        assert!(
            printed.contains("administrator secret created in data/admin.secret"),
            "{printed}"
        );
        let everything = format!("{printed}\n{}", s.log().join("\n"));
        assert!(!everything.contains(&secret), "the secret was printed");

        // README: as administrator, create a tenant; as the tenant, write; without the secret,
        // no administration.
        assert_eq!(
            redis_cli(
                &s,
                Some(&secret),
                &[
                    "TENANT.CREATE",
                    "acme-corp",
                    "PASSWORD",
                    "s3cret",
                    "MAXMEMORY",
                    "1gb"
                ]
            ),
            "OK"
        );
        assert_eq!(
            redis_cli(
                &s,
                None,
                &[
                    "--user",
                    "acme-corp",
                    "--pass",
                    "s3cret",
                    "SET",
                    "greeting",
                    "hello"
                ]
            ),
            "OK"
        );
        let refused = redis_cli(&s, None, &["TENANT.CREATE", "evil"]);
        assert!(refused.contains("NOPERM"), "{refused}");
        // The default tenant is open to local users, as Redis is by default.
        assert_eq!(redis_cli(&s, None, &["SET", "k", "v"]), "OK");
        secret
    };
    let s = Server::start_in_dir(dir.path(), &[]);
    assert_eq!(s.admin_secret(), secret, "a restart keeps the secret");
    assert!(
        s.stdout()
            .join("\n")
            .contains("administrator secret kept in data/admin.secret"),
        "{:?}",
        s.stdout()
    );
}

/// Without requirepass only loopback peers may use the `default` tenant unauthenticated (Redis's
/// protected mode); anyone else must AUTH, as a tenant or as administrator.
#[test]
fn strangers_from_other_addresses_must_authenticate() {
    // An address of this machine that is not loopback (the UDP "connect" sends nothing).
    let Some(ip) = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect("192.0.2.1:9").map(|_| u))
        .and_then(|u| u.local_addr())
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
    else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let s = Server::start_with(&["--bind", "0.0.0.0"]);
    let url = format!("redis://{ip}:{}/", s.port);
    let mut far = redis::Client::open(url).unwrap().get_connection().unwrap();
    let e = err_text(&mut far, &["GET", "k"]);
    assert!(e.contains("NOAUTH"), "{e}");
    query(&mut far, &["AUTH", s.admin_secret()]).unwrap();
    query(&mut far, &["SET", "k", "v"]).unwrap();
    let mut near = s.anon_conn();
    assert_eq!(
        query(&mut near, &["GET", "k"]).unwrap(),
        redis::Value::BulkString(b"v".to_vec())
    );
}
