//! Tenant credentials are kept and shipped as salted hashes, never as the password.

use std::time::Duration;

use crate::common::Server;
use crate::util::{RecordingProxy, contains, fields, wait_until};

const PASSWORD: &str = "Unique-Tenant-Password-4821";
const USER_PASSWORD: &str = "Unique-Acl-User-Password-7730";

/// A migration ships the tenant's credential, not its password: the bytes the source sends to
/// the target never contain the password, and the target accepts the same password afterwards.
/// The same for the tenant's ACL users (ACL SETUSER), which move with it.
#[test]
fn migration_ships_the_credential_never_the_password() {
    let src = Server::start();
    let dst = Server::start();
    let proxy = RecordingProxy::start(dst.addr());
    let mut admin = src.conn();
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(&["acme", "PASSWORD", PASSWORD])
        .query(&mut admin)
        .unwrap();
    let mut owner = src.tenant_conn("acme", PASSWORD);
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "app",
            "on",
            &format!(">{USER_PASSWORD}"),
            "+get",
            "~k*",
        ])
        .query(&mut owner)
        .unwrap();
    let mut migrate = redis::cmd("TENANT.MIGRATE");
    migrate.arg(&["acme", "TARGET", &proxy.addr]);
    let id = fields(&migrate.query::<redis::Value>(&mut admin).unwrap())["migration_id"].clone();
    wait_until(Duration::from_secs(60), "live sync", || {
        let s: redis::Value = redis::cmd("TENANT.MIGRATE.STATUS")
            .arg(&id)
            .query(&mut admin)
            .ok()?;
        (fields(&s)["state"] == "live_sync").then_some(())
    });
    let r: redis::Value = redis::cmd("TENANT.MIGRATE.CUTOVER")
        .arg(&id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(fields(&r)["status"], "completed");

    let sent = proxy.sent.lock().clone();
    assert!(
        contains(&sent, b"TENANT.IMPORT.BEGIN"),
        "the proxy saw the import"
    );
    assert!(
        !contains(&sent, PASSWORD.as_bytes()),
        "the tenant password crossed the wire"
    );
    assert!(
        !contains(&sent, USER_PASSWORD.as_bytes()),
        "the ACL user's password crossed the wire"
    );
    let mut app = dst.anon_conn();
    let ok: String = redis::cmd("AUTH")
        .arg(&["acme:app", USER_PASSWORD])
        .query(&mut app)
        .unwrap();
    assert_eq!(ok, "OK");
    let e = redis::cmd("SET")
        .arg(&["k1", "v"])
        .query::<String>(&mut app)
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some("NOPERM"),
        "the user's rules moved with it: {e}"
    );

    let mut t = dst.conn();
    let ok: String = redis::cmd("AUTH")
        .arg(&["acme", PASSWORD])
        .query(&mut t)
        .unwrap();
    assert_eq!(ok, "OK");
    let wrong = redis::cmd("AUTH")
        .arg(&["acme", "not-the-password"])
        .query::<String>(&mut t)
        .unwrap_err();
    assert!(wrong.to_string().contains("WRONGPASS"), "{wrong}");
}
