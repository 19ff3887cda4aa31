//! A harness that runs data commands against an in-memory keyspace and returns the RESP bytes, for
//! table tests (argv in, RESP out) in this crate and others.

use bytes::BytesMut;
use ferrite_protocol::{ErrorReply, OwnedRequest, Protocol, ReplyWriter};
use ferrite_storage::{Db, Keyspace};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::ctx::{Ctx, Garbage};
use crate::spec::{Handler, lookup};

/// A keyspace plus a fixed clock, driven one command at a time.
pub struct TestDb {
    pub keyspace: Keyspace,
    /// The clock commands see (Unix ms); tests move it to exercise expiry.
    pub now: u64,
    pub proto: Protocol,
    rng: SmallRng,
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDb {
    pub fn new() -> Self {
        TestDb {
            keyspace: Keyspace::new(),
            now: 1_700_000_000_000,
            proto: Protocol::Resp2,
            rng: SmallRng::seed_from_u64(7),
        }
    }

    /// Runs one command and returns its reply as RESP text.
    pub fn run<S: AsRef<[u8]>>(&mut self, argv: &[S]) -> String {
        String::from_utf8_lossy(&self.run_bytes(argv)).into_owned()
    }

    pub fn run_bytes<S: AsRef<[u8]>>(&mut self, argv: &[S]) -> Vec<u8> {
        let mut db = self.keyspace.lock();
        run_locked(&mut db, self.now, self.proto, &mut self.rng, argv)
    }

    /// Runs commands under one lock, as EXEC does (their effects are published together).
    pub fn run_transaction<S: AsRef<[u8]>>(&mut self, commands: &[Vec<S>]) -> Vec<String> {
        let mut db = self.keyspace.lock();
        db.begin_atomic();
        let replies = commands
            .iter()
            .map(|argv| {
                let r = run_locked(&mut db, self.now, self.proto, &mut self.rng, argv);
                String::from_utf8_lossy(&r).into_owned()
            })
            .collect();
        db.end_atomic(self.now);
        replies
    }

    /// Runs a sequence of (argv, expected RESP) pairs, failing with the step that differed.
    pub fn check(&mut self, steps: &[(&[&str], &str)]) {
        for (i, (argv, want)) in steps.iter().enumerate() {
            let got = self.run(argv);
            assert_eq!(&got, want, "step {i}: {argv:?}");
        }
    }

    /// Checks the incrementally maintained digest against a full recomputation.
    pub fn assert_digest_consistent(&self) {
        let db = self.keyspace.lock();
        assert_eq!(
            *db.digest(),
            db.recompute_digest(),
            "digest drifted from content"
        );
    }
}

/// Runs one command against a locked keyspace and returns its reply.
fn run_locked<S: AsRef<[u8]>>(
    db: &mut Db,
    now: u64,
    proto: Protocol,
    rng: &mut SmallRng,
    argv: &[S],
) -> Vec<u8> {
    let req = OwnedRequest::from_parts(argv.iter().map(|a| a.as_ref()));
    let args = req.args();
    let mut out = BytesMut::new();
    let mut w = ReplyWriter::new(&mut out, proto);
    let result = match lookup(args.get(0)) {
        None => Err(ErrorReply::unknown_command(
            args.get(0),
            args.tail(1).iter(),
        )),
        Some(spec) if !spec.arity_ok(args.len()) => Err(ErrorReply::wrong_arity(spec.name)),
        Some(spec) => match spec.handler {
            Handler::Data(f) => {
                let mut garbage = Garbage::default();
                let mut ctx = Ctx {
                    db,
                    w: &mut w,
                    now,
                    rng,
                    max_bulk: 512 * 1024 * 1024,
                    garbage: &mut garbage,
                    from_script: false,
                };
                ctx.run(f, args)
            }
            Handler::Server => Err(ErrorReply::err("server command in data test harness")),
        },
    };
    if let Err(e) = result {
        w.error(&e);
    }
    out.to_vec()
}
