//! The C libraries Redis gives scripts (`cjson`, `cmsgpack`, `struct`, `bit`), compiled by
//! build.rs from the sources Redis vendors. Each `luaopen_*` registers its global table, as it
//! does in Redis (`luaLoadLib`).

use mlua::{Lua, ffi};

unsafe extern "C-unwind" {
    fn luaopen_cjson(l: *mut ffi::lua_State) -> std::os::raw::c_int;
    fn luaopen_cmsgpack(l: *mut ffi::lua_State) -> std::os::raw::c_int;
    fn luaopen_struct(l: *mut ffi::lua_State) -> std::os::raw::c_int;
    fn luaopen_bit(l: *mut ffi::lua_State) -> std::os::raw::c_int;
}

/// Opens the four libraries; each sets its global (`cjson`, `cmsgpack`, `struct`, `bit`).
pub fn open(lua: &Lua) -> mlua::Result<()> {
    let openers: [ffi::lua_CFunction; 4] =
        [luaopen_cjson, luaopen_cmsgpack, luaopen_struct, luaopen_bit];
    for open in openers {
        // SAFETY: each opener is a regular Lua C function (lua_CFunction ABI) compiled against
        // the same Lua 5.1 headers as the linked Lua; mlua calls it in protected mode.
        let f = unsafe { lua.create_c_function(open)? };
        f.call::<()>(())?;
    }
    Ok(())
}
