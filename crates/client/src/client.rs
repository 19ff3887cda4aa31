//! A client that follows tenants: `-MOVED tenant:<id> <addr>` and `-REDIRECT <addr>` make it
//! reconnect to the new server (with the same tenant credentials) and resend the command;
//! `-TRYAGAIN` is retried with bounded backoff. Application code sees neither.
//!
//! # What is re-sent, and what is not
//!
//! A command is re-sent only when the server refused it *without running it*:
//!
//! - `-MOVED tenant:<id> <addr>` / `-REDIRECT <addr>`: the tenant no longer lives on this server
//!   (it answers so for every command of that tenant from the moment of cutover). The client
//!   connects to `addr` with the same credentials and sends the command there, at most
//!   [`RedirectPolicy::max_redirects`] hops per command.
//! - `-TRYAGAIN ...`: the tenant is being imported on this server (a client that reached the
//!   target before the cutover), or a write waited too long at the cutover gate. The client
//!   waits (doubling from [`RedirectPolicy::initial_backoff`] up to
//!   [`RedirectPolicy::max_backoff`]) and sends it again.
//! - A refused connect while following a redirect (the new home is still starting to listen).
//!
//! All of this happens within [`RedirectPolicy::redirect_timeout`] per command; after it the last
//! refusal is returned (a [`ClientError::TryAgain`] for a tenant that never became active).
//!
//! If the connection breaks *after* a command was sent, the command may or may not have run:
//! the error is returned and nothing is re-sent (the next call reconnects). The same holds for a
//! call whose future is dropped midway (e.g. by a timeout around it): the connection is out of
//! step, so the next call opens a new one.
//!
//! Pipelines ([`Client::pipeline`]) follow the same rule per command: the refused commands are
//! re-sent, in their original order, at the new home; the replies come back in the order of
//! the pipeline. A command refused with `-TRYAGAIN` after which a later command of the same
//! pipeline *ran* is not re-sent (that would run it after a command that followed it) and gets
//! its `TryAgain` error in its slot. Commands after a `-MOVED` that still ran cannot belong to
//! the moved tenant (the source refuses all of them from cutover on), so re-sending the moved
//! ones after them changes nothing a tenant can observe.
//!
//! Errors returned by a `Client` carry context: [`ClientError::Context`] names the server and the
//! command.

use std::time::Duration;

use ferrite_protocol::frame::Frame;
use tokio::time::Instant;

use crate::connection::{ConnectOptions, Connection, check};
use crate::error::{ClientError, command_name};

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

impl RedirectPolicy {
    pub fn redirect_timeout(mut self, t: Duration) -> Self {
        self.redirect_timeout = t;
        self
    }

    pub fn max_redirects(mut self, n: usize) -> Self {
        self.max_redirects = n;
        self
    }

    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }
}

/// A list of commands to send at once with [`Client::run`] (or [`Client::pipeline`]).
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    cmds: Vec<Vec<Vec<u8>>>,
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Adds a command (its name and arguments).
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: impl IntoIterator<Item = A>) -> &mut Pipeline {
        self.cmds
            .push(args.into_iter().map(|a| a.as_ref().to_vec()).collect());
        self
    }

    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    pub fn commands(&self) -> &[Vec<Vec<u8>>] {
        &self.cmds
    }

    pub fn clear(&mut self) {
        self.cmds.clear();
    }
}

/// A single-connection client that follows its tenant across servers.
pub struct Client {
    opts: ConnectOptions,
    policy: RedirectPolicy,
    conn: Option<Connection>,
    /// Redirects followed since the client was created.
    redirects: u64,
    /// Set while a call has requests on the wire whose replies are not read yet. Still set when
    /// a call starts means the previous call's future was dropped midway: its reply may still
    /// arrive, so the connection cannot be trusted to be in step.
    in_flight: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.opts.addr)
            .field("tenant", &self.opts.tenant)
            .field("redirects", &self.redirects)
            .finish()
    }
}

/// What a round of a pipeline did with one command.
enum Outcome {
    Done(Result<Frame, ClientError>),
    /// Refused without running; re-sent unless hops or time run out.
    Resend(ClientError),
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
        let conn = Connection::connect(opts.clone())
            .await
            .map_err(|e| handshake_context(e, &opts))?;
        Ok(Client {
            opts,
            policy,
            conn: Some(conn),
            redirects: 0,
            in_flight: false,
        })
    }

    /// The server this client currently talks to (changes when it follows a redirect).
    pub fn addr(&self) -> &str {
        &self.opts.addr
    }

    /// Redirects followed since the client was created.
    pub fn redirects(&self) -> u64 {
        self.redirects
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    pub fn policy(&self) -> &RedirectPolicy {
        &self.policy
    }

    /// True when the client has an open connection that is in step (checked without blocking).
    pub fn is_usable(&mut self) -> bool {
        !self.in_flight && self.conn.as_mut().is_some_and(Connection::is_open)
    }

    /// Starts a call: drops a connection left out of step by a cancelled call.
    fn begin(&mut self) {
        if self.in_flight {
            self.conn = None;
        }
        self.in_flight = true;
    }

    async fn conn(&mut self) -> Result<&mut Connection, ClientError> {
        // An idle connection the server closed (restart, CLIENT KILL, idle timeout) is replaced
        // before anything is sent on it; once a command is sent, a broken connection is an
        // error because the command's outcome is unknown.
        if self.conn.as_mut().is_some_and(|c| !c.is_open()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(
                Connection::connect(self.opts.clone())
                    .await
                    .map_err(|e| handshake_context(e, &self.opts))?,
            );
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ClientError::Closed(self.opts.addr.clone()))
    }

    /// Moves to `addr` after a redirect; false when the hop limit is reached.
    fn follow(&mut self, addr: String, hops: &mut usize) -> bool {
        *hops += 1;
        if *hops > self.policy.max_redirects {
            return false;
        }
        tracing::debug!(from = %self.opts.addr, to = %addr, "following redirect");
        self.opts.addr = addr;
        self.conn = None;
        self.redirects += 1;
        true
    }

    /// Runs a command, following redirects and retrying TRYAGAIN within the policy (see the
    /// module documentation for exactly what is re-sent).
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        self.begin();
        let r = self.cmd_inner(args).await;
        self.in_flight = false;
        r.map_err(|e| e.context(&self.opts.addr, &command_name(args)))
    }

    async fn cmd_inner<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        let deadline = Instant::now() + self.policy.redirect_timeout;
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
                    if !self.follow(addr, &mut hops) {
                        return Err(ClientError::TooManyRedirects(hops));
                    }
                }
                Err(e @ ClientError::TryAgain(_)) => {
                    if !wait(&mut backoff, deadline, &self.policy).await {
                        return Err(e);
                    }
                }
                // Connecting to a new home can briefly fail while it activates; retry that too.
                Err(e) if is_refused_connect(&e) => {
                    self.conn = None;
                    if !wait(&mut backoff, deadline, &self.policy).await {
                        return Err(e);
                    }
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

    /// Sends many commands at once and returns one result per command, in order. Commands the
    /// server refused without running (MOVED, REDIRECT, TRYAGAIN) are re-sent in order at the
    /// tenant's new home; see the module documentation for the exact rule.
    ///
    /// Per-command errors (e.g. `WRONGTYPE`, or a `TRYAGAIN` that outlived the redirect
    /// timeout) are in their slots. An outer error means some outcomes are unknown: the
    /// connection failed after commands were sent, or the tenant's new home could not be
    /// reached after earlier commands had already run.
    pub async fn pipeline<C, A>(
        &mut self,
        cmds: &[C],
    ) -> Result<Vec<Result<Frame, ClientError>>, ClientError>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        self.begin();
        let r = self.pipeline_inner(cmds).await;
        self.in_flight = false;
        r
    }

    /// Runs a [`Pipeline`].
    pub async fn run(
        &mut self,
        pipeline: &Pipeline,
    ) -> Result<Vec<Result<Frame, ClientError>>, ClientError> {
        self.pipeline(pipeline.commands()).await
    }

    async fn pipeline_inner<C, A>(
        &mut self,
        cmds: &[C],
    ) -> Result<Vec<Result<Frame, ClientError>>, ClientError>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        let what = |pending: &[usize]| match pending {
            [one] => command_name(cmds[*one].as_ref()),
            many => format!("pipeline of {} commands", many.len()),
        };
        let mut out: Vec<Option<Result<Frame, ClientError>>> =
            std::iter::repeat_with(|| None).take(cmds.len()).collect();
        let mut pending: Vec<usize> = (0..cmds.len()).collect();
        let deadline = Instant::now() + self.policy.redirect_timeout;
        let mut backoff = self.policy.initial_backoff;
        let mut hops = 0;
        while !pending.is_empty() {
            let addr = self.opts.addr.clone();
            let conn = match self.conn().await {
                Ok(c) => c,
                Err(e) if is_refused_connect(&e) => {
                    if !wait(&mut backoff, deadline, &self.policy).await {
                        return Err(e.context(&addr, &what(&pending)));
                    }
                    continue;
                }
                Err(e) => return Err(e.context(&addr, &what(&pending))),
            };
            for &i in &pending {
                conn.queue(cmds[i].as_ref());
            }
            let mut replies = Vec::with_capacity(pending.len());
            let sent = conn.flush().await;
            let received = match sent {
                Ok(()) => {
                    let mut r = Ok(());
                    for &i in &pending {
                        match conn.recv_frame().await {
                            Ok(f) => replies.push((i, check(f))),
                            Err(e) => {
                                r = Err(e.context(&addr, &command_name(cmds[i].as_ref())));
                                break;
                            }
                        }
                    }
                    r
                }
                Err(e) => Err(e.context(&addr, &what(&pending))),
            };
            if let Err(e) = received {
                self.conn = None;
                return Err(e);
            }

            // Decide, per command, whether it is done or re-sent (see the module docs). Walk
            // backwards so that each TRYAGAIN knows whether a later command ran.
            let mut ran_later = false;
            let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(replies.len());
            for (i, r) in replies.into_iter().rev() {
                let outcome = match r {
                    Err(e @ (ClientError::Moved { .. } | ClientError::Redirect(_))) => {
                        Outcome::Resend(e)
                    }
                    Err(e @ ClientError::TryAgain(_)) if !ran_later => Outcome::Resend(e),
                    Err(e @ ClientError::TryAgain(_)) => Outcome::Done(Err(e)),
                    other => {
                        ran_later = true;
                        Outcome::Done(other)
                    }
                };
                outcomes.push((i, outcome));
            }
            outcomes.reverse();
            let mut next = Vec::new();
            let mut refusals = Vec::new();
            let mut moved_to = None;
            for (i, outcome) in outcomes {
                match outcome {
                    Outcome::Done(r) => {
                        let name = command_name(cmds[i].as_ref());
                        out[i] = Some(r.map_err(|e| e.context(&addr, &name)));
                    }
                    Outcome::Resend(e) => {
                        if let ClientError::Moved { addr: to, .. } | ClientError::Redirect(to) = &e
                        {
                            moved_to.get_or_insert_with(|| to.clone());
                        }
                        next.push(i);
                        refusals.push(e);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            let go_on = match moved_to {
                Some(to) => self.follow(to, &mut hops),
                None => wait(&mut backoff, deadline, &self.policy).await,
            };
            if !go_on {
                // Out of hops or time: each command keeps the refusal it got last.
                for (&i, e) in next.iter().zip(refusals) {
                    let e = if e.is_redirect() {
                        ClientError::TooManyRedirects(hops)
                    } else {
                        e
                    };
                    out[i] = Some(Err(e.context(&addr, &command_name(cmds[i].as_ref()))));
                }
                break;
            }
            pending = next;
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ClientError::Unexpected("no reply".into()))))
            .collect())
    }
}

/// Sleeps for the current backoff and doubles it; false (without sleeping) when that would pass
/// the deadline.
async fn wait(backoff: &mut Duration, deadline: Instant, policy: &RedirectPolicy) -> bool {
    if Instant::now() + *backoff > deadline {
        return false;
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(policy.max_backoff);
    true
}

/// A connect that the peer refused or that timed out: nothing was sent, so trying again is safe.
fn is_refused_connect(e: &ClientError) -> bool {
    match e.root() {
        ClientError::Connect { .. } => true,
        ClientError::Timeout(what) => what.starts_with("connecting to"),
        _ => false,
    }
}

/// Names what failed while opening a connection: the TCP connect, or the handshake command.
fn handshake_context(e: ClientError, opts: &ConnectOptions) -> ClientError {
    let what = if e.is_connection_error() {
        "connect"
    } else if opts.password.is_some() {
        if opts.resp3 { "HELLO 3 AUTH" } else { "AUTH" }
    } else if opts.resp3 {
        "HELLO 3"
    } else {
        "CLIENT SETNAME"
    };
    e.context(&opts.addr, what)
}
