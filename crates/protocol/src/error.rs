//! Error replies and the exact texts Redis uses for them, so that clients and scripts that match on
//! error strings keep working.

use std::borrow::Cow;
use std::fmt;

/// An error reply: the text after the leading `-`, starting with its code (`ERR`, `WRONGTYPE`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply(Cow<'static, str>);

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ErrorReply {}

impl ErrorReply {
    /// An error with an explicit code, e.g. `ErrorReply::coded("OOM", "...")`.
    pub fn coded(code: &str, msg: impl fmt::Display) -> Self {
        let mut text = format!("{code} {msg}");
        // An error reply is one protocol line: a CR or LF in an echoed argument would end it
        // early and let the rest be read as another reply. Redis replaces them with spaces.
        if text.contains(['\r', '\n']) {
            text = text.replace(['\r', '\n'], " ");
        }
        ErrorReply(Cow::Owned(text))
    }

    /// A generic `ERR <msg>` error.
    pub fn err(msg: impl fmt::Display) -> Self {
        Self::coded("ERR", msg)
    }

    /// The full text without the leading `-`.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The code (first word), e.g. `ERR`, `WRONGTYPE`, `MOVED`.
    pub fn code(&self) -> &str {
        self.0.split(' ').next().unwrap_or("ERR")
    }

    const fn fixed(s: &'static str) -> Self {
        ErrorReply(Cow::Borrowed(s))
    }

    pub fn syntax() -> Self {
        Self::fixed("ERR syntax error")
    }
    pub fn wrong_type() -> Self {
        Self::fixed("WRONGTYPE Operation against a key holding the wrong kind of value")
    }
    pub fn not_integer() -> Self {
        Self::fixed("ERR value is not an integer or out of range")
    }
    pub fn not_float() -> Self {
        Self::fixed("ERR value is not a valid float")
    }
    pub fn overflow() -> Self {
        Self::fixed("ERR increment or decrement would overflow")
    }
    pub fn nan_or_inf() -> Self {
        Self::fixed("ERR increment would produce NaN or Infinity")
    }
    pub fn no_such_key() -> Self {
        Self::fixed("ERR no such key")
    }
    pub fn index_out_of_range() -> Self {
        Self::fixed("ERR index out of range")
    }
    pub fn invalid_cursor() -> Self {
        Self::fixed("ERR invalid cursor")
    }
    pub fn must_be_positive() -> Self {
        Self::fixed("ERR value is out of range, must be positive")
    }
    pub fn string_too_long() -> Self {
        Self::fixed("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    }
    pub fn no_auth() -> Self {
        Self::fixed("NOAUTH Authentication required.")
    }
    pub fn wrong_pass() -> Self {
        Self::fixed("WRONGPASS invalid username-password pair or user is disabled.")
    }
    pub fn exec_abort() -> Self {
        Self::fixed("EXECABORT Transaction discarded because of previous errors.")
    }

    pub fn wrong_arity(cmd: &str) -> Self {
        ErrorReply(Cow::Owned(format!(
            "ERR wrong number of arguments for '{}' command",
            cmd.to_ascii_lowercase()
        )))
    }

    /// `ERR unknown command 'x', with args beginning with: 'a' 'b' ` (Redis's exact shape).
    pub fn unknown_command<'a>(name: &[u8], args: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            sanitize(name, 128)
        );
        for a in args.take(16) {
            msg.push('\'');
            msg.push_str(&sanitize(a, 128));
            msg.push_str("' ");
        }
        ErrorReply(Cow::Owned(msg))
    }

    /// The error for a subcommand request that matched no form: wrong arity when `known` (upper
    /// case) names the subcommand, unknown subcommand otherwise, as Redis answers.
    pub fn bad_subcommand(cmd: &str, sub: &[u8], known: &[&str]) -> Self {
        let upper = sub.to_ascii_uppercase();
        if known.iter().any(|k| k.as_bytes() == upper.as_slice()) {
            Self::wrong_arity(&format!("{cmd}|{}", String::from_utf8_lossy(sub)))
        } else {
            Self::unknown_subcommand(sub, cmd)
        }
    }

    pub fn unknown_subcommand(sub: &[u8], cmd: &str) -> Self {
        ErrorReply(Cow::Owned(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            sanitize(sub, 128),
            cmd.to_ascii_uppercase()
        )))
    }

    pub fn invalid_expire(cmd: &str) -> Self {
        ErrorReply(Cow::Owned(format!(
            "ERR invalid expire time in '{}' command",
            cmd.to_ascii_lowercase()
        )))
    }

    /// `-MOVED tenant:<id> <host:port>`: the tenant is now served by another server.
    pub fn moved_tenant(tenant: &str, addr: &str) -> Self {
        ErrorReply(Cow::Owned(format!("MOVED tenant:{tenant} {addr}")))
    }

    /// `-MOVED tenant:<id>:key <host:port>`: this command's keys are served by another server
    /// (an incremental migration moved their pattern); the tenant's other keys are still here.
    pub fn moved_key(tenant: &str, addr: &str) -> Self {
        ErrorReply(Cow::Owned(format!("MOVED tenant:{tenant}:key {addr}")))
    }

    /// `-REDIRECT <host:port>` for clients that declared `CLIENT CAPA redirect` (Valkey 8).
    pub fn redirect(addr: &str) -> Self {
        ErrorReply(Cow::Owned(format!("REDIRECT {addr}")))
    }

    pub fn try_again(msg: impl fmt::Display) -> Self {
        Self::coded("TRYAGAIN", msg)
    }
}

/// Error texts must stay on one line and printable; Redis replaces such bytes with spaces.
fn sanitize(s: &[u8], max: usize) -> String {
    let s = &s[..s.len().min(max)];
    String::from_utf8_lossy(s)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl From<String> for ErrorReply {
    /// A full error text that already starts with its code.
    fn from(s: String) -> Self {
        ErrorReply(Cow::Owned(s.replace(['\r', '\n'], " ")))
    }
}

impl From<&'static str> for ErrorReply {
    fn from(s: &'static str) -> Self {
        ErrorReply(Cow::Borrowed(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(
            ErrorReply::wrong_arity("GET").text(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            ErrorReply::unknown_command(b"foo", [&b"a"[..], b"b"].into_iter()).text(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(ErrorReply::moved_tenant("acme", "h:1").code(), "MOVED");
        assert_eq!(ErrorReply::from("x\r\ny".to_string()).text(), "x  y");
        // An argument echoed into an error cannot end the line (FUNCTION LIST "X\r\n+INJECTED").
        assert_eq!(
            ErrorReply::err(format_args!("Unknown argument {}", "X\r\n+INJECTED")).text(),
            "ERR Unknown argument X  +INJECTED"
        );
    }
}
