//! What a data command runs with.

use ferrite_protocol::ReplyWriter;
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
}
