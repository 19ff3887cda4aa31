//! Async helpers for migration tests: admin commands through ferrite-client, status polling.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferrite_client::{ClientError, ConnectOptions, Connection, Frame, value};

use crate::common::Server;

/// An administrator connection (AUTH with the server's administrator secret).
pub async fn admin(s: &Server) -> Connection {
    Connection::connect(
        ConnectOptions::new(s.addr())
            .password(s.admin_secret())
            .command_timeout(Duration::from_secs(120)),
    )
    .await
    .expect("admin connection")
}

pub async fn tenant_conn(s: &Server, tenant: &str, pw: &str) -> Connection {
    Connection::connect(ConnectOptions::new(s.addr()).tenant(tenant, pw))
        .await
        .expect("tenant connection")
}

pub async fn cmd(c: &mut Connection, args: &[&str]) -> Result<Frame, ClientError> {
    c.cmd(args).await
}

pub async fn ok(c: &mut Connection, args: &[&str]) -> Frame {
    match c.cmd(args).await {
        Ok(f) => f,
        Err(e) => panic!("{args:?} failed: {e}"),
    }
}

pub async fn err(c: &mut Connection, args: &[&str]) -> String {
    match c.cmd(args).await {
        Ok(f) => panic!("{args:?} should have failed, got {}", value::display(&f)),
        Err(e) => e.to_string(),
    }
}

/// A map reply as text fields.
pub fn fields(f: &Frame) -> HashMap<String, String> {
    value::as_pairs(f)
        .expect("map reply")
        .into_iter()
        .map(|(k, v)| {
            let text = match &v {
                Frame::Array { .. } | Frame::Set { .. } => value::display(&v),
                other => value::as_string(other)
                    .or_else(|_| value::as_int(other).map(|n| n.to_string()))
                    .unwrap_or_else(|_| value::display(other)),
            };
            (k, text)
        })
        .collect()
}

pub async fn status(c: &mut Connection, id: &str) -> HashMap<String, String> {
    fields(&ok(c, &["TENANT.MIGRATE.STATUS", id]).await)
}

/// Polls STATUS until `pred` holds (or panics after `timeout`).
pub async fn wait_for(
    c: &mut Connection,
    id: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(c, id).await;
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_state(
    c: &mut Connection,
    id: &str,
    state: &str,
    timeout: Duration,
) -> HashMap<String, String> {
    wait_for(c, id, timeout, state, |s| s["state"] == state).await
}

/// Starts a migration and returns its id.
pub async fn migrate(c: &mut Connection, tenant: &str, target: &Server, extra: &[&str]) -> String {
    let addr = target.addr();
    let mut args = vec!["TENANT.MIGRATE", tenant, "TARGET", &addr];
    args.extend_from_slice(extra);
    let r = fields(&ok(c, &args).await);
    r["migration_id"].clone()
}

/// Loads a pipeline of commands (in chunks) through one connection.
pub async fn load(c: &mut Connection, cmds: Vec<Vec<String>>) {
    for chunk in cmds.chunks(2000) {
        let replies = c.pipeline(chunk).await.expect("pipeline");
        for (i, r) in replies.into_iter().enumerate() {
            if let Err(e) = r {
                panic!("loading {:?} failed: {e}", chunk[i]);
            }
        }
    }
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub fn digest_of(f: &Frame) -> String {
    fields(f)["digest"].clone()
}
