//! CPU priority for a snapshot's encoder thread ([`crate::snapshot::write_file`]): it runs at
//! Linux's `SCHED_IDLE`, so the encoding and the file writes — most of a snapshot's CPU time —
//! take only CPU time that no other thread wants, and the kernel counts a CPU that runs only
//! them as idle when it places a waking thread (the connections' worker, a client on the same
//! machine). At normal priority the snapshot held a core for its whole walk, and on a machine
//! with few cores a waking worker queued behind another thread meanwhile (the write p99 during
//! a snapshot, docs/benchmarks.md).
//!
//! Only a thread that never holds a lock other threads wait for may run at `SCHED_IDLE`: the
//! kernel can keep it off the CPU for as long as other threads want it, and a lock held
//! meanwhile would stall its waiters just as long (priority inversion). So the walk, whose steps
//! hold the tenant's keyspace lock, stays on a thread at normal priority. A thread enters
//! `SCHED_IDLE` for good: going back needs `CAP_SYS_NICE` (sched(7)), entering does not, so this
//! works for any user.

/// Moves the calling thread to `SCHED_IDLE` for the rest of its life. Returns whether the
/// kernel accepted it (off Linux: `false`, and the thread keeps its priority).
pub fn enter_idle() -> bool {
    set_policy_idle()
}

#[cfg(target_os = "linux")]
fn set_policy_idle() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread (sched_setscheduler(2) acts on one thread on
    // Linux), `param` is a valid `sched_param` that lives across the call and the kernel only
    // reads it; the call has no other memory effect.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn set_policy_idle() -> bool {
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
    fn enter_idle_moves_only_the_calling_thread_to_sched_idle() {
        let before = policy();
        let inside = std::thread::spawn(|| (enter_idle(), policy()))
            .join()
            .expect("test thread");
        assert_eq!(inside, (true, libc::SCHED_IDLE));
        assert_eq!(policy(), before, "the other threads keep theirs");
    }
}
