//! Tenant credentials are kept and shipped as salted hashes, never as the password.

use std::time::Duration;

use crate::common::Server;
use crate::util::{RecordingProxy, contains, fields, wait_until};

const PASSWORD: &str = "Unique-Tenant-Password-4821";

/// A migration ships the tenant's credential, not its password: the bytes the source sends to
/// the target never contain the password, and the target accepts the same password afterwards.
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
