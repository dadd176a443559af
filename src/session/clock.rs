//! The session's clock: the wall time read once, then advanced by tokio's monotonic clock, so
//! a session's deadlines do not jump with the system clock, and tests drive it with paused time.

use std::time::Duration;

use tokio::time::Instant;

use crate::phase::Paused;

#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    origin: Instant,
    wall: jiff::Timestamp,
}

impl Clock {
    pub(super) fn start() -> Clock {
        Clock {
            origin: Instant::now(),
            wall: jiff::Timestamp::now(),
        }
    }

    pub(super) fn now(&self) -> jiff::Timestamp {
        let elapsed = jiff::SignedDuration::try_from(self.origin.elapsed()).unwrap_or_default();
        self.wall.checked_add(elapsed).unwrap_or(self.wall)
    }
}

/// The judge's time for a rollout detected at `detected` and paused as `paused` says: the
/// time since detection less the time paused, which does not count toward `rollout_timeout`.
pub(super) fn judge_time(
    detected: jiff::Timestamp,
    paused: &Paused,
    now: jiff::Timestamp,
) -> Duration {
    let since = Duration::try_from(now.duration_since(detected)).unwrap_or_default();
    since.saturating_sub(paused.until(now))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::phase::{Happened, Phase};

    fn paused(p: &Phase) -> Paused {
        match p {
            Phase::Progressing { paused } => *paused,
            other => panic!("{other}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn time_paused_does_not_run_the_rollout_clock() {
        let clock = Clock::start();
        let detected = clock.now();
        let mut phase = Phase::start();
        tokio::time::advance(Duration::from_secs(20)).await;
        phase = phase.next(Happened::Paused { at: clock.now() }).unwrap();
        // Paused for an hour, far past any rollout_timeout: the judge's clock stands still.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(
            judge_time(detected, &paused(&phase), clock.now()),
            Duration::from_secs(20)
        );
        phase = phase.next(Happened::Resumed { at: clock.now() }).unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            judge_time(detected, &paused(&phase), clock.now()),
            Duration::from_secs(50)
        );
        // A second pause adds to the first.
        phase = phase.next(Happened::Paused { at: clock.now() }).unwrap();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(
            judge_time(detected, &paused(&phase), clock.now()),
            Duration::from_secs(50)
        );
        assert_eq!(paused(&phase).until(clock.now()), Duration::from_secs(4200));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time_not_the_system_clock() {
        let clock = Clock::start();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            clock.now().duration_since(t0),
            jiff::SignedDuration::from_millis(1500)
        );
    }
}
