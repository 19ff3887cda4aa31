//! Keeping the rare paths of an async function out of its hot machine code.
//!
//! Awaiting a future inlines its state machine's code into the awaiting one's: the connection
//! loop and the command path grew to tens of kilobytes each (their rare branches — blocked
//! clients, server commands, long commands, shutdown — in the middle of the code every request
//! runs), and the instruction cache misses of SET and INCR -P16 were three times Redis's
//! (docs/benchmarks.md, "The build profile"). Awaiting through [`outlined`] or [`cold`] polls
//! the future from a function of its own instead: same behaviour, one call more per poll.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Awaits `fut`, polling it through a function that is never inlined (for futures that run
/// often enough, e.g. every server command, but whose code must not sit in the caller's).
pub async fn outlined<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| poll_outlined(fut.as_mut(), cx)).await
}

/// [`outlined`], for paths that are rare (the compiler places the code that leads to them away
/// from the rest, too).
pub async fn cold<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| poll_cold(fut.as_mut(), cx)).await
}

#[inline(never)]
fn poll_outlined<F: Future>(fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
    fut.poll(cx)
}

#[cold]
#[inline(never)]
fn poll_cold<F: Future>(fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
    fut.poll(cx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that is pending `n` times (waking itself) before it is ready with `value`.
    struct PendingTimes {
        n: u32,
        value: u32,
    }

    impl Future for PendingTimes {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.n == 0 {
                return Poll::Ready(self.value);
            }
            self.n -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn outlined_and_cold_futures_give_their_output_after_pending() {
        assert_eq!(outlined(PendingTimes { n: 3, value: 7 }).await, 7);
        assert_eq!(cold(PendingTimes { n: 2, value: 9 }).await, 9);
        assert_eq!(outlined(async { 5 }).await, 5);
    }
}
