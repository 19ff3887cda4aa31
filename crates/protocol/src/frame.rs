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
    if buf.is_empty() {
        return Ok(None);
    }
    check_depth(buf)?;
    match redis_protocol::resp3::decode::complete::decode_bytes_mut(buf) {
        Ok(Some((frame, _, _))) => Ok(Some(server_order(frame))),
        Ok(None) => Ok(None),
        Err(e) => Err(ProtocolError(format!("invalid reply: {e:?}"))),
    }
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
