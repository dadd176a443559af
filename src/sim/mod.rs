//! The simulated cluster: a Kubernetes API server subset with a deployment controller and pods
//! ([`cluster`]), the simulated apps and the services the daemon talks to ([`services`]), and the
//! scenario runner ([`runner`]) behind `deploy-watchdog simulate` and `demo`.
//!
//! Everything here speaks the real wire formats over HTTP on loopback; the daemon under test is
//! the unmodified daemon.

pub mod behaviour;
pub mod bench;
pub mod changes;
pub mod cli;
pub mod cluster;
pub mod debug;
pub mod runner;
pub mod scenario;
pub mod services;
pub mod sidecars;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback address of its own for each simulated server (all of 127.0.0.0/8 is local).
///
/// A service that is "down" refuses connections by releasing its port; on a shared address,
/// anything else binding a free port on 127.0.0.1 meanwhile (another simulation, a test's real
/// Prometheus) could take that port and answer in its place.
pub fn loopback() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % (250 * 250 * 250);
    Ipv4Addr::new(
        127,
        1 + (n / 62_500) as u8,
        ((n / 250) % 250) as u8,
        1 + (n % 250) as u8,
    )
}
