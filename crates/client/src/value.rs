//! Conversions from reply frames to Rust values.

use ferrite_protocol::frame::{Frame, frame_text};

use crate::error::ClientError;

fn unexpected(f: &Frame) -> ClientError {
    ClientError::Unexpected(format!("{f:?}"))
}

/// Text of a string-like reply.
pub fn as_string(f: &Frame) -> Result<String, ClientError> {
    frame_text(f).ok_or_else(|| unexpected(f))
}

/// Optional text (null → None).
pub fn as_opt_string(f: &Frame) -> Result<Option<String>, ClientError> {
    match f {
        Frame::Null => Ok(None),
        other => as_string(other).map(Some),
    }
}

/// Raw bytes of a string-like reply.
pub fn as_bytes(f: &Frame) -> Result<Option<Vec<u8>>, ClientError> {
    match f {
        Frame::Null => Ok(None),
        Frame::BlobString { data, .. } | Frame::SimpleString { data, .. } => {
            Ok(Some(data.to_vec()))
        }
        other => Err(unexpected(other)),
    }
}

pub fn as_int(f: &Frame) -> Result<i64, ClientError> {
    match f {
        Frame::Number { data, .. } => Ok(*data),
        Frame::Boolean { data, .. } => Ok(i64::from(*data)),
        other => as_string(other)?.parse().map_err(|_| unexpected(other)),
    }
}

pub fn as_f64(f: &Frame) -> Result<f64, ClientError> {
    match f {
        Frame::Double { data, .. } => Ok(*data),
        Frame::Number { data, .. } => Ok(*data as f64),
        other => as_string(other)?.parse().map_err(|_| unexpected(other)),
    }
}

/// Elements of an array, set or push reply.
pub fn as_array(f: &Frame) -> Result<Vec<Frame>, ClientError> {
    match f {
        Frame::Array { data, .. } | Frame::Push { data, .. } => Ok(data.clone()),
        Frame::Set { data, .. } => Ok(data.iter().cloned().collect()),
        Frame::Null => Ok(Vec::new()),
        other => Err(unexpected(other)),
    }
}

/// A map reply (RESP3) or a flat field/value array (RESP2) as ordered pairs of text.
pub fn as_pairs(f: &Frame) -> Result<Vec<(String, Frame)>, ClientError> {
    match f {
        Frame::Map { data, .. } => data
            .iter()
            .map(|(k, v)| Ok((as_string(k)?, v.clone())))
            .collect(),
        Frame::Array { data, .. } => {
            if data.len() % 2 != 0 {
                return Err(unexpected(f));
            }
            data.chunks(2)
                .map(|p| Ok((as_string(&p[0])?, p[1].clone())))
                .collect()
        }
        other => Err(unexpected(other)),
    }
}

/// Renders any reply as display text (numbers, strings, nested values), for logs and CLIs.
pub fn display(f: &Frame) -> String {
    match f {
        Frame::Null => "(nil)".into(),
        Frame::Number { data, .. } => data.to_string(),
        Frame::Double { data, .. } => ferrite_protocol::number::format_double(*data),
        Frame::Boolean { data, .. } => data.to_string(),
        Frame::Array { data, .. } | Frame::Push { data, .. } => {
            let items: Vec<String> = data.iter().map(display).collect();
            format!("[{}]", items.join(", "))
        }
        Frame::Set { data, .. } => {
            let items: Vec<String> = data.iter().map(display).collect();
            format!("{{{}}}", items.join(", "))
        }
        Frame::Map { data, .. } => {
            let items: Vec<String> = data
                .iter()
                .map(|(k, v)| format!("{}: {}", display(k), display(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => frame_text(other).unwrap_or_else(|| format!("{other:?}")),
    }
}

/// The value of `name` among a map reply's pairs (see [`as_pairs`]).
pub fn field<'a>(pairs: &'a [(String, Frame)], name: &str) -> Option<&'a Frame> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// An integer field of a map reply.
pub fn field_int(pairs: &[(String, Frame)], name: &str) -> Option<i64> {
    field(pairs, name).and_then(|v| as_int(v).ok())
}

/// A text field of a map reply.
pub fn field_str(pairs: &[(String, Frame)], name: &str) -> Option<String> {
    field(pairs, name).and_then(|v| as_string(v).ok())
}
