//! Compiles the C libraries Redis exposes to scripts (cjson, cmsgpack, struct, bit — the very
//! sources Redis 7.0 vendors in deps/lua/src, see lua-libs/README.md) against the headers of
//! the vendored Lua 5.1 that mlua builds.

fn main() {
    let include = std::env::var("DEP_LUA_INCLUDE").expect("mlua-sys exports the Lua include dir");
    let files = [
        "lua_cjson.c",
        "strbuf.c",
        "fpconv.c",
        "lua_cmsgpack.c",
        "lua_struct.c",
        "lua_bit.c",
    ];
    let mut build = cc::Build::new();
    build
        .include(&include)
        .include("lua-libs")
        // As Redis builds them (deps/Makefile): cjson registers the `cjson` global.
        .define("ENABLE_CJSON_GLOBAL", None)
        .define("REDIS_STATIC", Some(""))
        .warnings(false)
        .opt_level(2);
    for f in files {
        build.file(format!("lua-libs/{f}"));
        println!("cargo:rerun-if-changed=lua-libs/{f}");
    }
    println!("cargo:rerun-if-changed=lua-libs/strbuf.h");
    println!("cargo:rerun-if-changed=lua-libs/fpconv.h");
    build.compile("ferrite_lua_libs");
}
