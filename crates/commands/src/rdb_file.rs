//! Whole Redis RDB files in and out of one keyspace: [`load`] fills a `Db` from a `dump.rdb`
//! (the caller gives it a fresh one and installs it only when `load` succeeded, so a refused
//! file leaves nothing half-loaded), [`write`] writes a point-in-time copy of a keyspace as a
//! file redis-server 7.x loads. The format is `ferrite_rdb::file`; the value conversions are
//! [`crate::dump`]'s.
//!
//! A Ferrite keyspace has one database. An RDB file may hold keys of several; [`LoadOptions::db`]
//! says which one to load, and without it a file with keys outside database 0 is refused (nobody
//! loses keys silently).

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};

use ferrite_rdb::file::{self, Entry as RdbEntry};
use ferrite_storage::keyspace::{Db, Slot};
use ferrite_storage::scripting::library_name;
use ferrite_storage::{CopiedEntries, PointInTimeCopy};

use ferrite_storage::Value;

use crate::dump::{from_rdb, to_rdb};

/// What to load from a file.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// The file's database to load; `None`: database 0, and a file with keys in any other
    /// database is refused.
    pub db: Option<u64>,
    /// Longest string accepted (Redis's proto-max-bulk-len is the natural bound).
    pub max_string: u64,
    /// The keys' modified time (Unix ms): an RDB file does not carry one.
    pub now_ms: u64,
    /// The file's size, when known: a `RESIZEDB` count sizes the table only as far as a file
    /// that size can hold keys ([`MIN_KEY_BYTES`] each), so a forged count in a small file
    /// reserves nothing on its own.
    pub file_size: Option<u64>,
}

/// The fewest bytes a key takes in an RDB file: its type, its name's length (an empty name),
/// its value's length (an empty string).
pub const MIN_KEY_BYTES: u64 = 3;

/// What [`load`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Keys loaded into the keyspace (keys already expired included: expiry reclaims them).
    pub keys: u64,
    /// Keys of other databases of the file, skipped because `LoadOptions::db` chose one.
    pub other_db_keys: u64,
    /// Empty collections, skipped as redis-server skips them.
    pub empty_keys_skipped: u64,
    /// Function libraries loaded.
    pub functions: u64,
    /// The file's RDB version.
    pub version: u16,
}

/// Shortened, printable key for messages.
fn shown(key: &[u8]) -> String {
    let s = String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned();
    if key.len() > 64 { format!("{s}...") } else { s }
}

/// Where a load also hands every key it loads, as it loads it: a restore writes the tenant's
/// durable snapshot this way, in the same pass as the load instead of a second one.
pub trait LoadSink {
    /// The file announces `keys` keys in the chosen database (`RESIZEDB`, before them): a hint,
    /// which may be wrong.
    fn expect_keys(&mut self, keys: u64);
    /// One key loaded (with its expiry, Unix ms), in the order they are inserted. An error
    /// stops the load.
    fn key(&mut self, key: &[u8], expire_at: Option<u64>, value: &Value) -> Result<(), String>;
}

/// A [`LoadSink`] that keeps nothing.
pub struct NoSink;

impl LoadSink for NoSink {
    fn expect_keys(&mut self, _keys: u64) {}

    fn key(&mut self, _: &[u8], _: Option<u64>, _: &Value) -> Result<(), String> {
        Ok(())
    }
}

/// Keys whose place in the table is brought into the cache together before they are inserted
/// (`Db::warm`): enough for their cache misses to overlap, few enough that what they bring in
/// is still in the first-level cache when the inserts use it.
const WARM_AHEAD: usize = 32;

/// Keys handed from the reading thread to the inserting one at a time.
const LOAD_BATCH: usize = 512;

/// Keys read and converted, ready to insert: the names one after the other in one buffer
/// (freed at once by the inserting thread instead of one allocation per key crossing threads),
/// each entry with its name's place in it, its expiry and its value.
struct Batch {
    names: Vec<u8>,
    keys: Vec<(std::ops::Range<usize>, Option<u64>, Value)>,
}

impl Batch {
    fn with_capacity() -> Batch {
        Batch {
            names: Vec::with_capacity(LOAD_BATCH * 16),
            keys: Vec::with_capacity(LOAD_BATCH),
        }
    }
}

/// What the reading thread hands the inserting one.
enum Loading {
    /// The file announces this many keys in the chosen database (`RESIZEDB`).
    Reserve(u64),
    Keys(Batch),
}

/// The most keys a `RESIZEDB` hint reserves room for (about 1 GB of table); past it the table
/// grows as keys arrive.
const MAX_RESERVE: u64 = 16 << 20;

/// Loads a whole RDB file into `db`, which should be a fresh keyspace nobody else sees: on
/// `Err` it may hold part of the file and must be dropped. Every key inserted is also handed
/// to `sink` (nothing else is: keys of other databases and empty collections are not).
/// `progress(n)` is called with the number of keys loaded so far, now and then. Errors are
/// messages for `-ERR`.
///
/// Two threads: a scoped thread reads the file and converts values (decoding, LZF, building
/// the value types: most of the allocation), the caller's thread hands them to `sink` and
/// inserts them into `db` (the table's cache misses), batches going over a bounded channel, so
/// memory in flight stays at a few batches. An error on either side stops both.
pub fn load(
    r: impl Read + Send,
    db: &mut Db,
    opts: LoadOptions,
    sink: &mut dyn LoadSink,
    progress: &mut dyn FnMut(u64),
) -> Result<LoadReport, String> {
    let chosen = opts.db.unwrap_or(0);
    let mut report = LoadReport::default();
    let refused = |e: ferrite_rdb::RdbError| format!("RDB file refused, nothing was loaded: {e}");
    let (info, other_db_keys) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Loading>(8);
        let reader = s.spawn(move || {
            let mut other_db_keys = 0u64;
            let mut batch = Batch::with_capacity();
            // The inserting side hung up: it found an error of its own and reports that one.
            let hung_up = || ferrite_rdb::RdbError::Refused("stopped".into());
            // The chosen database's key count, as the file announces it: the inserting side
            // sizes the table once (capped: a forged count must not allocate on its own).
            let hint_tx = tx.clone();
            let resize = |db: u64, keys: u64| {
                if db == chosen {
                    let _ = hint_tx.send(Loading::Reserve(keys));
                }
            };
            let info = file::read_hinted(r, opts.max_string, resize, |e: RdbEntry| {
                if e.db != chosen {
                    if opts.db.is_none() {
                        return Err(ferrite_rdb::RdbError::Refused(format!(
                            "the file has keys in database {} (a tenant has one database: choose which of the file's databases to load with DB <n>)",
                            e.db
                        )));
                    }
                    other_db_keys += 1;
                    return Ok(());
                }
                let value = from_rdb(e.value).map_err(|why| ferrite_rdb::RdbError::AtKey {
                    key: shown(&e.key),
                    source: Box::new(ferrite_rdb::RdbError::Malformed(why)),
                })?;
                let at = batch.names.len();
                batch.names.extend_from_slice(&e.key);
                batch
                    .keys
                    .push((at..batch.names.len(), e.expire_at_ms, value));
                if batch.keys.len() == LOAD_BATCH {
                    tx.send(Loading::Keys(std::mem::replace(
                        &mut batch,
                        Batch::with_capacity(),
                    )))
                    .map_err(|_| hung_up())?;
                }
                Ok(())
            })?;
            if !batch.keys.is_empty() {
                tx.send(Loading::Keys(batch)).map_err(|_| hung_up())?;
            }
            Ok::<_, ferrite_rdb::RdbError>((info, other_db_keys))
        });
        let mut duplicate = None;
        let mut sink_error = None;
        'batches: for message in rx {
            let batch = match message {
                Loading::Reserve(keys) => {
                    sink.expect_keys(keys);
                    let fits = opts.file_size.map_or(u64::MAX, |s| s / MIN_KEY_BYTES);
                    db.reserve(keys.min(MAX_RESERVE).min(fits) as usize);
                    continue;
                }
                Loading::Keys(batch) => batch,
            };
            let mut keys = batch.keys.into_iter();
            let mut chunk = Vec::with_capacity(WARM_AHEAD);
            loop {
                chunk.clear();
                chunk.extend(keys.by_ref().take(WARM_AHEAD));
                if chunk.is_empty() {
                    break;
                }
                db.warm(chunk.iter().map(|(at, ..)| &batch.names[at.clone()]));
                for (at, expire_at, value) in chunk.drain(..) {
                    let key = &batch.names[at];
                    match db.entry_physical(key, 0) {
                        Slot::Occupied(_) => {
                            duplicate = Some(shown(key));
                            break 'batches;
                        }
                        // (An empty collection is not inserted: the sink must not get it
                        // either.)
                        Slot::Vacant(_) if value.is_empty_collection() => continue,
                        Slot::Vacant(v) => {
                            if let Err(e) = sink.key(key, expire_at, &value) {
                                sink_error = Some(e);
                                break 'batches;
                            }
                            v.insert_with_modified(value, expire_at, opts.now_ms)
                        }
                    }
                    report.keys += 1;
                    if report.keys % 65536 == 0 {
                        progress(report.keys);
                    }
                }
            }
        }
        // Leaving the loop drops the receiver: a reader still going stops at its next send.
        let read = reader
            .join()
            .map_err(|_| "RDB file refused, nothing was loaded: the reader failed".to_string())?;
        if let Some(e) = sink_error {
            return Err(e);
        }
        if let Some(key) = duplicate {
            return Err(format!(
                "RDB file refused, nothing was loaded: key '{key}' is in the file twice"
            ));
        }
        read.map_err(refused)
    })?;
    report.other_db_keys = other_db_keys;
    let mut libraries = BTreeMap::new();
    for code in info.functions {
        let Some(name) = library_name(&code) else {
            return Err(
                "RDB file refused, nothing was loaded: a function library has no '#!<engine> name=<name>' first line"
                    .into(),
            );
        };
        if libraries.insert(name.clone(), code).is_some() {
            return Err(format!(
                "RDB file refused, nothing was loaded: function library '{name}' is in the file twice"
            ));
        }
    }
    report.functions = libraries.len() as u64;
    if !libraries.is_empty() {
        db.set_libraries(libraries);
    }
    report.empty_keys_skipped = info.empty_keys_skipped;
    report.version = info.version;
    progress(report.keys);
    Ok(report)
}

/// Entries handed out per step of the copy (each step holds the keyspace lock once).
const WRITE_STEP: usize = 256;

/// Remembers which keys were written, in 16 bytes per key whatever the key's length: two
/// independently keyed SipHash values. A point-in-time copy may hand out a key twice (walked,
/// then as a pre-image; or twice by a walk across a table resize) and redis-server refuses a
/// file with a duplicate key. Two different keys are taken for one with probability about
/// n²/2¹²⁹ (n keys): never, in practice.
struct SeenKeys {
    a: std::collections::hash_map::RandomState,
    b: std::collections::hash_map::RandomState,
    seen: HashSet<u128>,
}

impl SeenKeys {
    fn new() -> Self {
        SeenKeys {
            a: Default::default(),
            b: Default::default(),
            seen: HashSet::new(),
        }
    }

    /// True the first time `key` is seen.
    fn first(&mut self, key: &[u8]) -> bool {
        let hash = |s: &std::collections::hash_map::RandomState| {
            let mut h = s.build_hasher();
            h.write(key);
            h.finish()
        };
        let id = (u128::from(hash(&self.a)) << 64) | u128::from(hash(&self.b));
        self.seen.insert(id)
    }
}

/// Writes a point-in-time copy of a keyspace as a whole RDB file: auxiliary fields, the
/// function `libraries` (at the copy's version), database 0 with `keys_hint` keys (Redis's
/// resize hint), every key the copy hands out once, EOF and checksum. Keys whose expiry passed
/// but that were not reclaimed yet are written with their expiry (redis-server drops them on
/// load). `progress(n)`: keys written so far, now and then. Returns the number of keys written.
/// Values are converted under the keyspace lock one step at a time; the file is written outside
/// it.
pub fn write(
    copy: &mut PointInTimeCopy,
    libraries: &BTreeMap<String, Vec<u8>>,
    keys_hint: u64,
    now_ms: u64,
    out: impl Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, String> {
    let io = |e: ferrite_rdb::RdbError| format!("writing the RDB file failed: {e}");
    let mut w = file::Writer::new(out).map_err(io)?;
    w.aux(b"ferrite-ver", env!("CARGO_PKG_VERSION").as_bytes())
        .map_err(io)?;
    w.aux(b"redis-bits", b"64").map_err(io)?;
    w.aux(b"ctime", (now_ms / 1000).to_string().as_bytes())
        .map_err(io)?;
    w.aux(b"aof-base", b"0").map_err(io)?;
    for code in libraries.values() {
        w.function(code).map_err(io)?;
    }
    w.select_db(0, keys_hint, 0).map_err(io)?;
    let mut seen = SeenKeys::new();
    let mut batch: Vec<(Vec<u8>, Option<u64>, ferrite_rdb::Value)> = Vec::new();
    let mut written = 0u64;
    // The compact entries (most keys) are copied out under the keyspace lock and converted
    // after it, so a step holds the tenant's writers for a `memcpy` per entry; the others are
    // converted under it. Which of the two comes first does not matter: a key handed out twice
    // has the same content both times.
    let mut copied = CopiedEntries::default();
    loop {
        copied.clear();
        let more = copy.step_copied(WRITE_STEP, &mut copied, |key, entry| {
            if seen.first(key) {
                batch.push((key.to_vec(), entry.expire_at(), to_rdb(entry.value())));
            }
        });
        for e in copied.iter() {
            if seen.first(e.key()) {
                batch.push((e.key().to_vec(), e.expire_at(), to_rdb(e.value())));
            }
        }
        for (key, expire_at, value) in batch.drain(..) {
            w.key(&key, expire_at, &value).map_err(io)?;
            written += 1;
        }
        progress(written);
        if !more {
            break;
        }
    }
    w.finish().map_err(io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferrite_storage::Keyspace;

    use super::*;
    use crate::testing::TestDb;

    const LIB: &[u8] = b"#!lua name=mylib\nredis.register_function('f', function() return 1 end)";

    fn fill(t: &mut TestDb) {
        for cmd in [
            "SET s hello",
            "SET n 12345",
            "RPUSH l a b c",
            "SADD set 1 2 3",
            "SADD tags x y",
            "HSET h f v g w",
            "ZADD z 1 a 2.5 b",
            "XADD st 1-1 f v",
            "PEXPIREAT s 4102444800000",
        ] {
            t.run(&cmd.split_whitespace().collect::<Vec<_>>());
        }
    }

    fn file_of(ks: &Arc<Keyspace>) -> Vec<u8> {
        let (mut copy, (keys, libs)) = PointInTimeCopy::open_with(ks, |db| {
            (db.digest().keys(), db.scripting().libraries().clone())
        })
        .unwrap();
        let mut out = Vec::new();
        let n = write(
            &mut copy,
            &libs,
            keys,
            1_700_000_000_000,
            &mut out,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(n, keys);
        out
    }

    fn opts() -> LoadOptions {
        LoadOptions {
            db: None,
            max_string: 1 << 20,
            now_ms: 1_700_000_000_000,
            file_size: None,
        }
    }

    #[test]
    fn a_keyspace_round_trips_with_its_digest_and_functions() {
        let mut t = TestDb::new();
        fill(&mut t);
        let ks = Arc::new(t.keyspace);
        ks.lock().put_library(LIB);
        let before = ks.lock().digest().combined();
        let bytes = file_of(&ks);
        let fresh = Keyspace::new();
        let report = load(
            bytes.as_slice(),
            &mut fresh.lock(),
            opts(),
            &mut NoSink,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(report.keys, 8);
        assert_eq!(report.functions, 1);
        assert_eq!(fresh.lock().digest().combined(), before);
    }

    /// A file with `keys` (db, key) as strings "v".
    fn file_with(keys: &[(u64, &str)]) -> Vec<u8> {
        let mut w = file::Writer::new(Vec::new()).unwrap();
        let mut db = None;
        for &(d, k) in keys {
            if db != Some(d) {
                w.select_db(d, 0, 0).unwrap();
                db = Some(d);
            }
            w.key(
                k.as_bytes(),
                None,
                &ferrite_rdb::Value::String(b"v".to_vec()),
            )
            .unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn other_databases_need_a_choice() {
        let bytes = file_with(&[(0, "a"), (3, "b"), (3, "c")]);
        let fresh = Keyspace::new();
        let e = load(
            bytes.as_slice(),
            &mut fresh.lock(),
            opts(),
            &mut NoSink,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.contains("DB <n>"), "{e}");
        let fresh = Keyspace::new();
        let three = LoadOptions {
            db: Some(3),
            ..opts()
        };
        let r = load(
            bytes.as_slice(),
            &mut fresh.lock(),
            three,
            &mut NoSink,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!((r.keys, r.other_db_keys), (2, 1));
        assert_eq!(fresh.lock().len(), 2);
    }

    #[test]
    fn duplicate_keys_and_nameless_libraries_are_refused() {
        let bytes = file_with(&[(0, "a"), (0, "a")]);
        let e = load(
            bytes.as_slice(),
            &mut Keyspace::new().lock(),
            opts(),
            &mut NoSink,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.contains("key 'a'") && e.contains("twice"), "{e}");
        let mut w = file::Writer::new(Vec::new()).unwrap();
        w.function(b"return 1").unwrap();
        let bytes = w.finish().unwrap();
        let e = load(
            bytes.as_slice(),
            &mut Keyspace::new().lock(),
            opts(),
            &mut NoSink,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.contains("first line"), "{e}");
    }

    #[test]
    fn keys_written_twice_by_the_copy_are_written_once() {
        let mut seen = SeenKeys::new();
        assert!(seen.first(b"k"));
        assert!(!seen.first(b"k"));
        assert!(seen.first(b"k2"));
        // Writes while the copy is open: pre-images come out as well as the walk.
        let mut t = TestDb::new();
        for i in 0..2000 {
            t.run(&["SET".to_string(), format!("k{i}"), format!("v{i}")]);
        }
        let ks = Arc::new(t.keyspace);
        let mut copy = PointInTimeCopy::open(&ks).unwrap();
        let mut out = Vec::new();
        let mut steps = 0;
        let n = write(&mut copy, &BTreeMap::new(), 2000, 0, &mut out, &mut |_| {
            steps += 1;
            // Change keys of every part of the table after each step (some walked already).
            let mut db = ks.lock();
            for i in (0..2000).step_by(97) {
                if let Slot::Occupied(mut o) = db.entry_physical(format!("k{i}").as_bytes(), 0) {
                    o.replace(ferrite_storage::Value::string(b"changed".to_vec()), None);
                }
            }
        })
        .unwrap();
        assert!(steps > 1);
        assert!(copy.pre_images() > 0);
        assert_eq!(n, 2000);
        let fresh = Keyspace::new();
        load(
            out.as_slice(),
            &mut fresh.lock(),
            opts(),
            &mut NoSink,
            &mut |_| {},
        )
        .unwrap();
        let mut db = fresh.lock();
        assert_eq!(db.len(), 2000);
        // The file shows the keyspace as it was when the copy opened.
        for i in (0..2000).step_by(97) {
            let e = db.get(format!("k{i}").as_bytes(), 0).unwrap();
            assert_eq!(
                to_rdb(e.value()),
                ferrite_rdb::Value::String(format!("v{i}").into_bytes())
            );
        }
    }
}
