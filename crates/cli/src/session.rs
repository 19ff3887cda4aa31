//! The connection the CLI talks through (a `ferrite_client::Client`, so tenants that moved are
//! followed), and how failures become messages and exit codes.

use std::time::Duration;

use ferrite_client::{Client, ClientError, ConnectOptions, Frame};

use crate::args::ConnArgs;
use crate::output;

/// Exit codes scripts can rely on.
pub mod exit {
    pub const OK: u8 = 0;
    /// The command ran and failed (error reply, failed migration...).
    pub const FAILED: u8 = 1;
    /// Bad flags or arguments (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The server could not be reached (or the connection was lost).
    pub const CONNECT: u8 = 3;
    /// `migrate watch --timeout-s` ran out before the migrations finished.
    pub const TIMEOUT: u8 = 4;
}

/// Why the CLI stops, with the exit code and the message for stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A failed command: `(error) <text>`, exit 1.
    pub fn command(text: impl std::fmt::Display) -> Failure {
        Failure::new(exit::FAILED, format!("(error) {text}"))
    }

    /// Classifies a client error: unreachable or lost server → exit 3, anything else → exit 1.
    pub fn from_client(e: &ClientError, addr: &str) -> Failure {
        // Users see the server's own text, as with redis-cli (not the client's context).
        let e = e.root();
        if e.is_connection_error() {
            Failure::new(exit::CONNECT, connection_message(e, addr))
        } else {
            Failure::command(e)
        }
    }

    /// The message without `(error) `, as `--raw` prints errors (like `redis-cli --raw`).
    pub fn raw_message(&self) -> &str {
        self.message
            .strip_prefix("(error) ")
            .unwrap_or(&self.message)
    }
}

/// An error reply as printed in `format`: `(error) ERR ...`, or bare with `--raw`.
pub fn error_text(e: &ClientError, format: crate::output::Format) -> String {
    match format {
        crate::output::Format::Raw => e.root().to_string(),
        _ => format!("(error) {}", e.root()),
    }
}

/// redis-cli's wording ("Could not connect to Redis at host:port: reason"), for every failure of
/// the connection itself.
pub fn connection_message(e: &ClientError, addr: &str) -> String {
    match e.root() {
        ClientError::Connect { addr, source } => {
            format!("Could not connect to Ferrite at {addr}: {source}")
        }
        ClientError::Timeout(what) if what.ends_with("no reply to the handshake") => {
            format!("Could not connect to Ferrite at {addr}: timed out waiting for its reply")
        }
        ClientError::Timeout(what) if what.starts_with("connecting") => {
            format!("Could not connect to Ferrite at {addr}: timed out")
        }
        ClientError::Closed(a) => format!("Connection to {a} lost (closed by the server)"),
        // A peer that does not speak RESP (an HTTP server, TLS...) is the usual cause.
        ClientError::Protocol(detail) => {
            format!("Protocol error from {addr}: {detail} (is it a Redis-protocol server?)")
        }
        other => format!("Connection to {addr} lost: {other}"),
    }
}

/// Connection settings derived from the flags.
pub fn options(c: &ConnArgs) -> ConnectOptions {
    let mut o = ConnectOptions::new(c.addr())
        .name("ferrite-cli")
        .connect_timeout(Duration::from_secs(5))
        // Cutovers may wait for the target's activation (30 s by default); leave room for that.
        .command_timeout(Duration::from_secs(90));
    match (&c.user, &c.password) {
        (Some(t), Some(p)) => o = o.tenant(t.clone(), p.clone()),
        (None, Some(p)) => o = o.password(p.clone()),
        _ => {}
    }
    if c.resp2 {
        o = o.resp2();
    }
    o
}

/// A CLI session: connected, or (the prompt on a server that wants a password first) waiting
/// for `AUTH`.
pub struct Session {
    /// None until a connection could be made (the prompt opens before `AUTH` on a server that
    /// refuses the handshake without a password); each command tries again.
    client: Option<Client>,
    /// Where the session was asked to connect (the client's address changes after a redirect).
    pub origin: String,
    pub tenant: Option<String>,
    /// The settings connected with (AUTH in the prompt reconnects with changed credentials).
    pub options: ConnectOptions,
    /// Show replies as RESP2 would (`-2`).
    resp2: bool,
}

impl Session {
    /// Connects, or fails with exit code 3 (unreachable) or 1 (refused authentication...).
    pub async fn connect(opts: ConnectOptions, resp2: bool) -> Result<Session, Failure> {
        let origin = opts.addr.clone();
        match Client::connect(opts.clone()).await {
            Ok(client) => Ok(Session::new(Some(client), opts, resp2)),
            // The handshake's own NOAUTH text talks about HELLO; say what to do instead.
            Err(e) if e.code() == Some("NOAUTH") => Err(Failure::command(format!(
                "NOAUTH Authentication required by {origin}: use -a <password>, or --user <tenant> -a <password>"
            ))),
            Err(e) => Err(Failure::from_client(&e, &origin)),
        }
    }

    /// Like [`Session::connect`], but a server that wants a password first gives a session
    /// that is not connected yet, after printing the refusal once: the prompt (or a script on
    /// standard input) can then send `AUTH`, as with redis-cli.
    pub async fn connect_for_auth(opts: ConnectOptions, resp2: bool) -> Result<Session, Failure> {
        match Client::connect(opts.clone()).await {
            Ok(client) => Ok(Session::new(Some(client), opts, resp2)),
            Err(e) if e.code() == Some("NOAUTH") => {
                eprintln!(
                    "(error) NOAUTH Authentication required by {}: type AUTH <password>, or AUTH <tenant> <password>",
                    opts.addr
                );
                Ok(Session::new(None, opts, resp2))
            }
            Err(e) => Err(Failure::from_client(&e, &opts.addr)),
        }
    }

    fn new(client: Option<Client>, options: ConnectOptions, resp2: bool) -> Session {
        Session {
            client,
            origin: options.addr.clone(),
            tenant: options.tenant.clone(),
            options,
            resp2,
        }
    }

    /// The server currently talked to.
    pub fn addr(&self) -> &str {
        match &self.client {
            Some(c) => c.addr(),
            None => &self.options.addr,
        }
    }

    /// Runs one command; error replies come back as `Err`.
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        let client = match &mut self.client {
            Some(c) => c,
            None => match Client::connect(self.options.clone()).await {
                Ok(c) => self.client.insert(c),
                // The handshake's NOAUTH text is about HELLO; the user's command is what was
                // refused, with Redis's words for it.
                Err(e) if e.code() == Some("NOAUTH") => {
                    return Err(ClientError::Server(
                        "NOAUTH Authentication required.".into(),
                    ));
                }
                Err(e) => return Err(e),
            },
        };
        let f = client.cmd(args).await?;
        // A RESP2 connection gets RESP2 replies; this reshapes the RESP3 ones it still gets
        // after the user switched it with HELLO 3, so `-2` always shows what RESP2 would.
        Ok(if self.resp2 { output::as_resp2(f) } else { f })
    }

    /// Whether replies are shown as RESP2.
    pub fn resp2(&self) -> bool {
        self.resp2
    }

    /// Runs one command and turns every error into a [`Failure`].
    pub async fn run<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, Failure> {
        match self.cmd(args).await {
            Ok(f) => Ok(f),
            Err(e) => {
                let addr = self.addr().to_string();
                Err(Failure::from_client(&e, &addr))
            }
        }
    }
}
