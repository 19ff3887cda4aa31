//! Client errors, with redirects and retryable refusals told apart from other server errors.
//!
//! [`Connection`](crate::Connection) returns the bare kinds (`Server`, `Moved`, `Io`, ...), which
//! the migration code matches on. [`Client`](crate::Client) and [`Pool`](crate::Pool) wrap every
//! error they return in [`ClientError::Context`], naming the server and the command, so that a
//! log line says where and what failed; the accessors ([`ClientError::root`],
//! [`ClientError::code`], [`ClientError::is_connection_error`], ...) look through that wrapper.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection to {0} closed")]
    Closed(String),
    #[error("timed out {0}")]
    Timeout(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// `-MOVED tenant:<id> <addr>`: the tenant now lives at `addr`.
    #[error("tenant '{tenant}' moved to {addr}")]
    Moved { tenant: String, addr: String },
    /// `-MOVED tenant:<id>:key <addr>`: this command's keys are served by `addr` (an incremental
    /// migration moved their pattern there); the tenant's other keys stay where they were.
    #[error("the keys of tenant '{tenant}' in this command are served by {addr}")]
    KeyMoved { tenant: String, addr: String },
    /// `-REDIRECT <addr>` (Valkey 8 style, after CLIENT CAPA redirect).
    #[error("redirected to {0}")]
    Redirect(String),
    /// `-TRYAGAIN ...`: retry shortly.
    #[error("{0}")]
    TryAgain(String),
    /// Any other error reply, with its full text (e.g. `ERR syntax error`).
    #[error("{0}")]
    Server(String),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    #[error("gave up following redirects after {0} hops")]
    TooManyRedirects(usize),
    /// The transaction the command belonged to (MULTI ... EXEC, or keys under WATCH) ended
    /// without running anything: the server refused a command of it with `-MOVED`/`-REDIRECT`
    /// (the tenant moved) or `-TRYAGAIN` (it is moving), which a client cannot follow inside a
    /// transaction because the new server knows nothing of it; or its connection was lost. The
    /// client has left the transaction (and moved to `moved_to`, if given); the caller starts
    /// the transaction again, from WATCH or MULTI.
    #[error("{}", discarded_message(.moved_to.as_deref(), .cause, *.from_server))]
    TransactionDiscarded {
        /// The tenant's new home, when it moved there; the client's next command goes there.
        moved_to: Option<String>,
        /// What ended it: the server's refusal as it sent it (`MOVED tenant:acme
        /// 10.0.0.2:6379`, `TRYAGAIN ...`) or what happened to the connection.
        cause: String,
        /// Whether `cause` is a server's error reply.
        from_server: bool,
    },
    /// No pooled connection became free within the pool's checkout timeout.
    #[error(
        "no free connection in the pool for {addr} within {waited_ms} ms (max_size {max_size})"
    )]
    PoolTimeout {
        addr: String,
        waited_ms: u128,
        max_size: usize,
    },
    /// An error from `error`, while running `command` against `addr`. Added by [`crate::Client`]
    /// and [`crate::Pool`]; the message of the wrapped error comes first because it is what the
    /// reader needs most.
    #[error("{error} (server {addr}, command {command})")]
    Context {
        /// The server the command was sent to (the tenant's home at that moment).
        addr: String,
        /// The command's name (never its arguments: they may hold values or passwords).
        command: String,
        error: Box<ClientError>,
    },
}

fn discarded_message(moved_to: Option<&str>, cause: &str, from_server: bool) -> String {
    const AGAIN: &str = "nothing of it ran; start it again";
    match (moved_to, from_server) {
        (Some(addr), _) => format!(
            "transaction discarded because the tenant moved to {addr} (server replied: {cause}); {AGAIN}"
        ),
        (None, true) => format!(
            "transaction discarded because the tenant is switching servers (server replied: {cause}); {AGAIN}"
        ),
        (None, false) => format!("transaction discarded: {cause}; {AGAIN}"),
    }
}

impl ClientError {
    /// Classifies an error reply's text.
    pub fn from_server_text(text: String) -> ClientError {
        if let Some(rest) = text.strip_prefix("MOVED ") {
            let mut parts = rest.split_whitespace();
            if let (Some(target), Some(addr)) = (parts.next(), parts.next()) {
                if let Some(tenant) = target
                    .strip_prefix("tenant:")
                    .and_then(|t| t.strip_suffix(":key"))
                {
                    return ClientError::KeyMoved {
                        tenant: tenant.to_string(),
                        addr: addr.to_string(),
                    };
                }
                if let Some(tenant) = target.strip_prefix("tenant:") {
                    return ClientError::Moved {
                        tenant: tenant.to_string(),
                        addr: addr.to_string(),
                    };
                }
            }
        }
        if let Some(addr) = text.strip_prefix("REDIRECT ") {
            return ClientError::Redirect(addr.trim().to_string());
        }
        if text.starts_with("TRYAGAIN") {
            return ClientError::TryAgain(text);
        }
        ClientError::Server(text)
    }

    /// Wraps `self` with the server and command it came from (idempotent: an error that already
    /// has context keeps its original one).
    pub fn context(self, addr: &str, command: &str) -> ClientError {
        match self {
            e @ ClientError::Context { .. } => e,
            e => ClientError::Context {
                addr: addr.to_string(),
                command: command.to_string(),
                error: Box::new(e),
            },
        }
    }

    /// The error without its context.
    pub fn root(&self) -> &ClientError {
        match self {
            ClientError::Context { error, .. } => error.root(),
            e => e,
        }
    }

    /// The error without its context, by value.
    pub fn into_root(self) -> ClientError {
        match self {
            ClientError::Context { error, .. } => error.into_root(),
            e => e,
        }
    }

    /// The server the failed command was sent to, when known.
    pub fn server_addr(&self) -> Option<&str> {
        match self {
            ClientError::Context { addr, .. }
            | ClientError::Connect { addr, .. }
            | ClientError::Closed(addr) => Some(addr),
            _ => None,
        }
    }

    /// The name of the failed command, when known.
    pub fn command(&self) -> Option<&str> {
        match self {
            ClientError::Context { command, .. } => Some(command),
            _ => None,
        }
    }

    /// True for failures of the connection itself (worth reconnecting), as opposed to replies.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self.root(),
            ClientError::Connect { .. }
                | ClientError::Io(_)
                | ClientError::Closed(_)
                | ClientError::Timeout(_)
                | ClientError::Protocol(_)
        )
    }

    /// True when the server refused the command without running it and asked for a retry.
    pub fn is_try_again(&self) -> bool {
        matches!(self.root(), ClientError::TryAgain(_))
    }

    /// True for `-MOVED tenant:...` and `-REDIRECT` refusals (the command did not run).
    pub fn is_redirect(&self) -> bool {
        matches!(
            self.root(),
            ClientError::Moved { .. } | ClientError::KeyMoved { .. } | ClientError::Redirect(_)
        )
    }

    /// True when a transaction was discarded because its tenant moved or its connection was
    /// lost ([`ClientError::TransactionDiscarded`]): nothing of it ran.
    pub fn is_transaction_discarded(&self) -> bool {
        matches!(self.root(), ClientError::TransactionDiscarded { .. })
    }

    /// The full text of the server's error reply, if the error is one (for a discarded
    /// transaction, the refusal that discarded it).
    pub fn server_message(&self) -> Option<&str> {
        match self.root() {
            ClientError::Server(t) | ClientError::TryAgain(t) => Some(t),
            ClientError::TransactionDiscarded {
                cause,
                from_server: true,
                ..
            } => Some(cause),
            _ => None,
        }
    }

    /// The text of a refusal to run a command (`MOVED`, `REDIRECT`, `TRYAGAIN`) as the server
    /// sent it.
    pub(crate) fn refusal_text(&self) -> Option<String> {
        match self.root() {
            ClientError::Moved { tenant, addr } => Some(format!("MOVED tenant:{tenant} {addr}")),
            ClientError::KeyMoved { tenant, addr } => {
                Some(format!("MOVED tenant:{tenant}:key {addr}"))
            }
            ClientError::Redirect(addr) => Some(format!("REDIRECT {addr}")),
            ClientError::TryAgain(t) => Some(t.clone()),
            _ => None,
        }
    }

    /// The error code of a server error (`ERR`, `WRONGTYPE`, ...). None for a discarded
    /// transaction: its refusal was already handled by the client (see
    /// [`ClientError::server_message`] for its text).
    pub fn code(&self) -> Option<&str> {
        match self.root() {
            ClientError::Server(t) | ClientError::TryAgain(t) => t.split(' ').next(),
            ClientError::Moved { .. } | ClientError::KeyMoved { .. } => Some("MOVED"),
            ClientError::Redirect(_) => Some("REDIRECT"),
            _ => None,
        }
    }
}

/// The name of a command for error context: the first argument, upper-cased, with the
/// subcommand for container commands (`CLIENT SETNAME`). Never other arguments.
pub(crate) fn command_name<A: AsRef<[u8]>>(args: &[A]) -> String {
    let word = |a: &A| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase();
    let Some(first) = args.first() else {
        return "(empty)".into();
    };
    let name = word(first);
    let container = matches!(
        name.as_str(),
        "CLIENT" | "CONFIG" | "OBJECT" | "COMMAND" | "MEMORY" | "SCRIPT" | "XINFO" | "XGROUP"
    );
    match args.get(1) {
        Some(sub) if container && sub.as_ref().len() <= 32 => format!("{name} {}", word(sub)),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::{ClientError, command_name};

    #[test]
    fn classifies_replies() {
        match ClientError::from_server_text("MOVED tenant:acme 10.0.0.1:6379".into()) {
            ClientError::Moved { tenant, addr } => {
                assert_eq!((tenant.as_str(), addr.as_str()), ("acme", "10.0.0.1:6379"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ClientError::from_server_text("REDIRECT h:1".into()),
            ClientError::Redirect(a) if a == "h:1"
        ));
        assert!(matches!(
            ClientError::from_server_text("TRYAGAIN later".into()),
            ClientError::TryAgain(_)
        ));
        match ClientError::from_server_text("MOVED tenant:acme:key 10.0.0.2:6379".into()) {
            ClientError::KeyMoved { tenant, addr } => {
                assert_eq!((tenant.as_str(), addr.as_str()), ("acme", "10.0.0.2:6379"));
            }
            other => panic!("{other:?}"),
        }
        // A cluster-style MOVED (slot number) is not a tenant redirect.
        assert!(matches!(
            ClientError::from_server_text("MOVED 3999 h:1".into()),
            ClientError::Server(_)
        ));
    }

    #[test]
    fn context_names_server_and_command_and_keeps_the_kind() {
        let e = ClientError::from_server_text("WRONGTYPE Operation against a key".into())
            .context("127.0.0.1:7000", "LPUSH");
        assert_eq!(
            e.to_string(),
            "WRONGTYPE Operation against a key (server 127.0.0.1:7000, command LPUSH)"
        );
        assert_eq!(e.code(), Some("WRONGTYPE"));
        assert_eq!(e.server_addr(), Some("127.0.0.1:7000"));
        assert_eq!(e.command(), Some("LPUSH"));
        assert!(!e.is_connection_error());
        // Wrapping twice keeps the innermost (first) context.
        let e = e.context("other:1", "GET");
        assert_eq!(e.command(), Some("LPUSH"));
        assert!(matches!(e.into_root(), ClientError::Server(_)));

        let closed = ClientError::Closed("h:1".into()).context("h:1", "GET");
        assert!(closed.is_connection_error());
        let again = ClientError::TryAgain("TRYAGAIN x".into()).context("h:1", "SET");
        assert!(again.is_try_again() && !again.is_redirect());
    }

    #[test]
    fn command_names_hide_arguments() {
        assert_eq!(command_name(&["set", "k", "secret"]), "SET");
        assert_eq!(command_name(&["client", "setname", "x"]), "CLIENT SETNAME");
        assert_eq!(command_name(&["AUTH", "acme", "pw"]), "AUTH");
        assert_eq!(command_name::<&str>(&[]), "(empty)");
    }
}
