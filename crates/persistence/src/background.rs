//! CPU priority for a snapshot's work between its walk steps: [`idle_while`] runs the encoding
//! and the file writes at Linux's `SCHED_IDLE`, so they take only CPU time that no other thread
//! wants, and the kernel counts a CPU that runs only them as idle when it places a waking thread
//! (the connections' worker, a client on the same machine). Without it the snapshot thread holds
//! a core at normal priority for the whole walk, and on a machine with few cores a waking worker
//! is queued behind another thread on the other core while the snapshot runs (the write p99
//! during a snapshot, docs/benchmarks.md).
//!
//! Only work that holds no lock another thread waits for runs at `SCHED_IDLE`: a thread at that
//! priority can be kept off the CPU for as long as other threads want it, and a lock it held
//! meanwhile would stall its waiters just as long (priority inversion). So the walk step itself
//! (which holds the tenant's keyspace lock), the job bookkeeping and everything else of the
//! thread stay at normal priority; [`idle_while`] switches there and back around one closure.
//!
//! Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20 (sched(7)): a process
//! without them could lower a thread's priority but never raise it again. Whether this process
//! can do both is probed once, on a throwaway thread ([`can_switch`]); where it cannot (or off
//! Linux) [`idle_while`] just runs the closure at the thread's normal priority.

use std::sync::OnceLock;

/// Runs `f` at `SCHED_IDLE` when this process may switch the calling thread there and back (see
/// the module documentation), at normal priority otherwise. `f` must not take a lock that other
/// threads wait for.
pub fn idle_while<R>(f: impl FnOnce() -> R) -> R {
    if !can_switch() || !set_idle(true) {
        return f();
    }
    // Back to normal priority even if `f` panics: the thread goes on with other jobs.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            set_idle(false);
        }
    }
    let _restore = Restore;
    f()
}

/// Whether a thread of this process can switch to `SCHED_IDLE` and back (probed once).
pub fn can_switch() -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    *CAN.get_or_init(|| {
        // A throwaway thread: if it can enter SCHED_IDLE but not leave it, it just ends.
        std::thread::Builder::new()
            .name("ferrite-prio-probe".into())
            .spawn(|| set_idle(true) && set_idle(false))
            .ok()
            .and_then(|h| h.join().ok())
            .unwrap_or(false)
    })
}

/// Sets the calling thread's scheduling policy: `SCHED_IDLE` or `SCHED_OTHER` (its nice value
/// is kept). Returns whether the kernel accepted it.
#[cfg(target_os = "linux")]
fn set_idle(idle: bool) -> bool {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread (sched_setscheduler(2) acts on one thread on
    // Linux), `param` is a valid `sched_param` that lives across the call and the kernel only
    // reads it; the call has no other memory effect.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn set_idle(_idle: bool) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: pid 0 is the calling thread; no memory is passed.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn idle_while_runs_the_closure_at_sched_idle_and_restores_normal_priority() {
        std::thread::spawn(|| {
            assert_eq!(policy(), libc::SCHED_OTHER);
            let inside = idle_while(policy);
            if can_switch() {
                assert_eq!(inside, libc::SCHED_IDLE);
            } else {
                assert_eq!(
                    inside,
                    libc::SCHED_OTHER,
                    "no switch without the right to undo it"
                );
            }
            assert_eq!(policy(), libc::SCHED_OTHER);
            // A panic inside still restores it.
            let caught = std::panic::catch_unwind(|| idle_while(|| panic!("inside")));
            assert!(caught.is_err());
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .expect("test thread");
    }
}
