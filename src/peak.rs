//! Peak hours: deploy windows to avoid, in an IANA time zone.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

use crate::config::PeakHoursConfig;

/// Parsed peak windows.
#[derive(Debug, Clone)]
pub struct PeakHours {
    tz: TimeZone,
    windows: Vec<(Vec<Weekday>, Time, Time, String)>,
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

impl PeakHours {
    /// Validates the config; errors name the field.
    pub fn from_config(c: &PeakHoursConfig) -> Result<PeakHours, (String, String)> {
        let tz = TimeZone::get(&c.time_zone).map_err(|e| {
            (
                "peak_hours.time_zone".to_string(),
                format!("{:?} is not an IANA time zone: {e}", c.time_zone),
            )
        })?;
        let mut windows = Vec::new();
        for (i, w) in c.windows.iter().enumerate() {
            let field = |f: &str| format!("peak_hours.windows[{i}].{f}");
            let time = |f: &str, s: &str| {
                Time::strptime("%H:%M", s)
                    .map_err(|_| (field(f), format!("{s:?} is not a time like 09:00")))
            };
            let (start, end) = (time("start", &w.start)?, time("end", &w.end)?);
            if end <= start {
                return Err((field("end"), format!("{} is not after {}", w.end, w.start)));
            }
            let days = w
                .days
                .iter()
                .map(|d| {
                    weekday(d)
                        .ok_or_else(|| (field("days"), format!("{d:?} is not a day (mon … sun)")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            windows.push((
                days,
                start,
                end,
                format!("{}–{} {}", w.start, w.end, c.time_zone),
            ));
        }
        Ok(PeakHours { tz, windows })
    }

    /// The window `at` falls in, described (`09:00–11:00 America/New_York`).
    pub fn window_at(&self, at: jiff::Timestamp) -> Option<&str> {
        let local = at.to_zoned(self.tz.clone());
        let (day, time) = (local.weekday(), local.time());
        self.windows
            .iter()
            .find(|(days, start, end, _)| {
                (days.is_empty() || days.contains(&day)) && time >= *start && time < *end
            })
            .map(|(_, _, _, label)| label.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeakWindow;

    fn runbook() -> PeakHoursConfig {
        let weekdays: Vec<String> = ["mon", "tue", "wed", "thu", "fri"]
            .iter()
            .map(|d| d.to_string())
            .collect();
        PeakHoursConfig {
            time_zone: "America/New_York".into(),
            windows: vec![
                PeakWindow {
                    days: weekdays.clone(),
                    start: "09:00".into(),
                    end: "11:00".into(),
                },
                PeakWindow {
                    days: weekdays,
                    start: "14:00".into(),
                    end: "16:00".into(),
                },
            ],
            failures_before_rollback: None,
        }
    }

    #[test]
    fn the_runbooks_peak_hours_in_new_york() {
        let p = PeakHours::from_config(&runbook()).expect("valid");
        // Tuesday 2026-12-01 14:30 UTC is 09:30 in New York (EST, UTC−5).
        let inside: jiff::Timestamp = "2026-12-01T14:30:00Z".parse().expect("ts");
        assert_eq!(p.window_at(inside), Some("09:00–11:00 America/New_York"));
        // 17:00 UTC is noon in New York: between the windows.
        assert_eq!(
            p.window_at("2026-12-01T17:00:00Z".parse().expect("ts")),
            None
        );
        // Saturday 09:30 New York is not a weekday.
        assert_eq!(
            p.window_at("2026-12-05T14:30:00Z".parse().expect("ts")),
            None
        );
        // Summer time: 13:30 UTC in July is 09:30 EDT.
        assert!(
            p.window_at("2026-07-07T13:30:00Z".parse().expect("ts"))
                .is_some()
        );
    }

    #[test]
    fn bad_windows_name_the_field() {
        let mut c = runbook();
        c.time_zone = "Mars/Olympus".into();
        assert_eq!(
            PeakHours::from_config(&c).expect_err("tz").0,
            "peak_hours.time_zone"
        );
        let mut c = runbook();
        c.windows[1].end = "13:00".into();
        assert_eq!(
            PeakHours::from_config(&c).expect_err("order").0,
            "peak_hours.windows[1].end"
        );
        let mut c = runbook();
        c.windows[0].days = vec!["someday".into()];
        assert_eq!(
            PeakHours::from_config(&c).expect_err("day").0,
            "peak_hours.windows[0].days"
        );
    }
}
