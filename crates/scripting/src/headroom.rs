//! Allocating in the Lua heap from Rust without mlua's per-call protection, when the heap's
//! memory limit cannot be reached.
//!
//! While a memory limit is set, mlua runs every Rust call that may allocate in the Lua heap
//! (`create_string`, `create_table`, `raw_set`, pushing a string...) inside a Lua protected
//! call, because the allocation may fail and a Lua error outside a protected call would abort.
//! Each such call pushes a fresh C closure: in a `perf` profile of EVALSHA of a one-command
//! script that, with the garbage collection the closures cause, took more CPU than the script
//! and its command together (building KEYS and ARGV alone was 17% of the server's samples).
//!
//! A step whose allocations are bounded in advance (the KEYS/ARGV tables of a request that is
//! already in memory, built with plain C API calls by `Engine::key_and_arg_tables`; the Lua
//! value of a command reply of known length) therefore runs with the
//! limit lifted when the heap cannot pass the limit even if the step allocates its whole bound.
//! Otherwise it runs protected, with the limit, as before: a step that would pass the limit
//! still fails with "not enough memory". No Lua code runs while the limit is lifted (only C API
//! calls made from Rust; scripts cannot create userdata with `__gc`), so a script never
//! allocates without the limit.

use mlua::Lua;

/// Heap bytes that `n` items of `bytes` bytes in all may take as Lua strings stored in one new
/// table: a table (64 bytes) with its array part (16 bytes a slot), and per string its header
/// (24 bytes and a terminating zero), rounded up generously.
pub(crate) fn strings_bound(n: usize, bytes: usize) -> usize {
    128usize
        .saturating_add(n.saturating_mul(64))
        .saturating_add(bytes)
}

/// Heap bytes the Lua value of a RESP reply of `len` bytes may take. The most expensive element
/// per reply byte is a status or error of an empty text (`+\r\n`, 3 bytes): a table with one
/// hash node (about 104 bytes) and a string (25 bytes), about 43 bytes per reply byte; every
/// other element costs less per byte (a table of a map grows by doubling: at most twice its
/// final size, 40 bytes a node for two elements of at least 3 bytes each).
pub(crate) fn reply_bound(len: usize) -> usize {
    len.saturating_mul(64).saturating_add(1024)
}

/// Lifts the heap's memory limit until dropped, if the heap stays within `limit` even after
/// allocating `bound` more bytes. The margin (twice `used + bound` must fit) covers what Lua
/// allocates besides the values themselves: interning a new string may double the string
/// table's array, at most 16 bytes per interned string, each of which takes at least 25 bytes
/// of the heap.
#[must_use]
pub(crate) fn lift(lua: &Lua, limit: usize, bound: usize) -> Option<Lifted<'_>> {
    if limit == 0 {
        // No limit: mlua does not protect anything already.
        return None;
    }
    let needed = lua.used_memory().saturating_add(bound).saturating_mul(2);
    if needed > limit {
        return None;
    }
    lua.set_memory_limit(0).ok()?;
    Some(Lifted { lua, limit })
}

/// The limit is lifted; dropping this puts it back (also if the step panics).
pub(crate) struct Lifted<'a> {
    lua: &'a Lua,
    limit: usize,
}

impl Drop for Lifted<'_> {
    fn drop(&mut self) {
        let _ = self.lua.set_memory_limit(self.limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifts_only_with_room_and_always_restores() {
        let lua = Lua::new();
        lua.set_memory_limit(8 << 20).unwrap();
        {
            let lifted = lift(&lua, 8 << 20, 1024);
            assert!(lifted.is_some());
            // Lifted: a large allocation succeeds...
            let s = lua.create_string(vec![b'x'; 9 << 20]).unwrap();
            drop(s);
        }
        lua.gc_collect().unwrap();
        // ... and once dropped the limit holds again.
        assert!(lua.create_string(vec![b'x'; 9 << 20]).is_err());
        // Not enough room for the bound (twice used + bound must fit): stays protected.
        let used = lua.used_memory();
        assert!(lift(&lua, 8 << 20, (4 << 20) - used + 4096).is_none());
        assert!(lift(&lua, 8 << 20, (4 << 20) - used - 4096).is_some());
        // No limit: nothing to lift.
        assert!(lift(&lua, 0, 10).is_none());
    }

    #[test]
    fn bounds_cover_what_lua_really_allocates() {
        // Every reply element kind, many times, against the bound of its length.
        let lua = Lua::new();
        for reply in [
            &b"*3\r\n+\r\n+\r\n+\r\n"[..],
            b"*4\r\n-\r\n-E\r\n:1\r\n$0\r\n\r\n",
            b"%2\r\n+\r\n+\r\n+a\r\n+b\r\n",
            b"~3\r\n+\r\n+a\r\n+b\r\n",
            b"*2\r\n,1.5\r\n(12\r\n",
            b"=8\r\ntxt:abcd\r\n",
        ] {
            let mut items = Vec::new();
            lua.gc_collect().unwrap();
            let before = lua.used_memory();
            for _ in 0..1000 {
                items.push(crate::convert::reply_to_lua(&lua, reply).unwrap());
            }
            let grew = lua.used_memory().saturating_sub(before);
            assert!(
                grew <= 1000 * reply_bound(reply.len()),
                "{:?}: {grew} bytes for 1000 replies",
                String::from_utf8_lossy(reply)
            );
        }
        // Strings in a table.
        let items: Vec<Vec<u8>> = (0..1000).map(|i| format!("k{i}").into_bytes()).collect();
        lua.gc_collect().unwrap();
        let before = lua.used_memory();
        let t = lua.create_table_with_capacity(items.len(), 0).unwrap();
        for (i, item) in items.iter().enumerate() {
            t.raw_set(i + 1, lua.create_string(item).unwrap()).unwrap();
        }
        let grew = lua.used_memory().saturating_sub(before);
        let bytes: usize = items.iter().map(Vec::len).sum();
        assert!(grew <= strings_bound(items.len(), bytes), "{grew}");
    }
}
