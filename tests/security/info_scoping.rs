//! INFO as a tenant sees it: its own clients, memory, keys and commands, nothing of the server's
//! or of other tenants.

use crate::common::Server;
use crate::util::info;

/// The administrator creates tenants and another tenant runs commands; tenant `a` asks INFO in
/// every form (`INFO`, `INFO all`, `INFO everything`, single sections) and learns none of it:
/// no `tenant.create` or other tenants' commands in commandstats, no process RSS or CPU, no
/// server-wide connection or command counts, client ids only within its tenant.
#[test]
fn a_tenant_sees_only_its_own_info() {
    let s = Server::start();
    let mut admin = s.conn();
    for t in ["a", "b", "c1", "c2", "c3"] {
        let _: () = redis::cmd("TENANT.CREATE")
            .arg(&[t, "PASSWORD", "pw"])
            .query(&mut admin)
            .unwrap();
    }
    let mut b = s.tenant_conn("b", "pw");
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(&[format!("k{i}"), "x".repeat(1000)])
            .query(&mut b)
            .unwrap();
    }
    let _: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut b).unwrap();
    let _others: Vec<_> = (0..6).map(|_| s.anon_conn()).collect();

    let mut a = s.tenant_conn("a", "pw");
    for _ in 0..3 {
        let _: () = redis::cmd("SET").arg(&["mine", "1"]).query(&mut a).unwrap();
    }
    let _: Option<String> = redis::cmd("GET").arg("mine").query(&mut a).unwrap();

    for form in ["", "all", "everything", "default"] {
        let text: String = if form.is_empty() {
            redis::cmd("INFO").query(&mut a).unwrap()
        } else {
            redis::cmd("INFO").arg(form).query(&mut a).unwrap()
        };
        for leak in [
            "cmdstat_tenant.create",
            "cmdstat_keys",
            "used_memory_rss",
            "allocator_",
            "mem_fragmentation",
            "used_cpu_sys",
            "total_net_input_bytes",
            "tenants:",
            "auth_failures",
            "aof_current_size",
            "process_id",
        ] {
            assert!(!text.contains(leak), "INFO {form} shows {leak}:\n{text}");
        }
    }
    let stats = info(&mut a, "commandstats");
    assert!(stats["cmdstat_set"].starts_with("calls=3,"), "{:?}", stats);
    assert!(stats["cmdstat_get"].starts_with("calls=1,"), "{stats:?}");
    let st = info(&mut a, "stats");
    // Its own commands only (3 SET, 1 GET, the INFOs so far), its own connections.
    let processed: u64 = st["total_commands_processed"].parse().unwrap();
    assert!((4..20).contains(&processed), "{st:?}");
    assert_eq!(st["total_connections_received"], "1");
    let clients = info(&mut a, "clients");
    assert_eq!(clients["connected_clients"], "1");
    let mem = info(&mut a, "memory");
    let used: u64 = mem["used_memory"].parse().unwrap();
    assert!(used < 10_000, "a's memory, not b's 50 KB: {used}");
    let keyspace = info(&mut a, "keyspace");
    assert!(keyspace["db0"].starts_with("keys=1,"), "{keyspace:?}");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut a).unwrap();
    assert_eq!(id, 1, "ids within the tenant");

    // The administrator sees the whole server.
    let all: String = redis::cmd("INFO")
        .arg("everything")
        .query(&mut admin)
        .unwrap();
    for want in [
        "cmdstat_tenant.create:calls=5",
        "used_memory_rss",
        "used_cpu_sys",
        "cmdstat_keys",
        "process_id:",
    ] {
        assert!(all.contains(want), "administrator INFO lacks {want}");
    }
}

/// The administrator's INFO memory says which allocator the process runs on and the process's
/// figures, consistent with each other: `libc`, the resident set and the fragmentation ratio
/// against `used_memory`.
#[test]
fn the_administrator_sees_the_allocator_and_the_process_memory() {
    let s = Server::start();
    let mut admin = s.conn();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(&[format!("k{i}"), "x".repeat(1000)])
            .query(&mut admin)
            .unwrap();
    }
    let mem = info(&mut admin, "memory");
    let number = |name: &str| -> f64 {
        mem.get(name)
            .unwrap_or_else(|| panic!("INFO memory lacks {name}: {mem:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e} in {mem:?}"))
    };
    let used = number("used_memory");
    let rss = number("used_memory_rss");
    assert!(used >= 200_000.0, "{mem:?}");
    assert!(rss > used, "{mem:?}");
    let ratio = number("mem_fragmentation_ratio");
    assert!((ratio - rss / used).abs() < 0.01, "{mem:?}");
    // glibc's malloc, as Redis names it; it keeps no statistics to report as allocator_*.
    assert_eq!(mem["mem_allocator"], "libc", "{mem:?}");
    assert!(!mem.contains_key("allocator_allocated"), "{mem:?}");
}
