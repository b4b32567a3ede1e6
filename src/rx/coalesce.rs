//! Wake-up coalescing where the kernel does not do it for us: the recvmmsg
//! path, and io_uring on kernels without `IORING_FEAT_MIN_TIMEOUT` (before
//! 6.12). Where the feature exists, the io_uring wait itself carries the
//! delay (`min_wait_usec`) and this gate stays unused.
//!
//! The rule is the same on every path: after a wake-up that found
//! datagrams and emptied the sockets, do not wait for the next arrival
//! until `interval` has passed since that wake-up. The first datagram after
//! an idle spell is therefore handled at once; under a steady load a shard
//! wakes at most once per `interval` and handles what gathered meanwhile as
//! one batch. A poll that left datagrams behind (it hit its batch bound)
//! does not pause: the receiver is behind, not idle.
use std::time::{Duration, Instant};

pub(super) struct WakeGate {
    interval: Duration,
    /// When the last wake-up that found datagrams (and caught up) happened.
    last: Option<Instant>,
}

impl WakeGate {
    pub(super) fn new(interval: Duration) -> WakeGate {
        WakeGate {
            interval,
            last: None,
        }
    }

    /// Before waiting for datagrams: sleep out what is left of the interval
    /// since the last wake-up, within `timeout`. Returns the timeout left
    /// for the wait itself.
    pub(super) fn hold(&mut self, timeout: Duration) -> Duration {
        let Some(last) = self.last.take() else {
            return timeout;
        };
        let pause = self.interval.saturating_sub(last.elapsed()).min(timeout);
        if pause.is_zero() {
            return timeout;
        }
        std::thread::sleep(pause);
        timeout - pause
    }

    /// After the drain: a wake-up at `at` that delivered `delivered`
    /// datagrams; `behind` when datagrams were left for the next poll.
    pub(super) fn woke(&mut self, at: Instant, delivered: usize, behind: bool) {
        self.last = (!self.interval.is_zero() && delivered > 0 && !behind).then_some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_only_after_a_caught_up_wake_up_within_the_interval() {
        let interval = Duration::from_millis(300);
        let mut gate = WakeGate::new(interval);
        // Nothing yet: no pause.
        let t = Instant::now();
        assert_eq!(gate.hold(Duration::from_secs(1)), Duration::from_secs(1));
        assert!(t.elapsed() < Duration::from_millis(150));

        // A caught-up wake-up: the next wait starts at the interval's end.
        gate.woke(Instant::now(), 5, false);
        let t = Instant::now();
        let left = gate.hold(Duration::from_secs(1));
        let slept = t.elapsed();
        assert!(slept >= Duration::from_millis(250), "slept {slept:?}");
        assert!(left <= Duration::from_secs(1) - Duration::from_millis(250));
        // Once only: the pause is not repeated for the same wake-up.
        let t = Instant::now();
        gate.hold(Duration::from_secs(1));
        assert!(t.elapsed() < Duration::from_millis(150));

        // Behind, or nothing delivered: no pause.
        gate.woke(Instant::now(), 64, true);
        let t = Instant::now();
        gate.hold(Duration::from_secs(1));
        assert!(t.elapsed() < Duration::from_millis(150));
        gate.woke(Instant::now(), 0, false);
        let t = Instant::now();
        gate.hold(Duration::from_secs(1));
        assert!(t.elapsed() < Duration::from_millis(150));

        // The pause never exceeds the caller's timeout.
        gate.woke(Instant::now(), 1, false);
        let t = Instant::now();
        assert_eq!(gate.hold(Duration::from_millis(5)), Duration::ZERO);
        assert!(t.elapsed() < Duration::from_millis(150));

        // A wake-up longer ago than the interval: no pause.
        gate.woke(Instant::now() - interval, 1, false);
        let t = Instant::now();
        gate.hold(Duration::from_secs(1));
        assert!(t.elapsed() < Duration::from_millis(150));
    }

    #[test]
    fn zero_interval_never_pauses() {
        let mut gate = WakeGate::new(Duration::ZERO);
        gate.woke(Instant::now(), 10, false);
        let t = Instant::now();
        assert_eq!(gate.hold(Duration::from_secs(1)), Duration::from_secs(1));
        assert!(t.elapsed() < Duration::from_millis(150));
    }
}
