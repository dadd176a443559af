//! Measuring a process from outside: `/proc/<pid>/status`, `/proc/<pid>/stat` and its threads'
//! `schedstat`.

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

/// utime + stime in clock ticks, summed over the process's threads by the kernel.
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

/// Time on a CPU in nanoseconds, summed over the process's live threads
/// (`/proc/<pid>/task/*/schedstat`, first field). Clock ticks are 10 ms: a quiet daemon may use
/// less than one in a short window, so they would read as nothing at all. None where the kernel
/// keeps no schedstat.
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = None;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            *total.get_or_insert(0) += ns;
        }
    }
    total
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
    ns: Option<u64>,
    at: Instant,
}

pub fn cpu_mark(pid: u32) -> CpuMark {
    CpuMark {
        ticks: cpu_ticks(pid),
        ns: cpu_ns(pid),
        at: Instant::now(),
    }
}

/// Millicores used between `from` and now: from the threads' nanosecond CPU time where the kernel
/// keeps it and the process's CPU time grew by at least that much (a thread that ended between the
/// marks takes its time out of the sum), otherwise from clock ticks.
pub fn millicores_since(pid: u32, from: CpuMark, ticks_per_second: f64) -> f64 {
    let now = cpu_mark(pid);
    let by_ticks = now.ticks.saturating_sub(from.ticks) as f64 / ticks_per_second;
    let cpu_s = match (from.ns, now.ns) {
        (Some(a), Some(b)) if b >= a => {
            let by_ns = (b - a) as f64 / 1e9;
            // Ticks are sampled, so they may be a tick ahead or behind; a much larger figure by
            // ticks means threads ended and took their nanoseconds with them.
            if by_ticks > by_ns + 2.0 / ticks_per_second {
                by_ticks
            } else {
                by_ns
            }
        }
        _ => by_ticks,
    };
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

    #[test]
    fn less_work_than_a_clock_tick_is_still_counted() {
        let pid = std::process::id();
        if cpu_ns(pid).is_none() {
            return; // a kernel without schedstat: clock ticks are all there is
        }
        let mark = cpu_mark(pid);
        // 2 ms of work: a fifth of a 10 ms clock tick.
        let until = Instant::now() + std::time::Duration::from_millis(2);
        let mut x = 1u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let used = millicores_since(pid, mark, clock_ticks());
        assert!(used > 0.0, "{used} millicores after 2 ms of work (x = {x})");
    }
}
