//! RDB files written by real Redis versions (copied from Redis's own test assets, BSD-3-Clause,
//! see tests/data/README.md): every old encoding reads back to the values Redis's tests expect.

use std::collections::BTreeMap;

use ferrite_rdb::Value;
use ferrite_rdb::file::{self, Entry};

fn load(name: &str) -> (file::FileInfo, BTreeMap<String, Value>) {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).expect("test file");
    let mut keys = BTreeMap::new();
    let info = file::read(bytes.as_slice(), 1 << 20, |e: Entry| {
        keys.insert(String::from_utf8_lossy(&e.key).into_owned(), e.value);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    (info, keys)
}

fn strs(v: &[Vec<u8>]) -> Vec<String> {
    v.iter()
        .map(|x| String::from_utf8_lossy(x).into_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn encodings_rdb_version_4() {
    // Redis's tests/integration/rdb.tcl "RDB encoding loading test" lists these contents.
    let (info, k) = load("encodings.rdb");
    assert_eq!(info.version, 4);
    assert_eq!(k.len(), 13);
    assert_eq!(k["compressible"], Value::String(vec![b'a'; 137]));
    assert_eq!(k["number"], Value::String(b"10".to_vec()));
    assert_eq!(k["string"], Value::String(b"Hello World".to_vec()));
    let Value::List(l) = &k["list_zipped"] else {
        panic!()
    };
    assert_eq!(
        strs(l),
        ["1", "2", "3", "a", "b", "c", "100000", "6000000000"]
    );
    let Value::List(l) = &k["list"] else { panic!() };
    assert_eq!(l.len(), 24);
    let Value::Set(s) = &k["set_zipped_3"] else {
        panic!()
    };
    assert_eq!(
        sorted(strs(s)),
        sorted(
            [
                "1000000000",
                "2000000000",
                "3000000000",
                "4000000000",
                "5000000000",
                "6000000000"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    let Value::Set(s) = &k["set_zipped_2"] else {
        panic!()
    };
    assert_eq!(sorted(strs(s)), ["100000", "200000", "300000", "400000"]);
    let Value::Set(s) = &k["set"] else { panic!() };
    assert_eq!(s.len(), 8);
    let Value::Hash(h) = &k["hash_zipped"] else {
        panic!()
    };
    assert_eq!(h.len(), 3);
    let Value::Hash(h) = &k["hash"] else { panic!() };
    assert!(h.contains(&(b"eee".to_vec(), b"5000000000".to_vec())));
    let Value::ZSet(z) = &k["zset_zipped"] else {
        panic!()
    };
    assert_eq!(
        z,
        &vec![
            (b"a".to_vec(), 1.0),
            (b"b".to_vec(), 2.0),
            (b"c".to_vec(), 3.0)
        ]
    );
    let Value::ZSet(z) = &k["zset"] else { panic!() };
    assert!(z.contains(&(b"bbbb".to_vec(), 5000000000.0)));
    assert_eq!(z.len(), 12);
}

#[test]
fn zipmap_ziplist_quicklist_and_listpack_files() {
    let (_, k) = load("hash-zipmap.rdb");
    assert_eq!(
        k["hash"],
        Value::Hash(vec![
            (b"f1".to_vec(), b"v1".to_vec()),
            (b"f2".to_vec(), b"v2".to_vec())
        ])
    );
    let (info, k) = load("hash-ziplist.rdb");
    assert!(info.checksum_verified);
    let Value::Hash(h) = &k["hash"] else { panic!() };
    assert_eq!(h.len(), 2);
    let (_, k) = load("list-quicklist.rdb");
    assert_eq!(k["x"], Value::String(b"7".to_vec()));
    let Value::List(l) = &k["list"] else { panic!() };
    assert_eq!(strs(l)[0], "7");
    let (_, k) = load("zset-ziplist.rdb");
    let Value::ZSet(z) = &k["zset"] else { panic!() };
    assert_eq!(z.len(), 2);
}

#[test]
fn a_corrupted_file_is_refused() {
    let path = format!("{}/tests/data/hash-ziplist.rdb", env!("CARGO_MANIFEST_DIR"));
    let mut bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    bytes[n - 12] ^= 0x55;
    assert!(file::read(bytes.as_slice(), 1 << 20, |_| Ok(())).is_err());
}
