//! CUTOVER DNS: points a DNS name at the migration's target with a standard dynamic update
//! (RFC 2136) signed with TSIG (RFC 8945), sent to the primary server configured in
//! `[tenancy.migration.dns]`. The DNS messages, TSIG signing and the check of the server's
//! signed answer are `hickory-proto`'s; this module decides what to send and where.
//!
//! The update replaces whatever address records the name had (A, AAAA, CNAME) by one record for
//! the address clients are sent to after the cutover (the REDIRECT address, by default the
//! target's): an A or AAAA record for an IP address, a CNAME for a host name.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

/// What a failed update does to the cutover (`on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDnsFailure {
    /// The cutover does not happen: the source keeps the tenant (CUTOVER answers the error).
    #[default]
    Abort,
    /// The cutover goes on; the failure is reported in the reply, STATUS and the log.
    Warn,
}

impl OnDnsFailure {
    pub fn parse(s: &str) -> Option<OnDnsFailure> {
        match s.to_ascii_lowercase().as_str() {
            "abort" => Some(OnDnsFailure::Abort),
            "warn" => Some(OnDnsFailure::Warn),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OnDnsFailure::Abort => "abort",
            OnDnsFailure::Warn => "warn",
        }
    }
}

/// `[tenancy.migration.dns]`. Debug by hand: never prints the key's secret.
#[derive(Clone, Default)]
pub struct DnsSettings {
    /// The zone's primary server (`host:port`); None: CUTOVER DNS is refused.
    pub server: Option<SocketAddr>,
    /// The zone the names are in (`ferrite.example.com`).
    pub zone: String,
    pub key_name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub key_algorithm: String,
    /// The TSIG secret, decoded from base64.
    pub key_secret: Vec<u8>,
    pub ttl: u32,
    pub on_failure: OnDnsFailure,
    /// How long to wait for the server's answer (tried twice over UDP).
    pub timeout: Duration,
}

impl std::fmt::Debug for DnsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DnsSettings {
            server,
            zone,
            key_name,
            key_algorithm,
            key_secret,
            ttl,
            on_failure,
            timeout,
        } = self;
        f.debug_struct("DnsSettings")
            .field("server", server)
            .field("zone", zone)
            .field("key_name", key_name)
            .field("key_algorithm", key_algorithm)
            .field(
                "key_secret",
                &(!key_secret.is_empty()).then_some("<redacted>"),
            )
            .field("ttl", ttl)
            .field("on_failure", on_failure)
            .field("timeout", timeout)
            .finish()
    }
}

/// The TSIG algorithms offered (the ones `hickory-proto` can sign with).
pub fn algorithm(name: &str) -> Option<TsigAlgorithm> {
    match name.to_ascii_lowercase().as_str() {
        "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
        _ => None,
    }
}

/// A record a name was pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointed {
    pub name: String,
    /// `A`, `AAAA` or `CNAME`.
    pub kind: &'static str,
    pub value: String,
    pub ttl: u32,
}

impl std::fmt::Display for Pointed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} (ttl {})",
            self.name, self.kind, self.value, self.ttl
        )
    }
}

/// Checks a name given to CUTOVER DNS against the settings, before anything is cut over.
pub fn check_name(settings: &DnsSettings, name: &str) -> Result<(), String> {
    if settings.server.is_none() {
        return Err(
            "CUTOVER DNS needs a DNS server: set server in [tenancy.migration.dns]".to_string(),
        );
    }
    let (name, zone) = names(settings, name)?;
    if !zone.zone_of(&name) {
        return Err(format!("'{name}' is not in the zone '{zone}'"));
    }
    Ok(())
}

fn names(settings: &DnsSettings, name: &str) -> Result<(Name, Name), String> {
    let parse = |what: &str, s: &str| {
        let mut n = Name::from_ascii(s).map_err(|e| format!("invalid {what} '{s}': {e}"))?;
        n.set_fqdn(true);
        Ok::<Name, String>(n)
    };
    if name.is_empty() || name.len() > 253 {
        return Err(format!("invalid DNS name '{name}'"));
    }
    Ok((parse("DNS name", name)?, parse("zone", &settings.zone)?))
}

/// Points `name` at `host` (the host part of the address clients are sent to): one signed
/// update that deletes the name's A, AAAA and CNAME records and adds the new one, applied by the
/// server atomically. Ok once the server answered NOERROR with a valid signature.
pub async fn point(settings: &DnsSettings, name: &str, host: &str) -> Result<Pointed, String> {
    let server = settings
        .server
        .ok_or_else(|| "no DNS server configured".to_string())?;
    let (fqdn, zone) = names(settings, name)?;
    if !zone.zone_of(&fqdn) {
        return Err(format!("'{fqdn}' is not in the zone '{zone}'"));
    }
    let ttl = settings.ttl;
    let (rdata, kind, value) = match IpAddr::from_str(host) {
        Ok(IpAddr::V4(ip)) => (RData::A(A(ip)), "A", ip.to_string()),
        Ok(IpAddr::V6(ip)) => (RData::AAAA(AAAA(ip)), "AAAA", ip.to_string()),
        Err(_) => {
            let mut target =
                Name::from_ascii(host).map_err(|e| format!("invalid host '{host}': {e}"))?;
            target.set_fqdn(true);
            let shown = target.to_string();
            (RData::CNAME(CNAME(target)), "CNAME", shown)
        }
    };

    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Update);
    message.metadata.recursion_desired = false;
    let mut zone_query = Query::new();
    zone_query
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_zone(zone_query);
    for kind in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        // RFC 2136 2.5.2: delete an RRset (class ANY, TTL 0, no data).
        let mut delete = Record::update0(fqdn.clone(), 0, kind);
        delete.dns_class = DNSClass::ANY;
        message.add_update(delete);
    }
    message.add_update(Record::from_rdata(fqdn.clone(), ttl, rdata));

    let alg = algorithm(&settings.key_algorithm)
        .ok_or_else(|| format!("unsupported TSIG algorithm '{}'", settings.key_algorithm))?;
    let key_name =
        Name::from_ascii(&settings.key_name).map_err(|e| format!("invalid TSIG key name: {e}"))?;
    let signer = TSigner::new(settings.key_secret.clone(), alg, key_name, 300)
        .map_err(|e| format!("TSIG key: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut verifier = message
        .finalize(&signer, now)
        .map_err(|e| format!("signing the update: {e}"))?
        .ok_or_else(|| "signing the update gave no verifier".to_string())?;
    let request = message
        .to_vec()
        .map_err(|e| format!("encoding the update: {e}"))?;

    let answer = exchange(server, &request, message.metadata.id, settings.timeout).await?;
    // The server's answer must carry a valid signature of the same key.
    let response = verifier
        .verify(&answer)
        .map_err(|e| match Message::from_vec(&answer) {
            // An unsigned refusal (BADKEY, BADSIG answers are not signed) says more than the
            // missing signature.
            Ok(m) if m.metadata.response_code != ResponseCode::NoError => {
                format!("{server} refused the update: {}", m.metadata.response_code)
            }
            _ => format!("{server} answered without a valid TSIG signature: {e}"),
        })?;
    let code = response.metadata.response_code;
    if code != ResponseCode::NoError {
        return Err(format!("{server} refused the update: {code}"));
    }
    Ok(Pointed {
        name: fqdn.to_string(),
        kind,
        value,
        ttl,
    })
}

/// Sends `request` over UDP and returns the answer with the same id (two tries of `timeout`).
async fn exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("DNS socket: {e}"))?;
    socket
        .connect(server)
        .await
        .map_err(|e| format!("DNS server {server}: {e}"))?;
    let mut buf = vec![0u8; 65_535];
    for _ in 0..2 {
        socket
            .send(request)
            .await
            .map_err(|e| format!("sending to {server}: {e}"))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(format!("DNS server {server}: {e}")),
                // Answers to anything else (a late answer to nothing we asked) are skipped.
                Ok(Ok(n)) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                    return Ok(buf[..n].to_vec());
                }
                Ok(Ok(_)) => {}
            }
        }
    }
    Err(format!(
        "DNS server {server} did not answer within {} ms (twice)",
        timeout.as_millis()
    ))
}

/// The host part of `host:port` (IPv6 addresses in brackets or bare).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// What CUTOVER DNS reports beside the cutover's result.
#[derive(Debug, Clone)]
pub struct DnsOutcome {
    /// The record set, when the update succeeded.
    pub pointed: Option<Pointed>,
    /// Why it failed, when `on_failure = "warn"` let the cutover go on.
    pub warning: Option<String>,
}

impl DnsOutcome {
    pub fn text(&self) -> String {
        match (&self.pointed, &self.warning) {
            (Some(p), _) => format!("updated: {p}"),
            (None, Some(w)) => format!(
                "failed: {w}; the cutover went on (on_failure = warn): point the name at the target by hand"
            ),
            (None, None) => String::new(),
        }
    }
}

impl super::MigrationManager {
    /// CUTOVER DNS: points `name` at the address clients are sent to (REDIRECT, by default the
    /// target), then cuts over. The update goes first: with `on_failure = "abort"` a failed
    /// update leaves the cutover unstarted (the source keeps the tenant); with `"warn"` the
    /// cutover goes on and the reply says what failed. If the cutover itself then fails, the
    /// name is pointed back at this server. Until the target is activated, clients that already
    /// follow the new record are answered `-TRYAGAIN` there, so nothing is written on both.
    pub async fn cutover_dns(
        &self,
        id: &str,
        name: &str,
        force: bool,
    ) -> Result<(super::CutoverResult, DnsOutcome), super::MigrationError> {
        use super::{MigrationError, MigrationState};
        let settings = self.settings().dns;
        check_name(&settings, name).map_err(MigrationError::Failed)?;
        let e = self.entry(id)?;
        if e.status.borrow().state != MigrationState::LiveSync {
            return Err(e.wrong_state("cut over"));
        }
        let redirect = host_of(&e.info.redirect).to_string();
        let note = |text: String| {
            self.inner.dns.lock().insert(id.to_string(), text);
        };
        let outcome = match point(&settings, name, &redirect).await {
            Ok(p) => {
                tracing::info!(migration = %id, record = %p, "DNS name pointed at the target");
                DnsOutcome {
                    pointed: Some(p),
                    warning: None,
                }
            }
            Err(why) if settings.on_failure == OnDnsFailure::Abort => {
                let msg = format!(
                    "DNS update of '{name}' failed: {why}; the cutover was not started (on_failure = abort), the source still owns the tenant"
                );
                tracing::warn!(migration = %id, error = %why, "DNS update failed; cutover aborted");
                note(format!("failed: {why}; cutover aborted"));
                return Err(MigrationError::Failed(msg));
            }
            Err(why) => {
                tracing::warn!(migration = %id, error = %why, "DNS update failed; cutting over anyway (on_failure = warn)");
                DnsOutcome {
                    pointed: None,
                    warning: Some(why),
                }
            }
        };
        note(outcome.text());
        match self.cutover_with(id, force).await {
            Ok(r) => Ok((r, outcome)),
            Err(cut) => {
                let Some(pointed) = &outcome.pointed else {
                    return Err(cut);
                };
                let source = host_of(&e.info.source).to_string();
                let back = match point(&settings, name, &source).await {
                    Ok(p) => format!("the DNS name was pointed back at this server ({p})"),
                    Err(why) => format!(
                        "pointing the DNS name back at this server failed ({why}): it still says {pointed}; fix it by hand"
                    ),
                };
                tracing::warn!(migration = %id, error = %cut, dns = %back, "cutover failed after the DNS update");
                note(format!("cutover failed; {back}"));
                Err(MigrationError::Failed(format!("{cut}; {back}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DnsSettings {
        DnsSettings {
            server: Some("127.0.0.1:5353".parse().unwrap()),
            zone: "ferrite.example.com".into(),
            key_name: "ferrite-key".into(),
            key_algorithm: "hmac-sha256".into(),
            key_secret: b"sekrit-tsig-key".to_vec(),
            ttl: 60,
            on_failure: OnDnsFailure::Abort,
            timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", settings());
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        let s = settings();
        assert!(check_name(&s, "acme.ferrite.example.com").is_ok());
        assert!(check_name(&s, "acme.ferrite.example.com.").is_ok());
        let e = check_name(&s, "acme.other.example").unwrap_err();
        assert!(e.contains("not in the zone"), "{e}");
        assert!(check_name(&s, "").is_err());
        assert!(check_name(&s, &"a.".repeat(200)).is_err());
        let none = DnsSettings {
            server: None,
            ..settings()
        };
        assert!(check_name(&none, "acme.ferrite.example.com").is_err());
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("10.0.0.2:6379"), "10.0.0.2");
        assert_eq!(host_of("[::1]:6379"), "::1");
        assert_eq!(host_of("db.example.com:6379"), "db.example.com");
    }

    #[test]
    fn algorithms_and_failure_modes_parse() {
        assert_eq!(algorithm("HMAC-SHA256"), Some(TsigAlgorithm::HmacSha256));
        assert_eq!(algorithm("hmac-md5"), None);
        assert_eq!(OnDnsFailure::parse("Warn"), Some(OnDnsFailure::Warn));
        assert_eq!(OnDnsFailure::parse("ignore"), None);
    }

    #[tokio::test]
    async fn a_silent_server_is_reported_not_waited_for_forever() {
        // A bound socket that never answers.
        let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = DnsSettings {
            server: Some(quiet.local_addr().unwrap()),
            ..settings()
        };
        let started = std::time::Instant::now();
        let e = point(&s, "acme.ferrite.example.com", "10.0.0.2")
            .await
            .unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
