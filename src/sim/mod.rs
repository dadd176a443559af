//! The simulated cluster: a Kubernetes API server subset with a deployment controller and pods
//! ([`cluster`]), the simulated apps and the services the daemon talks to ([`services`]), and the
//! scenario runner ([`runner`]) behind `deploy-watchdog simulate` and `demo`.
//!
//! Everything here speaks the real wire formats over HTTP on loopback; the daemon under test is
//! the unmodified daemon.

pub mod behaviour;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod debug;
pub mod runner;
pub mod scenario;
pub mod services;
