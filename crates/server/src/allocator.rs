//! The process's memory allocator: which one it is, and what it says about the memory it holds.
//!
//! Every program that links this crate gets the allocator chosen by its features: the system's
//! malloc (glibc; the default), jemalloc (`jemalloc`, as Redis uses it) or mimalloc
//! (`mimalloc`). It is set here and not in the binary so that what INFO memory reports is always
//! the allocator the process really runs on, in the server binary, tests and benchmarks alike.
//! docs/benchmarks.md ("The allocator") has the measurements that kept glibc: jemalloc and
//! mimalloc cost memory on 100-byte strings (past the 0.8× Redis goal) and CPU on 16 KiB values.

#[cfg(all(feature = "jemalloc", feature = "mimalloc"))]
compile_error!("features `jemalloc` and `mimalloc` pick the global allocator: enable one of them");

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the allocator says about the memory it holds, in bytes (jemalloc's `stats.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in live allocations, as the program asked for them rounded to size classes.
    pub allocated: u64,
    /// Bytes in the pages holding live allocations (allocated plus the free slots among them).
    pub active: u64,
    /// Bytes of the allocator's pages that are resident (active, its metadata, and dirty pages
    /// not yet given back to the kernel).
    pub resident: u64,
    /// Bytes the allocator has mapped from the kernel (resident or not).
    pub mapped: u64,
}

/// The allocator's name as INFO memory's `mem_allocator` reports it (Redis: `jemalloc-5.3.0`,
/// `libc`).
pub fn name() -> String {
    #[cfg(feature = "jemalloc")]
    {
        // jemalloc's version reads "5.3.1-0-g81034c..."; Redis reports the release only.
        let version = tikv_jemalloc_ctl::version::read().unwrap_or("unknown");
        let release = version.split('-').next().unwrap_or(version);
        format!("jemalloc-{release}")
    }
    #[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
    {
        "mimalloc".to_string()
    }
    #[cfg(not(any(feature = "jemalloc", feature = "mimalloc")))]
    {
        "libc".to_string()
    }
}

/// The allocator's current statistics, when it keeps them (jemalloc only).
pub fn stats() -> Option<Stats> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // jemalloc caches its statistics; a new epoch refreshes them.
        epoch::advance().ok()?;
        Some(Stats {
            allocated: stats::allocated::read().ok()? as u64,
            active: stats::active::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
            mapped: stats::mapped::read().ok()? as u64,
        })
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}

/// Gives the allocator's unused dirty pages back to the kernel (MEMORY PURGE). Returns whether
/// the allocator could do it.
pub fn purge() -> bool {
    #[cfg(feature = "jemalloc")]
    {
        // "arena.<MALLCTL_ARENAS_ALL>.purge", as Redis's MEMORY PURGE does it; MALLCTL_ARENAS_ALL
        // is 4096 in jemalloc 5.
        const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
        // SAFETY: the name is NUL-terminated, and this mallctl neither reads nor writes a value,
        // so every pointer is null with a length of zero, as jemalloc's ctl requires for it.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                PURGE_ALL.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        rc == 0
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        false
    }
}

/// The allocator's own report (MEMORY MALLOC-STATS), when it has one.
pub fn report() -> Option<String> {
    #[cfg(feature = "jemalloc")]
    {
        let mut out = Vec::new();
        tikv_jemalloc_ctl::stats_print::stats_print(
            &mut out,
            tikv_jemalloc_ctl::stats_print::Options::default(),
        )
        .ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocator_reports_what_it_holds() {
        let name = name();
        if cfg!(feature = "jemalloc") {
            assert!(name.starts_with("jemalloc-5."), "{name}");
            // A live allocation is counted: allocated grows by at least its size.
            let before = stats().expect("jemalloc keeps statistics").allocated;
            let block = vec![7u8; 8 << 20];
            let during = stats().expect("jemalloc keeps statistics");
            assert!(
                during.allocated >= before + (8 << 20),
                "{before} {during:?}"
            );
            assert!(during.allocated <= during.active, "{during:?}");
            assert!(during.active <= during.resident, "{during:?}");
            assert!(during.resident <= during.mapped, "{during:?}");
            drop(block);
            assert!(purge());
            assert!(report().is_some_and(|r| r.contains("Allocated:")));
        } else {
            assert!(stats().is_none());
            assert!(!purge());
            assert!(report().is_none());
        }
    }
}
