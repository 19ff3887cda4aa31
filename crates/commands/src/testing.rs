//! A harness that runs data commands against an in-memory keyspace and returns the RESP bytes, for
//! table tests (argv in, RESP out) in this crate and others.

use bytes::BytesMut;
use ferrite_protocol::{ErrorReply, OwnedRequest, Protocol, ReplyWriter};
use ferrite_storage::Keyspace;
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
        let req = OwnedRequest::from_parts(argv.iter().map(|a| a.as_ref()));
        let args = req.args();
        let mut out = BytesMut::new();
        let mut w = ReplyWriter::new(&mut out, self.proto);
        let result = match lookup(args.get(0)) {
            None => Err(ErrorReply::unknown_command(
                args.get(0),
                args.tail(1).iter(),
            )),
            Some(spec) if !spec.arity_ok(args.len()) => Err(ErrorReply::wrong_arity(spec.name)),
            Some(spec) => match spec.handler {
                Handler::Data(f) => {
                    let mut db = self.keyspace.lock();
                    let mut garbage = Garbage::default();
                    let mut ctx = Ctx {
                        db: &mut db,
                        w: &mut w,
                        now: self.now,
                        rng: &mut self.rng,
                        max_bulk: 512 * 1024 * 1024,
                        garbage: &mut garbage,
                    };
                    f(&mut ctx, args)
                }
                Handler::Server => Err(ErrorReply::err("server command in data test harness")),
            },
        };
        if let Err(e) = result {
            w.error(&e);
        }
        out.to_vec()
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
