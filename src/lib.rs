//! deploy-watchdog: guards Kubernetes rollouts.
//!
//! The modules follow the data flow: [`cluster`] detects rollouts and acts on the cluster,
//! [`probes`] observe, [`judge`] decides (pure), [`session`] runs one rollout's watch,
//! [`notify`] pages and posts, [`telemetry`] records and [`server`] serves `/metrics`,
//! `/healthz`, `/readyz` and [`status`]'s page; [`status`] is also `deploy-watchdog status`;
//! [`systemd`] speaks sd_notify. [`sim`] is the simulated cluster and the
//! scenario runner behind `simulate` and `demo`.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod judge;
pub mod notify;
pub mod overrides;
pub mod peak;
pub mod probes;
pub mod server;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
pub mod systemd;
pub mod telemetry;
