//! The [`Target`] of a real Ferrite server: `TENANT.IMPORT.*` over RESP (ferrite-client).
//!
//! Control calls share one connection, taken out for the duration of a call and put back only
//! after a complete reply: a call interrupted midway (its future dropped) drops the connection
//! with it, so no later call reads a reply out of step. A call that finds no connection opens
//! one (within the connect timeout).

use std::sync::Arc;
use std::time::Duration;

use ferrite_client::{ClientError, ConnectOptions, Connection, Frame, value};
use parking_lot::Mutex;

use super::MIGRATION_USER;
use super::import::{BeginRequest, Fetched, PatternActivation};
use super::target::{
    BatchLink, Connector, ImportReport, Prepared, Target, TargetAuth, TargetCheck, TargetError,
    TargetFuture,
};
use super::wire::WIRE_VERSION;

/// How long a connection attempt (TCP and handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a control call may wait for its reply.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream may wait to write a batch or read an acknowledgement (a slow link moves a
/// window of 1 MiB batches slowly; a silent partition is caught by the heartbeat first).
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Maps a client error to a target error.
fn classify(e: ClientError) -> TargetError {
    match e {
        ClientError::Server(msg) => TargetError::from_reply(&msg),
        other if other.is_connection_error() => TargetError::Unreachable(other.to_string()),
        ClientError::Timeout(msg) => TargetError::Unreachable(msg),
        other => TargetError::Refused(other.to_string()),
    }
}

/// A Ferrite target reached over RESP.
pub struct RespTarget {
    addr: String,
    opts: ConnectOptions,
    control: Mutex<Option<Connection>>,
}

impl RespTarget {
    pub fn new(addr: &str, auth: TargetAuth) -> RespTarget {
        let mut opts = ConnectOptions::new(addr)
            .connect_timeout(CONNECT_TIMEOUT)
            .command_timeout(CONTROL_TIMEOUT)
            .name("ferrite-migration");
        match auth {
            TargetAuth::None => {}
            TargetAuth::Token(t) => opts = opts.tenant(MIGRATION_USER, t),
            TargetAuth::Password(p) => opts = opts.password(p),
        }
        RespTarget {
            addr: addr.to_string(),
            opts,
            control: Mutex::new(None),
        }
    }

    async fn call<A: AsRef<[u8]> + Sync>(&self, args: &[A]) -> Result<Frame, TargetError> {
        // An idle connection the target (or the network) closed meanwhile is replaced before
        // use; one that breaks during the call is replaced once (every call here is idempotent).
        let mut idle = self.control.lock().take();
        if idle.as_mut().is_some_and(|c| !c.is_open()) {
            idle = None;
        }
        let pooled = idle.is_some();
        let mut conn = match idle {
            Some(c) => c,
            None => Connection::connect(self.opts.clone())
                .await
                .map_err(classify)?,
        };
        let mut first = conn.cmd(args).await;
        if pooled && matches!(&first, Err(e) if e.is_connection_error()) {
            conn = Connection::connect(self.opts.clone())
                .await
                .map_err(classify)?;
            first = conn.cmd(args).await;
        }
        match first {
            Ok(f) => {
                *self.control.lock() = Some(conn);
                Ok(f)
            }
            Err(ClientError::Server(msg)) => {
                *self.control.lock() = Some(conn);
                Err(TargetError::from_reply(&msg))
            }
            Err(e) => Err(classify(e)),
        }
    }
}

/// `TENANT.IMPORT.PATTERN <import> <op> <index> [<pattern> ...]` (DIGEST has the time keys
/// must outlive before the patterns).
fn pattern_args(import: &str, op: &str, index: usize, patterns: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = vec![
        b"TENANT.IMPORT.PATTERN".to_vec(),
        import.as_bytes().to_vec(),
        op.as_bytes().to_vec(),
        index.to_string().into_bytes(),
    ];
    args.extend(patterns.iter().cloned());
    args
}

/// A `keys`/`digest` map (PREPARE and the pattern commands).
fn prepared(reply: &Frame) -> Result<Prepared, TargetError> {
    let pairs = value::as_pairs(reply).map_err(bad_reply)?;
    let keys = value::field_int(&pairs, "keys").ok_or_else(|| bad_reply("no keys"))?;
    let digest = value::field_str(&pairs, "digest")
        .and_then(|d| u64::from_str_radix(&d, 16).ok())
        .ok_or_else(|| bad_reply("no digest"))?;
    Ok(Prepared {
        keys: keys.max(0) as u64,
        digest,
    })
}

/// A pattern's activation record: `keys`, `digest`, `activated_at_ms`.
fn pattern_activation(reply: &Frame) -> Result<PatternActivation, TargetError> {
    let p = prepared(reply)?;
    let pairs = value::as_pairs(reply).map_err(bad_reply)?;
    let at = value::field_int(&pairs, "activated_at_ms")
        .ok_or_else(|| bad_reply("no activation time"))?;
    Ok(PatternActivation {
        keys: p.keys,
        digest: p.digest,
        at_ms: at.max(0) as u64,
    })
}

fn bad_reply(e: impl std::fmt::Display) -> TargetError {
    TargetError::Refused(format!("unexpected reply: {e}"))
}

impl Target for RespTarget {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn check<'a>(
        &'a self,
        tenant: &'a str,
        source_run_id: &'a str,
    ) -> TargetFuture<'a, TargetCheck> {
        Box::pin(async move {
            let reply = self
                .call(&[
                    "TENANT.IMPORT.CHECK",
                    tenant,
                    &WIRE_VERSION.to_string(),
                    source_run_id,
                ])
                .await?;
            let pairs = value::as_pairs(&reply).map_err(bad_reply)?;
            let free = value::field_int(&pairs, "available_memory").unwrap_or(-1);
            Ok(TargetCheck {
                available_memory: u64::try_from(free).ok(),
            })
        })
    }

    fn begin<'a>(&'a self, req: &'a BeginRequest) -> TargetFuture<'a, String> {
        Box::pin(async move {
            let mut args: Vec<String> = vec![
                "TENANT.IMPORT.BEGIN".into(),
                req.tenant.clone(),
                req.migration_id.clone(),
                req.version.to_string(),
                req.source_addr.clone(),
                req.source_run_id.clone(),
                "MAXMEMORY".into(),
                req.limits.maxmemory.to_string(),
                "MAXKEYS".into(),
                req.limits.maxkeys.to_string(),
                "OPS".into(),
                req.limits.ops.to_string(),
            ];
            // Only when set: a tenant without a client limit still migrates to a target that
            // predates MAXCLIENTS.
            if req.limits.maxclients > 0 {
                args.extend(["MAXCLIENTS".into(), req.limits.maxclients.to_string()]);
            }
            // The salted hash, never the password: the target checks the same password without
            // learning it.
            if let Some(c) = &req.credential {
                args.extend(["CREDENTIAL".into(), c.encode()]);
            }
            // Only when there are any (targets that predate ACL users still take the rest).
            for u in &req.acl_users {
                args.extend(["ACLUSER".into(), crate::acl::encode_record(u)]);
            }
            if let Some(p) = req.conflict {
                args.extend(["CONFLICT".into(), p.name().into()]);
            }
            if req.backup {
                args.extend(["BACKUP".into(), "1".into()]);
            }
            let reply = self.call(&args).await?;
            value::as_pairs(&reply)
                .ok()
                .and_then(|p| value::field_str(&p, "import_id"))
                .ok_or_else(|| bad_reply("no import id"))
        })
    }

    fn open_stream<'a>(
        &'a self,
        import: &'a str,
        index: u16,
    ) -> TargetFuture<'a, Box<dyn BatchLink>> {
        Box::pin(async move {
            let opts = self.opts.clone().command_timeout(STREAM_TIMEOUT);
            let mut conn = Connection::connect(opts).await.map_err(classify)?;
            let reply = conn
                .cmd(&["TENANT.IMPORT.RESUME", import])
                .await
                .map_err(classify)?;
            let mut last = 0;
            for (k, v) in value::as_pairs(&reply).map_err(bad_reply)? {
                if k == index.to_string() {
                    last = value::as_int(&v).map_err(bad_reply)? as u64;
                }
            }
            Ok(Box::new(RespLink {
                conn,
                import: import.to_string(),
                resume_point: last,
            }) as Box<dyn BatchLink>)
        })
    }

    fn resume<'a>(&'a self, import: &'a str) -> TargetFuture<'a, Vec<(u16, u64)>> {
        Box::pin(async move {
            let reply = self.call(&["TENANT.IMPORT.RESUME", import]).await?;
            let mut points = Vec::new();
            for (k, v) in value::as_pairs(&reply).map_err(bad_reply)? {
                let s: u16 = k.parse().map_err(bad_reply)?;
                points.push((s, value::as_int(&v).map_err(bad_reply)? as u64));
            }
            Ok(points)
        })
    }

    fn prepare<'a>(&'a self, import: &'a str) -> TargetFuture<'a, Prepared> {
        Box::pin(async move {
            let reply = self.call(&["TENANT.IMPORT.PREPARE", import]).await?;
            let pairs = value::as_pairs(&reply).map_err(bad_reply)?;
            let keys = value::field_int(&pairs, "keys").ok_or_else(|| bad_reply("no keys"))?;
            let digest = value::field_str(&pairs, "digest")
                .and_then(|d| u64::from_str_radix(&d, 16).ok())
                .ok_or_else(|| bad_reply("no digest"))?;
            Ok(Prepared {
                keys: keys.max(0) as u64,
                digest,
            })
        })
    }

    fn backup<'a>(
        &'a self,
        import: &'a str,
        op: &'a [String],
    ) -> TargetFuture<'a, super::api::BackupStatus> {
        Box::pin(async move {
            let mut args: Vec<&str> = vec!["TENANT.IMPORT.BACKUP", import];
            args.extend(op.iter().map(String::as_str));
            let reply = self.call(&args).await?;
            let pairs = value::as_pairs(&reply).map_err(bad_reply)?;
            let state = value::field_str(&pairs, "backup_state").unwrap_or_default();
            let state = super::api::BackupStatus::STATES
                .iter()
                .find(|s| **s == state)
                .copied()
                .ok_or_else(|| bad_reply(format!("unknown backup_state '{state}'")))?;
            let f = |name: &str| value::field_str(&pairs, name).filter(|v| !v.is_empty());
            Ok(super::api::BackupStatus {
                state,
                migration_id: f("backup_migration"),
                lag_seconds: f("backup_lag_seconds")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0),
                lag_records: value::field_int(&pairs, "backup_lag_records").unwrap_or(0) as u64,
                lag_bytes: value::field_int(&pairs, "backup_lag_bytes").unwrap_or(0) as u64,
                until_ms: value::field_int(&pairs, "backup_until_ms").unwrap_or(0) as u64,
                error: f("backup_error"),
                downtime_ms: f("downtime_ms").and_then(|v| v.parse().ok()),
            })
        })
    }

    fn activate<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            self.call(&["TENANT.IMPORT.ACTIVATE", import]).await?;
            Ok(())
        })
    }

    fn pattern_prepare<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
        alive_after: u64,
    ) -> TargetFuture<'a, Prepared> {
        Box::pin(async move {
            let mut args = pattern_args(import, "DIGEST", index, &[]);
            args.push(alive_after.to_string().into_bytes());
            args.extend(patterns.iter().cloned());
            let reply = self.call(&args).await?;
            prepared(&reply)
        })
    }

    fn pattern_activate<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
    ) -> TargetFuture<'a, PatternActivation> {
        Box::pin(async move {
            let reply = self
                .call(&pattern_args(import, "ACTIVATE", index, patterns))
                .await?;
            pattern_activation(&reply)
        })
    }

    fn pattern_hold<'a>(
        &'a self,
        import: &'a str,
        patterns: &'a [Vec<u8>],
        index: usize,
        hold: bool,
    ) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            let op = if hold { "HOLD" } else { "RELEASE" };
            self.call(&pattern_args(import, op, index, patterns))
                .await?;
            Ok(())
        })
    }

    fn pattern_report<'a>(
        &'a self,
        import: &'a str,
        index: usize,
    ) -> TargetFuture<'a, PatternActivation> {
        Box::pin(async move {
            let reply = self
                .call(&pattern_args(import, "ACTIVATED", index, &[]))
                .await?;
            pattern_activation(&reply)
        })
    }

    fn abort<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            self.call(&["TENANT.IMPORT.ABORT", import]).await?;
            Ok(())
        })
    }

    fn stop<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            self.call(&["TENANT.IMPORT.STOP", import]).await?;
            Ok(())
        })
    }

    fn report<'a>(&'a self, import: &'a str) -> TargetFuture<'a, ImportReport> {
        Box::pin(async move {
            let reply = self.call(&["TENANT.IMPORT.STATUS", import]).await?;
            let pairs = value::as_pairs(&reply).map_err(bad_reply)?;
            let keys = value::field_int(&pairs, "activation_keys").unwrap_or(-1);
            let buckets = value::field(&pairs, "activation_buckets")
                .and_then(|v| value::as_array(v).ok())
                .unwrap_or_default()
                .iter()
                .filter_map(|f| value::as_string(f).ok())
                .filter_map(|s| u64::from_str_radix(&s, 16).ok())
                .collect();
            // Targets from before conflict policies report none.
            let conflict_sample = value::field(&pairs, "conflict_sample")
                .and_then(|v| value::as_array(v).ok())
                .unwrap_or_default()
                .iter()
                .filter_map(|f| value::as_bytes(f).ok().flatten())
                .collect();
            Ok(ImportReport {
                activation_keys: u64::try_from(keys).ok(),
                activated_at_ms: value::field_int(&pairs, "activated_at_ms").unwrap_or(0) as u64,
                buckets,
                conflicts: value::field_int(&pairs, "conflicts").unwrap_or(0).max(0) as u64,
                conflict_sample,
            })
        })
    }

    fn fetch<'a>(
        &'a self,
        import: &'a str,
        keys: &'a [Vec<u8>],
    ) -> TargetFuture<'a, Vec<Option<Fetched>>> {
        Box::pin(async move {
            let mut args: Vec<&[u8]> = vec![b"TENANT.IMPORT.FETCH", import.as_bytes()];
            args.extend(keys.iter().map(Vec::as_slice));
            let reply = self.call(&args).await?;
            let items = value::as_array(&reply).map_err(bad_reply)?;
            Ok(items
                .iter()
                .map(|got| {
                    let entry = value::as_array(got).ok()?;
                    let modified = value::as_int(entry.first()?).ok()? as u64;
                    let bytes = value::as_bytes(entry.get(1)?).ok().flatten()?;
                    Some((modified, bytes))
                })
                .collect())
        })
    }
}

/// One stream's pipelined connection.
struct RespLink {
    conn: Connection,
    import: String,
    resume_point: u64,
}

impl BatchLink for RespLink {
    fn resume_point(&self) -> u64 {
        self.resume_point
    }

    fn batch<'a>(&'a mut self, payload: &'a [u8]) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            self.conn.queue(&[
                b"TENANT.IMPORT.BATCH".as_slice(),
                self.import.as_bytes(),
                payload,
            ]);
            self.conn.flush().await.map_err(classify)
        })
    }

    fn is_open(&mut self) -> bool {
        self.conn.is_open()
    }

    fn ack(&mut self) -> TargetFuture<'_, u64> {
        // `recv` reads into the connection's own buffer and decodes from it: cancel-safe.
        Box::pin(async move {
            let f = self.conn.recv().await.map_err(classify)?;
            value::as_int(&f).map(|n| n as u64).map_err(bad_reply)
        })
    }
}

/// Connects to targets over RESP.
#[derive(Default)]
pub struct RespConnector;

impl Connector for RespConnector {
    fn connect(&self, addr: &str, auth: TargetAuth) -> Arc<dyn Target> {
        Arc::new(RespTarget::new(addr, auth))
    }
}
