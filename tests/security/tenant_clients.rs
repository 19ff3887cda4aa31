//! Per-tenant `maxclients`, and an administrator's visit (`TENANT.USE`) that the tenant cannot
//! see or kill.

use std::time::Duration;

use crate::common::Server;
use crate::util::{fields, wait_until};

fn auth(c: &mut redis::Connection, user: &str, pw: &str) -> Result<(), String> {
    redis::cmd("AUTH")
        .arg(&[user, pw])
        .query::<()>(c)
        .map_err(|e| e.to_string())
}

fn tenant_info(c: &mut redis::Connection, t: &str) -> std::collections::HashMap<String, String> {
    fields(&redis::cmd("TENANT.INFO").arg(t).query(c).unwrap())
}

/// AUTHs that find the tenant full are refused with Redis's maxclients error, exactly.
fn burst_of_auths(s: &Server, n: usize) -> (Vec<redis::Connection>, usize) {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let url = s.url();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                barrier.wait();
                let r = auth(&mut c, "acme", "apw");
                (r, c)
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = 0;
    for t in threads {
        match t.join().unwrap() {
            (Ok(()), c) => ok.push(c),
            (Err(e), _) => {
                assert!(e.contains("max number of clients reached"), "{e}");
                refused += 1;
            }
        }
    }
    (ok, refused)
}

/// `TENANT.CREATE ... MAXCLIENTS 5`: a burst of 30 AUTHs gets exactly 5 in; re-AUTH, HELLO AUTH
/// and RESET cannot take a sixth slot; an administrator's TENANT.USE takes none; slots come back
/// when clients leave; the limit survives a restart and travels with a migration.
#[test]
fn tenant_maxclients_holds_under_a_burst_survives_restart_and_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &[]);
    let mut admin = s.conn();
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(&["acme", "PASSWORD", "apw", "MAXCLIENTS", "5"])
        .query(&mut admin)
        .unwrap();
    // The default (0) is unlimited, for other tenants as for `default`.
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(&["other", "PASSWORD", "opw"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(tenant_info(&mut admin, "other")["maxclients"], "0");
    let others: Vec<_> = (0..20).map(|_| s.tenant_conn("other", "opw")).collect();

    let (mut five, refused) = burst_of_auths(&s, 30);
    assert_eq!((five.len(), refused), (5, 25));
    let info = tenant_info(&mut admin, "acme");
    assert_eq!(info["maxclients"], "5");
    assert_eq!(info["connected_clients"], "5");

    // Ways around it: AUTH again on a client that has a slot (keeps its one slot), HELLO with
    // AUTH on a fresh connection, a connection that RESETs and comes back.
    auth(&mut five[0], "acme", "apw").unwrap();
    let mut fresh = s.anon_conn();
    let e = redis::cmd("HELLO")
        .arg(&["3", "AUTH", "acme", "apw"])
        .query::<redis::Value>(&mut fresh)
        .unwrap_err();
    assert!(
        e.to_string().contains("max number of clients reached"),
        "{e}"
    );
    // The refused connection is what it was before: an anonymous user of `default`.
    let cur: String = redis::cmd("TENANT.CURRENT").query(&mut fresh).unwrap();
    assert_eq!(cur, "default");
    let _: String = redis::cmd("RESET").query(&mut five[1]).unwrap();
    auth(&mut fresh, "acme", "apw").unwrap();
    assert!(
        auth(&mut five[1], "acme", "apw").is_err(),
        "RESET gave its slot to `fresh`"
    );
    assert_eq!(tenant_info(&mut admin, "acme")["connected_clients"], "5");

    // The administrator visits anyway (not one of the tenant's clients) and works there.
    let _: () = redis::cmd("TENANT.USE")
        .arg("acme")
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["k", "v"])
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("TENANT.USE")
        .arg("default")
        .query(&mut admin)
        .unwrap();
    assert_eq!(tenant_info(&mut admin, "acme")["connected_clients"], "5");

    // Slots come back when clients go.
    drop(five);
    drop(fresh);
    let mut back = wait_until(Duration::from_secs(10), "a free slot", || {
        let mut c = s.anon_conn();
        auth(&mut c, "acme", "apw").ok().map(|_| c)
    });
    let _: String = redis::cmd("PING").query(&mut back).unwrap();
    drop(back);
    drop(others);

    // Persisted with the tenant: the same limit after a restart.
    drop(admin);
    drop(s);
    let s = Server::start_in(dir.path(), &[]);
    let mut admin = s.conn();
    assert_eq!(tenant_info(&mut admin, "acme")["maxclients"], "5");
    let (kept, refused) = burst_of_auths(&s, 8);
    assert_eq!((kept.len(), refused), (5, 3));
    drop(kept);

    // TENANT.LIMITS changes it (and 0 lifts it).
    let _: () = redis::cmd("TENANT.LIMITS")
        .arg(&["acme", "MAXCLIENTS", "2"])
        .query(&mut admin)
        .unwrap();

    // A migration ships it: the target refuses the third client too.
    let dst = Server::start();
    let id = fields(
        &redis::cmd("TENANT.MIGRATE")
            .arg(&["acme", "TARGET", &dst.addr()])
            .query::<redis::Value>(&mut admin)
            .unwrap(),
    )["migration_id"]
        .clone();
    wait_until(Duration::from_secs(60), "live sync", || {
        let st: redis::Value = redis::cmd("TENANT.MIGRATE.STATUS")
            .arg(&id)
            .query(&mut admin)
            .ok()?;
        (fields(&st)["state"] == "live_sync").then_some(())
    });
    let r: redis::Value = redis::cmd("TENANT.MIGRATE.CUTOVER")
        .arg(&id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(fields(&r)["status"], "completed");
    let mut dst_admin = dst.conn();
    assert_eq!(tenant_info(&mut dst_admin, "acme")["maxclients"], "2");
    let (kept, refused) = burst_of_auths(&dst, 6);
    assert_eq!((kept.len(), refused), (2, 4));
}

fn client_list(c: &mut redis::Connection) -> Vec<String> {
    let text: String = redis::cmd("CLIENT").arg("LIST").query(c).unwrap();
    text.lines().map(str::to_string).collect()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// After an administrator's `TENANT.USE acme`, acme's clients do not see that session in
/// CLIENT LIST, cannot kill it (by USER, ID, ADDR or the plain address form), and ids tell them
/// nothing about other connections; the slow log shows what the visit ran, not who ran it.
#[test]
fn an_administrators_visit_is_invisible_to_the_tenant() {
    let s = Server::start();
    let mut admin = s.conn();
    let _: () = redis::cmd("TENANT.CREATE")
        .arg(&["acme", "PASSWORD", "apw"])
        .query(&mut admin)
        .unwrap();
    // Other connections exist first: ids within a tenant do not count them.
    let _crowd: Vec<_> = (0..5).map(|_| s.anon_conn()).collect();
    let mut t1 = s.tenant_conn("acme", "apw");
    let mut t2 = s.tenant_conn("acme", "apw");
    let _: () = redis::cmd("CLIENT")
        .arg(&["SETNAME", "admin-visit"])
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("TENANT.USE")
        .arg("acme")
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "slowlog-log-slower-than", "0"])
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["visited", "1"])
        .query(&mut admin)
        .unwrap();
    let admin_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut admin).unwrap();
    let admin_line = client_list(&mut admin)
        .into_iter()
        .find(|l| field(l, "name") == "admin-visit")
        .expect("the administrator sees itself");
    let admin_addr = field(&admin_line, "addr").to_string();

    // The tenant's view: its two clients, ids 1 and 2.
    let seen = client_list(&mut t1);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|l| field(l, "tenant") == "acme"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains("admin-visit")), "{seen:?}");
    let mut ids: Vec<i64> = seen
        .iter()
        .map(|l| field(l, "id").parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    let own: i64 = redis::cmd("CLIENT").arg("ID").query(&mut t1).unwrap();
    assert_eq!(own, 1);

    // Every way to kill it fails.
    let n: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "ID", &admin_id.to_string()])
        .query(&mut t1)
        .unwrap_or(0);
    assert_eq!(n, 0);
    let n: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "ADDR", &admin_addr])
        .query(&mut t1)
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        redis::cmd("CLIENT")
            .arg(&["KILL", &admin_addr])
            .query::<()>(&mut t1)
            .is_err(),
        "the old form answers 'No such client'"
    );
    // USER acme kills the tenant's own clients, skipping itself: t2 only.
    let n: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "acme"])
        .query(&mut t1)
        .unwrap();
    assert_eq!(n, 1);
    assert!(redis::cmd("PING").query::<String>(&mut t2).is_err());
    let pong: String = redis::cmd("PING").query(&mut admin).unwrap();
    assert_eq!(pong, "PONG");
    let cur: String = redis::cmd("TENANT.CURRENT").query(&mut admin).unwrap();
    assert_eq!(cur, "acme");

    // The slow log: the tenant sees the SET the visit ran, but not from where or by whom.
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg(&["GET", "-1"])
        .query(&mut t1)
        .unwrap();
    let entry = log
        .iter()
        .find_map(|e| match e {
            redis::Value::Array(f)
                if matches!(&f[3], redis::Value::Array(a)
                    if a.get(1) == Some(&redis::Value::BulkString(b"visited".to_vec()))) =>
            {
                Some(f.clone())
            }
            _ => None,
        })
        .expect("the visit's SET is in the tenant's slow log");
    assert_eq!(entry[4], redis::Value::BulkString(Vec::new()));
    assert_eq!(entry[5], redis::Value::BulkString(Vec::new()));
    // The administrator sees who.
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg(&["GET", "-1"])
        .query(&mut admin)
        .unwrap();
    assert!(
        format!("{log:?}").contains("admin-visit"),
        "the administrator sees its own name: {log:?}"
    );

    // The administrator still sees and kills everything.
    let all = client_list(&mut admin);
    assert!(all.len() >= 7, "{all:?}");
}
