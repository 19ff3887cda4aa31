//! Pub/sub, per tenant: SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, their UNSUBSCRIBEs, PUBLISH,
//! SPUBLISH, PUBSUB.
//!
//! Each tenant has its own channel namespace ([`TenantChannels`], found in the server's [`Hub`]
//! by tenant id): a tenant never sees another's channels, patterns or subscriber counts. A
//! subscribed connection owns a [`Mailbox`]; PUBLISH encodes the message once per protocol and
//! appends it to each receiver's mailbox (under the tenant's channel lock, so every subscriber
//! sees the messages of a channel in publication order) and wakes the connection, which moves
//! the mail to its output when what it has is small. A subscriber whose mailbox passes
//! `limits.pubsub_output_buffer_limit` (Redis's `client-output-buffer-limit pubsub` hard
//! limit, 32 MB), or stays above the soft limit (8 MB) for more than its seconds (60), is
//! disconnected: a slow reader costs bounded memory and never slows the publisher.
//!
//! When its tenant stops being served here (cutover, deletion) a subscribed connection gets
//! the redirect (`-MOVED tenant:<id> <addr>`) and is closed, so the client resubscribes on the
//! tenant's new home.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bytes::BytesMut;
use ferrite_protocol::{Args, ErrorReply, Protocol, ReplyWriter};
use ferrite_storage::glob::glob_match;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::cmd::ServerResult;
use crate::connection::ClientState;
use crate::dispatch::{self, Flow};
use crate::shared::{PubsubLimits, Shared};

/// Every tenant's channels.
#[derive(Default)]
pub struct Hub {
    tenants: RwLock<HashMap<Arc<str>, Arc<TenantChannels>>>,
    /// Connections in MONITOR mode.
    monitors: Arc<Monitors>,
}

impl Hub {
    /// The tenant's channels, created on first subscription.
    fn of(&self, tenant: &str) -> Arc<TenantChannels> {
        if let Some(t) = self.tenants.read().get(tenant) {
            return t.clone();
        }
        self.tenants
            .write()
            .entry(tenant.into())
            .or_default()
            .clone()
    }

    /// The tenant's channels if anybody ever subscribed. Once created they stay the tenant's
    /// for the server's life (a connection may keep them, see `ClientState::channels`).
    fn existing(&self, tenant: &str) -> Option<Arc<TenantChannels>> {
        self.tenants.read().get(tenant).cloned()
    }

    /// Publishes to a tenant's channel (also used by keyspace notifications). Returns how many
    /// subscriptions received it.
    pub fn publish(&self, tenant: &str, kind: Kind, channel: &[u8], message: &[u8]) -> usize {
        match self.existing(tenant) {
            Some(t) => t.publish(kind, channel, message),
            None => 0,
        }
    }
}

/// Plain channels (SUBSCRIBE/PUBLISH) or shard channels (SSUBSCRIBE/SPUBLISH): separate
/// namespaces, as in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Shard,
}

type Subscribers = HashMap<Box<[u8]>, Vec<Arc<Mailbox>>>;

/// One tenant's channels and patterns.
#[derive(Default)]
pub struct TenantChannels {
    inner: Mutex<Channels>,
}

#[derive(Default)]
struct Channels {
    channels: Subscribers,
    patterns: Subscribers,
    shard: Subscribers,
}

fn add(map: &mut Subscribers, name: &[u8], m: &Arc<Mailbox>) {
    map.entry(name.into()).or_default().push(m.clone());
}

fn remove(map: &mut Subscribers, name: &[u8], m: &Arc<Mailbox>) {
    if let Some(v) = map.get_mut(name) {
        v.retain(|x| !Arc::ptr_eq(x, m));
        if v.is_empty() {
            map.remove(name);
        }
    }
}

/// A message encoded for both protocols, built when first needed.
struct Encoded<'a> {
    parts: [&'a [u8]; 4],
    n: usize,
    resp2: Option<BytesMut>,
    resp3: Option<BytesMut>,
}

impl<'a> Encoded<'a> {
    fn new(parts: &[&'a [u8]]) -> Self {
        let mut p: [&[u8]; 4] = [&[]; 4];
        p[..parts.len()].copy_from_slice(parts);
        Encoded {
            parts: p,
            n: parts.len(),
            resp2: None,
            resp3: None,
        }
    }

    fn get(&mut self, proto: Protocol) -> &[u8] {
        let slot = match proto {
            Protocol::Resp2 => &mut self.resp2,
            Protocol::Resp3 => &mut self.resp3,
        };
        slot.get_or_insert_with(|| {
            let mut b = BytesMut::new();
            let mut w = ReplyWriter::new(&mut b, proto);
            w.push(self.n);
            for p in &self.parts[..self.n] {
                w.bulk(p);
            }
            b
        })
    }
}

impl TenantChannels {
    fn publish(&self, kind: Kind, channel: &[u8], message: &[u8]) -> usize {
        let inner = self.inner.lock();
        let mut received = 0;
        let (map, word) = match kind {
            Kind::Plain => (&inner.channels, &b"message"[..]),
            Kind::Shard => (&inner.shard, &b"smessage"[..]),
        };
        if let Some(subs) = map.get(channel) {
            let mut msg = Encoded::new(&[word, channel, message]);
            for m in subs {
                m.deliver(msg.get(m.proto()));
                received += 1;
            }
        }
        if kind == Kind::Plain {
            for (pattern, subs) in &inner.patterns {
                if !glob_match(pattern, channel, false) {
                    continue;
                }
                let mut msg = Encoded::new(&[b"pmessage", pattern, channel, message]);
                for m in subs {
                    m.deliver(msg.get(m.proto()));
                    received += 1;
                }
            }
        }
        received
    }
}

/// A subscribed connection's incoming messages, waiting to be moved to its output.
pub struct Mailbox {
    resp3: AtomicBool,
    queue: Mutex<BytesMut>,
    /// What the queue may hold: past the hard limit, or past the soft one for long enough, the
    /// subscriber is disconnected.
    limits: Arc<PubsubLimits>,
    /// When the queue went above the soft limit (Unix ms; 0 = it is not above it).
    over_soft_since_ms: AtomicU64,
    overflowed: AtomicBool,
    notify: Notify,
}

impl Mailbox {
    fn proto(&self) -> Protocol {
        if self.resp3.load(Relaxed) {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        }
    }

    fn deliver(&self, bytes: &[u8]) {
        let mut q = self.queue.lock();
        if self.overflow_check(q.len() + bytes.len()) {
            return;
        }
        q.extend_from_slice(bytes);
        drop(q);
        self.notify.notify_one();
    }

    fn overflow_check(&self, len: usize) -> bool {
        if self.overflowed.load(Relaxed) {
            return true;
        }
        let len = len as u64;
        let hard = self.limits.hard.load(Relaxed);
        let soft = self.limits.soft.load(Relaxed);
        let mut over = hard != 0 && len > hard;
        if soft != 0 && len > soft {
            // As Redis: the first time above the soft limit starts the clock; still above it
            // more than `soft_seconds` later, the subscriber is cut off.
            let now = ferrite_storage::now_ms().max(1);
            let since = self.over_soft_since_ms.load(Relaxed);
            if since == 0 {
                self.over_soft_since_ms.store(now, Relaxed);
            } else if now - since.min(now) > self.limits.soft_seconds.load(Relaxed) * 1000 {
                over = true;
            }
        } else {
            self.over_soft_since_ms.store(0, Relaxed);
        }
        if over {
            self.overflowed.store(true, Relaxed);
            self.notify.notify_one();
        }
        over
    }

    /// Resolves when mail arrived (or the limit was passed).
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Passed its limit: the connection must be closed.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.lock().is_empty()
    }

    /// Moves the queued messages to `out`.
    pub fn drain_into(&self, out: &mut BytesMut) {
        let mut q = self.queue.lock();
        if !q.is_empty() {
            out.extend_from_slice(&q);
            q.clear();
            if q.capacity() > 1024 * 1024 {
                *q = BytesMut::new();
            }
        }
    }
}

/// A connection's subscriptions (dropped: unsubscribed from everything).
pub struct Subscriptions {
    pub mailbox: Arc<Mailbox>,
    /// In MONITOR mode: the registry its mailbox is in.
    monitor: Option<Arc<Monitors>>,
    tenant: Arc<TenantChannels>,
    channels: HashSet<Box<[u8]>>,
    patterns: HashSet<Box<[u8]>>,
    shard: HashSet<Box<[u8]>>,
}

impl Subscriptions {
    /// Channels and patterns (what SUBSCRIBE replies count).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Subscribed to anything at all (RESP2 connections then run only pub/sub commands).
    pub fn active(&self) -> bool {
        self.count() + self.shard.len() > 0 || self.monitor.is_some()
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        if let Some(m) = self.monitor.take() {
            m.remove(&self.mailbox);
        }
        let mut inner = self.tenant.inner.lock();
        for c in &self.channels {
            remove(&mut inner.channels, c, &self.mailbox);
        }
        for p in &self.patterns {
            remove(&mut inner.patterns, p, &self.mailbox);
        }
        for s in &self.shard {
            remove(&mut inner.shard, s, &self.mailbox);
        }
    }
}

/// Is the connection subscribed in RESP2 (where only pub/sub commands, PING, QUIT and RESET
/// may run)?
pub fn in_resp2_subscribed_mode(st: &ClientState) -> bool {
    st.proto == Protocol::Resp2 && st.subs.as_ref().is_some_and(|s| s.active())
}

/// The error for any other command in that mode.
pub fn not_allowed_in_subscribed_mode(name: &str) -> ErrorReply {
    ErrorReply::err(format!(
        "Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    ))
}

fn subs<'a>(st: &'a mut ClientState, sh: &Shared) -> &'a mut Subscriptions {
    let tenant = st.tenant.id().to_string();
    let proto = st.proto;
    st.subs.get_or_insert_with(|| {
        Box::new(Subscriptions {
            mailbox: Arc::new(Mailbox {
                resp3: AtomicBool::new(proto == Protocol::Resp3),
                queue: Mutex::new(BytesMut::new()),
                limits: sh.hot.pubsub_limits.clone(),
                over_soft_since_ms: AtomicU64::new(0),
                overflowed: AtomicBool::new(false),
                notify: Notify::new(),
            }),
            monitor: None,
            tenant: sh.pubsub.of(&tenant),
            channels: HashSet::new(),
            patterns: HashSet::new(),
            shard: HashSet::new(),
        })
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Channels,
    Patterns,
    Shard,
}

impl Which {
    fn words(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Which::Channels => (b"subscribe", b"unsubscribe"),
            Which::Patterns => (b"psubscribe", b"punsubscribe"),
            Which::Shard => (b"ssubscribe", b"sunsubscribe"),
        }
    }
}

fn confirm(out: &mut BytesMut, proto: Protocol, word: &[u8], name: Option<&[u8]>, count: usize) {
    let mut w = ReplyWriter::new(out, proto);
    w.push(3);
    w.bulk(word);
    match name {
        Some(n) => w.bulk(n),
        None => w.null(),
    }
    w.int(count as i64);
}

fn subscribe(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
    which: Which,
) -> ServerResult {
    dispatch::check_ownership(st, sh, &st.tenant)?;
    let proto = st.proto;
    let inside_exec = st.inside_exec;
    let s = subs(st, sh);
    s.mailbox.resp3.store(proto == Protocol::Resp3, Relaxed);
    // Messages already queued go out before the confirmations (not inside EXEC's array: they
    // follow EXEC's reply then).
    if !inside_exec {
        s.mailbox.drain_into(out);
    }
    let (word, _) = which.words();
    for name in args.tail(1).iter() {
        let fresh = match which {
            Which::Channels => s.channels.insert(name.into()),
            Which::Patterns => s.patterns.insert(name.into()),
            Which::Shard => s.shard.insert(name.into()),
        };
        if fresh {
            let mut inner = s.tenant.inner.lock();
            let map = match which {
                Which::Channels => &mut inner.channels,
                Which::Patterns => &mut inner.patterns,
                Which::Shard => &mut inner.shard,
            };
            add(map, name, &s.mailbox);
        }
        let count = if which == Which::Shard {
            s.shard.len()
        } else {
            s.count()
        };
        confirm(out, proto, word, Some(name), count);
    }
    Ok(Flow::Continue)
}

fn unsubscribe(
    st: &mut ClientState,
    args: Args<'_>,
    out: &mut BytesMut,
    which: Which,
) -> ServerResult {
    let proto = st.proto;
    let inside_exec = st.inside_exec;
    let (_, word) = which.words();
    let Some(s) = st.subs.as_mut() else {
        // Not subscribed to anything: one confirmation per name, or one with a null name.
        if args.len() == 1 {
            confirm(out, proto, word, None, 0);
        }
        for name in args.tail(1).iter() {
            confirm(out, proto, word, Some(name), 0);
        }
        return Ok(Flow::Continue);
    };
    if !inside_exec {
        s.mailbox.drain_into(out);
    }
    let names: Vec<Box<[u8]>> = if args.len() == 1 {
        let set = match which {
            Which::Channels => &s.channels,
            Which::Patterns => &s.patterns,
            Which::Shard => &s.shard,
        };
        set.iter().cloned().collect()
    } else {
        args.tail(1).iter().map(Into::into).collect()
    };
    if names.is_empty() {
        let count = if which == Which::Shard {
            s.shard.len()
        } else {
            s.count()
        };
        confirm(out, proto, word, None, count);
    }
    for name in names {
        let was = match which {
            Which::Channels => s.channels.remove(&name),
            Which::Patterns => s.patterns.remove(&name),
            Which::Shard => s.shard.remove(&name),
        };
        if was {
            let mut inner = s.tenant.inner.lock();
            let map = match which {
                Which::Channels => &mut inner.channels,
                Which::Patterns => &mut inner.patterns,
                Which::Shard => &mut inner.shard,
            };
            remove(map, &name, &s.mailbox);
        }
        let count = if which == Which::Shard {
            s.shard.len()
        } else {
            s.count()
        };
        confirm(out, proto, word, Some(&name), count);
    }
    Ok(Flow::Continue)
}

pub fn subscribe_channels(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    a: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    subscribe(st, sh, a, out, Which::Channels)
}

pub fn subscribe_patterns(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    a: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    subscribe(st, sh, a, out, Which::Patterns)
}

pub fn subscribe_shard(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    a: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    // Redis 7.2 queues SSUBSCRIBE in MULTI but refuses it inside EXEC, which runs with its
    // client flagged DENY BLOCKING (SUBSCRIBE and PSUBSCRIBE are let through there for
    // compatibility; SSUBSCRIBE, newer, never was).
    if st.inside_exec {
        return Err(ErrorReply::err(
            "SSUBSCRIBE isn't allowed for a DENY BLOCKING client",
        ));
    }
    subscribe(st, sh, a, out, Which::Shard)
}

pub fn unsubscribe_channels(
    st: &mut ClientState,
    _: &Arc<Shared>,
    a: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    unsubscribe(st, a, out, Which::Channels)
}

pub fn unsubscribe_patterns(
    st: &mut ClientState,
    _: &Arc<Shared>,
    a: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    unsubscribe(st, a, out, Which::Patterns)
}

pub fn unsubscribe_shard(
    st: &mut ClientState,
    _: &Arc<Shared>,
    a: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    unsubscribe(st, a, out, Which::Shard)
}

fn publish_generic(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
    kind: Kind,
) -> ServerResult {
    dispatch::check_ownership(st, sh, &st.tenant)?;
    // The hub's map is shared by every connection: looked up once per connection, not per
    // message (a read lock and a reference count are writes to cache lines all cores share).
    if st.channels.is_none() {
        st.channels = sh.pubsub.existing(st.tenant.id());
    }
    let n = match &st.channels {
        Some(channels) => channels.publish(kind, args.get(1), args.get(2)),
        None => 0,
    };
    // A connection that publishes to a channel it is subscribed to gets the message after the
    // reply (after EXEC's or the script's when inside one), as in Redis 7.2: the connection
    // moves it to its output once the command is done (`connection::run`).
    ReplyWriter::new(out, st.proto).int(n as i64);
    Ok(Flow::Continue)
}

pub fn publish(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    a: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    publish_generic(st, sh, a, out, Kind::Plain)
}

pub fn spublish(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    a: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    publish_generic(st, sh, a, out, Kind::Shard)
}

/// PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT | SHARDCHANNELS [pattern] |
/// SHARDNUMSUB [channel ...] | HELP, about the connection's tenant only.
pub fn pubsub(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let sub = args.get(1).to_ascii_uppercase();
    let t = sh.pubsub.existing(st.tenant.id());
    let mut w = ReplyWriter::new(out, st.proto);
    let list = |map: Option<&Subscribers>, pattern: Option<&[u8]>| -> Vec<Box<[u8]>> {
        map.map(|m| {
            m.keys()
                .filter(|c| pattern.is_none_or(|p| glob_match(p, c, false)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
    };
    match sub.as_slice() {
        b"CHANNELS" | b"SHARDCHANNELS" if args.len() <= 3 => {
            let pattern = (args.len() == 3).then(|| args.get(2));
            let names = match &t {
                Some(t) => {
                    let inner = t.inner.lock();
                    let map = if sub.as_slice() == b"CHANNELS" {
                        &inner.channels
                    } else {
                        &inner.shard
                    };
                    list(Some(map), pattern)
                }
                None => Vec::new(),
            };
            w.array(names.len());
            for n in &names {
                w.bulk(n);
            }
        }
        b"NUMSUB" | b"SHARDNUMSUB" => {
            let names = args.tail(2);
            let counts: Vec<usize> = match &t {
                Some(t) => {
                    let inner = t.inner.lock();
                    let map = if sub.as_slice() == b"NUMSUB" {
                        &inner.channels
                    } else {
                        &inner.shard
                    };
                    names.iter().map(|c| map.get(c).map_or(0, Vec::len)).collect()
                }
                None => vec![0; names.len()],
            };
            // A map in RESP3, a flat array in RESP2, as Redis answers.
            w.map(names.len());
            for (c, n) in names.iter().zip(counts) {
                w.bulk(c);
                w.int(n as i64);
            }
        }
        b"NUMPAT" if args.len() == 2 => {
            let n = t.map_or(0, |t| t.inner.lock().patterns.len());
            w.int(n as i64);
        }
        b"HELP" if args.len() == 2 => w.help(&[
            "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "SHARDCHANNELS [<pattern>]",
            "    Return the currently active shard level channels matching a <pattern> (default: '*').",
            "SHARDNUMSUB [<shardchannel> ...]",
            "    Return the number of subscribers for the specified shard level channel(s)",
            "HELP",
            "    Print this help.",
        ]),
        _ => {
            return Err(ErrorReply::bad_subcommand(
                "pubsub",
                args.get(1),
                &["CHANNELS", "NUMSUB", "NUMPAT", "SHARDCHANNELS", "SHARDNUMSUB", "HELP"],
            ));
        }
    }
    Ok(Flow::Continue)
}

/// Publishes a tenant's keyspace notifications on its own channels (see
/// `ferrite_storage::notify`).
struct KeyspacePublisher {
    shared: std::sync::Weak<Shared>,
    tenant: Arc<str>,
}

impl ferrite_storage::notify::Publisher for KeyspacePublisher {
    fn publish(&self, channel: &[u8], message: &[u8]) {
        if let Some(sh) = self.shared.upgrade() {
            sh.pubsub
                .publish(&self.tenant, Kind::Plain, channel, message);
        }
    }
}

/// CONFIG SET notify-keyspace-events for one tenant: takes effect for its next change (no lock
/// is taken, so it also works inside MULTI).
pub fn set_keyspace_events(sh: &Arc<Shared>, tenant: &ferrite_tenancy::Tenant, flags: u32) {
    let publisher: Option<Arc<dyn ferrite_storage::notify::Publisher>> = (flags != 0).then(|| {
        Arc::new(KeyspacePublisher {
            shared: Arc::downgrade(sh),
            tenant: tenant.id().into(),
        }) as Arc<dyn ferrite_storage::notify::Publisher>
    });
    tenant.keyspace().key_events().configure(flags, publisher);
}

// -- MONITOR ------------------------------------------------------------------------------------

/// Connections in MONITOR mode. A tenant's monitor sees the commands of its tenant's own clients
/// (never an administrator's visit); an administrator's sees every connection's, with the
/// tenant named. Each line goes to the monitor's mailbox, under the pub/sub output limit.
#[derive(Default)]
pub struct Monitors {
    count: std::sync::atomic::AtomicUsize,
    /// Read on every command while anyone monitors (shared, so commands of different tenants
    /// do not serialize on it); written only when a monitor starts or ends.
    list: RwLock<Vec<Monitor>>,
}

/// One connection in MONITOR mode.
struct Monitor {
    mailbox: Arc<Mailbox>,
    /// The tenant whose commands it sees; `None` for an administrator (every tenant's).
    tenant: Option<Arc<str>>,
}

impl Monitors {
    fn add(&self, mailbox: Arc<Mailbox>, tenant: Option<Arc<str>>) {
        let mut l = self.list.write();
        l.push(Monitor { mailbox, tenant });
        self.count.store(l.len(), Relaxed);
    }

    fn remove(&self, mailbox: &Arc<Mailbox>) {
        let mut l = self.list.write();
        l.retain(|m| !Arc::ptr_eq(&m.mailbox, mailbox));
        self.count.store(l.len(), Relaxed);
    }
}

/// MONITOR: the connection receives a line per command run from now on.
pub fn monitor(
    st: &mut ClientState,
    sh: &Arc<Shared>,
    _args: Args<'_>,
    out: &mut BytesMut,
) -> ServerResult {
    let filter = (!st.admin).then(|| Arc::<str>::from(st.tenant.id()));
    let subs = subs(st, sh);
    if subs.monitor.is_none() {
        let monitors = sh.pubsub.monitors.clone();
        monitors.add(subs.mailbox.clone(), filter);
        subs.monitor = Some(monitors);
    }
    ReplyWriter::new(out, st.proto).ok();
    Ok(Flow::Continue)
}

/// Arguments MONITOR shows as `(redacted)`, as Redis does: AUTH's, HELLO's after AUTH.
fn redacted(args: &Args<'_>, i: usize) -> bool {
    let name = args.get(0);
    if name.eq_ignore_ascii_case(b"auth") {
        return i >= 1;
    }
    if name.eq_ignore_ascii_case(b"hello") {
        return (2..args.len())
            .any(|j| args.get(j).eq_ignore_ascii_case(b"AUTH") && (i == j + 1 || i == j + 2));
    }
    false
}

/// Redis's sdscatrepr: a quoted string with C escapes.
fn repr(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

/// Sends a command that just ran to the monitors allowed to see it (administrative and tenancy
/// commands are never shown, as Redis hides administrative ones). Costs one load when nobody monitors.
pub fn feed_monitors(
    sh: &Shared,
    st: &ClientState,
    spec: &ferrite_commands::spec::CommandSpec,
    args: &Args<'_>,
) {
    // Every command passes here, and almost always nobody monitors: the rest is out of line.
    if sh.pubsub.monitors.count.load(Relaxed) != 0 {
        feed_monitors_now(sh, st, spec, args);
    }
}

#[cold]
#[inline(never)]
fn feed_monitors_now(
    sh: &Shared,
    st: &ClientState,
    spec: &ferrite_commands::spec::CommandSpec,
    args: &Args<'_>,
) {
    // Tenancy commands carry passwords and migration tokens: shown to nobody, like ADMIN ones.
    if sh.pubsub.monitors.count.load(Relaxed) == 0
        || spec.has(ferrite_commands::spec::flags::ADMIN)
        || spec.group == "tenancy"
    {
        return;
    }
    let tenant = st.tenant.id();
    let tenant_client = st.is_tenant_client();
    let monitors = sh.pubsub.monitors.list.read();
    let sees = |m: &Monitor| match &m.tenant {
        None => true,
        Some(t) => tenant_client && **t == *tenant,
    };
    // Another tenant's monitor costs this command a look at the list, never the formatting.
    if !monitors.iter().any(sees) {
        return;
    }
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let mut body = Vec::with_capacity(64);
    for i in 0..args.len() {
        if i > 0 {
            body.push(b' ');
        }
        if redacted(args, i) {
            body.extend_from_slice(b"\"(redacted)\"");
        } else {
            repr(&mut body, args.get(i));
        }
    }
    let head = format!(
        "+{}.{:06} [0 {}",
        micros / 1_000_000,
        micros % 1_000_000,
        st.info.addr
    );
    let own = [head.as_bytes(), b"] ", &body, b"\r\n"].concat();
    let admin = [
        head.as_bytes(),
        b" tenant=",
        tenant.as_bytes(),
        b"] ",
        &body,
        b"\r\n",
    ]
    .concat();
    for m in monitors.iter().filter(|m| sees(m)) {
        m.mailbox
            .deliver(if m.tenant.is_none() { &admin } else { &own });
    }
}
