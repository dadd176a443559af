//! Figures as the judge writes them in its messages: ratios, counts, durations.

use std::time::Duration;

/// `3.4 %`, `0.05 %`.
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p != 0.0 && p.abs() < 0.1 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %").replace(".0 %", " %")
    }
}

/// `2,000`; fractional counts (extrapolated by Prometheus) are rounded.
pub fn count(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `1m`, `2m 30s`, `500ms`.
pub fn human(d: impl Into<Duration>) -> String {
    let d = d.into();
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}
