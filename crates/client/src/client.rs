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
//! - `-MOVED tenant:<id>:key <addr>`: an incremental migration moved the key pattern of this
//!   command's keys to `addr`; the tenant's other keys are still served here. The command is
//!   sent to `addr` on a second connection (same credentials, kept for the next such command)
//!   and the client stays at its home. A pipeline follows it by moving, as for `-MOVED`.
//! - `-TRYAGAIN ...`: the tenant is being imported on this server (a client that reached the
//!   target before the cutover), or a write waited too long at the cutover gate. The client
//!   waits (doubling from [`RedirectPolicy::initial_backoff`] up to
//!   [`RedirectPolicy::max_backoff`]) and sends it again.
//! - A refused connect while following a redirect (the new home is still starting to listen).
//!   Any other connect is tried once: a server that is down fails the command at once.
//!
//! All of this happens within [`RedirectPolicy::redirect_timeout`] per command; after it the last
//! refusal is returned (a [`ClientError::TryAgain`] for a tenant that never became active).
//!
//! # Transactions
//!
//! Nothing is re-sent inside a transaction: after a MULTI was acknowledged (until EXEC or
//! DISCARD), or while keys are under WATCH. The tenant's new server knows nothing of the
//! transaction, so a re-sent EXEC would fail there (`ERR EXEC without MULTI`) and the queued
//! writes would be lost without anyone noticing. Instead, a `-MOVED`/`-REDIRECT`/`-TRYAGAIN` in a
//! transaction returns [`ClientError::TransactionDiscarded`] (naming the new address and keeping
//! the server's text); the client leaves the transaction, drops the connection (so the old server
//! forgets the queued commands and watches) and moves to the new address, so the caller can run
//! the transaction again from WATCH or MULTI and it goes to the new server. The same error comes
//! from the first command after the connection of an open transaction was lost, rather than
//! sending that command outside the transaction on a new connection.
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
//! ones after them changes nothing a tenant can observe. A transaction inside a pipeline (MULTI
//! ... EXEC, or WATCH ... EXEC) is never re-sent in part: if the server refused any of its
//! commands, those get [`ClientError::TransactionDiscarded`] in their slots and none of it is
//! sent again.
//!
//! Errors returned by a `Client` carry context: [`ClientError::Context`] names the server and the
//! command.

use std::collections::HashMap;
use std::time::Duration;

use ferrite_protocol::frame::Frame;
use tokio::time::Instant;

use crate::connection::{ConnectOptions, Connection, check};
use crate::error::{ClientError, command_name};
use crate::transaction::{TxState, transactions};

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
    /// The connection's transaction state; while one is open, refusals are not followed. Set to
    /// the state a call would lead to before it is sent, so that a call cancelled midway leaves
    /// the pessimistic state (an open transaction on a connection that will be dropped).
    tx: TxState,
    /// An open transaction's connection was dropped while the client followed the tenant for
    /// other commands of a pipeline: the next call gets this error instead of running outside
    /// the transaction.
    tx_lost: Option<ClientError>,
    /// A connection to the other server of an incremental migration, kept for the commands
    /// whose keys are redirected there one by one (`-MOVED tenant:<id>:key <addr>`), while the
    /// client itself stays at its home.
    side: Option<(String, Connection)>,
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
            tx: TxState::default(),
            tx_lost: None,
            side: None,
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

    /// True inside a transaction: MULTI acknowledged and not yet ended by EXEC or DISCARD, or
    /// keys under WATCH (also when the next call will report such a transaction as discarded).
    /// Redirects and TRYAGAIN are not followed then (see the module documentation).
    pub fn in_transaction(&self) -> bool {
        self.tx.active() || self.tx_lost.is_some()
    }

    /// Starts a call: drops a connection left out of step by a cancelled call.
    fn begin(&mut self) {
        if self.in_flight {
            self.conn = None;
            self.side = None;
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

    /// The connection to `addr` for a command whose keys were redirected there (see `side`).
    async fn side_conn(&mut self, addr: &str) -> Result<&mut Connection, ClientError> {
        if self
            .side
            .as_mut()
            .is_some_and(|(a, c)| a != addr || !c.is_open())
        {
            self.side = None;
        }
        if self.side.is_none() {
            let mut opts = self.opts.clone();
            opts.addr = addr.to_string();
            let conn = Connection::connect(opts.clone())
                .await
                .map_err(|e| handshake_context(e, &opts))?;
            self.side = Some((addr.to_string(), conn));
        }
        self.side
            .as_mut()
            .map(|(_, c)| c)
            .ok_or_else(|| ClientError::Closed(addr.to_string()))
    }

    /// Moves to `addr` after a redirect; false when the hop limit is reached.
    fn follow(&mut self, addr: String, hops: &mut usize) -> bool {
        *hops += 1;
        if *hops > self.policy.max_redirects {
            return false;
        }
        self.rehome(addr);
        true
    }

    /// Makes `addr` the tenant's home: the next command connects there.
    fn rehome(&mut self, addr: String) {
        tracing::debug!(from = %self.opts.addr, to = %addr, "following redirect");
        self.opts.addr = addr;
        self.conn = None;
        self.redirects += 1;
    }

    /// Before a call: an open transaction whose connection is gone cannot go on, and its next
    /// command must not run outside it on a new connection.
    fn check_transaction(&mut self) -> Result<(), ClientError> {
        if let Some(e) = self.tx_lost.take() {
            self.tx = TxState::default();
            return Err(e);
        }
        if self.tx.active() && !self.conn.as_mut().is_some_and(Connection::is_open) {
            self.tx = TxState::default();
            self.conn = None;
            return Err(ClientError::TransactionDiscarded {
                moved_to: None,
                cause: format!("the connection to {} was lost", self.opts.addr),
                from_server: false,
            });
        }
        Ok(())
    }

    /// A refusal inside a transaction: leave the transaction, drop its connection (the server
    /// forgets the queued commands and watches with it) and move to the new home, if any.
    fn discard(&mut self, refusal: &ClientError) -> ClientError {
        let moved_to = moved_to(refusal);
        self.tx = TxState::default();
        self.conn = None;
        if let Some(addr) = &moved_to {
            self.rehome(addr.clone());
        }
        discarded(moved_to, refusal)
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
        self.check_transaction()?;
        let before = self.tx;
        self.tx = before.intended(args);
        let deadline = Instant::now() + self.policy.redirect_timeout;
        let mut backoff = self.policy.initial_backoff;
        let mut hops = 0;
        // Where this command's keys were redirected (`-MOVED tenant:<id>:key`), if elsewhere
        // than the client's home.
        let mut keys_at: Option<String> = None;
        loop {
            let conn = match keys_at.clone() {
                None => self.conn().await,
                Some(addr) => self.side_conn(&addr).await,
            };
            let conn = match conn {
                Ok(c) => c,
                // Nothing was sent, so the transaction state is what it was.
                Err(e) => {
                    self.tx = before;
                    // Connecting to a new home can briefly fail while it activates; retry that,
                    // but not a server that is simply down.
                    if hops > 0
                        && is_refused_connect(&e)
                        && wait(&mut backoff, deadline, &self.policy).await
                    {
                        continue;
                    }
                    return Err(e);
                }
            };
            match conn.cmd(args).await {
                Err(e) if before.active() && (e.is_redirect() || e.is_try_again()) => {
                    // Named after the server that refused it, not the new home.
                    let sent_to = self.opts.addr.clone();
                    return Err(self.discard(&e).context(&sent_to, &command_name(args)));
                }
                // This command only goes to `addr`; the client stays at its home.
                Err(ClientError::KeyMoved { addr, .. }) => {
                    hops += 1;
                    if hops > self.policy.max_redirects {
                        self.tx = before;
                        return Err(ClientError::TooManyRedirects(hops));
                    }
                    self.redirects += 1;
                    keys_at = (addr != self.opts.addr).then_some(addr);
                }
                // Refused without running: the transaction state is what it was.
                Err(ClientError::Moved { addr, .. }) | Err(ClientError::Redirect(addr)) => {
                    keys_at = None;
                    if !self.follow(addr, &mut hops) {
                        self.tx = before;
                        return Err(ClientError::TooManyRedirects(hops));
                    }
                }
                Err(e @ ClientError::TryAgain(_)) => {
                    if !wait(&mut backoff, deadline, &self.policy).await {
                        self.tx = before;
                        return Err(e);
                    }
                }
                // The command's outcome is unknown; an open transaction is reported as
                // discarded by the next call (`self.tx` holds the intended state).
                Err(e) if e.is_connection_error() => {
                    if keys_at.is_some() {
                        self.side = None;
                    } else {
                        self.conn = None;
                    }
                    return Err(e);
                }
                r => {
                    self.tx = before.after(args, &r);
                    return r;
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
        let all: Vec<usize> = (0..cmds.len()).collect();
        let start_addr = self.opts.addr.clone();
        self.check_transaction()
            .map_err(|e| e.context(&start_addr, &what(&all)))?;
        let start = self.tx;
        // Which commands belong to a transaction: those are never re-sent on their own.
        let tx_of = transactions(start, cmds);
        let intended = cmds
            .iter()
            .fold(start, |state, cmd| state.intended(cmd.as_ref()));
        self.tx = intended;
        let mut out: Vec<Option<Result<Frame, ClientError>>> =
            std::iter::repeat_with(|| None).take(cmds.len()).collect();
        let mut pending = all;
        // Transactions with a refused command, and the refusal that discarded each.
        let mut discarded: HashMap<usize, (Option<String>, String)> = HashMap::new();
        // The connection that ran the first round (and with it every transaction) was dropped.
        let mut replaced = false;
        // The refusal that made the client follow the tenant last.
        let mut followed: Option<ClientError> = None;
        let deadline = Instant::now() + self.policy.redirect_timeout;
        let mut backoff = self.policy.initial_backoff;
        let mut hops = 0;
        while !pending.is_empty() {
            let addr = self.opts.addr.clone();
            let conn = match self.conn().await {
                Ok(c) => c,
                Err(e) => {
                    if hops > 0
                        && is_refused_connect(&e)
                        && wait(&mut backoff, deadline, &self.policy).await
                    {
                        continue;
                    }
                    if !replaced {
                        // Nothing was sent.
                        self.tx = start;
                    }
                    return Err(e.context(&addr, &what(&pending)));
                }
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
                // Outcomes unknown; an open transaction is reported by the next call.
                self.conn = None;
                return Err(e);
            }

            let refused = |r: &Result<Frame, ClientError>| {
                r.as_ref()
                    .is_err_and(|e| e.is_redirect() || e.is_try_again())
            };
            for (i, r) in &replies {
                if let (Some(t), Err(e)) = (tx_of[*i], r)
                    && refused(r)
                {
                    discarded
                        .entry(t)
                        .or_insert_with(|| (moved_to(e), refusal_text(e)));
                }
            }

            // Decide, per command, whether it is done or re-sent (see the module docs). Walk
            // backwards so that each TRYAGAIN knows whether a later command ran.
            let mut ran_later = false;
            let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(replies.len());
            for (i, r) in replies.into_iter().rev() {
                let outcome = match (tx_of[i], r) {
                    (Some(t), r) if refused(&r) => {
                        let (to, cause) = discarded[&t].clone();
                        Outcome::Done(Err(ClientError::TransactionDiscarded {
                            moved_to: to,
                            cause,
                            from_server: true,
                        }))
                    }
                    (
                        None,
                        Err(
                            e @ (ClientError::Moved { .. }
                            | ClientError::KeyMoved { .. }
                            | ClientError::Redirect(_)),
                        ),
                    ) => Outcome::Resend(e),
                    (None, Err(e @ ClientError::TryAgain(_))) if !ran_later => Outcome::Resend(e),
                    (None, Err(e @ ClientError::TryAgain(_))) => Outcome::Done(Err(e)),
                    (_, other) => {
                        ran_later = true;
                        Outcome::Done(other)
                    }
                };
                outcomes.push((i, outcome));
            }
            outcomes.reverse();
            let mut next = Vec::new();
            let mut refusals = Vec::new();
            let mut moved: Option<ClientError> = None;
            for (i, outcome) in outcomes {
                match outcome {
                    Outcome::Done(r) => {
                        let name = command_name(cmds[i].as_ref());
                        out[i] = Some(r.map_err(|e| e.context(&addr, &name)));
                    }
                    Outcome::Resend(e) => {
                        if moved.is_none() && e.is_redirect() {
                            moved = refusal_copy(&e);
                        }
                        next.push(i);
                        refusals.push(e);
                    }
                }
            }
            if !replaced && !discarded.is_empty() {
                // The old server must forget the discarded transactions' queues and watches.
                self.conn = None;
                replaced = true;
                if let Some(to) = discarded.values().find_map(|(to, _)| to.clone()) {
                    self.rehome(to);
                }
            }
            if next.is_empty() {
                break;
            }
            let go_on = match moved {
                Some(e) => {
                    let to = moved_to(&e).unwrap_or_default();
                    replaced = true;
                    followed = Some(e);
                    // A discarded transaction may have moved the client there already.
                    if to == self.opts.addr {
                        hops += 1;
                        hops <= self.policy.max_redirects
                    } else {
                        self.follow(to, &mut hops)
                    }
                }
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
        let out: Vec<Result<Frame, ClientError>> = out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ClientError::Unexpected("no reply".into()))))
            .collect();

        // Where the transactions stand now, from the replies in pipeline order.
        let mut state = cmds
            .iter()
            .zip(&out)
            .fold(start, |state, (cmd, r)| state.after(cmd.as_ref(), r));
        let last_tx = tx_of.last().copied().flatten();
        if state.active() && last_tx.is_some_and(|t| discarded.contains_key(&t)) {
            state = TxState::default();
        }
        if state.active() && replaced {
            // The transaction is still open on a connection the client dropped to follow the
            // tenant for other commands of the pipeline.
            state = TxState::default();
            self.tx_lost = Some(match &followed {
                Some(e) => discarded_error(moved_to(e), refusal_text(e)),
                None => ClientError::TransactionDiscarded {
                    moved_to: None,
                    cause: format!("the connection to {start_addr} was dropped"),
                    from_server: false,
                },
            });
        }
        self.tx = state;
        Ok(out)
    }
}

/// The address a `-MOVED`/`-REDIRECT` points to.
fn moved_to(e: &ClientError) -> Option<String> {
    match e.root() {
        ClientError::Moved { addr, .. }
        | ClientError::KeyMoved { addr, .. }
        | ClientError::Redirect(addr) => Some(addr.clone()),
        _ => None,
    }
}

/// A refusal's text as the server sent it (or the error's own text).
fn refusal_text(e: &ClientError) -> String {
    e.refusal_text().unwrap_or_else(|| e.to_string())
}

/// A copy of a refusal (errors are not `Clone`: some hold an `io::Error`).
fn refusal_copy(e: &ClientError) -> Option<ClientError> {
    match e.root() {
        ClientError::Moved { tenant, addr } => Some(ClientError::Moved {
            tenant: tenant.clone(),
            addr: addr.clone(),
        }),
        ClientError::KeyMoved { tenant, addr } => Some(ClientError::KeyMoved {
            tenant: tenant.clone(),
            addr: addr.clone(),
        }),
        ClientError::Redirect(addr) => Some(ClientError::Redirect(addr.clone())),
        ClientError::TryAgain(t) => Some(ClientError::TryAgain(t.clone())),
        _ => None,
    }
}

fn discarded_error(moved_to: Option<String>, cause: String) -> ClientError {
    ClientError::TransactionDiscarded {
        moved_to,
        cause,
        from_server: true,
    }
}

/// The error for a transaction discarded by `refusal`.
fn discarded(moved_to: Option<String>, refusal: &ClientError) -> ClientError {
    discarded_error(moved_to, refusal_text(refusal))
}

/// Sleeps for the current backoff and doubles it; false (without sleeping) when that would pass
/// the deadline.
async fn wait(backoff: &mut Duration, deadline: Instant, policy: &RedirectPolicy) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    // The last wait is cut short at the deadline, so that a command is retried once more at
    // its end: the whole redirect_timeout is used (giving up when the next backoff would not
    // fit ended the retries up to half the timeout early).
    tokio::time::sleep((*backoff).min(deadline - now)).await;
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
