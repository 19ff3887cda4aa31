//! The write gate: lets a cutover pause one tenant's writes and wait until the writes already
//! running have finished, without touching other tenants.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use tokio::sync::Notify;

/// A per-tenant gate. Writers hold a [`WritePermit`] while they apply a write; closing the gate
/// makes new writers wait and returns once every permit has been dropped.
///
/// The handshake is Dekker-style with sequentially consistent atomics: a writer increments
/// `inflight` and then reads `closed`; the closer sets `closed` and then reads `inflight`. At least
/// one of them sees the other, so no write can slip past a closed gate unnoticed.
#[derive(Debug, Default)]
pub struct WriteGate {
    closed: AtomicBool,
    inflight: AtomicUsize,
    /// Woken when the gate opens.
    opened: Notify,
    /// Woken when the last permit is dropped while the gate is closed.
    drained: Notify,
}

/// Proof that a write may proceed; dropping it lets a waiting cutover continue.
#[must_use]
pub struct WritePermit<'a> {
    gate: &'a WriteGate,
}

impl Drop for WritePermit<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl WriteGate {
    pub fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    fn release(&self) {
        if self.inflight.fetch_sub(1, SeqCst) == 1 && self.closed.load(SeqCst) {
            self.drained.notify_waiters();
        }
    }

    /// Tries to enter without waiting.
    pub fn try_enter(&self) -> Option<WritePermit<'_>> {
        self.inflight.fetch_add(1, SeqCst);
        if !self.closed.load(SeqCst) {
            return Some(WritePermit { gate: self });
        }
        self.release();
        None
    }

    /// Enters, waiting up to `timeout` for a closed gate to open. `None` on timeout.
    pub async fn enter(&self, timeout: Duration) -> Option<WritePermit<'_>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if let Some(p) = self.try_enter() {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return None;
            }
        }
    }

    /// Closes the gate and waits until no permit is held.
    pub async fn close_and_drain(&self) {
        self.closed.store(true, SeqCst);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.inflight.load(SeqCst) == 0 {
                return;
            }
            drained.await;
        }
    }

    /// Opens the gate and wakes every waiting writer.
    pub fn open(&self) {
        self.closed.store(false, SeqCst);
        self.opened.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn close_waits_for_inflight_and_blocks_new() {
        let gate = Arc::new(WriteGate::default());
        let p = gate.try_enter().unwrap();
        let g2 = gate.clone();
        let closer = tokio::spawn(async move { g2.close_and_drain().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closer.is_finished(), "close must wait for the held permit");
        drop(p);
        closer.await.unwrap();
        assert!(gate.try_enter().is_none());
        let g3 = gate.clone();
        let waiter = tokio::spawn(async move { g3.enter(Duration::from_secs(5)).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.open();
        assert!(waiter.await.unwrap());
        assert!(
            gate.enter(Duration::from_millis(1)).await.is_some(),
            "open gate admits at once"
        );
        gate.close_and_drain().await;
        assert!(
            gate.enter(Duration::from_millis(10)).await.is_none(),
            "times out while closed"
        );
    }
}
