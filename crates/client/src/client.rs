//! A client that follows tenants: `-MOVED tenant:<id> <addr>` and `-REDIRECT <addr>` make it
//! reconnect to the new server (with the same tenant credentials) and resend the command;
//! `-TRYAGAIN` is retried with bounded backoff. Application code sees neither.

use std::time::Duration;

use ferrite_protocol::frame::Frame;

use crate::connection::{ConnectOptions, Connection};
use crate::error::ClientError;

/// Redirect and retry policy.
#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    /// Give up following redirects / retrying TRYAGAIN after this long (per command).
    pub redirect_timeout: Duration,
    /// At most this many MOVED hops per command (guards against redirect loops).
    pub max_redirects: usize,
    /// First TRYAGAIN backoff; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        RedirectPolicy {
            redirect_timeout: Duration::from_millis(5000),
            max_redirects: 8,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(200),
        }
    }
}

/// A single-connection client that follows its tenant across servers.
pub struct Client {
    opts: ConnectOptions,
    policy: RedirectPolicy,
    conn: Option<Connection>,
    /// Redirects followed since the client was created.
    redirects: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.opts.addr)
            .field("tenant", &self.opts.tenant)
            .finish()
    }
}

impl Client {
    /// Connects now (so bad addresses and credentials fail here).
    pub async fn connect(opts: ConnectOptions) -> Result<Client, ClientError> {
        Self::with_policy(opts, RedirectPolicy::default()).await
    }

    pub async fn with_policy(
        opts: ConnectOptions,
        policy: RedirectPolicy,
    ) -> Result<Client, ClientError> {
        let conn = Connection::connect(opts.clone()).await?;
        Ok(Client {
            opts,
            policy,
            conn: Some(conn),
            redirects: 0,
        })
    }

    /// The server this client currently talks to (changes when it follows a redirect).
    pub fn addr(&self) -> &str {
        &self.opts.addr
    }

    pub fn redirects(&self) -> u64 {
        self.redirects
    }

    async fn conn(&mut self) -> Result<&mut Connection, ClientError> {
        if self.conn.is_none() {
            self.conn = Some(Connection::connect(self.opts.clone()).await?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ClientError::Closed(self.opts.addr.clone()))
    }

    /// Runs a command, following redirects and retrying TRYAGAIN within the policy.
    ///
    /// A command is only resent when the server refused it without running it (MOVED,
    /// REDIRECT, TRYAGAIN). If the connection breaks after the command was sent, the outcome is
    /// unknown and the error is returned (the next call reconnects).
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        let deadline = tokio::time::Instant::now() + self.policy.redirect_timeout;
        let mut backoff = self.policy.initial_backoff;
        let mut hops = 0;
        loop {
            let r = match self.conn().await {
                Ok(c) => c.cmd(args).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(f) => return Ok(f),
                Err(ClientError::Moved { addr, .. }) | Err(ClientError::Redirect(addr)) => {
                    hops += 1;
                    if hops > self.policy.max_redirects {
                        return Err(ClientError::TooManyRedirects(hops));
                    }
                    tracing::debug!(from = %self.opts.addr, to = %addr, "following redirect");
                    self.opts.addr = addr;
                    self.conn = None;
                    self.redirects += 1;
                }
                Err(ClientError::TryAgain(msg)) => {
                    if tokio::time::Instant::now() + backoff > deadline {
                        return Err(ClientError::TryAgain(msg));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                }
                // Connecting to a new home can briefly fail while it activates; retry that too.
                Err(e @ ClientError::Connect { .. }) => {
                    self.conn = None;
                    if tokio::time::Instant::now() + backoff > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                }
                Err(e) => {
                    if e.is_connection_error() {
                        self.conn = None;
                    }
                    return Err(e);
                }
            }
        }
    }
}
