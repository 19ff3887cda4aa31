//! CUTOVER DNS against real DNS servers: a BIND `named` and a Knot `knotd`, each started here on
//! a free loopback port with a TSIG key and a zone in a temporary directory. What the name
//! resolves to is read back with `dig`, an independent client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Server;
use crate::util::*;
use crate::{LONG, SHORT};

const ZONE: &str = "ferrite.example.com";
const NAME: &str = "acme-corp.ferrite.example.com";
const KEY: &str = "ferrite-key";
/// What the name says before any cutover.
const BEFORE: &str = "192.0.2.1";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Bind,
    Knot,
}

/// A DNS server process, stopped (and its directory removed) on drop.
struct DnsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(kind: Kind) -> Option<PathBuf> {
    let name = match kind {
        Kind::Bind => "named",
        Kind::Knot => "knotd",
    };
    ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// A port free for both UDP and TCP on loopback (DNS servers listen on both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// A fresh 256-bit TSIG secret in base64.
fn secret() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    data_encoding::BASE64.encode(&bytes)
}

/// What `dig` says `name` resolves to (A records), through `port`.
fn dig(port: u16, name: &str) -> String {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            name,
            "A",
            "+short",
            "+time=2",
            "+tries=2",
        ])
        .output()
        .expect("dig (dnsutils) must be installed: scripts/test.sh installs it");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts `kind` with the zone and `secret` as key `ferrite-key`, or None (with a message) when
/// the binary is not installed.
fn start(kind: Kind, secret: &str) -> Option<DnsServer> {
    let Some(bin) = binary(kind) else {
        eprintln!(
            "SKIPPED: {kind:?} DNS server binary not installed (scripts/test.sh installs bind9 and knot)"
        );
        return None;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let port = free_port();
    std::fs::write(
        dir.path().join("db.zone"),
        format!(
            "$TTL 60\n@ IN SOA ns1.{ZONE}. admin.{ZONE}. ( 1 3600 600 86400 60 )\n@ IN NS ns1.{ZONE}.\nns1 IN A 127.0.0.1\nacme-corp IN A {BEFORE}\n"
        ),
    )
    .expect("zone file");
    let mut cmd = Command::new(bin);
    match kind {
        Kind::Bind => {
            let conf = format!(
                "options {{ directory \"{d}\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; pid-file \"{d}/named.pid\"; recursion no; dnssec-validation no; }};\n\
                 key \"{KEY}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
                 zone \"{ZONE}\" {{ type primary; file \"{d}/db.zone\"; allow-update {{ key \"{KEY}\"; }}; }};\n\
                 controls {{ }};\n"
            );
            std::fs::write(dir.path().join("named.conf"), conf).expect("named.conf");
            cmd.args(["-g", "-c", &format!("{d}/named.conf")]);
        }
        Kind::Knot => {
            std::fs::create_dir(dir.path().join("db")).expect("knot db dir");
            let conf = format!(
                "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\ndatabase:\n    storage: {d}/db\n\
                 key:\n  - id: {KEY}\n    algorithm: hmac-sha256\n    secret: {secret}\n\
                 acl:\n  - id: update\n    key: {KEY}\n    action: update\n\
                 zone:\n  - domain: {ZONE}\n    storage: {d}\n    file: db.zone\n    acl: update\n"
            );
            std::fs::write(dir.path().join("knot.conf"), conf).expect("knot.conf");
            cmd.args(["-c", &format!("{d}/knot.conf")]);
        }
    }
    let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the DNS server");
    let server = DnsServer { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while dig(port, NAME) != BEFORE {
        assert!(
            Instant::now() < deadline,
            "{kind:?} did not serve the zone: {}",
            std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(server)
}

/// A source server configured to update `dns` with `secret`.
fn source_for(dns: &DnsServer, secret: &str, dir: &Path) -> Server {
    let path = dir.join("ferrite.toml");
    std::fs::write(
        &path,
        format!(
            "[tenancy.migration.dns]\nserver = \"127.0.0.1\"\nport = {}\nzone = \"{ZONE}\"\nkey_name = \"{KEY}\"\nkey_secret = \"{secret}\"\n",
            dns.port
        ),
    )
    .expect("config");
    Server::start_with(&[
        "--config",
        &path.display().to_string(),
        "--log-level",
        "info",
    ])
}

async fn tenant(s: &Server, keys: usize) {
    let mut a = admin(s).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;
    let mut t = tenant_conn(s, "acme", "pw").await;
    load(
        &mut t,
        (0..keys)
            .map(|i| s_(&["SET", &format!("k{i}"), &format!("v{i}")]))
            .collect(),
    )
    .await;
}

fn s_(v: &[&str]) -> Vec<String> {
    s(v)
}

/// A migration whose clients are sent to 127.0.0.2 (the target's port): what the DNS name must
/// point at after the cutover, distinct from the source's 127.0.0.1.
async fn live_migration(a: &mut ferrite_client::Connection, dst: &Server) -> String {
    let redirect = format!("127.0.0.2:{}", dst.port);
    let id = migrate(a, "acme", dst, &["REDIRECT", &redirect]).await;
    wait_state(a, &id, "live_sync", LONG).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutover_dns_points_the_name_at_the_target_on_bind_and_knot() {
    for kind in [Kind::Bind, Kind::Knot] {
        let key = secret();
        let Some(dns) = start(kind, &key) else {
            continue;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let src = source_for(&dns, &key, dir.path());
        let dst = Server::start();
        tenant(&src, 2000).await;
        let mut a = admin(&src).await;
        let id = live_migration(&mut a, &dst).await;
        let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "DNS", NAME]).await);
        assert_eq!(r["status"], "completed", "{kind:?}: {r:?}");
        assert_eq!(
            r["dns"],
            format!("updated: {NAME}. A 127.0.0.2 (ttl 60)"),
            "{kind:?}"
        );
        assert_eq!(dig(dns.port, NAME), "127.0.0.2", "{kind:?}");
        let st = status(&mut a, &id).await;
        assert!(st["dns"].starts_with("updated: "), "{kind:?}: {st:?}");
        let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
        assert_eq!(v["status"], "verified", "{kind:?}: {v:?}");
        assert!(
            src.log()
                .iter()
                .any(|l| l.contains("DNS name pointed at the target")),
            "{kind:?}: logged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_dns_update_aborts_the_cutover_or_warns() {
    let key = secret();
    let Some(dns) = start(Kind::Bind, &key) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Signed with another secret: the server refuses the update.
    let src = source_for(&dns, &secret(), dir.path());
    let dst = Server::start();
    tenant(&src, 500).await;
    let mut a = admin(&src).await;
    let id = live_migration(&mut a, &dst).await;

    // Bad input changes nothing.
    let e = err(
        &mut a,
        &[
            "TENANT.MIGRATE.CUTOVER",
            &id,
            "DNS",
            "acme.elsewhere.example",
        ],
    )
    .await;
    assert!(e.contains("is not in the zone"), "{e}");
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "DNS", NAME, "NOW"]).await;
    assert!(e.contains("syntax"), "{e}");

    // The default, on_failure = abort: nothing is cut over.
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "DNS", NAME]).await;
    assert!(e.contains(&format!("DNS update of '{NAME}' failed")), "{e}");
    assert!(e.contains("the cutover was not started"), "{e}");
    assert_eq!(status(&mut a, &id).await["state"], "live_sync");
    assert_eq!(dig(dns.port, NAME), BEFORE);
    let mut t = tenant_conn(&src, "acme", "pw").await;
    ok(&mut t, &["SET", "still-here", "yes"]).await;

    // on_failure = warn: the cutover goes on, the reply and STATUS say the update failed.
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.dns.on_failure", "warn"],
    )
    .await;
    let e = err(
        &mut a,
        &[
            "CONFIG",
            "SET",
            "tenancy.migration.dns.on_failure",
            "ignore",
        ],
    )
    .await;
    assert!(e.contains("not one of: abort, warn"), "{e}");
    let r = fields(&ok(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "DNS", NAME]).await);
    assert_eq!(r["status"], "completed", "{r:?}");
    assert!(r["dns"].starts_with("failed: "), "{r:?}");
    assert!(r["dns"].contains("the cutover went on"), "{r:?}");
    assert_eq!(dig(dns.port, NAME), BEFORE);
    assert!(status(&mut a, &id).await["dns"].starts_with("failed: "));
    let v = fields(&ok(&mut a, &["TENANT.MIGRATE.VERIFY", &id]).await);
    assert_eq!(v["status"], "verified", "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cutover_refused_after_the_update_points_the_name_back() {
    let key = secret();
    let Some(dns) = start(Kind::Knot, &key) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_for(&dns, &key, dir.path());
    let dst = Server::start();
    tenant(&src, 500).await;
    let mut a = admin(&src).await;
    let id = live_migration(&mut a, &dst).await;
    // Shipping crawls and any lag refuses the cutover, after the DNS update went through.
    ok(
        &mut a,
        &["CONFIG", "SET", "tenancy.migration.cutover_max_lag", "0"],
    )
    .await;
    ok(&mut a, &["TENANT.MIGRATE.UPDATE", &id, "RATE", "1"]).await;
    let mut t = tenant_conn(&src, "acme", "pw").await;
    for i in 0..200 {
        ok(&mut t, &["SET", &format!("late{i}"), "x"]).await;
    }
    wait_for(&mut a, &id, SHORT, "lag", |s| s["lag_keys"] != "0").await;
    let e = err(&mut a, &["TENANT.MIGRATE.CUTOVER", &id, "DNS", NAME]).await;
    assert!(e.contains("lag is"), "{e}");
    assert!(e.contains("pointed back at this server"), "{e}");
    assert_eq!(
        dig(dns.port, NAME),
        "127.0.0.1",
        "the source's address again"
    );
    assert_eq!(status(&mut a, &id).await["state"], "live_sync");
    ok(&mut t, &["SET", "writable", "here"]).await;
}
