//! A tenant's running script, as the tenant's other connections see it: Redis's "busy script"
//! state (`-BUSY` after `busy-reply-threshold`), SCRIPT KILL / FUNCTION KILL and FUNCTION STATS.
//! The script itself holds the tenant's keyspace lock; this is read without it.

use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use parking_lot::Mutex;

/// Which command runs the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// EVAL, EVALSHA and their _RO forms (killed by SCRIPT KILL).
    Eval,
    /// FCALL, FCALL_RO (killed by FUNCTION KILL).
    Function,
}

/// Why a kill request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillRefused {
    /// No script is running.
    NotBusy,
    /// The script already wrote: killing it would leave a half-applied script.
    Unkillable,
    /// A function is running and SCRIPT KILL was asked (or an EVAL and FUNCTION KILL).
    WrongKind(ScriptKind),
}

/// What FUNCTION STATS shows of the running script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningScript {
    pub kind: ScriptKind,
    /// The function's name, or the script's SHA1.
    pub name: String,
    /// The command and its arguments as sent (FCALL name numkeys ...).
    pub command: Vec<Vec<u8>>,
    pub started_ms: u64,
    /// The keyspace's write version when it started: a WATCH that arrives while it runs
    /// (and holds the lock) treats keys written or removed after it as changed.
    pub keyspace_version: u64,
}

/// The running script of one tenant (at most one: it holds the tenant's lock).
///
/// Starting a script is on EVALSHA's fast path, so what it records is split by who reads it:
/// the kind, the start time and the keyspace's version are atomics (`-BUSY`, SCRIPT KILL,
/// WATCH); the name and the command, which only FUNCTION STATS shows and only for a function
/// (Redis shows no EVAL there), are copied under a lock for FCALL alone.
#[derive(Debug, Default)]
pub struct ScriptActivity {
    /// Unix ms when the running script started; 0 when none runs. Stored last (Release) when
    /// a script starts, so a reader that sees it set (Acquire) sees that script's other fields.
    started_ms: AtomicU64,
    kind: AtomicU8,
    kill: AtomicBool,
    wrote: AtomicBool,
    /// The keyspace's write version when the running script started (see
    /// [`RunningScript::keyspace_version`]).
    keyspace_version: AtomicU64,
    /// The running function's record (kept, and refilled in place, between functions); stale
    /// while an EVAL runs, which [`ScriptActivity::running_function`] tells by `kind`.
    details: Mutex<Option<RunningScript>>,
    /// Libraries and functions loaded (FUNCTION STATS answers without the keyspace lock).
    libraries: AtomicU64,
    functions: AtomicU64,
    /// Scripts in the EVAL cache (INFO memory `number_of_cached_scripts`, without the lock).
    cached_scripts: AtomicU64,
}

impl ScriptActivity {
    /// A script starts (its runner holds the tenant's keyspace lock).
    pub fn start(&self, script: RunningScript) {
        self.start_with(
            script.kind,
            &script.name,
            script.command.iter().map(Vec::as_slice),
            script.started_ms,
            script.keyspace_version,
        );
    }

    /// A script starts, described by borrowed parts. An EVAL/EVALSHA records only atomics (no
    /// lock, no copy: scripts start at every EVALSHA); a function's name and command are copied
    /// into a record kept between functions and refilled in place, so starting one allocates
    /// nothing once the record has grown to the usual size.
    pub fn start_with<'a>(
        &self,
        kind: ScriptKind,
        name: &str,
        command: impl Iterator<Item = &'a [u8]>,
        started_ms: u64,
        keyspace_version: u64,
    ) {
        self.kill.store(false, Relaxed);
        self.wrote.store(false, Relaxed);
        self.keyspace_version.store(keyspace_version, Relaxed);
        if kind == ScriptKind::Function {
            self.record_function(name, command, started_ms, keyspace_version);
        }
        // After the record: a FUNCTION STATS that sees `kind` Function while `started_ms` is
        // set reads this function's record (it takes the record's lock, which we released).
        self.kind.store(kind as u8, Relaxed);
        self.started_ms.store(started_ms.max(1), Release);
    }

    /// Fills the record FUNCTION STATS reads for a function that starts.
    fn record_function<'a>(
        &self,
        name: &str,
        command: impl Iterator<Item = &'a [u8]>,
        started_ms: u64,
        keyspace_version: u64,
    ) {
        let kind = ScriptKind::Function;
        let mut details = self.details.lock();
        let record = details.get_or_insert_with(|| RunningScript {
            kind,
            name: String::new(),
            command: Vec::new(),
            started_ms,
            keyspace_version,
        });
        record.kind = kind;
        record.name.clear();
        record.name.push_str(name);
        record.started_ms = started_ms;
        record.keyspace_version = keyspace_version;
        let mut n = 0;
        for (i, arg) in command.enumerate() {
            match record.command.get_mut(i) {
                Some(slot) => {
                    slot.clear();
                    slot.extend_from_slice(arg);
                }
                None => record.command.push(arg.to_vec()),
            }
            n = i + 1;
        }
        record.command.truncate(n);
    }

    /// Records how many libraries and functions the tenant has loaded.
    pub fn set_function_counts(&self, (libraries, functions): (usize, usize)) {
        self.libraries.store(libraries as u64, Relaxed);
        self.functions.store(functions as u64, Relaxed);
    }

    /// Records how many scripts the tenant's EVAL cache holds.
    pub fn set_cached_scripts(&self, n: usize) {
        self.cached_scripts.store(n as u64, Relaxed);
    }

    /// Scripts in the EVAL cache as last recorded.
    pub fn cached_scripts(&self) -> u64 {
        self.cached_scripts.load(Relaxed)
    }

    /// (libraries, functions) as last recorded.
    pub fn function_counts(&self) -> (u64, u64) {
        (self.libraries.load(Relaxed), self.functions.load(Relaxed))
    }

    /// The script ended. Its record stays allocated for the next one (see
    /// [`ScriptActivity::start_with`]); nobody reads it while no script runs.
    pub fn finish(&self) {
        self.started_ms.store(0, Relaxed);
        self.kill.store(false, Relaxed);
    }

    /// When the running script started and which kind it is, if one runs.
    pub fn running_since(&self) -> Option<(u64, ScriptKind)> {
        match self.started_ms.load(Relaxed) {
            0 => None,
            t => Some((t, self.kind())),
        }
    }

    fn kind(&self) -> ScriptKind {
        if self.kind.load(Relaxed) == ScriptKind::Function as u8 {
            ScriptKind::Function
        } else {
            ScriptKind::Eval
        }
    }

    /// The running function, for FUNCTION STATS (which shows no EVAL script, as in Redis).
    pub fn running_function(&self) -> Option<RunningScript> {
        // Read under the record's lock, which `start_with` releases before it marks a function
        // running: a record seen while `started_ms` is set and `kind` is Function is the
        // running function's (an EVAL leaves the last function's record, stale, in place).
        let details = self.details.lock();
        if self.started_ms.load(Acquire) == 0 || self.kind() != ScriptKind::Function {
            return None;
        }
        details.clone()
    }

    /// The keyspace's write version when the running script started, if one runs (a WATCH
    /// sent while it holds the keyspace is judged against it).
    pub fn running_keyspace_version(&self) -> Option<u64> {
        if self.started_ms.load(Acquire) == 0 {
            return None;
        }
        Some(self.keyspace_version.load(Relaxed))
    }

    /// The script ran a write command: it can no longer be killed.
    pub fn mark_wrote(&self) {
        self.wrote.store(true, Relaxed);
    }

    /// SCRIPT KILL (`kind` Eval) or FUNCTION KILL (`kind` Function), as Redis decides them.
    pub fn request_kill(&self, kind: ScriptKind) -> Result<(), KillRefused> {
        let Some((_, running)) = self.running_since() else {
            return Err(KillRefused::NotBusy);
        };
        if self.wrote.load(Relaxed) {
            return Err(KillRefused::Unkillable);
        }
        if running != kind {
            return Err(KillRefused::WrongKind(running));
        }
        self.kill.store(true, Relaxed);
        Ok(())
    }

    /// Stops the running script whatever it did (SHUTDOWN NOSAVE).
    pub fn force_kill(&self) {
        if self.running_since().is_some() {
            self.kill.store(true, Relaxed);
        }
    }

    /// The running script was asked to stop (its Lua hook reads this).
    pub fn kill_requested(&self) -> bool {
        self.kill.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_refilled_in_place_and_shows_only_the_running_function() {
        let a = ScriptActivity::default();
        assert_eq!(a.running_function(), None);
        assert_eq!(a.running_keyspace_version(), None);
        let long: Vec<&[u8]> = vec![b"FCALL", b"fn", b"2", b"k1", b"k2", b"arg"];
        a.start_with(ScriptKind::Function, "fn", long.iter().copied(), 7, 3);
        let r = a.running_function().unwrap();
        assert_eq!(
            (r.kind, r.name.as_str(), r.started_ms, r.keyspace_version),
            (ScriptKind::Function, "fn", 7, 3)
        );
        assert_eq!(
            r.command,
            long.iter().map(|a| a.to_vec()).collect::<Vec<_>>()
        );
        assert_eq!(a.running_keyspace_version(), Some(3));
        a.finish();
        assert_eq!(a.running_function(), None);
        assert_eq!(a.running_keyspace_version(), None);
        // An EVAL in between: FUNCTION STATS shows no EVAL, and not the last function either;
        // WATCH and -BUSY still see it.
        let eval: Vec<&[u8]> = vec![b"EVALSHA", b"abc", b"0"];
        a.start_with(ScriptKind::Eval, "abc", eval.iter().copied(), 8, 4);
        assert_eq!(a.running_function(), None);
        assert_eq!(a.running_keyspace_version(), Some(4));
        assert_eq!(a.running_since(), Some((8, ScriptKind::Eval)));
        a.finish();
        // A shorter command after a longer one: no leftovers of the first.
        let short: Vec<&[u8]> = vec![b"FCALL", b"f", b"0"];
        a.start_with(ScriptKind::Function, "f", short.iter().copied(), 9, 5);
        let r = a.running_function().unwrap();
        assert_eq!(
            (r.kind, r.name.as_str(), r.started_ms),
            (ScriptKind::Function, "f", 9)
        );
        assert_eq!(
            r.command,
            vec![b"FCALL".to_vec(), b"f".to_vec(), b"0".to_vec()]
        );
        assert_eq!(a.running_since(), Some((9, ScriptKind::Function)));
        assert_eq!(a.running_keyspace_version(), Some(5));
    }

    fn script(kind: ScriptKind) -> RunningScript {
        RunningScript {
            kind,
            name: "f".into(),
            command: vec![b"FCALL".to_vec()],
            started_ms: 100,
            keyspace_version: 7,
        }
    }

    #[test]
    fn kill_rules_are_redis_s() {
        let a = ScriptActivity::default();
        assert_eq!(a.request_kill(ScriptKind::Eval), Err(KillRefused::NotBusy));
        a.start(script(ScriptKind::Function));
        assert_eq!(a.running_since(), Some((100, ScriptKind::Function)));
        assert_eq!(
            a.request_kill(ScriptKind::Eval),
            Err(KillRefused::WrongKind(ScriptKind::Function))
        );
        assert!(!a.kill_requested());
        assert_eq!(a.request_kill(ScriptKind::Function), Ok(()));
        assert!(a.kill_requested());
        a.finish();
        assert!(!a.kill_requested() && a.running_since().is_none());
        assert_eq!(a.running_function(), None);
        a.start(script(ScriptKind::Eval));
        a.mark_wrote();
        assert_eq!(
            a.request_kill(ScriptKind::Eval),
            Err(KillRefused::Unkillable)
        );
        a.force_kill();
        assert!(a.kill_requested());
    }
}
