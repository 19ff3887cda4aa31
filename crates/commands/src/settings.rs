//! Server-wide settings that data commands read (Redis keeps these in its global `server`
//! struct). CONFIG SET writes them; commands read them with relaxed loads, so a change applies
//! from the next command on.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// `hll-sparse-max-bytes`: a sparse HyperLogLog that would grow past this many bytes (header
/// included) is converted to the dense representation.
static HLL_SPARSE_MAX_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_HLL_SPARSE_MAX_BYTES);

/// Redis's default for `hll-sparse-max-bytes`.
pub const DEFAULT_HLL_SPARSE_MAX_BYTES: usize = 3000;

pub fn hll_sparse_max_bytes() -> usize {
    HLL_SPARSE_MAX_BYTES.load(Relaxed)
}

pub fn set_hll_sparse_max_bytes(n: usize) {
    HLL_SPARSE_MAX_BYTES.store(n, Relaxed);
}
