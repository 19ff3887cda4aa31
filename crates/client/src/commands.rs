//! Typed helpers for common commands on [`Client`]: arguments as bytes or text, replies as Rust
//! types, both RESP2 and RESP3 shapes accepted. Everything else goes through [`Client::cmd`].
//!
//! Text replies must be valid UTF-8 (an error says so otherwise); the `_bytes` variants return
//! raw bytes. Every helper follows redirects like [`Client::cmd`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ferrite_protocol::frame::Frame;

use crate::client::Client;
use crate::error::ClientError;
use crate::value;

/// Expiry for [`SetOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `EX seconds`.
    Seconds(u64),
    /// `PX milliseconds`.
    Millis(u64),
    /// `EXAT unix-seconds`.
    AtSeconds(u64),
    /// `PXAT unix-milliseconds`.
    AtMillis(u64),
    /// `KEEPTTL`.
    KeepTtl,
}

/// When SET writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    /// `NX`: only if the key does not exist.
    IfMissing,
    /// `XX`: only if the key exists.
    IfExists,
}

/// Options of [`Client::set_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    pub expiry: Option<Expiry>,
    pub condition: Option<SetCondition>,
}

impl SetOptions {
    pub fn new() -> SetOptions {
        SetOptions::default()
    }

    /// Expire after `d` (sent as `PX` milliseconds, at least 1).
    pub fn expire_in(mut self, d: Duration) -> SetOptions {
        self.expiry = Some(Expiry::Millis((d.as_millis() as u64).max(1)));
        self
    }

    pub fn expiry(mut self, e: Expiry) -> SetOptions {
        self.expiry = Some(e);
        self
    }

    pub fn only_if_missing(mut self) -> SetOptions {
        self.condition = Some(SetCondition::IfMissing);
        self
    }

    pub fn only_if_exists(mut self) -> SetOptions {
        self.condition = Some(SetCondition::IfExists);
        self
    }

    fn push_args(&self, args: &mut Vec<Vec<u8>>) {
        match self.condition {
            Some(SetCondition::IfMissing) => args.push(b"NX".to_vec()),
            Some(SetCondition::IfExists) => args.push(b"XX".to_vec()),
            None => {}
        }
        let (word, n): (&[u8], Option<u64>) = match self.expiry {
            None => return,
            Some(Expiry::Seconds(n)) => (b"EX", Some(n)),
            Some(Expiry::Millis(n)) => (b"PX", Some(n)),
            Some(Expiry::AtSeconds(n)) => (b"EXAT", Some(n)),
            Some(Expiry::AtMillis(n)) => (b"PXAT", Some(n)),
            Some(Expiry::KeepTtl) => (b"KEEPTTL", None),
        };
        args.push(word.to_vec());
        if let Some(n) = n {
            args.push(n.to_string().into_bytes());
        }
    }
}

/// A key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist.
    Missing,
    /// The key exists and does not expire.
    Persistent,
    /// The key expires after this long.
    ExpiresIn(Duration),
}

fn bytes(a: impl AsRef<[u8]>) -> Vec<u8> {
    a.as_ref().to_vec()
}

/// `name` followed by the arguments.
fn argv<'a>(name: &str, rest: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut v = vec![name.as_bytes().to_vec()];
    v.extend(rest.into_iter().map(<[u8]>::to_vec));
    v
}

fn text(f: &Frame) -> Result<String, ClientError> {
    match value::as_bytes(f)? {
        Some(b) => utf8(b),
        None => Err(ClientError::Unexpected(
            "nil where a string was expected".into(),
        )),
    }
}

fn opt_text(f: &Frame) -> Result<Option<String>, ClientError> {
    value::as_bytes(f)?.map(utf8).transpose()
}

fn utf8(b: Vec<u8>) -> Result<String, ClientError> {
    String::from_utf8(b).map_err(|e| {
        ClientError::Unexpected(format!(
            "reply is not valid UTF-8 ({e}); use the _bytes variant of this helper"
        ))
    })
}

fn texts(f: &Frame) -> Result<Vec<String>, ClientError> {
    value::as_array(f)?.iter().map(text).collect()
}

fn is_ok(f: &Frame) -> Result<(), ClientError> {
    match f {
        Frame::SimpleString { data, .. } if data.as_ref() == b"OK" => Ok(()),
        other => Err(ClientError::Unexpected(format!(
            "expected OK, got {other:?}"
        ))),
    }
}

impl Client {
    async fn run_argv(&mut self, args: Vec<Vec<u8>>) -> Result<Frame, ClientError> {
        self.cmd(&args).await
    }

    /// `PING`.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.cmd(&["PING"]).await.map(|_| ())
    }

    /// `GET`: the value as text, None when the key is missing.
    pub async fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<String>, ClientError> {
        opt_text(&self.run_argv(argv("GET", [key.as_ref()])).await?)
    }

    /// `GET`: the value as bytes.
    pub async fn get_bytes(
        &mut self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        value::as_bytes(&self.run_argv(argv("GET", [key.as_ref()])).await?)
    }

    /// `SET key value`.
    pub async fn set(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        is_ok(
            &self
                .run_argv(argv("SET", [key.as_ref(), value.as_ref()]))
                .await?,
        )
    }

    /// `SET key value [NX|XX] [EX|PX|EXAT|PXAT n|KEEPTTL]`: true when the value was written
    /// (false when NX/XX said no).
    pub async fn set_with(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        opts: SetOptions,
    ) -> Result<bool, ClientError> {
        let mut args = argv("SET", [key.as_ref(), value.as_ref()]);
        opts.push_args(&mut args);
        match self.run_argv(args).await? {
            Frame::Null => Ok(false),
            f => is_ok(&f).map(|_| true),
        }
    }

    /// `DEL`: how many of the keys existed.
    pub async fn del<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<i64, ClientError> {
        value::as_int(
            &self
                .run_argv(argv("DEL", keys.iter().map(AsRef::as_ref)))
                .await?,
        )
    }

    /// `EXISTS`: how many of the keys exist (a key named twice counts twice).
    pub async fn exists<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<i64, ClientError> {
        value::as_int(
            &self
                .run_argv(argv("EXISTS", keys.iter().map(AsRef::as_ref)))
                .await?,
        )
    }

    /// `PEXPIRE` (millisecond precision): false when the key does not exist.
    pub async fn expire(
        &mut self,
        key: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<bool, ClientError> {
        let ms = ttl.as_millis().to_string();
        let n = value::as_int(
            &self
                .run_argv(argv("PEXPIRE", [key.as_ref(), ms.as_bytes()]))
                .await?,
        )?;
        Ok(n == 1)
    }

    /// `PERSIST`: false when the key is missing or had no expiry.
    pub async fn persist(&mut self, key: impl AsRef<[u8]>) -> Result<bool, ClientError> {
        Ok(value::as_int(&self.run_argv(argv("PERSIST", [key.as_ref()])).await?)? == 1)
    }

    /// `PTTL` (millisecond precision), as a [`Ttl`].
    pub async fn ttl(&mut self, key: impl AsRef<[u8]>) -> Result<Ttl, ClientError> {
        match value::as_int(&self.run_argv(argv("PTTL", [key.as_ref()])).await?)? {
            -2 => Ok(Ttl::Missing),
            -1 => Ok(Ttl::Persistent),
            ms if ms >= 0 => Ok(Ttl::ExpiresIn(Duration::from_millis(ms as u64))),
            other => Err(ClientError::Unexpected(format!("PTTL returned {other}"))),
        }
    }

    /// `INCR`: the new value.
    pub async fn incr(&mut self, key: impl AsRef<[u8]>) -> Result<i64, ClientError> {
        value::as_int(&self.run_argv(argv("INCR", [key.as_ref()])).await?)
    }

    /// `INCRBY`: the new value.
    pub async fn incrby(&mut self, key: impl AsRef<[u8]>, by: i64) -> Result<i64, ClientError> {
        let by = by.to_string();
        value::as_int(
            &self
                .run_argv(argv("INCRBY", [key.as_ref(), by.as_bytes()]))
                .await?,
        )
    }

    /// `MGET`: one optional value per key, in order.
    pub async fn mget<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<Vec<Option<String>>, ClientError> {
        let f = self
            .run_argv(argv("MGET", keys.iter().map(AsRef::as_ref)))
            .await?;
        value::as_array(&f)?.iter().map(opt_text).collect()
    }

    /// `MSET`.
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        pairs: &[(K, V)],
    ) -> Result<(), ClientError> {
        let args = argv(
            "MSET",
            pairs.iter().flat_map(|(k, v)| [k.as_ref(), v.as_ref()]),
        );
        is_ok(&self.run_argv(args).await?)
    }

    /// `HSET key field value [field value ...]`: how many fields were new.
    pub async fn hset<F: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        key: impl AsRef<[u8]>,
        fields: &[(F, V)],
    ) -> Result<i64, ClientError> {
        let key = bytes(key);
        let args = argv(
            "HSET",
            std::iter::once(key.as_slice())
                .chain(fields.iter().flat_map(|(f, v)| [f.as_ref(), v.as_ref()])),
        );
        value::as_int(&self.run_argv(args).await?)
    }

    /// `HGET`.
    pub async fn hget(
        &mut self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
    ) -> Result<Option<String>, ClientError> {
        opt_text(
            &self
                .run_argv(argv("HGET", [key.as_ref(), field.as_ref()]))
                .await?,
        )
    }

    /// `HGETALL` (a RESP3 map or a RESP2 flat array).
    pub async fn hgetall(
        &mut self,
        key: impl AsRef<[u8]>,
    ) -> Result<HashMap<String, String>, ClientError> {
        let f = self.run_argv(argv("HGETALL", [key.as_ref()])).await?;
        value::as_pairs(&f)?
            .into_iter()
            .map(|(k, v)| Ok((k, text(&v)?)))
            .collect()
    }

    /// `LPUSH`: the list's new length.
    pub async fn lpush<V: AsRef<[u8]>>(
        &mut self,
        key: impl AsRef<[u8]>,
        values: &[V],
    ) -> Result<i64, ClientError> {
        self.push("LPUSH", key.as_ref(), values).await
    }

    /// `RPUSH`: the list's new length.
    pub async fn rpush<V: AsRef<[u8]>>(
        &mut self,
        key: impl AsRef<[u8]>,
        values: &[V],
    ) -> Result<i64, ClientError> {
        self.push("RPUSH", key.as_ref(), values).await
    }

    async fn push<V: AsRef<[u8]>>(
        &mut self,
        name: &str,
        key: &[u8],
        values: &[V],
    ) -> Result<i64, ClientError> {
        let args = argv(
            name,
            std::iter::once(key).chain(values.iter().map(AsRef::as_ref)),
        );
        value::as_int(&self.run_argv(args).await?)
    }

    /// `LRANGE key start stop` (inclusive, negative counts from the end).
    pub async fn lrange(
        &mut self,
        key: impl AsRef<[u8]>,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, ClientError> {
        let (a, b) = (start.to_string(), stop.to_string());
        texts(
            &self
                .run_argv(argv("LRANGE", [key.as_ref(), a.as_bytes(), b.as_bytes()]))
                .await?,
        )
    }

    /// `SADD`: how many members were new.
    pub async fn sadd<M: AsRef<[u8]>>(
        &mut self,
        key: impl AsRef<[u8]>,
        members: &[M],
    ) -> Result<i64, ClientError> {
        let key = bytes(key);
        let args = argv(
            "SADD",
            std::iter::once(key.as_slice()).chain(members.iter().map(AsRef::as_ref)),
        );
        value::as_int(&self.run_argv(args).await?)
    }

    /// `SMEMBERS` (a RESP3 set or a RESP2 array).
    pub async fn smembers(
        &mut self,
        key: impl AsRef<[u8]>,
    ) -> Result<HashSet<String>, ClientError> {
        Ok(
            texts(&self.run_argv(argv("SMEMBERS", [key.as_ref()])).await?)?
                .into_iter()
                .collect(),
        )
    }

    /// `ZADD key score member [score member ...]`: how many members were new.
    pub async fn zadd<M: AsRef<[u8]>>(
        &mut self,
        key: impl AsRef<[u8]>,
        members: &[(f64, M)],
    ) -> Result<i64, ClientError> {
        let scores: Vec<String> = members
            .iter()
            .map(|(s, _)| ferrite_protocol::number::format_double(*s))
            .collect();
        let key = bytes(key);
        let args = argv(
            "ZADD",
            std::iter::once(key.as_slice()).chain(
                scores
                    .iter()
                    .zip(members)
                    .flat_map(|(s, (_, m))| [s.as_bytes(), m.as_ref()]),
            ),
        );
        value::as_int(&self.run_argv(args).await?)
    }

    /// `ZRANGE key start stop` (by rank).
    pub async fn zrange(
        &mut self,
        key: impl AsRef<[u8]>,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, ClientError> {
        let (a, b) = (start.to_string(), stop.to_string());
        texts(
            &self
                .run_argv(argv("ZRANGE", [key.as_ref(), a.as_bytes(), b.as_bytes()]))
                .await?,
        )
    }

    /// `ZRANGE key start stop WITHSCORES`: (member, score) pairs (RESP3 nested pairs or a
    /// RESP2 flat array).
    pub async fn zrange_withscores(
        &mut self,
        key: impl AsRef<[u8]>,
        start: i64,
        stop: i64,
    ) -> Result<Vec<(String, f64)>, ClientError> {
        let (a, b) = (start.to_string(), stop.to_string());
        let f = self
            .run_argv(argv(
                "ZRANGE",
                [key.as_ref(), a.as_bytes(), b.as_bytes(), b"WITHSCORES"],
            ))
            .await?;
        let items = value::as_array(&f)?;
        let nested = items.iter().all(|i| matches!(i, Frame::Array { .. }));
        if nested {
            items
                .iter()
                .map(|pair| match value::as_array(pair)?.as_slice() {
                    [m, s] => Ok((text(m)?, value::as_f64(s)?)),
                    _ => Err(ClientError::Unexpected(format!("{pair:?}"))),
                })
                .collect()
        } else if items.len() % 2 == 0 {
            items
                .chunks(2)
                .map(|p| Ok((text(&p[0])?, value::as_f64(&p[1])?)))
                .collect()
        } else {
            Err(ClientError::Unexpected(format!("{f:?}")))
        }
    }

    /// `ZSCORE`.
    pub async fn zscore(
        &mut self,
        key: impl AsRef<[u8]>,
        member: impl AsRef<[u8]>,
    ) -> Result<Option<f64>, ClientError> {
        match self
            .run_argv(argv("ZSCORE", [key.as_ref(), member.as_ref()]))
            .await?
        {
            Frame::Null => Ok(None),
            f => value::as_f64(&f).map(Some),
        }
    }

    /// `DBSIZE`: keys of this connection's tenant.
    pub async fn dbsize(&mut self) -> Result<i64, ClientError> {
        value::as_int(&self.cmd(&["DBSIZE"]).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::{Expiry, SetOptions};
    use std::time::Duration;

    fn rendered(o: SetOptions) -> Vec<String> {
        let mut v = Vec::new();
        o.push_args(&mut v);
        v.into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn set_options_render_like_redis() {
        assert!(rendered(SetOptions::new()).is_empty());
        assert_eq!(
            rendered(
                SetOptions::new()
                    .only_if_missing()
                    .expiry(Expiry::Seconds(10))
            ),
            ["NX", "EX", "10"]
        );
        assert_eq!(
            rendered(SetOptions::new().expire_in(Duration::from_micros(10))),
            ["PX", "1"]
        );
        assert_eq!(
            rendered(SetOptions::new().only_if_exists().expiry(Expiry::KeepTtl)),
            ["XX", "KEEPTTL"]
        );
    }
}
