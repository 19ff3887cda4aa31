//! Function libraries (FUNCTION LOAD and friends): a library is Lua code with a
//! `#!lua name=<lib>` line that registers functions with `redis.register_function` while it is
//! loaded; FCALL runs them. The code of every library is what Ferrite keeps as the tenant's
//! data ([`Engine::library_codes`]); the compiled functions live in the engine.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ferrite_protocol::ErrorReply;
use mlua::{Function, MultiValue, Table, Value};

use crate::engine::Engine;
use crate::shebang::ScriptFlags;

/// How long a library's code may run while it is loaded (Redis: 500 ms).
pub const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// Flags of a registered function (the same names as a script shebang's).
pub type FunctionFlags = ScriptFlags;

/// A registered function.
pub(crate) struct Registered {
    /// The name as registered (the map's key is its lower case: FCALL finds functions
    /// case-insensitively, as Redis's function dictionary does).
    pub(crate) name: String,
    pub(crate) func: Function,
    pub(crate) library: String,
    pub(crate) description: Option<String>,
    pub(crate) flags: FunctionFlags,
}

/// What FUNCTION LIST shows of a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryInfo {
    pub name: String,
    pub engine: &'static str,
    /// (name, description, flags), by name.
    pub functions: Vec<(String, Option<String>, Vec<&'static str>)>,
    pub code: Vec<u8>,
}

/// The libraries of an engine.
#[derive(Default)]
pub(crate) struct Libraries {
    /// Library name → its full code (with the shebang line).
    pub(crate) code: BTreeMap<String, Vec<u8>>,
    /// Function name in lower case → the function.
    pub(crate) functions: BTreeMap<String, Registered>,
}

impl Libraries {
    pub(crate) fn function(&self, name: &str) -> Option<&Registered> {
        self.functions.get(&name.to_ascii_lowercase())
    }
}

/// What `redis.register_function` collects while a library loads.
#[derive(Default)]
pub(crate) struct Loading {
    pub(crate) active: bool,
    pub(crate) functions: Vec<NamedArgs>,
    pub(crate) deadline: Option<Instant>,
}

/// The library name and code after the shebang, as `functionExtractLibMetaData` parses them.
pub fn parse_library_header(code: &[u8]) -> Result<(String, usize), ErrorReply> {
    if !code.starts_with(b"#!") {
        return Err(ErrorReply::err("Missing library metadata"));
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Err(ErrorReply::err("Invalid library metadata"));
    };
    // Split as Redis's sdssplitargs does: `name="foo"` is `name=foo`.
    let Ok(parts) = ferrite_protocol::request::split_command_line(&code[..end]) else {
        return Err(ErrorReply::err("Invalid library metadata"));
    };
    let mut parts = parts
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p).into_owned());
    let Some(first) = parts.next() else {
        return Err(ErrorReply::err("Invalid library metadata"));
    };
    let engine = first.get(2..).unwrap_or_default().to_string();
    let mut name = None;
    for part in parts {
        if part.len() >= 5 && part.as_bytes()[..5].eq_ignore_ascii_case(b"name=") {
            if name.is_some() {
                return Err(ErrorReply::err(
                    "Invalid metadata value, name argument was given multiple times",
                ));
            }
            name = Some(part[5..].to_string());
            continue;
        }
        return Err(ErrorReply::err(format!(
            "Invalid metadata value given: {part}"
        )));
    }
    let Some(name) = name else {
        return Err(ErrorReply::err("Library name was not given"));
    };
    if !valid_name(&name) {
        return Err(ErrorReply::err(
            "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        ));
    }
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(ErrorReply::err(format!("Engine '{engine}' not found")));
    }
    Ok((name, end))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Engine {
    /// FUNCTION LOAD: compiles and runs a library's code, registering its functions. With
    /// `replace`, a library of the same name is replaced (its functions removed first).
    /// Returns the library's name.
    pub fn load_library(&mut self, code: &[u8], replace: bool) -> Result<String, ErrorReply> {
        let (name, header) = parse_library_header(code)?;
        if self.libraries.code.contains_key(&name) && !replace {
            return Err(ErrorReply::err(format!("Library '{name}' already exists")));
        }
        let registered = self.run_library(&code[header..])?;
        // Names must not clash with another library's functions.
        for (f, ..) in &registered {
            if let Some(other) = self.libraries.function(f)
                && other.library != name
            {
                return Err(ErrorReply::err(format!("Function {f} already exists")));
            }
        }
        self.libraries.functions.retain(|_, r| r.library != name);
        for (fname, func, description, flags) in registered {
            self.libraries.functions.insert(
                fname.to_ascii_lowercase(),
                Registered {
                    name: fname,
                    func,
                    library: name.clone(),
                    description,
                    flags,
                },
            );
        }
        self.libraries.code.insert(name.clone(), code.to_vec());
        Ok(name)
    }

    /// Runs a library's body in the load environment, collecting what it registers.
    fn run_library(&mut self, body: &[u8]) -> Result<Vec<NamedArgs>, ErrorReply> {
        let func = self
            .lua()
            .load(body)
            .set_name("@user_function")
            .set_mode(mlua::chunk::ChunkMode::Text)
            .set_environment(self.env().clone())
            .into_function()
            .map_err(|e| {
                ErrorReply::err(format!(
                    "Error compiling function: {}",
                    crate::engine::error_text(&e)
                ))
            })?;
        self.clear_kill().map_err(|e| {
            ErrorReply::err(format!(
                "Error registering functions: {}",
                crate::engine::error_text(&e)
            ))
        })?;
        *self.loading().borrow_mut() = Loading {
            active: true,
            functions: Vec::new(),
            deadline: Some(Instant::now() + LOAD_TIMEOUT),
        };
        self.set_phase(true);
        let result = self.load_runner().call::<(bool, Value)>(func);
        self.set_phase(false);
        let loading = std::mem::take(&mut *self.loading().borrow_mut());
        match result {
            Ok((true, _)) => {}
            Ok((false, err)) => {
                let msg = match err {
                    Value::Table(t) => match t.raw_get::<Value>("err") {
                        Ok(Value::String(s)) => s.to_string_lossy(),
                        _ => "unknown error".into(),
                    },
                    other => format!("{other:?}"),
                };
                return Err(ErrorReply::err(format!(
                    "Error registering functions: {msg}"
                )));
            }
            Err(e) => {
                return Err(ErrorReply::err(format!(
                    "Error registering functions: {}",
                    crate::engine::error_text(&e)
                )));
            }
        }
        if loading.functions.is_empty() {
            return Err(ErrorReply::err("No functions registered"));
        }
        Ok(loading.functions)
    }

    /// FUNCTION DELETE.
    pub fn delete_library(&mut self, name: &str) -> Result<(), ErrorReply> {
        if self.libraries.code.remove(name).is_none() {
            return Err(ErrorReply::err("Library not found"));
        }
        self.libraries.functions.retain(|_, r| r.library != name);
        Ok(())
    }

    /// FUNCTION FLUSH.
    pub fn flush_libraries(&mut self) {
        self.libraries = Libraries::default();
        let _ = self.lua().gc_collect();
    }

    /// The full code of every library, by name (FUNCTION DUMP, migration, persistence).
    pub fn library_codes(&self) -> Vec<(String, Vec<u8>)> {
        self.libraries
            .code
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// FUNCTION LIST of the libraries whose name matches `matches`.
    pub fn libraries(&self, matches: impl Fn(&str) -> bool) -> Vec<LibraryInfo> {
        self.libraries
            .code
            .iter()
            .filter(|(name, _)| matches(name))
            .map(|(name, code)| LibraryInfo {
                name: name.clone(),
                engine: "LUA",
                functions: self
                    .libraries
                    .functions
                    .iter()
                    .filter(|(_, r)| &r.library == name)
                    .map(|(_, r)| (r.name.clone(), r.description.clone(), r.flags.names()))
                    .collect(),
                code: code.clone(),
            })
            .collect()
    }

    /// Counts of libraries and functions (FUNCTION STATS).
    pub fn function_counts(&self) -> (usize, usize) {
        (self.libraries.code.len(), self.libraries.functions.len())
    }

    /// A function's flags, if it exists.
    pub fn function_flags(&self, name: &str) -> Option<FunctionFlags> {
        self.libraries.function(name).map(|r| r.flags)
    }
}

/// `redis.register_function(name, callback)` or `redis.register_function{function_name=...,
/// callback=..., flags={...}, description=...}`, with Redis's errors.
pub(crate) fn register_function(
    loading: &Rc<std::cell::RefCell<Loading>>,
    args: MultiValue,
) -> mlua::Result<()> {
    if !loading.borrow().active {
        return Err(mlua::Error::runtime(
            "redis.register_function can only be called on FUNCTION LOAD command",
        ));
    }
    let fail = |m: &str| Err(mlua::Error::runtime(m.to_string()));
    let (name, callback, description, flags) = match args.len() {
        1 => {
            let Some(Value::Table(t)) = args.front() else {
                return fail(
                    "calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).",
                );
            };
            named_args(t)?
        }
        2 => {
            let name = match &args[0] {
                Value::String(s) => s.to_string_lossy(),
                Value::Integer(i) => i.to_string(),
                Value::Number(n) => n.to_string(),
                _ => return fail("first argument to redis.register_function must be a string"),
            };
            let Value::Function(f) = &args[1] else {
                return fail("second argument to redis.register_function must be a function");
            };
            (name, f.clone(), None, FunctionFlags::default())
        }
        _ => return fail("wrong number of arguments to redis.register_function"),
    };
    if !valid_name(&name) {
        // Redis 7.0 says "Library names" for function names too.
        return fail(
            "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        );
    }
    let mut l = loading.borrow_mut();
    if l.functions.iter().any(|(n, ..)| *n == name) {
        return fail("Function already exists in the library");
    }
    l.functions.push((name, callback, description, flags));
    Ok(())
}

/// A registered function's name, callback, description and flags.
pub(crate) type NamedArgs = (String, Function, Option<String>, FunctionFlags);

fn named_args(t: &Table) -> mlua::Result<NamedArgs> {
    let fail = |m: &str| Err(mlua::Error::runtime(m.to_string()));
    let mut name = None;
    let mut callback = None;
    let mut description = None;
    let mut flags = FunctionFlags::default();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key = match &k {
            Value::String(s) => s.to_string_lossy().to_ascii_lowercase(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return fail("named argument key given to redis.register_function is not a string");
            }
        };
        match key.as_str() {
            "function_name" => match v {
                Value::String(s) => name = Some(s.to_string_lossy()),
                _ => {
                    return fail(
                        "function_name argument given to redis.register_function must be a string",
                    );
                }
            },
            "description" => match v {
                Value::String(s) => description = Some(s.to_string_lossy()),
                _ => {
                    return fail(
                        "description argument given to redis.register_function must be a string",
                    );
                }
            },
            "callback" => match v {
                Value::Function(f) => callback = Some(f),
                _ => {
                    return fail(
                        "callback argument given to redis.register_function must be a function",
                    );
                }
            },
            "flags" => {
                let Value::Table(list) = v else {
                    return fail(
                        "flags argument to redis.register_function must be a table representing function flags",
                    );
                };
                for item in list.sequence_values::<Value>() {
                    let ok = match item? {
                        Value::String(s) => flags.set(&s.to_string_lossy().to_ascii_lowercase()),
                        _ => false,
                    };
                    if !ok {
                        return fail("unknown flag given");
                    }
                }
            }
            _ => return fail("unknown argument given to redis.register_function"),
        }
    }
    let Some(name) = name else {
        return fail("redis.register_function must get a function name argument");
    };
    let Some(callback) = callback else {
        return fail("redis.register_function must get a callback argument");
    };
    Ok((name, callback, description, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(
            parse_library_header(b"#!lua name=mylib\nreturn").unwrap(),
            ("mylib".to_string(), 16)
        );
        assert_eq!(
            parse_library_header(b"#!lua name=\"foo\"\nreturn").unwrap(),
            ("foo".to_string(), 16)
        );
        for (code, err) in [
            (&b"return 1"[..], "ERR Missing library metadata"),
            (b"#!lua name=x", "ERR Invalid library metadata"),
            (b"#!lua\n", "ERR Library name was not given"),
            (
                b"#!lua name=a name=b\n",
                "ERR Invalid metadata value, name argument was given multiple times",
            ),
            (
                b"#!lua foo=bar\n",
                "ERR Invalid metadata value given: foo=bar",
            ),
            (b"#!js name=x\n", "ERR Engine 'js' not found"),
            (b"#!lua name=\"x\n", "ERR Invalid library metadata"),
            (
                b"#!lua name=a-b\n",
                "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
            ),
        ] {
            assert_eq!(
                parse_library_header(code).unwrap_err().text(),
                err,
                "{code:?}"
            );
        }
    }
}
