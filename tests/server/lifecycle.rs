//! Configuration errors, maxclients, metrics endpoint and graceful shutdown.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use redis::Commands;

use crate::common::{Server, ferrite_bin, raw_exchange};

#[test]
fn bad_config_names_key_and_line_and_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nport = 1\nprot = 7\n", "line 3", "prot"),
        ("[server]\nport = \"x\"\n", "line 2", "server.port"),
        (
            "[tenancy.migration]\n\nbatch_size = 0\n",
            "line 3",
            "tenancy.migration.batch_size",
        ),
        ("[log]\nformat = \"xml\"\n", "line 2", "log.format"),
    ];
    for (text, line, key) in cases {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let out = Command::new(ferrite_bin())
            .args(["--config", p.to_str().unwrap(), "--port", "0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {text:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(line) && err.contains(key), "{text:?} -> {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
    }
}

#[test]
fn maxclients_refuses_extra_connections() {
    let s = Server::start_with(&["--maxclients", "2"]);
    let _a = s.conn();
    let _b = s.conn();
    let mut t = s.tcp();
    let got = raw_exchange(&mut t, b"PING\r\n", Duration::from_secs(3));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR max number of clients reached\r\n"
    );
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let s = Server::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let mut c = s.conn();
    for i in 0..10 {
        let _: () = c.set(format!("k{i}"), i).unwrap();
    }
    let _: Option<String> = c.get("k1").unwrap();
    let port = s.metrics_port.expect("metrics port");
    let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    t.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    t.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for needle in [
        "ferrite_commands_total{cmd=\"set\"} 10",
        "ferrite_commands_total{cmd=\"get\"} 1",
        "ferrite_command_duration_seconds_bucket{cmd=\"set\",le=\"+Inf\"} 10",
        "ferrite_connected_clients 1",
        "ferrite_keys 10",
        "ferrite_tenant_keys{tenant=\"default\"} 10",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
}

#[test]
fn shutdown_command_finishes_replies_and_exits() {
    let mut s = Server::start();
    let mut t = s.admin_tcp();
    // A pipeline whose last command is SHUTDOWN: every earlier reply arrives first.
    let got = raw_exchange(
        &mut t,
        b"SET a 1\r\nINCR a\r\nGET a\r\nSHUTDOWN\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(String::from_utf8_lossy(&got), "+OK\r\n:2\r\n$1\r\n2\r\n");
    let status = s.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status}");
}

/// Connections waiting for their socket (idle, or blocked in BLPOP) are woken by a shutdown
/// at once: they are closed and the server exits long before `shutdown_timeout_ms` (10 s by
/// default), which is how long it would wait for connections that never noticed.
#[test]
fn shutdown_closes_waiting_connections_at_once() {
    let mut s = Server::start();
    let mut idle = s.tcp();
    assert_eq!(
        raw_exchange(&mut idle, b"PING\r\n", Duration::from_secs(5)),
        b"+PONG\r\n"
    );
    let mut blocked = s.tcp();
    blocked
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$9\r\nnever:set\r\n$1\r\n0\r\n")
        .unwrap();
    // The BLPOP is waiting once CLIENT LIST shows it blocked.
    let mut admin = s.admin_tcp();
    let started = std::time::Instant::now();
    loop {
        let list = raw_exchange(&mut admin, b"CLIENT LIST\r\n", Duration::from_secs(5));
        if String::from_utf8_lossy(&list).contains("cmd=blpop") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "BLPOP never showed up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let shutdown_sent = std::time::Instant::now();
    admin.write_all(b"SHUTDOWN\r\n").unwrap();
    for (name, c) in [("idle", &mut idle), ("blocked", &mut blocked)] {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        // EOF (or a reset) ends the read; a timeout means the connection was never woken.
        match c.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!(
                "{name}: unexpected {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
        assert!(
            shutdown_sent.elapsed() < Duration::from_secs(3),
            "{name} connection closed only after {:?}",
            shutdown_sent.elapsed()
        );
    }
    let status = s.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status}");
    assert!(
        shutdown_sent.elapsed() < Duration::from_secs(4),
        "exit took {:?}",
        shutdown_sent.elapsed()
    );
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut s = Server::start();
    let mut c = s.conn();
    let _: () = c.set("x", 1).unwrap();
    s.terminate();
    let status = s.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status}");
    assert!(
        s.log().iter().any(|l| l.contains("server stopped")) || s.log().is_empty(),
        "{:?}",
        s.log()
    );
}

#[test]
fn requirepass_and_admin_rights() {
    let s = Server::start_with(&["--requirepass", "secret"]);
    let mut c = s.anon_conn();
    let e = redis::cmd("GET")
        .arg("k")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("NOAUTH"), "{e}");
    let e = redis::cmd("AUTH")
        .arg("wrong")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("WRONGPASS"), "{e}");
    let _: () = redis::cmd("AUTH").arg("secret").query(&mut c).unwrap();
    let _: () = c.set("k", "v").unwrap();
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut c)
        .unwrap();
    assert_eq!(cfg, ["maxclients", "10000"]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg("500")
        .query(&mut c)
        .unwrap();
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut c)
        .unwrap();
    assert_eq!(cfg, ["maxclients", "500"]);
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("port")
        .arg("1")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("can't set immutable config"), "{e}");
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg("lots")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("maxclients"), "{e}");
}

/// The worker's spin before it sleeps (`server.idle_spin_us`, 20 µs by default) stops by itself
/// when it does not pay: a client whose requests come 100–200 µs apart (every spin misses) must
/// not cost the default server much more CPU than one that never spins. Without the back-off
/// every reply would be followed by 20 µs of spinning, about 2.5× the CPU of the requests.
#[test]
fn the_idle_spin_backs_off_when_requests_come_too_far_apart() {
    fn cpu_for_spaced_requests(s: &Server) -> Duration {
        let mut c = s.conn();
        let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
        let before = s.cpu_time();
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < Duration::from_millis(1500) {
            let _: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
            std::thread::sleep(Duration::from_micros(100));
            n += 1;
        }
        let cpu = s.cpu_time().saturating_sub(before);
        eprintln!("{n} requests, server CPU {cpu:?}");
        cpu
    }
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("off.toml");
    std::fs::write(&off, "[server]\nidle_spin_us = 0\n").unwrap();
    let default = Server::start();
    let spinning = cpu_for_spaced_requests(&default);
    drop(default);
    let never = Server::start_with(&["--config", off.to_str().unwrap()]);
    let not_spinning = cpu_for_spaced_requests(&never);
    assert!(
        spinning <= not_spinning.mul_f64(1.5) + Duration::from_millis(60),
        "default {spinning:?} of CPU against {not_spinning:?} without the spin"
    );
}
