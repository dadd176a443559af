//! Durations held to their field's bounds by their type: a [`Bounded`] is made only by
//! reading a config value or an annotation ([`Bounded::parse`]) or by [`Bounded::new`], each
//! of which refuses a value out of range, so a duration out of bounds never exists past
//! parsing. Every upper bound is a week or less: a deadline computed from one
//! ([`deadline`]) is always representable, and a `500000000000y` timeout is refused where it is
//! read, not an overflow in a running session.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// A request timeout: a request that may take more than 5 minutes leaves the watchdog blind
/// for that long.
pub type Timeout = Bounded<false, { 5 * MINUTE }>;
/// A period of the watch loop or a scrape: at most an hour.
pub type Period = Bounded<false, HOUR>;
/// A delay that may be none: at most an hour.
pub type Delay = Bounded<true, HOUR>;
/// A span of data asked of a provider: at most a day.
pub type SampleSpan = Bounded<false, DAY>;
/// A rollout's deadlines and its watch window: at most a week.
pub type RolloutSpan = Bounded<false, { 7 * DAY }>;
/// The baseline's look-back: a rollout span that may be `0s` while the baseline is off (the
/// config's check holds it above zero when the baseline is on).
pub type Lookback = Bounded<true, { 7 * DAY }>;
/// One of the leader Lease's durations: at most 10 minutes, `0s` only while leader election
/// is off (the config's check holds it above zero when it is on).
pub type LeaseSpan = Bounded<true, { 10 * MINUTE }>;

/// The range a duration field may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationLimit {
    /// Whether `0s` is allowed.
    pub zero: bool,
    pub max: Duration,
}

impl DurationLimit {
    pub const TIMEOUT: DurationLimit = Timeout::LIMIT;
    pub const PERIOD: DurationLimit = Period::LIMIT;
    pub const DELAY: DurationLimit = Delay::LIMIT;
    pub const SAMPLE: DurationLimit = SampleSpan::LIMIT;
    pub const ROLLOUT: DurationLimit = RolloutSpan::LIMIT;
    /// The leader Lease's durations while leader election is on.
    pub const LEASE: DurationLimit = DurationLimit {
        zero: false,
        ..LeaseSpan::LIMIT
    };

    /// Why `d` is out of range, if it is.
    pub fn check(self, d: Duration) -> Result<(), String> {
        if d.is_zero() && !self.zero {
            return Err("must be longer than 0s".into());
        }
        if d > self.max {
            return Err(format!(
                "{} is longer than the maximum, {}",
                humantime::format_duration(d),
                humantime::format_duration(self.max)
            ));
        }
        Ok(())
    }
}

/// A duration of at most `MAX_SECS` seconds, and above zero unless `ZERO`. Read and written
/// as humantime text (`30s`, `15m`, `1h 30m`), as the config file has always had it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bounded<const ZERO: bool, const MAX_SECS: u64>(Duration);

impl<const ZERO: bool, const MAX_SECS: u64> Bounded<ZERO, MAX_SECS> {
    /// The range this type holds.
    pub const LIMIT: DurationLimit = DurationLimit {
        zero: ZERO,
        max: Duration::from_secs(MAX_SECS),
    };
    /// The longest value.
    pub const MAX: Self = Bounded(Duration::from_secs(MAX_SECS));

    /// `d`, or why it is out of range.
    pub fn new(d: Duration) -> Result<Self, String> {
        Self::LIMIT.check(d).map(|()| Bounded(d))
    }

    /// Reads humantime text (`30m`) and checks its range; the error says which is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration like 30m: {e}"))?;
        Self::new(d)
    }

    /// A duration written in this program (a default), checked when it is compiled: use it in
    /// a `const` context (`const { Period::from_secs(10) }`).
    pub const fn from_secs(secs: u64) -> Self {
        assert!(
            secs <= MAX_SECS && (ZERO || secs > 0),
            "duration out of its bounds"
        );
        Bounded(Duration::from_secs(secs))
    }

    /// A duration written in this program (a default), as [`Bounded::from_secs`].
    pub const fn from_millis(ms: u64) -> Self {
        assert!(
            ms <= MAX_SECS.saturating_mul(1000) && (ZERO || ms > 0),
            "duration out of its bounds"
        );
        Bounded(Duration::from_millis(ms))
    }

    pub const fn get(self) -> Duration {
        self.0
    }

    /// `now` + this duration: representable whenever `now` is not within a week of the end of
    /// the clock's range, and `now` itself at the very end.
    pub fn after(self, now: tokio::time::Instant) -> tokio::time::Instant {
        now.checked_add(self.0).unwrap_or(now)
    }
}

impl<const MAX_SECS: u64> Bounded<true, MAX_SECS> {
    /// No time at all, where the type allows it.
    pub const ZERO: Self = Bounded(Duration::ZERO);
}

/// `now + after`: a deadline that cannot overflow, `after` being bounded by its type.
pub fn deadline<const ZERO: bool, const MAX_SECS: u64>(
    now: tokio::time::Instant,
    after: Bounded<ZERO, MAX_SECS>,
) -> tokio::time::Instant {
    after.after(now)
}

impl<const ZERO: bool, const MAX_SECS: u64> std::ops::Deref for Bounded<ZERO, MAX_SECS> {
    type Target = Duration;
    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl<const ZERO: bool, const MAX_SECS: u64> From<Bounded<ZERO, MAX_SECS>> for Duration {
    fn from(d: Bounded<ZERO, MAX_SECS>) -> Duration {
        d.0
    }
}

impl<const ZERO: bool, const MAX_SECS: u64> TryFrom<Duration> for Bounded<ZERO, MAX_SECS> {
    type Error = String;
    fn try_from(d: Duration) -> Result<Self, String> {
        Self::new(d)
    }
}

impl<const ZERO: bool, const MAX_SECS: u64> PartialEq<Duration> for Bounded<ZERO, MAX_SECS> {
    fn eq(&self, other: &Duration) -> bool {
        self.0 == *other
    }
}

impl<const ZERO: bool, const MAX_SECS: u64> fmt::Debug for Bounded<ZERO, MAX_SECS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const ZERO: bool, const MAX_SECS: u64> fmt::Display for Bounded<ZERO, MAX_SECS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_duration(self.0), f)
    }
}

impl<const ZERO: bool, const MAX_SECS: u64> Serialize for Bounded<ZERO, MAX_SECS> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de, const ZERO: bool, const MAX_SECS: u64> Deserialize<'de> for Bounded<ZERO, MAX_SECS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<const ZERO: bool, const MAX_SECS: u64>;
        impl<const ZERO: bool, const MAX_SECS: u64> serde::de::Visitor<'_> for Text<ZERO, MAX_SECS> {
            type Value = Bounded<ZERO, MAX_SECS>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 30s or 15m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let d = humantime::parse_duration(v).map_err(E::custom)?;
                Bounded::new(d).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}
