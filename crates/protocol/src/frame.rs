//! Full RESP2/RESP3 reply decoding on the `redis-protocol` crate, for the client side.
//!
//! Servers answer with every RESP3 type (maps, sets, doubles, pushes, verbatim strings...), which is
//! where a complete decoder earns its keep; requests, being flat arrays, use [`crate::request`].

use bytes::BytesMut;
pub use redis_protocol::resp3::types::{BytesFrame as Frame, FrameKind};

use crate::request::ProtocolError;

/// Deepest nesting accepted from a peer; the decoder recurses per level.
const MAX_DEPTH: usize = 64;

/// Decodes one reply (RESP2 replies are valid RESP3) from the front of `buf`, consuming it.
pub fn decode_reply(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if !is_resp3_type(first) {
        return Err(ProtocolError(reply_type_error(first)));
    }
    check_depth(buf)?;
    match redis_protocol::resp3::decode::complete::decode_bytes_mut(buf) {
        Ok(Some((frame, _, _))) => Ok(Some(server_order(frame))),
        Ok(None) => Ok(None),
        Err(e) => {
            // The decoder's details can embed a Rust Debug value ("parse_as: ParseIntError {
            // kind: InvalidDigit }"): users get its words, not the struct.
            let d = e.details();
            let d = d.split('{').next().unwrap_or("").trim_end();
            let d = match d {
                t if t.contains("ParseIntError") || t.contains("ParseFloatError") => {
                    "malformed number"
                }
                t => t,
            };
            Err(ProtocolError(format!("invalid reply: {d}")))
        }
    }
}

/// Whether `b` starts a RESP2 or RESP3 value.
fn is_resp3_type(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b','
            | b'#'
            | b'('
            | b'!'
            | b'='
            | b'%'
            | b'~'
            | b'|'
            | b'>'
    )
}

/// What a reply that does not start with a type byte is reported as, in redis-cli's words: the
/// usual sign of a peer that is not a Redis-protocol server (e.g. `got "H"` from an HTTP server).
pub fn reply_type_error(b: u8) -> String {
    let shown = match b {
        b'"' => "\\\"".to_string(),
        b'\\' => "\\\\".to_string(),
        0x20..=0x7e => (b as char).to_string(),
        b'\n' => "\\n".to_string(),
        b'\r' => "\\r".to_string(),
        b'\t' => "\\t".to_string(),
        _ => format!("\\x{b:02x}"),
    };
    format!("got \"{shown}\" as reply type byte")
}

/// Puts map entries back in the order the server sent them: the `redis-protocol` decoder (6.x)
/// inserts them last to first, and users of maps (STATUS fields read top-down, HELLO) expect the
/// server's order.
fn server_order(f: Frame) -> Frame {
    match f {
        Frame::Map { data, attributes } => Frame::Map {
            data: data
                .into_iter()
                .rev()
                .map(|(k, v)| (k, server_order(v)))
                .collect(),
            attributes,
        },
        Frame::Array { data, attributes } => Frame::Array {
            data: data.into_iter().map(server_order).collect(),
            attributes,
        },
        Frame::Push { data, attributes } => Frame::Push {
            data: data.into_iter().map(server_order).collect(),
            attributes,
        },
        other => other,
    }
}

/// Refuses pathological nesting before handing the buffer to the recursive decoder. Counts nested
/// aggregate headers at the start of the buffer only (the common attack shape); well-formed
/// replies from Ferrite nest at most a few levels.
fn check_depth(buf: &[u8]) -> Result<(), ProtocolError> {
    let mut depth = 0;
    let mut pos = 0;
    while let Some(&b) = buf.get(pos) {
        if !matches!(b, b'*' | b'%' | b'~' | b'>' | b'|') {
            break;
        }
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(ProtocolError("reply nests too deeply".into()));
        }
        match buf[pos..].iter().position(|&c| c == b'\n') {
            Some(nl) => pos += nl + 1,
            None => break,
        }
    }
    Ok(())
}

/// Text of a string-like or error frame, for convenience in clients and tests.
pub fn frame_text(frame: &Frame) -> Option<String> {
    match frame {
        Frame::SimpleString { data, .. }
        | Frame::BlobString { data, .. }
        | Frame::BlobError { data, .. }
        | Frame::BigNumber { data, .. }
        | Frame::VerbatimString { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
        Frame::SimpleError { data, .. } => Some(data.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_is_not_a_redis_server_is_named_plainly() {
        let mut http = BytesMut::from(&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..]);
        assert_eq!(
            decode_reply(&mut http).unwrap_err().0,
            "got \"H\" as reply type byte"
        );
        let mut binary = BytesMut::from(&b"\x16\x03\x01"[..]);
        assert_eq!(
            decode_reply(&mut binary).unwrap_err().0,
            "got \"\\x16\" as reply type byte"
        );
        // A known type with a malformed body: the decoder's own words, no Debug structs.
        let mut bad = BytesMut::from(&b":12x\r\n"[..]);
        let e = decode_reply(&mut bad).unwrap_err().0;
        assert!(e.starts_with("invalid reply: ") && !e.contains('{'), "{e}");
    }
}
