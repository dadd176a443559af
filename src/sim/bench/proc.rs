//! Measuring a process from outside: `/proc/<pid>/status` and `/proc/<pid>/stat`.

use std::time::Instant;

/// Resident memory now and at its peak, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is rest[0]; utime is field 14, stime field 15.
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux when it cannot be asked).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A CPU reading to diff against a later one.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    ticks: u64,
    at: Instant,
}

pub fn cpu_mark(pid: u32) -> CpuMark {
    CpuMark {
        ticks: cpu_ticks(pid),
        at: Instant::now(),
    }
}

/// Millicores used between `from` and now.
pub fn millicores_since(pid: u32, from: CpuMark, ticks_per_second: f64) -> f64 {
    let now = cpu_mark(pid);
    let cpu_s = now.ticks.saturating_sub(from.ticks) as f64 / ticks_per_second;
    let wall = now.at.duration_since(from.at).as_secs_f64().max(1e-9);
    cpu_s / wall * 1000.0
}

/// The p-th percentile (0..=100) by nearest rank; None for no samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        let pid = std::process::id();
        assert!(memory(pid).rss_kib > 0);
        let mark = cpu_mark(pid);
        // Real work: 300 ms of busy computing is many clock ticks of CPU time.
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 1u64;
        while Instant::now() < until {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let used = millicores_since(pid, mark, clock_ticks());
        // About 1000 on an idle core; a loaded machine shares it, but never down to nothing.
        assert!(
            used > 0.0,
            "{used} millicores after 300 ms of work (x = {x})"
        );
    }
}
