//! What a connection's transaction state is (MULTI open, keys under WATCH), as far as the client
//! can tell from the commands it sent and the replies it got.
//!
//! [`Client`](crate::Client) needs it because following a tenant is only safe outside a
//! transaction: the server the tenant moved to has neither the MULTI nor the queued commands nor
//! the watches, so a re-sent EXEC fails there (`ERR EXEC without MULTI`) and a re-sent queued
//! command would run at once instead of at EXEC.

use ferrite_protocol::frame::Frame;

use crate::error::ClientError;

/// A connection's transaction state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TxState {
    /// MULTI was acknowledged and neither EXEC nor DISCARD has ended it.
    pub multi: bool,
    /// WATCH was acknowledged and nothing has cleared the watches since (EXEC, DISCARD,
    /// UNWATCH, RESET).
    pub watching: bool,
}

/// How a command changes the transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Multi,
    Watch,
    Unwatch,
    /// EXEC, DISCARD, RESET, QUIT: whatever the reply, the server has left the transaction
    /// (EXEC and DISCARD clear it even when they fail: EXECABORT, or a refusal at EXEC).
    End,
    None,
}

fn effect<A: AsRef<[u8]>>(args: &[A]) -> Effect {
    let Some(name) = args.first().map(AsRef::as_ref) else {
        return Effect::None;
    };
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    if is(b"MULTI") {
        Effect::Multi
    } else if is(b"WATCH") {
        Effect::Watch
    } else if is(b"UNWATCH") {
        Effect::Unwatch
    } else if is(b"EXEC") || is(b"DISCARD") || is(b"RESET") || is(b"QUIT") {
        Effect::End
    } else {
        Effect::None
    }
}

impl TxState {
    /// In a transaction: a redirect or retry must not be followed.
    pub fn active(self) -> bool {
        self.multi || self.watching
    }

    /// Whether `args` opens a transaction (MULTI, WATCH).
    pub fn opens<A: AsRef<[u8]>>(args: &[A]) -> bool {
        matches!(effect(args), Effect::Multi | Effect::Watch)
    }

    /// The state after the server answered `args` with `reply` (refusals that did not run the
    /// command leave it as it was).
    pub fn after<A: AsRef<[u8]>>(self, args: &[A], reply: &Result<Frame, ClientError>) -> TxState {
        let ok = reply.is_ok();
        match effect(args) {
            Effect::End => TxState::default(),
            // A nested MULTI is an error and changes nothing.
            Effect::Multi if ok => TxState {
                multi: true,
                ..self
            },
            // WATCH inside MULTI is an error.
            Effect::Watch if ok => TxState {
                watching: true,
                ..self
            },
            // Inside MULTI, UNWATCH is only queued.
            Effect::Unwatch if ok && !self.multi => TxState {
                watching: false,
                ..self
            },
            _ => self,
        }
    }

    /// The state after `args` if the server accepts it: what a call leads to before its replies
    /// are known.
    pub fn intended<A: AsRef<[u8]>>(self, args: &[A]) -> TxState {
        match effect(args) {
            Effect::Watch if self.multi => self,
            _ => self.after(args, &Ok(Frame::Null)),
        }
    }
}

/// For each command of a pipeline, the transaction it belongs to (numbered from 0), if any: from
/// MULTI or WATCH, or from the start when the connection is in one already, up to and including
/// the EXEC, DISCARD, RESET or UNWATCH that ends it. Worked out from the commands alone, so the
/// client can tell before replies arrive which commands must never be re-sent on their own.
pub(crate) fn transactions<C, A>(start: TxState, cmds: &[C]) -> Vec<Option<usize>>
where
    C: AsRef<[A]>,
    A: AsRef<[u8]>,
{
    let mut state = start;
    let mut current = state.active().then_some(0);
    let mut next_id = usize::from(current.is_some());
    let mut out = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        let cmd = cmd.as_ref();
        if current.is_none() && TxState::opens(cmd) {
            current = Some(next_id);
            next_id += 1;
        }
        out.push(current);
        state = state.intended(cmd);
        if !state.active() {
            current = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<Frame, ClientError> {
        Ok(Frame::Null)
    }

    fn err() -> Result<Frame, ClientError> {
        Err(ClientError::Server("ERR x".into()))
    }

    #[test]
    fn follows_multi_watch_exec_and_discard() {
        let s = TxState::default();
        assert!(!s.active());
        let s = s.after(&["watch", "k"], &ok());
        assert_eq!(
            s,
            TxState {
                multi: false,
                watching: true
            }
        );
        let s = s.after(&["MULTI"], &ok());
        assert!(s.multi && s.watching);
        // Inside MULTI: a nested MULTI and WATCH fail, UNWATCH is queued; none changes the state.
        assert_eq!(s.after(&["MULTI"], &err()), s);
        assert_eq!(s.after(&["WATCH", "x"], &err()), s);
        assert_eq!(s.after(&["UNWATCH"], &ok()), s);
        assert_eq!(s.after(&["INCR", "k"], &ok()), s);
        // EXEC ends it whatever the reply (EXECABORT, a refusal at EXEC).
        assert!(!s.after(&["EXEC"], &ok()).active());
        assert!(!s.after(&["exec"], &err()).active());
        assert!(!s.after(&["DISCARD"], &ok()).active());
        assert!(!s.after(&["RESET"], &ok()).active());
        // A failed MULTI or WATCH opens nothing; UNWATCH outside MULTI clears the watches.
        let none = TxState::default();
        assert!(!none.after(&["MULTI"], &err()).active());
        assert!(!none.after(&["WATCH", "k"], &err()).active());
        let watching = none.after(&["WATCH", "k"], &ok());
        assert!(!watching.after(&["UNWATCH"], &ok()).active());
    }

    #[test]
    fn pipelines_are_split_into_transactions() {
        let cmds: Vec<Vec<&str>> = vec![
            vec!["SET", "a", "1"],
            vec!["MULTI"],
            vec!["INCR", "a"],
            vec!["EXEC"],
            vec!["GET", "a"],
            vec!["WATCH", "a"],
            vec!["GET", "a"],
            vec!["MULTI"],
            vec!["SET", "a", "2"],
            vec!["EXEC"],
            vec!["WATCH", "b"],
            vec!["UNWATCH"],
            vec!["MULTI"],
            vec!["PING"],
        ];
        assert_eq!(
            transactions(TxState::default(), &cmds),
            [
                None,
                Some(0),
                Some(0),
                Some(0),
                None,
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(2),
                Some(2),
                Some(3),
                Some(3),
            ]
        );
        // Started inside a transaction: the first commands belong to it.
        let open = TxState {
            multi: true,
            watching: false,
        };
        let cmds = vec![vec!["INCR", "a"], vec!["EXEC"], vec!["GET", "a"]];
        assert_eq!(transactions(open, &cmds), [Some(0), Some(0), None]);
    }
}
