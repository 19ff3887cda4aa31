//! TENANT.MIGRATE.VALIDATE: pre-migration checks against a target, each one really performed.

use std::time::{Duration, Instant};

use ferrite_client::{Connection, value};

use super::target::TargetCheck;
use super::{MigrationConfig, MigrationError, MigrationManager, normalize_addr};
use crate::tenant::Tenant;

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found, e.g. `ok (2.0GB free, need 1.0GB)` or `failed: connection refused`.
    pub detail: String,
}

/// The report of VALIDATE, in the order the checks ran.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    pub checks: Vec<Check>,
}

impl ValidationReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The first failed check, as `name: detail`.
    pub fn first_failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
    }
}

/// Which checks `[tenancy.migration.target_validation]` enables.
#[derive(Debug, Clone, Copy)]
pub struct ValidationSettings {
    pub connectivity: bool,
    pub authentication: bool,
    pub capacity: bool,
    pub version: bool,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        ValidationSettings {
            connectivity: true,
            authentication: true,
            capacity: true,
            version: true,
        }
    }
}

pub fn human_bytes(b: u64) -> String {
    let f = b as f64;
    if f >= 1e9 {
        format!("{:.1}GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1}MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1}KB", f / 1e3)
    } else {
        format!("{b}B")
    }
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} seconds")
    } else if s < 7200.0 {
        format!("{:.1} minutes", s / 60.0)
    } else {
        format!("{:.1} hours", s / 3600.0)
    }
}

/// Every check VALIDATE reports, in order. A check that could not run because an earlier one
/// failed is still listed, as not checked, so the reply always has the same fields.
const CHECKS: &[&str] = &[
    "connectivity",
    "authentication",
    "version_compatible",
    "target_tenant",
    "capacity",
    "network_latency",
    "estimated_duration",
];

fn report_after_failure(mut checks: Vec<Check>) -> ValidationReport {
    let failed = checks
        .iter()
        .find(|c| !c.ok)
        .map_or("an earlier check", |c| c.name);
    for name in CHECKS.iter().skip(checks.len()) {
        checks.push(Check {
            name,
            ok: true,
            detail: format!("not checked ({failed} failed)"),
        });
    }
    ValidationReport { checks }
}

/// Memory the target must have free for the tenant: its size plus headroom for the staging.
fn needed_bytes(tenant: &Tenant) -> u64 {
    tenant.keyspace().used_bytes() * 5 / 4
}

impl MigrationManager {
    /// Runs every check against `target`, stopping at the first one the next ones depend on.
    pub async fn validate(
        &self,
        tenant: &str,
        target: &str,
        cfg: &MigrationConfig,
    ) -> Result<ValidationReport, MigrationError> {
        let t = self
            .inner
            .env
            .registry
            .get(tenant)
            .ok_or_else(|| MigrationError::UnknownTenant(tenant.into()))?;
        let target = normalize_addr(target)?;
        let sel = self.settings().validation;
        let mut checks = Vec::new();
        let skipped = |name: &'static str| Check {
            name,
            ok: true,
            detail: "skipped (disabled in tenancy.migration.target_validation)".into(),
        };

        // Connectivity: a plain TCP connection.
        let tcp = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(&target),
        )
        .await;
        let reachable = matches!(tcp, Ok(Ok(_)));
        checks.push(Check {
            name: "connectivity",
            ok: reachable || !sel.connectivity,
            detail: match tcp {
                Ok(Ok(_)) => "ok".into(),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(_) => "failed: no answer within 3 s".into(),
            },
        });
        if !reachable {
            return Ok(report_after_failure(checks));
        }

        // Authentication: the handshake the migration itself will do.
        let opts = self.connect_options(&target, cfg);
        let conn = Connection::connect(opts).await;
        let mut conn = match conn {
            Ok(c) => {
                checks.push(if sel.authentication {
                    Check {
                        name: "authentication",
                        ok: true,
                        detail: "ok".into(),
                    }
                } else {
                    skipped("authentication")
                });
                c
            }
            Err(e) => {
                checks.push(Check {
                    name: "authentication",
                    ok: false,
                    detail: format!("failed: {e}"),
                });
                return Ok(report_after_failure(checks));
            }
        };

        // Version (and that it is Ferrite at all, and can take this tenant).
        let check = conn
            .cmd(&[
                "TENANT.IMPORT.CHECK",
                tenant,
                &super::wire::WIRE_VERSION.to_string(),
                &self.inner.env.run_id,
            ])
            .await;
        let pairs = match check {
            Ok(f) => {
                checks.push(if sel.version {
                    version_ok()
                } else {
                    skipped("version_compatible")
                });
                checks.push(Check {
                    name: "target_tenant",
                    ok: true,
                    detail: format!("ok (no tenant '{tenant}' on the target)"),
                });
                value::as_pairs(&f).unwrap_or_default()
            }
            Err(e) => {
                let err = super::classify_client_error(&target, e);
                // The target answered the versioned check: it is a compatible Ferrite, and what
                // it refused is this tenant (already there, being imported, same server).
                let about_tenant = matches!(&err, MigrationError::Refused { reason, .. } if !reason.contains("wire format"));
                if about_tenant {
                    checks.push(version_ok());
                    checks.push(Check {
                        name: "target_tenant",
                        ok: false,
                        detail: format!("failed: {err}"),
                    });
                } else {
                    checks.push(Check {
                        name: "version_compatible",
                        ok: false,
                        detail: format!("failed: {err}"),
                    });
                }
                return Ok(report_after_failure(checks));
            }
        };

        // Capacity: the target's available memory against the tenant's size.
        let free = value::field_int(&pairs, "available_memory").unwrap_or(-1);
        let need = needed_bytes(&t);
        checks.push(if !sel.capacity {
            skipped("capacity")
        } else if free < 0 {
            Check {
                name: "capacity",
                ok: true,
                detail: format!(
                    "unknown (target does not report free memory; need {})",
                    human_bytes(need)
                ),
            }
        } else {
            let free = free as u64;
            Check {
                name: "capacity",
                ok: free >= need,
                detail: format!(
                    "{} ({} free, need {})",
                    if free >= need { "ok" } else { "insufficient" },
                    human_bytes(free),
                    human_bytes(need)
                ),
            }
        });

        // Latency: median of a few PINGs.
        let mut rtts = Vec::new();
        for _ in 0..7 {
            let t0 = Instant::now();
            if conn.cmd(&["PING"]).await.is_ok() {
                rtts.push(t0.elapsed());
            }
        }
        rtts.sort();
        let latency = rtts.get(rtts.len() / 2).copied().unwrap_or_default();
        checks.push(Check {
            name: "network_latency",
            ok: !rtts.is_empty(),
            detail: format!("{:.2}ms", latency.as_secs_f64() * 1000.0),
        });

        // Throughput: 4 MiB echoed back, pipelined; then the tenant's size over it.
        let payload = vec![b'x'; 1 << 20];
        let cmds: Vec<Vec<&[u8]>> = (0..4).map(|_| vec![&b"ECHO"[..], &payload[..]]).collect();
        let t0 = Instant::now();
        let ok = conn
            .pipeline(&cmds)
            .await
            .is_ok_and(|r| r.iter().all(Result::is_ok));
        let secs = t0.elapsed().as_secs_f64().max(1e-6);
        // Each byte crossed the link twice (there and back).
        let throughput = (8.0 * (1u64 << 20) as f64) / secs;
        let bytes = t.keyspace().used_bytes() as f64;
        // The copy is bounded by the slower of the link and this server's own snapshot speed
        // (reading the keyspace and encoding batches), measured by its last whole snapshot.
        let copy_rate = *self.inner.env.snapshot_rate.lock();
        let rate = copy_rate.map_or(throughput, |r| r.min(throughput));
        checks.push(Check {
            name: "estimated_duration",
            ok,
            detail: if ok {
                format!(
                    "{} (measured {}/s to the target; {})",
                    human_duration(Duration::from_secs_f64(bytes / rate)),
                    human_bytes(throughput as u64),
                    match copy_rate {
                        Some(r) => format!(
                            "this server's last snapshot copied {}/s",
                            human_bytes(r as u64)
                        ),
                        None => "no snapshot from this server measured yet".into(),
                    }
                )
            } else {
                "unknown (throughput probe failed)".into()
            },
        });
        Ok(ValidationReport { checks })
    }

    /// The checks TENANT.MIGRATE runs first: capacity (connectivity, authentication and version
    /// were established by connecting); refuses naming the failing check.
    pub(super) fn run_validation(
        &self,
        t: &Tenant,
        check: &TargetCheck,
    ) -> Result<(), MigrationError> {
        if !self.settings().validation.capacity {
            return Ok(());
        }
        let Some(free) = check.available_memory else {
            return Ok(());
        };
        let need = needed_bytes(t);
        if free < need {
            return Err(MigrationError::Failed(format!(
                "target validation failed: capacity: insufficient ({} free, need {})",
                human_bytes(free),
                human_bytes(need)
            )));
        }
        Ok(())
    }
}

fn version_ok() -> Check {
    Check {
        name: "version_compatible",
        ok: true,
        detail: format!("ok (wire format v{})", super::wire::WIRE_VERSION),
    }
}
