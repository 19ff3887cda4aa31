//! Script flags declared in a shebang line (`#!lua flags=no-writes,allow-oom`), parsed as
//! Redis 7's `evalExtractShebangFlags` does, with its error texts.

/// Flags a script (EVAL with a shebang) or a function (`register_function{flags=...}`) declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScriptFlags {
    /// No shebang: Redis's backwards-compatible EVAL mode (may write, OOM checked at the first
    /// write command rather than before the script starts).
    pub compat: bool,
    pub no_writes: bool,
    pub allow_oom: bool,
    pub allow_stale: bool,
    pub no_cluster: bool,
    pub allow_cross_slot_keys: bool,
}

impl ScriptFlags {
    /// The flags of a script without a shebang.
    pub const COMPAT: ScriptFlags = ScriptFlags {
        compat: true,
        no_writes: false,
        allow_oom: false,
        allow_stale: false,
        no_cluster: false,
        allow_cross_slot_keys: false,
    };

    /// Sets the flag named as Redis names it; false if the name is unknown.
    pub fn set(&mut self, name: &str) -> bool {
        match name {
            "no-writes" => self.no_writes = true,
            "allow-oom" => self.allow_oom = true,
            "allow-stale" => self.allow_stale = true,
            "no-cluster" => self.no_cluster = true,
            "allow-cross-slot-keys" => self.allow_cross_slot_keys = true,
            _ => return false,
        }
        true
    }

    /// Names of the flags set, in Redis's order (FUNCTION LIST).
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, name) in [
            (self.no_writes, "no-writes"),
            (self.allow_oom, "allow-oom"),
            (self.allow_stale, "allow-stale"),
            (self.no_cluster, "no-cluster"),
            (self.allow_cross_slot_keys, "allow-cross-slot-keys"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }

    /// The script may run write commands.
    pub fn may_write(&self) -> bool {
        self.compat || !self.no_writes
    }
}

/// Parses the shebang of an EVAL body. Returns the flags and how many bytes of the body the
/// shebang line takes (the body is compiled from there on, so line numbers stay right).
pub fn parse_shebang(body: &[u8]) -> Result<(ScriptFlags, usize), String> {
    if !body.starts_with(b"#!") {
        return Ok((ScriptFlags::COMPAT, 0));
    }
    let Some(end) = body.iter().position(|&b| b == b'\n') else {
        return Err("Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split_ascii_whitespace();
    let Some(engine) = parts.next() else {
        return Err("Invalid engine in script shebang".into());
    };
    if engine != "#!lua" {
        return Err(format!("Unexpected engine in script shebang: {engine}"));
    }
    let mut flags = ScriptFlags::default();
    for part in parts {
        if let Some(list) = part.strip_prefix("flags=") {
            for flag in list.split(',') {
                // `flags=` alone declares no flags (an empty name is skipped, as Redis's split
                // of an empty string yields nothing).
                if flag.is_empty() && list.is_empty() {
                    continue;
                }
                if !flags.set(flag) {
                    return Err(format!("Unexpected flag in script shebang: {flag}"));
                }
            }
        } else {
            return Err(format!("Unknown lua shebang option: {part}"));
        }
    }
    Ok((flags, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(
            parse_shebang(b"return 1").unwrap(),
            (ScriptFlags::COMPAT, 0)
        );
        let (f, n) = parse_shebang(b"#!lua\nreturn 1").unwrap();
        assert_eq!((f, n), (ScriptFlags::default(), 5));
        let (f, _) = parse_shebang(b"#!lua flags=no-writes,allow-oom\nreturn 1").unwrap();
        assert!(f.no_writes && f.allow_oom && !f.compat && !f.may_write());
        let (f, _) = parse_shebang(b"#!lua flags=\nreturn 1").unwrap();
        assert_eq!(f, ScriptFlags::default());
        for (body, err) in [
            (&b"#!lua"[..], "Invalid script shebang"),
            (
                b"#!python\n",
                "Unexpected engine in script shebang: #!python",
            ),
            (
                b"#!lua flags=bad\n",
                "Unexpected flag in script shebang: bad",
            ),
            (b"#!lua name=x\n", "Unknown lua shebang option: name=x"),
            (b"#! \n", "Unexpected engine in script shebang: #!"),
        ] {
            assert_eq!(parse_shebang(body).unwrap_err(), err, "{body:?}");
        }
    }
}
