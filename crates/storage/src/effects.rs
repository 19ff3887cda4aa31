//! Write effects: what a keyspace's subscribers (the append-only log, a migration's delta log,
//! later replication) are told after each change, as Redis's command propagation does.
//!
//! An effect is the argv of a *deterministic* command that reproduces the change when applied
//! to the keyspace as it was: by default the request itself; a command whose outcome depends on
//! the clock, randomness or float formatting records its effects explicitly instead
//! ([`crate::Db::propagate`]: `EXPIRE` → `PEXPIREAT`, `SPOP` → `SREM`, `INCRBYFLOAT` →
//! `SET ... KEEPTTL`, ...), and the keyspace itself records `DEL` for every key it expires
//! (lazily or in the active cycle).
//!
//! Subscribers are called while the keyspace lock is held, so they see effects in lock order, and
//! the effects of one command (or of one transaction) arrive in a single call: a consumer that
//! writes each call as one record never splits a transaction.

use std::sync::Arc;

/// An owned argv.
pub type OwnedArgv = Vec<Vec<u8>>;

/// One effect: the argv of a command.
#[derive(Clone, Copy, Debug)]
pub enum Argv<'a> {
    /// The request as it arrived (borrowed from the connection's input buffer).
    Borrowed(&'a [&'a [u8]]),
    /// An effect the command or the keyspace built.
    Owned(&'a [Vec<u8>]),
}

impl<'a> Argv<'a> {
    pub fn len(&self) -> usize {
        match self {
            Argv::Borrowed(a) => a.len(),
            Argv::Owned(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        match self {
            Argv::Borrowed(a) => a.get(i).copied(),
            Argv::Owned(a) => a.get(i).map(Vec::as_slice),
        }
    }

    /// The command name (first argument), as sent (any case).
    pub fn name(&self) -> &'a [u8] {
        self.get(0).unwrap_or_default()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let this = *self;
        (0..this.len()).map(move |i| this.get(i).unwrap_or_default())
    }

    pub fn to_owned_argv(&self) -> OwnedArgv {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

/// The effects of one command, one transaction, or one round of active expiry, in the order the
/// changes happened.
#[derive(Clone, Copy, Debug)]
pub struct Effects<'a> {
    /// The clock (Unix ms) the change ran with: applying the effects with this clock reproduces
    /// lazy expiry decisions exactly.
    pub now: u64,
    recorded: &'a [OwnedArgv],
    request: Option<&'a [&'a [u8]]>,
}

impl<'a> Effects<'a> {
    /// Effects made of owned argvs (a log being replayed, a test).
    pub fn new(now: u64, recorded: &'a [OwnedArgv]) -> Effects<'a> {
        Effects {
            now,
            recorded,
            request: None,
        }
    }

    pub fn len(&self) -> usize {
        self.recorded.len() + usize::from(self.request.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Argv<'a>> + 'a {
        self.recorded
            .iter()
            .map(|a| Argv::Owned(a.as_slice()))
            .chain(self.request.map(Argv::Borrowed))
    }
}

/// A subscriber of a keyspace's effects.
pub trait EffectSink: Send + Sync {
    /// Called under the keyspace lock after a change: keep it short (copy, encode, enqueue).
    fn publish(&self, effects: &Effects<'_>);
}

/// Identifies a subscription, for [`crate::Db::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SinkId(u64);

/// Where a command started, for [`crate::Db::effects_end`].
#[derive(Debug, Clone, Copy)]
pub struct EffectMark {
    writes: u64,
}

/// The journal of one keyspace: its subscribers and the effects of the running command.
#[derive(Default)]
pub(crate) struct Journal {
    sinks: Vec<(SinkId, Arc<dyn EffectSink>)>,
    next_id: u64,
    /// Effects recorded since the last publication (expiries, explicit effects).
    pending: Vec<OwnedArgv>,
    /// The running command recorded its own effects: its request is not one.
    rewritten: bool,
    /// Commands (and transactions) running: expiries outside them are published at once.
    depth: u32,
    /// Inside a transaction: effects accumulate until it ends.
    atomic: u32,
}

impl Journal {
    #[inline]
    pub(crate) fn active(&self) -> bool {
        !self.sinks.is_empty()
    }

    pub(crate) fn subscribe(&mut self, sink: Arc<dyn EffectSink>) -> SinkId {
        self.next_id += 1;
        let id = SinkId(self.next_id);
        self.sinks.push((id, sink));
        id
    }

    pub(crate) fn unsubscribe(&mut self, id: SinkId) -> bool {
        let before = self.sinks.len();
        self.sinks.retain(|(i, _)| *i != id);
        if self.sinks.is_empty() {
            self.pending.clear();
        }
        self.sinks.len() != before
    }

    /// Records an effect the keyspace produced by itself (an expired key's `DEL`).
    pub(crate) fn record_expiry(&mut self, key: &[u8], now: u64) {
        self.pending.push(vec![b"DEL".to_vec(), key.to_vec()]);
        if self.depth == 0 {
            self.publish(now, None);
        }
    }

    pub(crate) fn propagate(&mut self, argv: OwnedArgv) {
        self.rewritten = true;
        self.pending.push(argv);
    }

    pub(crate) fn discard_pending(&mut self) {
        self.pending.clear();
        self.rewritten = false;
    }

    pub(crate) fn begin(&mut self, writes: u64) -> EffectMark {
        self.depth += 1;
        self.rewritten = false;
        EffectMark { writes }
    }

    pub(crate) fn end(&mut self, mark: EffectMark, writes: u64, now: u64, request: &[&[u8]]) {
        self.depth = self.depth.saturating_sub(1);
        if !self.active() {
            self.pending.clear();
            self.rewritten = false;
            return;
        }
        let wrote = writes != mark.writes && !self.rewritten;
        self.rewritten = false;
        if self.atomic > 0 {
            if wrote {
                self.pending
                    .push(request.iter().map(|a| a.to_vec()).collect());
            }
            return;
        }
        self.publish(now, wrote.then_some(request));
    }

    #[inline]
    pub(crate) fn in_atomic(&self) -> bool {
        self.atomic > 0
    }

    pub(crate) fn begin_atomic(&mut self) {
        self.depth += 1;
        self.atomic += 1;
    }

    pub(crate) fn end_atomic(&mut self, now: u64) {
        self.depth = self.depth.saturating_sub(1);
        self.atomic = self.atomic.saturating_sub(1);
        if self.atomic == 0 {
            self.publish(now, None);
        }
    }

    /// Hands what is pending (plus the request) to every subscriber.
    pub(crate) fn publish(&mut self, now: u64, request: Option<&[&[u8]]>) {
        if self.pending.is_empty() && request.is_none() {
            return;
        }
        if self.sinks.is_empty() {
            self.pending.clear();
            return;
        }
        let effects = Effects {
            now,
            recorded: &self.pending,
            request,
        };
        for (_, s) in &self.sinks {
            s.publish(&effects);
        }
        self.pending.clear();
    }
}

/// A subscriber that keeps everything it is given (tests, tools).
#[derive(Default)]
pub struct EffectRecorder {
    batches: parking_lot::Mutex<Vec<(u64, Vec<OwnedArgv>)>>,
}

impl EffectRecorder {
    /// Takes the batches recorded so far: (clock, effects) per publication.
    pub fn take(&self) -> Vec<(u64, Vec<OwnedArgv>)> {
        std::mem::take(&mut *self.batches.lock())
    }
}

impl EffectSink for EffectRecorder {
    fn publish(&self, effects: &Effects<'_>) {
        let list = effects.iter().map(|a| a.to_owned_argv()).collect();
        self.batches.lock().push((effects.now, list));
    }
}
