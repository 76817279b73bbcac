//! Wakes every open connection now and then so it can check on itself: whether it has been
//! idle past `--idle-timeout-ms`, and whether the drain timeout has cut it.
//!
//! One shared [`Notify`] instead of a timer per connection: a timer costs every open
//! connection ~100 bytes and a timer-wheel entry, while a sweep costs one waiter each and a
//! wake-up per sweep. Sweeps come every eighth of the idle timeout, and a connection is idle
//! once eight sweeps in a row found nothing moved: it is closed between `idle` and
//! `idle + idle/8` after its last byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Sweeps in an idle timeout: a connection is idle once this many sweeps in a row found
/// nothing moved.
const SWEEPS_PER_IDLE: u8 = 8;

/// Shared by the server and its connections.
#[derive(Debug, Default)]
pub struct Sweeper {
    notify: Notify,
    cut: AtomicBool,
    idle: Option<Duration>,
}

impl Sweeper {
    pub fn new(idle: Option<Duration>) -> Self {
        Sweeper {
            idle,
            ..Default::default()
        }
    }

    /// Ticks until the returned future is dropped (the server runs it while it serves).
    pub async fn tick(&self) {
        let Some(idle) = self.idle else {
            return std::future::pending().await;
        };
        let every = (idle / u32::from(SWEEPS_PER_IDLE)).max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.notify.notify_waiters();
        }
    }

    /// The drain timeout has expired: every connection still open ends now.
    pub fn cut(&self) {
        // State first, then the wake-up that makes connections look at it.
        self.cut.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Resolves once [`Sweeper::cut`] has been called.
    pub async fn cut_done(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.cut.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// A watch for one connection's relay phase.
    pub fn watch(&self) -> Watch<'_> {
        Watch {
            sweeper: self,
            notified: self.notify.notified(),
            last_total: 0,
            quiet_sweeps: 0,
        }
    }
}

/// Why a watched connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Idle,
    Cut,
}

pin_project_lite::pin_project! {
    /// One connection's view of the sweeps: polled beside the relay with the bytes it has
    /// moved so far. It counts the sweeps that found nothing moved, rather than keeping a
    /// timestamp, to stay small.
    pub struct Watch<'a> {
        sweeper: &'a Sweeper,
        #[pin]
        notified: Notified<'a>,
        // The low bits of the byte count at the last sweep: only equality matters.
        last_total: u32,
        quiet_sweeps: u8,
    }
}

impl Watch<'_> {
    /// `Ready` when the connection must end; `total` is the bytes it has moved so far.
    /// Registers for the next sweep before it looks, so a sweep in between is not missed.
    pub fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>, total: u64) -> Poll<Verdict> {
        let mut this = self.project();
        loop {
            this.notified.as_mut().enable();
            if this.sweeper.cut.load(Ordering::SeqCst) {
                return Poll::Ready(Verdict::Cut);
            }
            if this.notified.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // A sweep: did anything move since the last one?
            this.notified.set(this.sweeper.notify.notified());
            if this.sweeper.idle.is_some() {
                let now = total as u32;
                if now != *this.last_total {
                    *this.last_total = now;
                    *this.quiet_sweeps = 0;
                } else {
                    *this.quiet_sweeps += 1;
                    if *this.quiet_sweeps >= SWEEPS_PER_IDLE {
                        return Poll::Ready(Verdict::Idle);
                    }
                }
            }
        }
    }
}
