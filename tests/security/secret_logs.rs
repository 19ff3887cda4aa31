//! Secrets never reach the log, the slow log or the metrics: passwords, the administrator
//! secret, the migration token, requirepass.

use crate::common::Server;

/// Runs every command that carries a secret (right and wrong) with the server logging at
/// `trace` and every command slow-logged, then looks for the secrets in the server's stderr and
/// stdout, in SLOWLOG GET, and on the metrics page.
#[test]
fn secrets_never_reach_logs_or_the_slowlog() {
    let token = "Token-Never-Logged-7731";
    let s = Server::start_with(&[
        "--log-level",
        "trace",
        "--migration-token",
        token,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let mut admin = s.conn();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "slowlog-log-slower-than", "0"])
        .query(&mut admin)
        .unwrap();
    let secrets = [
        "Tenant-Pw-Never-Logged-1", // a tenant's password
        "Tenant-Pw-Never-Logged-2", // its new password
        "Wrong-Guess-Never-Logged", // a wrong password
        "Requirepass-Never-Logged", // requirepass set at runtime
    ];
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(&["acme", "PASSWORD", secrets[0]])
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("TENANT.LIMITS")
        .arg(&["acme", "PASSWORD", secrets[1]])
        .query(&mut admin)
        .unwrap();
    let mut c = s.anon_conn();
    for (user, pw) in [
        ("acme", secrets[2]),
        ("acme", secrets[1]),
        ("default", secrets[2]),
        ("ferrite-migration", secrets[2]),
        ("ferrite-migration", token),
        // A secret typed as the user name.
        (secrets[2], "x"),
    ] {
        let _ = redis::cmd("AUTH").arg(&[user, pw]).query::<()>(&mut c);
        let _ = redis::cmd("HELLO")
            .arg(&["2", "AUTH", user, pw])
            .query::<redis::Value>(&mut c);
    }
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", secrets[3]])
        .query(&mut admin)
        .unwrap();
    let _ = redis::cmd("AUTH").arg(secrets[3]).query::<()>(&mut admin);
    let _ = redis::cmd("TENANT.MIGRATE.VALIDATE")
        .arg(&["acme", "TARGET", "127.0.0.1:1", "AUTH", secrets[3]])
        .query::<redis::Value>(&mut admin);

    let slowlog: redis::Value = redis::cmd("SLOWLOG")
        .arg(&["GET", "-1"])
        .query(&mut admin)
        .unwrap();
    let slowlog = format!("{slowlog:?}");
    assert!(
        slowlog.contains("TENANT.CREATE") || slowlog.contains("tenant.create"),
        "{slowlog}"
    );
    let metrics = {
        use std::io::{Read, Write};
        let mut m = std::net::TcpStream::connect(("127.0.0.1", s.metrics_port.unwrap())).unwrap();
        m.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut page = String::new();
        let _ = m.read_to_string(&mut page);
        page
    };
    let log = s.log().join("\n");
    assert!(!log.is_empty(), "the server logged at trace level");
    let stdout = s.stdout().join("\n");
    for secret in secrets.iter().chain([&token, &s.admin_secret()]) {
        for (what, text) in [
            ("log", &log),
            ("stdout", &stdout),
            ("slowlog", &slowlog),
            ("metrics", &metrics),
        ] {
            assert!(!text.contains(secret), "{secret} appears in the {what}");
        }
    }
}
