//! DUMP/RESTORE payloads: `<type><value><RDB version: u16 LE><CRC64: u64 LE>`, the CRC covering
//! everything before it.

use crate::{Decoder, Encoder, MAX_READ_VERSION, RDB_VERSION, RdbError, Result, Value, crc64};

/// Why a payload was refused, in the two classes Redis answers differently.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The footer is missing, the version is newer than this reader, or the CRC differs
    /// (Redis: "DUMP payload version or checksum are wrong").
    #[error("DUMP payload version or checksum are wrong")]
    Footer,
    /// The value cannot be read (Redis: "Bad data format").
    #[error("Bad data format: {0}")]
    Value(#[from] RdbError),
}

/// Serializes a value as DUMP does.
pub fn dump(v: &Value) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = e.write_value(v);
    let mut out = e.into_inner();
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a payload's footer (version and CRC) and reads its value; strings longer than
/// `max_string` are refused.
pub fn restore(payload: &[u8], max_string: u64) -> std::result::Result<Value, PayloadError> {
    if payload.len() < 10 {
        return Err(PayloadError::Footer);
    }
    let (body, footer) = payload.split_at(payload.len() - 10);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    if version > MAX_READ_VERSION {
        return Err(PayloadError::Footer);
    }
    let crc = u64::from_le_bytes(footer[2..10].try_into().map_err(|_| PayloadError::Footer)?);
    if crc64(&payload[..payload.len() - 8]) != crc {
        return Err(PayloadError::Footer);
    }
    Ok(read_value(body, max_string)?)
}

fn read_value(body: &[u8], max_string: u64) -> Result<Value> {
    let mut d = Decoder::new(body, max_string);
    let t = d.read_type()?;
    d.read_value(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_payloads() {
        // DUMP of SET k hello on redis-server 7.0.
        let hello = [
            0, 5, 104, 101, 108, 108, 111, 10, 0, 99, 114, 223, 118, 101, 52, 32, 10,
        ];
        assert_eq!(dump(&Value::String(b"hello".to_vec())), hello);
        assert_eq!(
            restore(&hello, u64::MAX).unwrap(),
            Value::String(b"hello".to_vec())
        );
        let mut bad = hello;
        bad[3] ^= 1;
        assert!(matches!(restore(&bad, u64::MAX), Err(PayloadError::Footer)));
        assert!(matches!(
            restore(&hello[..9], u64::MAX),
            Err(PayloadError::Footer)
        ));
        // SET lz <100 x 'a'>: Redis stores it LZF-compressed.
        let lz = [
            0, 195, 9, 64, 100, 1, 97, 97, 224, 87, 0, 1, 97, 97, 10, 0, 232, 163, 181, 7, 176,
            109, 242, 113,
        ];
        assert_eq!(
            restore(&lz, u64::MAX).unwrap(),
            Value::String(vec![b'a'; 100])
        );
    }

    #[test]
    fn limits_are_enforced() {
        let big = dump(&Value::String(vec![b'x'; 1000]));
        assert!(matches!(
            restore(&big, 999),
            Err(PayloadError::Value(RdbError::TooLarge(1000)))
        ));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            bytes().prop_map(Value::String),
            proptest::collection::vec(bytes(), 1..20).prop_map(Value::List),
            proptest::collection::btree_set(bytes(), 1..20)
                .prop_map(|s| Value::Set(s.into_iter().collect())),
            proptest::collection::btree_map(bytes(), -1e9f64..1e9, 1..20)
                .prop_map(|m| Value::ZSet(m.into_iter().collect())),
            proptest::collection::btree_map(bytes(), bytes(), 1..20)
                .prop_map(|m| Value::Hash(m.into_iter().collect())),
        ]
    }

    proptest! {
        #[test]
        fn dump_restore_round_trips(v in value()) {
            prop_assert_eq!(restore(&dump(&v), u64::MAX).unwrap(), v);
        }

        /// Arbitrary bytes, with a valid footer so the decoder itself is exercised: an error,
        /// never a panic or a runaway allocation.
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut p = body;
            p.extend_from_slice(&RDB_VERSION.to_le_bytes());
            let crc = crc64(&p);
            p.extend_from_slice(&crc.to_le_bytes());
            let _ = restore(&p, 1 << 20);
        }

        /// Valid payloads with one byte changed and the CRC fixed up.
        #[test]
        fn mutated_payloads_never_panic(v in value(), at in any::<usize>(), byte in any::<u8>()) {
            let mut p = dump(&v);
            let body_len = p.len() - 10;
            p[at % body_len] = byte;
            let crc = crc64(&p[..p.len() - 8]);
            let n = p.len();
            p[n - 8..].copy_from_slice(&crc.to_le_bytes());
            let _ = restore(&p, 1 << 20);
        }
    }
}
