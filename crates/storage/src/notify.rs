//! Keyspace notifications (Redis's `notify-keyspace-events`), per keyspace.
//!
//! A keyspace has one [`KeyEvents`], shared between the [`crate::Keyspace`] (so the setting can
//! change without taking the lock) and its [`Db`]. While it is on, the write funnel logs which
//! keys each command created, modified or deleted ([`KeyChange`]); after the command the
//! execution path (`ferrite_commands::Ctx::run`) turns that log and the request into Redis's
//! events (`set`, `lpush`, `del`, `rename_from`, ...) and hands them to [`Db::emit`]. Expired
//! keys are announced by the funnel itself (`expired`). The events are published, still under
//! the lock and so in the order the changes happened, on Redis's channels for database 0:
//! `__keyspace@0__:<key>` (message: the event) with `K`, `__keyevent@0__:<event>` (message: the
//! key) with `E`. Off (the default) it costs one relaxed load per change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use parking_lot::RwLock;

use crate::keyspace::Db;

/// Redis's notification classes (`NOTIFY_*`), as bits.
pub mod class {
    pub const KEYSPACE: u32 = 1 << 0; // K
    pub const KEYEVENT: u32 = 1 << 1; // E
    pub const GENERIC: u32 = 1 << 2; // g
    pub const STRING: u32 = 1 << 3; // $
    pub const LIST: u32 = 1 << 4; // l
    pub const SET: u32 = 1 << 5; // s
    pub const HASH: u32 = 1 << 6; // h
    pub const ZSET: u32 = 1 << 7; // z
    pub const EXPIRED: u32 = 1 << 8; // x
    pub const EVICTED: u32 = 1 << 9; // e
    pub const STREAM: u32 = 1 << 10; // t
    pub const KEY_MISS: u32 = 1 << 11; // m
    pub const MODULE: u32 = 1 << 13; // d
    pub const NEW: u32 = 1 << 14; // n
    /// `A`: every class but `m` and `n`.
    pub const ALL: u32 =
        GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;
}

/// Parses a `notify-keyspace-events` value (Redis's keyspaceEventsStringToFlags).
pub fn parse_flags(s: &str) -> Result<u32, String> {
    use class::*;
    let mut flags = 0;
    for c in s.chars() {
        flags |= match c {
            'A' => ALL,
            'g' => GENERIC,
            '$' => STRING,
            'l' => LIST,
            's' => SET,
            'h' => HASH,
            'z' => ZSET,
            'x' => EXPIRED,
            'e' => EVICTED,
            'K' => KEYSPACE,
            'E' => KEYEVENT,
            't' => STREAM,
            'm' => KEY_MISS,
            'd' => MODULE,
            'n' => NEW,
            _ => return Err("Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".into()),
        };
    }
    Ok(flags)
}

/// Formats flags as CONFIG GET shows them (Redis's keyspaceEventsFlagsToString).
pub fn format_flags(flags: u32) -> String {
    use class::*;
    let mut s = String::new();
    if flags & ALL == ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
            (NEW, 'n'),
        ] {
            if flags & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// Where the events go: the server publishes them on its pub/sub channels.
pub trait Publisher: Send + Sync {
    fn publish(&self, channel: &[u8], message: &[u8]);
}

/// What the funnel saw happen to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    Created,
    Modified,
    Deleted,
}

/// A keyspace's notification setting and where its events go.
#[derive(Default)]
pub struct KeyEvents {
    flags: AtomicU32,
    /// Some event would be published: a channel kind (K/E) and a class are on, and a
    /// publisher is attached.
    active: AtomicBool,
    publisher: RwLock<Option<Arc<dyn Publisher>>>,
}

impl KeyEvents {
    /// The `notify-keyspace-events` flags.
    pub fn flags(&self) -> u32 {
        self.flags.load(Relaxed)
    }

    /// Sets the flags and the publisher (taken effect for the next change).
    pub fn configure(&self, flags: u32, publisher: Option<Arc<dyn Publisher>>) {
        let mut p = self.publisher.write();
        *p = publisher;
        self.flags.store(flags, Relaxed);
        let on = flags & (class::KEYSPACE | class::KEYEVENT) != 0
            && flags & !(class::KEYSPACE | class::KEYEVENT) != 0
            && p.is_some();
        self.active.store(on, Relaxed);
    }

    #[inline]
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Publishes one event if its class is on.
    pub fn emit(&self, class: u32, event: &str, key: &[u8]) {
        let flags = self.flags();
        if flags & class == 0 {
            return;
        }
        let Some(p) = self.publisher.read().clone() else {
            return;
        };
        if flags & class::KEYSPACE != 0 {
            let mut ch = Vec::with_capacity(15 + key.len());
            ch.extend_from_slice(b"__keyspace@0__:");
            ch.extend_from_slice(key);
            p.publish(&ch, event.as_bytes());
        }
        if flags & class::KEYEVENT != 0 {
            let mut ch = Vec::with_capacity(15 + event.len());
            ch.extend_from_slice(b"__keyevent@0__:");
            ch.extend_from_slice(event.as_bytes());
            p.publish(&ch, key);
        }
    }
}

impl Db {
    /// This keyspace's notification setting.
    pub fn key_events(&self) -> &Arc<KeyEvents> {
        &self.key_events
    }

    /// Notifications are on: the funnel logs changed keys for the running command.
    #[inline]
    pub fn notifying(&self) -> bool {
        self.key_events.active()
    }

    /// Forgets changes logged so far (a command starts).
    #[inline]
    pub fn clear_key_changes(&mut self) {
        self.key_changes.clear();
    }

    /// The keys changed since the last call, in order (empty while notifications are off).
    pub fn take_key_changes(&mut self) -> Vec<(Box<[u8]>, KeyChange)> {
        std::mem::take(&mut self.key_changes)
    }

    /// Publishes one event (see [`KeyEvents::emit`]).
    pub fn emit(&self, class: u32, event: &str, key: &[u8]) {
        self.key_events.emit(class, event, key);
    }

    #[inline]
    pub(crate) fn note_change(&mut self, key: &[u8], change: KeyChange) {
        if self.key_events.active() {
            self.key_changes.push((key.into(), change));
        }
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::{Keyspace, Value};

    #[test]
    fn flags_round_trip_as_redis_formats_them() {
        assert_eq!(format_flags(parse_flags("KEA").unwrap()), "AKE");
        assert_eq!(format_flags(parse_flags("Kx").unwrap()), "xK");
        assert_eq!(format_flags(parse_flags("gE$").unwrap()), "g$E");
        assert_eq!(format_flags(parse_flags("").unwrap()), "");
        // As in Redis, `n` is not shown next to `A` (it is kept).
        assert_eq!(format_flags(parse_flags("AKEmn").unwrap()), "AKEm");
        assert!(parse_flags("KEQ").is_err());
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<(Vec<u8>, Vec<u8>)>>);

    impl Publisher for Sink {
        fn publish(&self, channel: &[u8], message: &[u8]) {
            self.0.lock().push((channel.to_vec(), message.to_vec()));
        }
    }

    #[test]
    fn the_funnel_logs_changes_only_while_on_and_announces_expiry() {
        let ks = Keyspace::new();
        let mut db = ks.lock();
        db.set(b"a", Value::string("1"), None, 1);
        assert!(db.take_key_changes().is_empty(), "off by default");
        let sink = Arc::new(Sink::default());
        ks.key_events()
            .configure(parse_flags("KEA").unwrap(), Some(sink.clone()));
        db.set(b"a", Value::string("2"), Some(5), 1);
        db.set(b"b", Value::string("2"), None, 1);
        db.remove(b"b", 1);
        assert_eq!(
            db.take_key_changes(),
            vec![
                (b"a"[..].into(), KeyChange::Modified),
                (b"b"[..].into(), KeyChange::Created),
                (b"b"[..].into(), KeyChange::Deleted),
            ]
        );
        assert!(db.get(b"a", 10).is_none());
        assert_eq!(
            *sink.0.lock(),
            vec![
                (b"__keyspace@0__:a".to_vec(), b"expired".to_vec()),
                (b"__keyevent@0__:expired".to_vec(), b"a".to_vec()),
            ]
        );
        ks.key_events().configure(0, None);
        db.set(b"c", Value::string("1"), None, 1);
        assert!(db.take_key_changes().is_empty());
    }
}
