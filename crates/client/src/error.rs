//! Client errors, with redirects and retryable refusals told apart from other server errors.

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
}

impl ClientError {
    /// Classifies an error reply's text.
    pub fn from_server_text(text: String) -> ClientError {
        if let Some(rest) = text.strip_prefix("MOVED ") {
            let mut parts = rest.split_whitespace();
            if let (Some(target), Some(addr)) = (parts.next(), parts.next()) {
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

    /// True for failures of the connection itself (worth reconnecting), as opposed to replies.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Io(_)
                | ClientError::Closed(_)
                | ClientError::Timeout(_)
                | ClientError::Protocol(_)
        )
    }

    /// The error code of a server error (`ERR`, `WRONGTYPE`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server(t) | ClientError::TryAgain(t) => t.split(' ').next(),
            ClientError::Moved { .. } => Some("MOVED"),
            ClientError::Redirect(_) => Some("REDIRECT"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClientError;

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
        // A cluster-style MOVED (slot number) is not a tenant redirect.
        assert!(matches!(
            ClientError::from_server_text("MOVED 3999 h:1".into()),
            ClientError::Server(_)
        ));
    }
}
