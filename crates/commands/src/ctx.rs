//! What a data command runs with.

use ferrite_protocol::{Args, ReplyWriter};
use ferrite_storage::Db;
use rand::rngs::SmallRng;

/// Values freed after the keyspace lock is released (Redis's lazy free), so deleting a huge value
/// never stalls other clients of the tenant.
#[derive(Default)]
pub struct Garbage(Vec<Box<dyn Send>>);

impl Garbage {
    /// Values with at most this many elements are freed on the spot.
    const INLINE_FREE_ELEMENTS: usize = 64;

    /// Drops `entry` now if small, later if large.
    pub fn defer(&mut self, elements: usize, value: impl Send + 'static) {
        if elements > Self::INLINE_FREE_ELEMENTS {
            self.0.push(Box::new(value));
        }
    }

    pub fn defer_always(&mut self, value: impl Send + 'static) {
        self.0.push(Box::new(value));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes what was collected.
    pub fn take(&mut self) -> Garbage {
        Garbage(std::mem::take(&mut self.0))
    }
}

/// The context of one data command: the locked keyspace, the reply writer and the clock.
pub struct Ctx<'a, 'w> {
    pub db: &'a mut Db,
    pub w: &'a mut ReplyWriter<'w>,
    /// Unix ms, read once per command so a command sees one consistent time.
    pub now: u64,
    pub rng: &'a mut SmallRng,
    /// Largest string a command may build (SETRANGE, APPEND): `proto-max-bulk-len`.
    pub max_bulk: usize,
    pub garbage: &'a mut Garbage,
    /// Called by a script (`redis.call`): SORT of a set BY a constant sorts lexicographically,
    /// as Redis does for scripts, so a script sees a deterministic order.
    pub from_script: bool,
}

/// A data command's function.
pub type DataFn = fn(&mut Ctx<'_, '_>, Args<'_>) -> crate::CmdResult;

impl Ctx<'_, '_> {
    /// Runs a data command and hands its write effects to the keyspace's subscribers, still under
    /// the lock (see `ferrite_storage::effects`). Every execution path runs data commands through
    /// this, so no write escapes the journal.
    pub fn run(&mut self, f: DataFn, args: Args<'_>) -> crate::CmdResult {
        self.run_with(args, f)
    }

    /// [`Ctx::run`] for a command run by a closure (a blocking command's attempt, which also
    /// says whether it blocked).
    #[inline]
    pub fn run_with(
        &mut self,
        args: Args<'_>,
        f: impl FnOnce(&mut Self, Args<'_>) -> crate::CmdResult,
    ) -> crate::CmdResult {
        let mark = self.db.effects_begin();
        let notifying = self.db.notifying();
        if notifying {
            self.db.clear_key_changes();
        }
        let result = f(self, args);
        if notifying {
            // Keyspace notifications, from what the funnel saw the command change (before the
            // clients it made ready are served: their events follow).
            let log = self.db.take_key_changes();
            crate::notify::announce(self.db, args, &log);
        }
        if !self.db.wants_effects() {
            self.db.effects_end(mark, self.now, &[]);
            return result;
        }
        // The request as slices, on the stack for the usual handful of arguments.
        const INLINE: usize = 8;
        let mut inline: [&[u8]; INLINE] = [&[]; INLINE];
        let heap: Vec<&[u8]>;
        let request: &[&[u8]] = if args.len() <= INLINE {
            for (slot, a) in inline.iter_mut().zip(args.iter()) {
                *slot = a;
            }
            &inline[..args.len()]
        } else {
            heap = args.iter().collect();
            &heap
        };
        self.db.effects_end(mark, self.now, request);
        result
    }

    /// Someone subscribes to this keyspace's effects: a command that describes its effects
    /// itself needs to build them only then.
    #[inline]
    pub fn wants_effects(&self) -> bool {
        self.db.wants_effects()
    }

    /// Records one effect of the running command in place of its request (Redis's
    /// `alsoPropagate` with the original suppressed): commands whose outcome depends on the
    /// clock, randomness or float formatting call this, in order, for what they changed.
    pub fn propagate(&mut self, argv: &[&[u8]]) {
        if self.db.wants_effects() {
            self.db.propagate(argv.iter().map(|a| a.to_vec()).collect());
        }
    }
}
