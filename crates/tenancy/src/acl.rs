//! ACL users within a tenant (Redis's `ACL SETUSER` rules, scoped to one tenant).
//!
//! A tenant is a user of the server (`AUTH <tenant> <password>`). Inside it, the tenant (or an
//! administrator visiting it) may create further users with Redis's rule language: on/off,
//! passwords, command rules (`+@all`, `-@all`, `+cmd`, `-cmd`, `+cmd|sub`, `+@category`), key
//! patterns (`~pattern`, `%R~`, `%W~`, `allkeys`) and channel patterns (`&pattern`,
//! `allchannels`, `resetchannels`). A connection authenticated as such a user is one of the
//! tenant's clients whose commands are further limited by the user's rules: a user can only
//! ever narrow what its tenant may do, never reach another tenant's keyspace or the
//! administrator's commands (the server checks those before the rules; docs/security.md).
//!
//! Passwords are kept as salted hashes ([`Credential`]), like tenant passwords. The users are
//! part of the tenant's record: persisted in the catalog as rule tokens ([`AclUser::tokens`],
//! where a password appears only as its encoded hash).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use ferrite_commands::spec::{self, CommandSpec};
use ferrite_protocol::Args;
use ferrite_storage::glob::glob_match;
use parking_lot::RwLock;

use crate::credential::Credential;

/// Users one tenant may have: each is part of the tenant's catalog record, and a hostile
/// tenant must not grow the catalog (or memory) without bound.
pub const MAX_USERS_PER_TENANT: usize = 100;
/// Bytes of rules (patterns, command rules, password hashes) one user may hold.
pub const MAX_RULE_BYTES_PER_USER: usize = 16 * 1024;

/// Prefix of a password hash in [`AclUser::tokens`] (never accepted from ACL SETUSER).
const CREDENTIAL_TOKEN: &str = "cred:";

/// Why ACL SETUSER refused a rule or a name (the server words it as Redis does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// `Error in ACL SETUSER modifier '<op>': <why>`.
    #[error("Error in ACL SETUSER modifier '{op}': {why}")]
    Modifier { op: String, why: &'static str },
    #[error("{0}")]
    BadName(&'static str),
    #[error(
        "too many ACL users in this tenant (at most {MAX_USERS_PER_TENANT}); delete some with ACL DELUSER"
    )]
    TooManyUsers,
    #[error(
        "the rules of this user would exceed {MAX_RULE_BYTES_PER_USER} bytes; use 'reset' or fewer patterns"
    )]
    TooLarge,
    #[error("a stored ACL user is invalid: {0}")]
    Stored(String),
}

/// What a user may do with one command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CommandPerm {
    Denied,
    Allowed,
    /// Only these subcommands (lower case): `-cmd +cmd|sub`.
    Only(Vec<String>),
    /// Every subcommand but these: `+cmd -cmd|sub`.
    AllBut(Vec<String>),
}

/// One key pattern and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    read: bool,
    write: bool,
    pattern: Vec<u8>,
}

/// A user's rules as ACL SETUSER leaves them.
#[derive(Debug, Clone)]
pub struct Rules {
    enabled: bool,
    nopass: bool,
    passwords: Vec<Credential>,
    /// Per command, indexed like [`spec::all`].
    commands: Vec<CommandPerm>,
    /// The command rules as given since the last `+@all`/`-@all` (ACL LIST shows them).
    command_rules: Vec<String>,
    keys: Vec<KeyPattern>,
    channels: Vec<Vec<u8>>,
}

/// Why a command was refused by a user's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The command (full name, `config|get` for a subcommand rule).
    Command(String),
    Key(Vec<u8>),
    Channel(Vec<u8>),
}

impl Default for Rules {
    /// A new user, as Redis 7.0 creates one: off, no password, no commands, keys or channels.
    fn default() -> Self {
        Rules {
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: vec![CommandPerm::Denied; spec::all().len()],
            command_rules: vec!["-@all".into()],
            keys: Vec::new(),
            channels: Vec::new(),
        }
    }
}

/// The categories a command belongs to (`+@category`), as COMMAND INFO shows them.
fn in_category(s: &CommandSpec, category: &str) -> bool {
    category == "all" || s.acl_categories().contains(&category)
}

fn known_category(category: &str) -> bool {
    category == "all" || spec::all().iter().any(|s| in_category(s, category))
}

impl Rules {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Checks a password: a user with `nopass` accepts any; otherwise one of its passwords
    /// must match (constant time each).
    pub fn password_ok(&self, password: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        // Every hash is checked, so the time says nothing about which one matched.
        self.passwords
            .iter()
            .fold(false, |ok, c| c.verify(password) | ok)
    }

    /// Applies one rule (Redis's ACL SETUSER language). `stored` accepts the password hash
    /// tokens of [`AclUser::tokens`] (catalog, migration), never given by clients.
    fn apply(&mut self, op: &str, stored: bool) -> Result<(), AclError> {
        let err = |why: &'static str| AclError::Modifier {
            op: op.to_string(),
            why,
        };
        let lower = op.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.set_all_keys(),
            "resetkeys" => self.keys.clear(),
            "allchannels" => self.channels = vec![b"*".to_vec()],
            "resetchannels" => self.channels.clear(),
            "allcommands" => self.set_all_commands(true),
            "nocommands" => self.set_all_commands(false),
            "reset" => {
                let fresh = Rules::default();
                *self = fresh;
            }
            // Accepted for compatibility: Ferrite's RESTORE always checks payloads.
            "sanitize-payload" | "skip-sanitize-payload" => {}
            "clearselectors" => {}
            _ => return self.apply_prefixed(op, stored, err),
        }
        Ok(())
    }

    fn apply_prefixed(
        &mut self,
        op: &str,
        stored: bool,
        err: impl Fn(&'static str) -> AclError,
    ) -> Result<(), AclError> {
        if let Some(pw) = op.strip_prefix('>') {
            let c = Credential::from_password(pw.as_bytes());
            self.passwords.retain(|old| !old.verify(pw.as_bytes()));
            self.passwords.push(c);
            self.nopass = false;
        } else if let Some(pw) = op.strip_prefix('<') {
            let before = self.passwords.len();
            self.passwords.retain(|old| !old.verify(pw.as_bytes()));
            if self.passwords.len() == before {
                return Err(err("no such password"));
            }
        } else if op.starts_with('#') || op.starts_with('!') {
            // Redis's unsalted SHA-256 hashes: Ferrite keeps only salted ones (see
            // docs/security.md), so it cannot take a hash made elsewhere.
            return Err(err(
                "password hashes are not accepted: give the password with '>' (it is stored salted and hashed)",
            ));
        } else if let Some(enc) = op.strip_prefix(CREDENTIAL_TOKEN) {
            if !stored {
                return Err(err("Syntax error"));
            }
            let c = Credential::decode(enc).map_err(|_| err("invalid stored credential"))?;
            self.passwords.push(c);
            self.nopass = false;
        } else if let Some(p) = op.strip_prefix('~') {
            self.add_key_pattern(true, true, p, &err)?;
        } else if let Some(rest) = op.strip_prefix('%') {
            let Some((perm, p)) = rest.split_once('~') else {
                return Err(err("Syntax error"));
            };
            let (mut read, mut write) = (false, false);
            for c in perm.chars() {
                match c.to_ascii_uppercase() {
                    'R' => read = true,
                    'W' => write = true,
                    _ => return Err(err("Syntax error")),
                }
            }
            if !read && !write {
                return Err(err("Syntax error"));
            }
            self.add_key_pattern(read, write, p, &err)?;
        } else if let Some(p) = op.strip_prefix('&') {
            if self.channels.iter().any(|c| c == b"*") {
                return Err(err(
                    "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels",
                ));
            }
            if p == "*" {
                self.channels = vec![b"*".to_vec()];
            } else if !self.channels.iter().any(|c| c == p.as_bytes()) {
                self.channels.push(p.as_bytes().to_vec());
            }
        } else if let Some(rule) = op.strip_prefix('+') {
            self.command_rule(rule, true, op, &err)?;
        } else if let Some(rule) = op.strip_prefix('-') {
            self.command_rule(rule, false, op, &err)?;
        } else if op.starts_with('(') {
            return Err(err("selectors are not supported"));
        } else {
            return Err(err("Syntax error"));
        }
        Ok(())
    }

    fn set_all_keys(&mut self) {
        self.keys = vec![KeyPattern {
            read: true,
            write: true,
            pattern: b"*".to_vec(),
        }];
    }

    fn add_key_pattern(
        &mut self,
        read: bool,
        write: bool,
        p: &str,
        err: &impl Fn(&'static str) -> AclError,
    ) -> Result<(), AclError> {
        if self
            .keys
            .iter()
            .any(|k| k.read && k.write && k.pattern == b"*")
        {
            return Err(err(
                "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns",
            ));
        }
        if read && write && p == "*" {
            self.set_all_keys();
            return Ok(());
        }
        match self.keys.iter_mut().find(|k| k.pattern == p.as_bytes()) {
            Some(k) => {
                k.read |= read;
                k.write |= write;
            }
            None => self.keys.push(KeyPattern {
                read,
                write,
                pattern: p.as_bytes().to_vec(),
            }),
        }
        Ok(())
    }

    fn set_all_commands(&mut self, allowed: bool) {
        let perm = if allowed {
            CommandPerm::Allowed
        } else {
            CommandPerm::Denied
        };
        self.commands.fill(perm);
        self.command_rules = vec![if allowed { "+@all" } else { "-@all" }.into()];
    }

    fn command_rule(
        &mut self,
        rule: &str,
        allow: bool,
        op: &str,
        err: &impl Fn(&'static str) -> AclError,
    ) -> Result<(), AclError> {
        let unknown = "Unknown command or category name in ACL";
        let lower = rule.to_ascii_lowercase();
        if let Some(cat) = lower.strip_prefix('@') {
            if !known_category(cat) {
                return Err(err(unknown));
            }
            if cat == "all" {
                self.set_all_commands(allow);
                return Ok(());
            }
            for (i, s) in spec::all().iter().enumerate() {
                if in_category(s, cat) {
                    self.commands[i] = if allow {
                        CommandPerm::Allowed
                    } else {
                        CommandPerm::Denied
                    };
                }
            }
        } else if let Some((name, sub)) = lower.split_once('|') {
            let Some((i, _)) = spec::lookup_indexed(name.as_bytes()) else {
                return Err(err(unknown));
            };
            if sub.is_empty() || sub.contains('|') {
                return Err(err(unknown));
            }
            let sub = sub.to_string();
            let perm = &mut self.commands[i];
            *perm = match (std::mem::replace(perm, CommandPerm::Denied), allow) {
                (CommandPerm::Allowed, true) => CommandPerm::Allowed,
                (CommandPerm::Allowed, false) => CommandPerm::AllBut(vec![sub]),
                (CommandPerm::Denied, true) => CommandPerm::Only(vec![sub]),
                (CommandPerm::Denied, false) => CommandPerm::Denied,
                (CommandPerm::Only(mut v), true) => {
                    if !v.contains(&sub) {
                        v.push(sub);
                    }
                    CommandPerm::Only(v)
                }
                (CommandPerm::Only(mut v), false) => {
                    v.retain(|s| *s != sub);
                    if v.is_empty() {
                        CommandPerm::Denied
                    } else {
                        CommandPerm::Only(v)
                    }
                }
                (CommandPerm::AllBut(mut v), true) => {
                    v.retain(|s| *s != sub);
                    if v.is_empty() {
                        CommandPerm::Allowed
                    } else {
                        CommandPerm::AllBut(v)
                    }
                }
                (CommandPerm::AllBut(mut v), false) => {
                    if !v.contains(&sub) {
                        v.push(sub);
                    }
                    CommandPerm::AllBut(v)
                }
            };
        } else {
            let Some((i, _)) = spec::lookup_indexed(lower.as_bytes()) else {
                return Err(err(unknown));
            };
            self.commands[i] = if allow {
                CommandPerm::Allowed
            } else {
                CommandPerm::Denied
            };
        }
        let token = op.to_ascii_lowercase();
        // A repeated rule moves to the end rather than growing the list.
        self.command_rules.retain(|r| *r != token);
        self.command_rules.push(token);
        Ok(())
    }

    /// Whether the command (and its subcommand, for a `cmd|sub` rule) may run.
    pub fn command_allowed(&self, index: usize, args: &Args<'_>) -> bool {
        let sub = || (args.len() >= 2).then(|| args.get(1).to_ascii_lowercase());
        match self.commands.get(index) {
            Some(CommandPerm::Allowed) => true,
            Some(CommandPerm::Only(v)) => {
                sub().is_some_and(|s| v.iter().any(|x| x.as_bytes() == s.as_slice()))
            }
            Some(CommandPerm::AllBut(v)) => {
                sub().is_none_or(|s| !v.iter().any(|x| x.as_bytes() == s.as_slice()))
            }
            Some(CommandPerm::Denied) | None => false,
        }
    }

    /// Whether a key may be read (`write` false) or written by the user's patterns.
    pub fn key_allowed(&self, key: &[u8], write: bool) -> bool {
        self.keys
            .iter()
            .any(|k| (if write { k.write } else { k.read }) && glob_match(&k.pattern, key, false))
    }

    /// Whether a channel may be used: a literal channel (PUBLISH, SUBSCRIBE) must match one of
    /// the patterns; a pattern (PSUBSCRIBE) must be one of them, as in Redis.
    pub fn channel_allowed(&self, channel: &[u8], is_pattern: bool) -> bool {
        self.channels.iter().any(|p| {
            p == b"*"
                || if is_pattern {
                    p == channel
                } else {
                    glob_match(p, channel, false)
                }
        })
    }

    /// The whole check of one request (Redis's ACLCheckAllUserCommandPerm): the command, then
    /// its keys (write commands need write access to every key, others read access), then its
    /// channels. `index` is the command's position in the command table.
    pub fn check(&self, index: usize, s: &CommandSpec, args: &Args<'_>) -> Result<(), Denied> {
        if !self.command_allowed(index, args) {
            let name = match self.commands.get(index) {
                Some(CommandPerm::Only(_) | CommandPerm::AllBut(_)) if args.len() >= 2 => {
                    format!("{}|{}", s.name, args.text(1).to_ascii_lowercase())
                }
                _ => s.name.to_string(),
            };
            return Err(Denied::Command(name));
        }
        let all_keys = self
            .keys
            .iter()
            .any(|k| k.read && k.write && k.pattern == b"*");
        if !all_keys {
            let write = s.is_write();
            for key in s.request_keys(args) {
                if !self.key_allowed(key, write) {
                    return Err(Denied::Key(key.to_vec()));
                }
            }
        }
        if !self.channels.iter().any(|c| c == b"*") {
            let channels: (usize, bool) = match s.name {
                "publish" | "spublish" => (1, false),
                "subscribe" | "ssubscribe" => (usize::MAX, false),
                "psubscribe" => (usize::MAX, true),
                _ => (0, false),
            };
            let to = match channels.0 {
                0 => 1,
                usize::MAX => args.len(),
                n => (n + 1).min(args.len()),
            };
            for i in 1..to {
                let ch = args.get(i);
                if !self.channel_allowed(ch, channels.1) {
                    return Err(Denied::Channel(ch.to_vec()));
                }
            }
        }
        Ok(())
    }

    /// The rules in ACL LIST form (passwords hidden; Ferrite never shows hashes).
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = vec![if self.enabled { "on" } else { "off" }.into()];
        if self.nopass {
            parts.push("nopass".into());
        }
        parts.push("sanitize-payload".into());
        parts.extend(self.passwords.iter().map(|_| "#<hidden>".to_string()));
        parts.extend(self.key_tokens());
        parts.extend(self.channel_tokens());
        parts.extend(self.command_rules.iter().cloned());
        parts.join(" ")
    }

    /// Key patterns as rule tokens (`~*`, `%R~p`...).
    pub fn key_tokens(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| {
                let p = String::from_utf8_lossy(&k.pattern);
                match (k.read, k.write) {
                    (true, true) => format!("~{p}"),
                    (true, false) => format!("%R~{p}"),
                    _ => format!("%W~{p}"),
                }
            })
            .collect()
    }

    /// Channel patterns as rule tokens (`resetchannels` when there are none, as Redis 7.0).
    pub fn channel_tokens(&self) -> Vec<String> {
        if self.channels.is_empty() {
            return vec!["resetchannels".into()];
        }
        self.channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect()
    }

    /// The command rules (`+@all`, `-@all +get`...).
    pub fn command_rules(&self) -> String {
        self.command_rules.join(" ")
    }

    pub fn nopass(&self) -> bool {
        self.nopass
    }

    pub fn password_count(&self) -> usize {
        self.passwords.len()
    }

    /// Rule tokens that rebuild these rules with [`AclUsers::restore`]: the catalog's and a
    /// migration's form. Passwords appear only as their encoded salted hashes.
    fn tokens(&self) -> Vec<String> {
        let mut t = vec!["reset".to_string()];
        t.push(if self.enabled { "on" } else { "off" }.into());
        if self.nopass {
            t.push("nopass".into());
        }
        t.extend(
            self.passwords
                .iter()
                .map(|c| format!("{CREDENTIAL_TOKEN}{}", c.encode())),
        );
        t.extend(self.key_tokens());
        t.extend(self.channel_tokens());
        t.extend(self.command_rules.iter().cloned());
        t
    }

    fn size(&self) -> usize {
        self.keys.iter().map(|k| k.pattern.len() + 8).sum::<usize>()
            + self.channels.iter().map(|c| c.len() + 8).sum::<usize>()
            + self
                .command_rules
                .iter()
                .map(|r| r.len() + 8)
                .sum::<usize>()
            + self.passwords.len() * 128
    }
}

/// One ACL user of a tenant. Connections authenticated as it hold it (`Arc`), so ACL SETUSER
/// applies to them at once, as in Redis.
#[derive(Debug)]
pub struct AclUser {
    name: Arc<str>,
    rules: RwLock<Rules>,
    /// Set by ACL DELUSER: its connections are closed at their next command.
    deleted: AtomicBool,
}

impl AclUser {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rules now (a read lock: callers keep it for one check only).
    pub fn rules(&self) -> parking_lot::RwLockReadGuard<'_, Rules> {
        self.rules.read()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Relaxed)
    }

    /// The catalog's and a migration's form (see [`Rules::tokens`]).
    pub fn tokens(&self) -> Vec<String> {
        self.rules.read().tokens()
    }
}

/// A stored user: name and rule tokens (what [`AclUsers::records`] returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub tokens: Vec<String>,
}

/// A tenant's ACL users, by name.
#[derive(Debug, Default)]
pub struct AclUsers {
    users: RwLock<BTreeMap<String, Arc<AclUser>>>,
}

/// Checks a user name given to ACL SETUSER.
pub fn check_user_name(name: &str) -> Result<(), AclError> {
    if name.is_empty() || name.contains([' ', '\0']) {
        return Err(AclError::BadName(
            "Usernames can't contain spaces or null characters",
        ));
    }
    if name.contains(':') {
        return Err(AclError::BadName(
            "Usernames can't contain ':' (in Ferrite '<tenant>:<user>' names a tenant's user)",
        ));
    }
    if name.eq_ignore_ascii_case("default") || name == crate::migration::MIGRATION_USER {
        return Err(AclError::BadName(
            "this user name is reserved: 'default' is the administrator, 'ferrite-migration' a migration peer",
        ));
    }
    Ok(())
}

impl AclUsers {
    pub fn get(&self, name: &str) -> Option<Arc<AclUser>> {
        self.users.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.users.read().keys().cloned().collect()
    }

    pub fn all(&self) -> Vec<Arc<AclUser>> {
        self.users.read().values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.users.read().is_empty()
    }

    /// ACL SETUSER: creates the user (off, no rights) if needed and applies the rules in order,
    /// all or nothing. Returns what to pass to [`AclUsers::undo`] if the change cannot be made
    /// durable.
    pub fn set_user(&self, name: &str, ops: &[&str]) -> Result<Undo, AclError> {
        check_user_name(name)?;
        let mut users = self.users.write();
        let existing = users.get(name).cloned();
        if existing.is_none() && users.len() >= MAX_USERS_PER_TENANT {
            return Err(AclError::TooManyUsers);
        }
        let mut rules = existing
            .as_ref()
            .map(|u| u.rules.read().clone())
            .unwrap_or_default();
        for op in ops {
            rules.apply(op, false)?;
        }
        if rules.size() > MAX_RULE_BYTES_PER_USER {
            return Err(AclError::TooLarge);
        }
        Ok(match existing {
            Some(u) => {
                let before = std::mem::replace(&mut *u.rules.write(), rules);
                Undo::Changed(u, before)
            }
            None => {
                let u = Arc::new(AclUser {
                    name: name.into(),
                    rules: RwLock::new(rules),
                    deleted: AtomicBool::new(false),
                });
                users.insert(name.to_string(), u);
                Undo::Created(name.to_string())
            }
        })
    }

    /// ACL DELUSER of one name: true if it existed. Its connections are closed at their next
    /// command.
    pub fn delete(&self, name: &str) -> Option<Undo> {
        let u = self.users.write().remove(name)?;
        u.deleted.store(true, Relaxed);
        Some(Undo::Deleted(u))
    }

    /// Reverts a change whose persistence failed.
    pub fn undo(&self, undo: Undo) {
        match undo {
            Undo::Created(name) => {
                if let Some(u) = self.users.write().remove(&name) {
                    u.deleted.store(true, Relaxed);
                }
            }
            Undo::Changed(u, before) => *u.rules.write() = before,
            Undo::Deleted(u) => {
                u.deleted.store(false, Relaxed);
                self.users.write().insert(u.name.to_string(), u);
            }
        }
    }

    /// Every user as name and rule tokens, by name (persistence, migration).
    pub fn records(&self) -> Vec<UserRecord> {
        self.users
            .read()
            .values()
            .map(|u| UserRecord {
                name: u.name.to_string(),
                tokens: u.tokens(),
            })
            .collect()
    }

    /// Replaces every user with stored ones (startup, an import).
    pub fn restore(&self, records: &[UserRecord]) -> Result<(), AclError> {
        let mut map = BTreeMap::new();
        for r in records {
            check_user_name(&r.name).map_err(|e| AclError::Stored(format!("{}: {e}", r.name)))?;
            let mut rules = Rules::default();
            for t in &r.tokens {
                rules
                    .apply(t, true)
                    .map_err(|e| AclError::Stored(format!("{}: {e}", r.name)))?;
            }
            map.insert(
                r.name.clone(),
                Arc::new(AclUser {
                    name: r.name.as_str().into(),
                    rules: RwLock::new(rules),
                    deleted: AtomicBool::new(false),
                }),
            );
        }
        let old = std::mem::replace(&mut *self.users.write(), map);
        for u in old.values() {
            u.deleted.store(true, Relaxed);
        }
        Ok(())
    }

    /// A user for AUTH: the password must match and the user be `on`.
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Option<Arc<AclUser>> {
        let u = self.get(name)?;
        let ok = {
            let r = u.rules.read();
            r.enabled && r.password_ok(password)
        };
        ok.then_some(u)
    }
}

/// How to revert one change of [`AclUsers`].
#[derive(Debug)]
pub enum Undo {
    Created(String),
    Changed(Arc<AclUser>, Rules),
    Deleted(Arc<AclUser>),
}

/// A record line for encoding users in one string (the migration wire): tokens separated by
/// spaces, each percent-escaped, name first.
pub fn encode_record(r: &UserRecord) -> String {
    std::iter::once(&r.name)
        .chain(r.tokens.iter())
        .map(|t| escape(t))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses [`encode_record`]'s form.
pub fn decode_record(s: &str) -> Result<UserRecord, AclError> {
    let mut parts = s.split(' ').map(unescape);
    let name = parts
        .next()
        .transpose()?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AclError::Stored("empty user record".into()))?;
    let tokens = parts.collect::<Result<Vec<_>, _>>()?;
    Ok(UserRecord { name, tokens })
}

fn escape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '%' => out.push_str("%25"),
            ' ' => out.push_str("%20"),
            _ => out.push(c),
        }
    }
    out
}

fn unescape(t: &str) -> Result<String, AclError> {
    let bad = || AclError::Stored("bad escape in a user record".into());
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).ok_or_else(bad)?;
        out.push(match code {
            "25" => '%',
            "20" => ' ',
            _ => return Err(bad()),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_protocol::OwnedRequest;

    fn check(rules: &Rules, argv: &[&str]) -> Result<(), Denied> {
        let req = OwnedRequest::from_parts(argv.iter().map(|a| a.as_bytes()));
        let args = req.args();
        let (i, s) = spec::lookup_indexed(args.get(0)).expect("known command");
        rules.check(i, s, &args)
    }

    fn user(ops: &[&str]) -> Rules {
        let users = AclUsers::default();
        users.set_user("u", ops).expect("rules apply");
        users.get("u").expect("created").rules().clone()
    }

    #[test]
    fn a_new_user_may_do_nothing() {
        let r = user(&[]);
        assert!(!r.enabled());
        assert!(!r.password_ok(b""));
        assert_eq!(check(&r, &["get", "k"]), Err(Denied::Command("get".into())));
        assert_eq!(r.describe(), "off sanitize-payload resetchannels -@all");
    }

    #[test]
    fn the_scripting_suites_user() {
        // Redis's "Script ACL check": `on >123 +@scripting +set ~x*`.
        let r = user(&["on", ">123", "+@scripting", "+set", "~x*"]);
        assert!(r.password_ok(b"123") && !r.password_ok(b"124"));
        assert_eq!(check(&r, &["set", "xx", "1"]), Ok(()));
        assert_eq!(check(&r, &["eval", "return 1", "1", "xx"]), Ok(()));
        assert_eq!(check(&r, &["eval", "return 1", "0"]), Ok(()));
        assert_eq!(
            check(&r, &["function", "load", "code"]),
            Ok(()),
            "FUNCTION is in @scripting"
        );
        assert_eq!(
            check(&r, &["set", "yy", "1"]),
            Err(Denied::Key(b"yy".to_vec()))
        );
        assert_eq!(
            check(&r, &["hset", "xx", "f", "1"]),
            Err(Denied::Command("hset".into()))
        );
        assert_eq!(
            check(&r, &["eval", "return 1", "1", "yy"]),
            Err(Denied::Key(b"yy".to_vec()))
        );
    }

    #[test]
    fn read_and_write_patterns() {
        let r = user(&["on", "nopass", "+@all", "%R~r*", "%W~w*", "~rw*"]);
        assert!(r.password_ok(b"anything"));
        assert_eq!(check(&r, &["get", "r1"]), Ok(()));
        assert_eq!(
            check(&r, &["set", "r1", "v"]),
            Err(Denied::Key(b"r1".to_vec()))
        );
        assert_eq!(check(&r, &["set", "w1", "v"]), Ok(()));
        assert_eq!(check(&r, &["get", "w1"]), Err(Denied::Key(b"w1".to_vec())));
        assert_eq!(check(&r, &["mset", "rw1", "v", "rw2", "v"]), Ok(()));
        assert_eq!(
            check(&r, &["mset", "rw1", "v", "x", "v"]),
            Err(Denied::Key(b"x".to_vec()))
        );
    }

    #[test]
    fn channels() {
        let r = user(&["on", "+@all", "&news.*", "&exact"]);
        assert_eq!(check(&r, &["publish", "news.a", "m"]), Ok(()));
        assert_eq!(
            check(&r, &["publish", "other", "m"]),
            Err(Denied::Channel(b"other".to_vec()))
        );
        assert_eq!(
            check(&r, &["subscribe", "exact", "nope"]),
            Err(Denied::Channel(b"nope".to_vec()))
        );
        assert_eq!(check(&r, &["psubscribe", "news.*"]), Ok(()));
        assert_eq!(
            check(&r, &["psubscribe", "news.a*"]),
            Err(Denied::Channel(b"news.a*".to_vec())),
            "a pattern must be one of the user's patterns, not merely match one"
        );
        let all = user(&["on", "+@all", "allchannels"]);
        assert_eq!(check(&all, &["psubscribe", "*"]), Ok(()));
        assert!(user(&["allchannels"]).channel_tokens() == ["&*"]);
    }

    #[test]
    fn command_rules_and_subcommands() {
        let r = user(&["on", "+@all", "-@write", "allkeys"]);
        assert_eq!(check(&r, &["get", "k"]), Ok(()));
        assert_eq!(
            check(&r, &["set", "k", "v"]),
            Err(Denied::Command("set".into()))
        );
        let r = user(&["on", "-@all", "+client|id", "+config|get"]);
        assert_eq!(check(&r, &["client", "id"]), Ok(()));
        assert_eq!(check(&r, &["CLIENT", "ID"]), Ok(()));
        assert_eq!(
            check(&r, &["client", "kill", "id", "1"]),
            Err(Denied::Command("client|kill".into()))
        );
        let r = user(&["on", "+@all", "-client|kill"]);
        assert_eq!(check(&r, &["client", "id"]), Ok(()));
        assert!(check(&r, &["client", "kill", "id", "1"]).is_err());
        assert_eq!(r.command_rules(), "+@all -client|kill");
        let r = user(&["+get", "+get", "-get", "+get"]);
        assert_eq!(
            r.command_rules(),
            "-@all -get +get",
            "repeats do not grow the list"
        );
    }

    #[test]
    fn bad_rules_change_nothing() {
        let users = AclUsers::default();
        users.set_user("u", &["on", "+get"]).unwrap();
        let before = users.get("u").unwrap().rules().describe();
        for bad in [
            "+nosuchcommand",
            "+@nosuchcategory",
            "bogus",
            "%X~k",
            "#abcd",
            "cred:sha256:00:00",
            "(~x +get)",
        ] {
            assert!(
                matches!(
                    users.set_user("u", &["off", bad]),
                    Err(AclError::Modifier { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(users.get("u").unwrap().rules().describe(), before);
        assert!(users.set_user("u", &["allkeys", "~x"]).is_err());
        assert!(users.set_user("a:b", &[]).is_err());
        assert!(users.set_user("default", &[]).is_err());
        assert!(users.set_user("a b", &[]).is_err());
    }

    #[test]
    fn passwords_are_salted_and_removable() {
        let users = AclUsers::default();
        users.set_user("u", &["on", ">one", ">two"]).unwrap();
        assert!(users.authenticate("u", b"one").is_some());
        assert!(users.authenticate("u", b"two").is_some());
        users.set_user("u", &["<one"]).unwrap();
        assert!(users.authenticate("u", b"one").is_none());
        assert!(users.set_user("u", &["<one"]).is_err());
        users.set_user("u", &["off"]).unwrap();
        assert!(
            users.authenticate("u", b"two").is_none(),
            "off users cannot log in"
        );
        let tokens = users.get("u").unwrap().tokens();
        assert!(!tokens.iter().any(|t| t.contains("two")), "{tokens:?}");
    }

    #[test]
    fn records_round_trip_and_bounds_hold() {
        let users = AclUsers::default();
        users
            .set_user(
                "u",
                &["on", ">pw", "~a b*", "%R~r", "&ch%1", "+@read", "-get"],
            )
            .unwrap();
        let records = users.records();
        let encoded: Vec<String> = records.iter().map(encode_record).collect();
        let decoded: Vec<UserRecord> = encoded.iter().map(|s| decode_record(s).unwrap()).collect();
        assert_eq!(decoded, records);
        let copy = AclUsers::default();
        copy.restore(&decoded).unwrap();
        let u = copy.authenticate("u", b"pw").expect("same password");
        assert_eq!(
            u.rules().describe(),
            users.get("u").unwrap().rules().describe()
        );
        assert!(decode_record("u %zz").is_err());

        for i in 1..MAX_USERS_PER_TENANT {
            users.set_user(&format!("u{i}"), &[]).unwrap();
        }
        assert_eq!(
            users.set_user("one-more", &[]).unwrap_err(),
            AclError::TooManyUsers
        );
        let long = format!("~{}", "k".repeat(MAX_RULE_BYTES_PER_USER));
        assert_eq!(
            users.set_user("u", &[long.as_str()]).unwrap_err(),
            AclError::TooLarge
        );
    }

    #[test]
    fn undo_reverts_each_change() {
        let users = AclUsers::default();
        let created = users.set_user("u", &["on", "nopass"]).unwrap();
        users.undo(created);
        assert!(users.get("u").is_none());
        users.set_user("u", &["on", "nopass"]).unwrap();
        let changed = users.set_user("u", &["off"]).unwrap();
        users.undo(changed);
        assert!(users.get("u").unwrap().rules().enabled());
        let deleted = users.delete("u").unwrap();
        assert!(users.get("u").is_none());
        users.undo(deleted);
        assert!(!users.get("u").unwrap().is_deleted());
    }
}
