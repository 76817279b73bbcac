//! Wakes every open connection now and then so it can check on itself: whether it has been
//! idle past `--idle-timeout-ms`, whether the drain timeout has cut it, and whether it has
//! lived long enough to be worth TCP keepalive.
//!
//! One shared [`Notify`] instead of a timer per connection: a timer costs every open
//! connection ~100 bytes and a timer-wheel entry, while a sweep costs one waiter each and a
//! wake-up per sweep. Sweeps come every eighth of the idle timeout, or every keepalive time
//! if that is shorter. A connection is idle once the sweeps of one idle timeout in a row
//! found nothing moved: it is closed between `idle` and `idle + one sweep` after its last
//! byte.
//!
//! Keepalive is armed lazily, at the first sweep a relayed connection lives through (at
//! most `--tcp-keepalive-ms` after it started): a gossip round's connection, a few
//! milliseconds long, never pays for the kernel's keepalive timers on its two sockets
//! (measured at 7–19% of the proxy's CPU per short connection, BENCHMARKS.md), while a
//! long-lived one gets them before its first keepalive period could have passed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

/// At least this many sweeps per idle timeout, so a connection is closed at most an eighth
/// of the idle timeout late.
const MIN_SWEEPS_PER_IDLE: u32 = 8;

/// Shared by the server and its connections.
#[derive(Debug, Default)]
pub struct Sweeper {
    notify: Notify,
    cut: AtomicBool,
    /// The time between sweeps; `None`: no sweeps (neither idle timeout nor keepalive).
    every: Option<Duration>,
    /// Sweeps in a row that found nothing moved before a connection is idle; 0: never.
    sweeps_per_idle: u16,
    /// Connections arm TCP keepalive at their first sweep.
    keepalive: bool,
}

impl Sweeper {
    /// Sweeps for an idle timeout and for lazily armed keepalive (`None`: off).
    pub fn new(idle: Option<Duration>, keepalive: Option<Duration>) -> Self {
        let floor = Duration::from_millis(10);
        let for_idle = idle.map(|idle| (idle / MIN_SWEEPS_PER_IDLE).max(floor));
        let every = match (for_idle, keepalive) {
            (Some(a), Some(b)) => Some(a.min(b.max(floor))),
            (a, b) => a.or(b.map(|b| b.max(floor))),
        };
        let sweeps_per_idle = match (idle, every) {
            (Some(idle), Some(every)) => {
                let n = idle.as_nanos().div_ceil(every.as_nanos());
                u16::try_from(n).unwrap_or(u16::MAX)
            }
            _ => 0,
        };
        Sweeper {
            every,
            sweeps_per_idle,
            keepalive: keepalive.is_some(),
            ..Default::default()
        }
    }

    /// Ticks until the returned future is dropped (the server runs it while it serves).
    pub async fn tick(&self) {
        let Some(every) = self.every else {
            return std::future::pending().await;
        };
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
            keepalive_due: self.keepalive,
        }
    }
}

/// Why a watched connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Idle,
    Cut,
    /// The connection has lived through a sweep: time to arm TCP keepalive on both
    /// sockets (returned once per connection, only when keepalive is on).
    ArmKeepalive,
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
        quiet_sweeps: u16,
        keepalive_due: bool,
    }
}

impl Watch<'_> {
    /// `Ready` when the connection must end, or once when its keepalive is due (poll again
    /// straight after arming it); `total` is the bytes it has moved so far. Registers for
    /// the next sweep before it looks, so a sweep in between is not missed.
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
            if this.sweeper.sweeps_per_idle > 0 {
                let now = total as u32;
                if now != *this.last_total {
                    *this.last_total = now;
                    *this.quiet_sweeps = 0;
                } else {
                    *this.quiet_sweeps += 1;
                    if *this.quiet_sweeps >= this.sweeper.sweeps_per_idle {
                        return Poll::Ready(Verdict::Idle);
                    }
                }
            }
            if std::mem::take(this.keepalive_due) {
                return Poll::Ready(Verdict::ArmKeepalive);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sweeper;
    use std::time::Duration;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    /// Sweeps come often enough for both jobs, and the idle count follows the cadence.
    #[test]
    fn the_sweep_cadence_serves_the_idle_timeout_and_keepalive() {
        // Defaults: idle 1 h, keepalive 60 s: a sweep a minute, idle after 60 of them.
        let s = Sweeper::new(secs(3600), secs(60));
        assert_eq!(
            (s.every, s.sweeps_per_idle, s.keepalive),
            (secs(60), 60, true)
        );
        // A short idle timeout keeps its eighths.
        let s = Sweeper::new(secs(80), secs(60));
        assert_eq!((s.every, s.sweeps_per_idle), (secs(10), 8));
        // Idle timeout off: sweeps for keepalive only, nothing is ever idle.
        let s = Sweeper::new(None, secs(60));
        assert_eq!((s.every, s.sweeps_per_idle), (secs(60), 0));
        // Keepalive off: as before keepalive was lazy.
        let s = Sweeper::new(secs(80), None);
        assert_eq!(
            (s.every, s.sweeps_per_idle, s.keepalive),
            (secs(10), 8, false)
        );
        // Both off: no sweeps at all.
        assert_eq!(Sweeper::new(None, None).every, None);
        // An idle timeout not a multiple of the cadence rounds the count up, never early.
        let s = Sweeper::new(secs(100), secs(7));
        assert_eq!((s.every, s.sweeps_per_idle), (secs(7), 15));
    }
}
