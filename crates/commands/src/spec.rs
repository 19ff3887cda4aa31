//! The command table: every command's name, arity, flags and key positions, and for data commands
//! the function that runs it. One table serves dispatch, COMMAND INFO/COUNT/DOCS, MULTI checks,
//! quota checks and the decision of which commands need an ownership check or a write gate.

use std::collections::HashMap;
use std::sync::OnceLock;

use ferrite_protocol::{Args, ErrorReply};

use crate::ctx::Ctx;

/// Result of running a command: the reply is written through the context; `Err` means nothing was
/// written and the dispatcher answers with the error.
pub type CmdResult = Result<(), ErrorReply>;

/// Bit flags describing a command (names follow Redis's COMMAND INFO flags).
pub mod flags {
    /// Changes data: needs the tenant's write gate and change capture.
    pub const WRITE: u32 = 1;
    pub const READONLY: u32 = 1 << 1;
    /// May grow memory: refused while a memory/key quota is exceeded.
    pub const DENYOOM: u32 = 1 << 2;
    /// Server administration (CONFIG SET, SHUTDOWN, TENANT.* management, ...).
    pub const ADMIN: u32 = 1 << 3;
    pub const FAST: u32 = 1 << 4;
    /// Allowed before authentication (AUTH, HELLO, QUIT).
    pub const NO_AUTH: u32 = 1 << 5;
    /// Refused inside MULTI (MULTI itself, WATCH, ...).
    pub const NO_MULTI: u32 = 1 << 6;
    /// Not about a tenant's data (PING, CLIENT, CONFIG...): runs even when the bound tenant has
    /// moved or is importing.
    pub const CONNECTION: u32 = 1 << 7;
    pub const LOADING: u32 = 1 << 8;
    pub const STALE: u32 = 1 << 9;
    /// May block the client (BLPOP...): see [`crate::blocking`].
    pub const BLOCKING: u32 = 1 << 10;

    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (NO_MULTI, "no_multi"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (BLOCKING, "blocking"),
    ];
}

/// Which keys a command may create (for MAXKEYS): checked before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creates {
    Nothing,
    /// The first key argument (SET, LPUSH, SADD, *STORE destination...).
    FirstKey,
    /// The second key argument (RENAME, COPY, SMOVE, LMOVE destination).
    SecondKey,
    /// Every key argument (MSET, MSETNX).
    AllKeys,
    /// The argument after the last of these option words, if present (GEORADIUS ... STORE key,
    /// SORT ... STORE key): a destination outside the key positions.
    KeyAfter(&'static [&'static str]),
}

/// How a command is run.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Runs against a locked keyspace; see [`Ctx`].
    Data(fn(&mut Ctx<'_, '_>, Args<'_>) -> CmdResult),
    /// Runs in the server (connection state, tenancy, administration).
    Server,
}

/// One command's description.
#[derive(Clone, Copy)]
pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: N means exactly N arguments (with the name), -N at least N.
    pub arity: i32,
    pub flags: u32,
    /// Key positions as in COMMAND INFO: first, last (-1 = last argument), step. 0,0,0 = no keys.
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub creates: Creates,
    pub group: &'static str,
    pub summary: &'static str,
    pub handler: Handler,
}

impl CommandSpec {
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    pub fn is_write(&self) -> bool {
        self.has(flags::WRITE)
    }

    /// Checks arity (including the command name).
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        if a >= 0 {
            argc == a as usize
        } else {
            argc >= (-a) as usize
        }
    }

    /// The key arguments of a request to this command.
    pub fn keys<'a>(&self, args: &Args<'a>) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let n = args.len() as i32;
        let (first, step) = (self.first_key, self.step.max(1));
        let last = if self.last_key < 0 {
            n + self.last_key
        } else {
            self.last_key.min(n - 1)
        };
        let args = *args;
        let range = if first <= 0 || first >= n {
            0..0
        } else {
            first..last + 1
        };
        range
            .step_by(step as usize)
            .map(move |i| args.get(i as usize))
    }

    /// The keys of a full command whose keys the command table's positions cannot describe, found
    /// as Redis's getkeys procedures find them: after a count (EVAL, FCALL, ZUNIONSTORE, LMPOP, ...),
    /// after STREAMS (XREAD), or SORT's key and STORE destination. `None`: the table's positions
    /// apply; `Some(Err)`: the arguments name no keys.
    #[allow(clippy::result_unit_err)]
    pub fn special_keys<'a>(&self, args: &Args<'a>) -> Option<Result<Vec<&'a [u8]>, ()>> {
        let s = self;
        let counted = |at: usize, before: &[usize]| -> Result<Vec<&'a [u8]>, ()> {
            let n = std::str::from_utf8(args.get(at))
                .ok()
                .and_then(|t| t.parse::<usize>().ok())
                .filter(|&n| n > 0 && n <= args.len().saturating_sub(at + 1))
                .ok_or(())?;
            let mut keys: Vec<_> = before.iter().map(|&i| args.get(i)).collect();
            keys.extend((at + 1..at + 1 + n).map(|i| args.get(i)));
            Ok(keys)
        };
        Some(match s.name {
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => counted(2, &[]),
            "zunionstore" | "zinterstore" | "zdiffstore" => counted(2, &[1]),
            "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" => {
                counted(1, &[])
            }
            "blmpop" | "bzmpop" => counted(2, &[]),
            "sort" | "sort_ro" => {
                let mut keys = vec![args.get(1)];
                let mut i = 2;
                while i < args.len() {
                    if args.is(i, "limit") {
                        i += 2;
                    } else if args.is(i, "get") || args.is(i, "by") {
                        i += 1;
                    } else if args.is(i, "store") && i + 1 < args.len() && s.name == "sort" {
                        // Only the last STORE counts.
                        keys.truncate(1);
                        keys.push(args.get(i + 1));
                    }
                    i += 1;
                }
                Ok(keys)
            }
            "xread" | "xreadgroup" => {
                let Some(streams) = (1..args.len()).find(|&i| args.is(i, "streams")) else {
                    return Some(Err(()));
                };
                let rest = args.len() - streams - 1;
                if rest == 0 || !rest.is_multiple_of(2) {
                    return Some(Err(()));
                }
                Ok((streams + 1..streams + 1 + rest / 2)
                    .map(|i| args.get(i))
                    .collect())
            }
            _ => return None,
        })
    }

    /// Every key a request names, for permission checks (ACL key patterns): the special forms
    /// of [`CommandSpec::special_keys`], else the table's positions.
    pub fn request_keys<'a>(&self, args: &Args<'a>) -> Vec<&'a [u8]> {
        match self.special_keys(args) {
            Some(Ok(keys)) => keys,
            Some(Err(())) => Vec::new(),
            None => self.keys(args).collect(),
        }
    }

    /// The distinct keys this request may create, per [`Creates`].
    pub fn created_keys<'a>(&self, args: &Args<'a>) -> Vec<&'a [u8]> {
        match self.creates {
            Creates::Nothing => Vec::new(),
            Creates::FirstKey => self.keys(args).take(1).collect(),
            Creates::SecondKey => self.keys(args).skip(1).take(1).collect(),
            Creates::AllKeys => {
                // `MSET k 1 k 2` creates one key, not two.
                let mut keys: Vec<_> = self.keys(args).collect();
                keys.sort_unstable();
                keys.dedup();
                keys
            }
            Creates::KeyAfter(tokens) => (1..args.len().saturating_sub(1))
                .rev()
                .find(|&i| tokens.iter().any(|t| args.is(i, t)))
                .map(|i| args.get(i + 1))
                .into_iter()
                .collect(),
        }
    }

    /// ACL categories, named as Redis names them (COMMAND INFO, COMMAND LIST FILTERBY ACLCAT).
    /// ACL users' `+@category` rules use them (`ferrite_tenancy::acl`).
    pub fn acl_categories(&self) -> Vec<&'static str> {
        let mut v = Vec::with_capacity(4);
        match self.group {
            "generic" => v.push("keyspace"),
            "sorted-set" => v.push("sortedset"),
            "transactions" => v.push("transaction"),
            "string" | "list" | "hash" | "set" | "connection" | "tenancy" | "migration"
            | "bitmap" | "hyperloglog" | "geo" | "stream" | "pubsub" | "scripting" => {
                v.push(self.group)
            }
            _ => {}
        }
        if self.has(flags::WRITE) {
            v.push("write");
        }
        if self.has(flags::READONLY) {
            v.push("read");
        }
        if self.has(flags::ADMIN) {
            v.extend(["admin", "dangerous"]);
        }
        if self.has(flags::BLOCKING) {
            v.push("blocking");
        }
        v.push(if self.has(flags::FAST) {
            "fast"
        } else {
            "slow"
        });
        v
    }

    /// Flag names for COMMAND INFO.
    pub fn flag_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        flags::NAMES
            .iter()
            .filter(|(f, _)| self.flags & f != 0)
            .map(|(_, n)| *n)
    }
}

/// Shorthand constructor used by the family tables.
#[allow(clippy::too_many_arguments)]
pub const fn spec(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: (i32, i32, i32),
    creates: Creates,
    group: &'static str,
    summary: &'static str,
    handler: Handler,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        creates,
        group,
        summary,
        handler,
    }
}

/// Defines a family's `cmd(...)` constructor for its command table: a data command of `$group`.
#[macro_export]
macro_rules! command_family {
    ($group:expr) => {
        #[allow(clippy::too_many_arguments)]
        const fn cmd(
            name: &'static str,
            arity: i32,
            flags: u32,
            keys: (i32, i32, i32),
            creates: $crate::spec::Creates,
            summary: &'static str,
            f: fn(&mut $crate::Ctx<'_, '_>, ferrite_protocol::Args<'_>) -> $crate::CmdResult,
        ) -> $crate::CommandSpec {
            $crate::spec::spec(
                name,
                arity,
                flags,
                keys,
                creates,
                $group,
                summary,
                $crate::Handler::Data(f),
            )
        }
    };
}

/// Key position shorthands.
pub const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
pub const KEY1: (i32, i32, i32) = (1, 1, 1);
pub const KEYS12: (i32, i32, i32) = (1, 2, 1);
pub const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);

/// Every command, from every family.
pub fn all() -> &'static [CommandSpec] {
    static ALL: OnceLock<Vec<CommandSpec>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut v = Vec::new();
        v.extend_from_slice(crate::server_specs::COMMANDS);
        v.extend_from_slice(crate::strings::COMMANDS);
        v.extend_from_slice(crate::keys::COMMANDS);
        v.extend_from_slice(crate::object::COMMANDS);
        v.extend_from_slice(crate::lists::COMMANDS);
        v.extend_from_slice(crate::hashes::COMMANDS);
        v.extend_from_slice(crate::sets::COMMANDS);
        v.extend_from_slice(crate::zsets::COMMANDS);
        v.extend_from_slice(crate::bitmaps::COMMANDS);
        v.extend_from_slice(crate::hyperloglog::COMMANDS);
        v.extend_from_slice(crate::geo::COMMANDS);
        v.extend_from_slice(crate::zset_algebra::COMMANDS);
        v.extend_from_slice(crate::dump::COMMANDS);
        v.extend_from_slice(crate::sort::COMMANDS);
        v.extend_from_slice(crate::memory::COMMANDS);
        v.extend_from_slice(crate::blocking::COMMANDS);
        v.extend_from_slice(crate::blocking::ZSET_COMMANDS);
        v.extend_from_slice(crate::streams::COMMANDS);
        v
    })
}

/// Command name → position in [`all`]. aHash rather than SipHash: every request and every
/// `redis.call` looks its name up here, and a fixed table (nothing is ever inserted from the
/// network) cannot be flooded with chosen collisions.
fn index() -> &'static HashMap<&'static [u8], usize, ahash::RandomState> {
    static INDEX: OnceLock<HashMap<&'static [u8], usize, ahash::RandomState>> = OnceLock::new();
    INDEX.get_or_init(|| {
        all()
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_bytes(), i))
            .collect()
    })
}

/// Finds a command by name, ignoring ASCII case, without allocating; also returns its position
/// in [`all`] (per-command statistics are kept in that order).
pub fn lookup_indexed(name: &[u8]) -> Option<(usize, &'static CommandSpec)> {
    let mut buf = [0u8; 40];
    if name.len() > buf.len() {
        return None;
    }
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let i = *index().get(&*lower)?;
    all().get(i).map(|s| (i, s))
}

/// Finds a command by name, ignoring ASCII case.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    lookup_indexed(name).map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_protocol::OwnedRequest;

    #[test]
    fn names_are_unique_and_lowercase() {
        let mut seen = std::collections::HashSet::new();
        for s in all() {
            assert!(seen.insert(s.name), "duplicate {}", s.name);
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(s.arity != 0, "{} has arity 0", s.name);
            assert!(
                !(s.has(flags::WRITE) && s.has(flags::READONLY)),
                "{} is both write and readonly",
                s.name
            );
        }
    }

    #[test]
    fn every_command_that_creates_keys_is_checked_against_quotas() {
        // The dispatcher checks quotas only for DENYOOM commands.
        for s in all() {
            if !matches!(s.creates, Creates::Nothing) {
                assert!(
                    s.has(flags::DENYOOM),
                    "{} creates keys but is not DENYOOM",
                    s.name
                );
            }
        }
    }

    #[test]
    fn key_positions() {
        let req = OwnedRequest::from_parts(["MSET", "a", "1", "b", "2"]);
        let mset = lookup(b"mset").unwrap();
        let keys: Vec<_> = mset.keys(&req.args()).collect();
        assert_eq!(keys, vec![&b"a"[..], b"b"]);
        assert_eq!(mset.created_keys(&req.args()).len(), 2);
        let req = OwnedRequest::from_parts(["MSET", "a", "1", "a", "2"]);
        assert_eq!(mset.created_keys(&req.args()), vec![&b"a"[..]]);
        let req = OwnedRequest::from_parts(["GET", "k"]);
        assert_eq!(lookup(b"GeT").unwrap().keys(&req.args()).count(), 1);
        assert!(lookup(b"nope").is_none());
    }
}
