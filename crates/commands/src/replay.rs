//! Applying write effects (see `ferrite_storage::effects`) to a keyspace: how an append-only log
//! is loaded, and how tests check that the effects of a command stream reproduce its result.

use bytes::BytesMut;
use ferrite_protocol::{Args, Protocol, ReplyWriter};
use ferrite_storage::{Argv, Db, Effects};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::ctx::{Ctx, Garbage};
use crate::spec::{Handler, lookup};

/// Why an effect could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    pub command: String,
    pub message: String,
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot apply {}: {}", self.command, self.message)
    }
}

impl std::error::Error for ReplayError {}

/// Function libraries are tenant data kept by the keyspace (`Db::scripting`) as code; their
/// effects are `FUNCTION LOAD REPLACE <code>`, `FUNCTION DELETE <name>` and `FUNCTION FLUSH`.
/// Replaying them changes the kept code only: the tenant's Lua engine recompiles it when a
/// script next runs.
fn apply_function(db: &mut Db, argv: Argv<'_>) -> Result<(), String> {
    let word = |i: usize| argv.get(i).map(|a| a.to_ascii_lowercase());
    match (word(1).as_deref(), argv.len()) {
        (Some(b"load"), 4) if word(2).as_deref() == Some(b"replace") => {
            let code = argv.get(3).unwrap_or_default();
            if db.put_library(code) {
                Ok(())
            } else {
                Err("library code without a name".into())
            }
        }
        (Some(b"delete"), 3) => {
            db.remove_library(&String::from_utf8_lossy(argv.get(2).unwrap_or_default()));
            Ok(())
        }
        (Some(b"flush"), 2) => {
            db.set_libraries(Default::default());
            Ok(())
        }
        _ => Err("unknown FUNCTION effect".into()),
    }
}

/// Applies effects with the clock they were recorded with, so lazy expiry decides exactly as it
/// did then. Keeps its buffers between calls.
pub struct Replayer {
    rng: SmallRng,
    out: BytesMut,
    data: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    max_bulk: usize,
}

impl Default for Replayer {
    fn default() -> Self {
        Self::new()
    }
}

impl Replayer {
    pub fn new() -> Replayer {
        Replayer {
            // Effects never depend on randomness (random commands journal what they did); any
            // seed gives the same result, which the tests check by replaying with another one.
            rng: SmallRng::seed_from_u64(0x5eed),
            out: BytesMut::new(),
            data: Vec::new(),
            ranges: Vec::new(),
            max_bulk: usize::MAX,
        }
    }

    /// Applies the effects of one publication (one command, transaction or expiry round) as one
    /// atomic group.
    pub fn apply_all(&mut self, db: &mut Db, effects: &Effects<'_>) -> Result<(), ReplayError> {
        db.begin_atomic();
        let mut result = Ok(());
        for argv in effects.iter() {
            if let Err(e) = self.apply(db, effects.now, argv) {
                result = Err(e);
                break;
            }
        }
        db.end_atomic(effects.now);
        result
    }

    /// Applies one effect. Only data commands that write can be effects.
    pub fn apply(&mut self, db: &mut Db, now: u64, argv: Argv<'_>) -> Result<(), ReplayError> {
        let name = String::from_utf8_lossy(argv.name()).to_ascii_lowercase();
        let fail = |message: String| ReplayError {
            command: name.clone(),
            message,
        };
        if name == "function" {
            return apply_function(db, argv).map_err(fail);
        }
        let spec = lookup(argv.name()).ok_or_else(|| fail("unknown command".into()))?;
        let Handler::Data(f) = spec.handler else {
            return Err(fail("not a data command".into()));
        };
        if !spec.is_write() {
            return Err(fail("not a write command".into()));
        }
        if !spec.arity_ok(argv.len()) {
            return Err(fail("wrong number of arguments".into()));
        }
        self.data.clear();
        self.ranges.clear();
        for a in argv.iter() {
            let start = self.data.len();
            self.data.extend_from_slice(a);
            self.ranges.push((start, self.data.len()));
        }
        let args = Args::new(&self.data, &self.ranges);
        self.out.clear();
        let mut w = ReplyWriter::new(&mut self.out, Protocol::Resp2);
        let mut garbage = Garbage::default();
        let result = {
            let mut ctx = Ctx {
                db,
                w: &mut w,
                now,
                rng: &mut self.rng,
                max_bulk: self.max_bulk,
                garbage: &mut garbage,
                from_script: false,
            };
            ctx.run(f, args)
        };
        drop(garbage);
        match result {
            Err(e) => Err(fail(e.text().to_string())),
            Ok(()) if self.out.first() == Some(&b'-') => {
                let text = String::from_utf8_lossy(&self.out[1..]).trim().to_string();
                Err(fail(text))
            }
            Ok(()) => Ok(()),
        }
    }
}
