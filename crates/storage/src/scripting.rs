//! What a keyspace keeps for scripting.
//!
//! Function libraries (FUNCTION LOAD) are tenant data, like keys: they are kept here, by library
//! name, as the code the tenant loaded, so that everything that copies or checks a keyspace —
//! migration, persistence, digests — can carry them without knowing Lua. The scripting engine
//! that runs scripts (a Lua state, compiled functions, the EVAL script cache) is not data: it
//! is a cache built from the libraries, parked here so that it is owned by whoever holds the
//! keyspace's lock and dropped with the keyspace.

use std::any::Any;
use std::collections::BTreeMap;

use crate::digest::{hash_pair, mix64};

/// The scripting part of a keyspace.
#[derive(Default)]
pub struct Scripting {
    libraries: BTreeMap<String, Vec<u8>>,
    /// Bumped on every change of `libraries`: an engine built from an older version reloads.
    version: u64,
    /// The engine (an opaque `ferrite_scripting::Engine` to this crate).
    engine: Option<Box<dyn Any + Send>>,
}

impl Scripting {
    /// The function libraries: name → full code (with its `#!lua name=...` line).
    pub fn libraries(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.libraries
    }

    /// Replaces every library at once (FUNCTION LOAD/DELETE/FLUSH/RESTORE, an import, a load
    /// from disk). Through [`crate::Db::set_libraries`], which keeps the digest.
    pub(crate) fn set_libraries(&mut self, libraries: BTreeMap<String, Vec<u8>>) {
        self.libraries = libraries;
        self.version += 1;
    }

    /// Adds or replaces one library (replaying `FUNCTION LOAD REPLACE <code>`); false if the code
    /// has no `#!<engine> name=<name>` line.
    pub(crate) fn put_library(&mut self, code: &[u8]) -> bool {
        let Some(name) = library_name(code) else {
            return false;
        };
        self.libraries.insert(name, code.to_vec());
        self.version += 1;
        true
    }

    /// Removes one library (replaying `FUNCTION DELETE <name>`); false if it did not exist.
    pub(crate) fn remove_library(&mut self, name: &str) -> bool {
        let removed = self.libraries.remove(name).is_some();
        self.version += 1;
        removed
    }

    /// Changes with every change of the libraries.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Order-independent digest of the libraries (0 when there are none, so a tenant without
    /// functions keeps the digest of its keys alone).
    pub fn digest(&self) -> u64 {
        self.libraries.iter().fold(0u64, |acc, (name, code)| {
            acc.wrapping_add(mix64(hash_pair(name.as_bytes(), code)))
        })
    }

    /// Takes the engine out (to run a script while the keyspace is borrowed by the script's
    /// commands); put it back with [`Scripting::put_engine`].
    pub fn take_engine(&mut self) -> Option<Box<dyn Any + Send>> {
        self.engine.take()
    }

    pub fn put_engine(&mut self, engine: Box<dyn Any + Send>) {
        self.engine = Some(engine);
    }

    /// Drops the engine (its script cache and Lua heap); the next script builds a new one.
    pub fn drop_engine(&mut self) -> Option<Box<dyn Any + Send>> {
        self.engine.take()
    }
}

/// The name a library's first line declares (`#!lua name=mylib`), as Redis reads it. The code
/// was checked by the engine when it was loaded; this only finds the name again (replaying an
/// append-only log, an import).
pub fn library_name(code: &[u8]) -> Option<String> {
    let line = code.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line.strip_prefix(b"#!")?).ok()?;
    line.split_ascii_whitespace().skip(1).find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.eq_ignore_ascii_case("name").then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_data_with_a_digest() {
        let mut s = Scripting::default();
        assert_eq!(s.digest(), 0);
        assert!(s.put_library(b"#!lua name=a\nredis.register_function('f', function() end)"));
        assert!(!s.put_library(b"no header"));
        let d1 = s.digest();
        assert_ne!(d1, 0);
        let v = s.version();
        assert!(s.put_library(b"#!lua name=b\nx"));
        assert!(s.version() > v);
        assert_ne!(s.digest(), d1);
        assert!(s.remove_library("b"));
        assert_eq!(s.digest(), d1);
        assert!(!s.remove_library("b"));
        assert_eq!(library_name(b"#!lua  NAME=x_1 \n"), Some("x_1".into()));
        assert_eq!(library_name(b"#!lua\n"), None);
    }
}
