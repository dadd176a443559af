//! deploy-watchdog: guards Kubernetes rollouts.
//!
//! The modules follow the data flow: [`cluster`] detects rollouts and acts on the cluster,
//! [`probes`] observe, [`judge`] decides (pure), [`session`] runs one rollout's watch,
//! [`notify`] pages and posts, [`gitops`] keeps a rollback under Argo CD or Flux from being
//! re-applied, [`telemetry`] records and [`server`] serves `/metrics`,
//! `/healthz`, `/readyz` and [`status`]'s page; [`status`] is also `deploy-watchdog status`;
//! [`systemd`] speaks sd_notify; [`doctor`] says what will not work, at start-up and on demand. [`sim`] is the simulated cluster and the
//! scenario runner behind `simulate` and `demo`.

pub mod backoff;
pub mod baseline;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod doctor;
#[doc(hidden)]
pub mod fuzzing;
pub mod gitops;
pub mod judge;
pub mod notify;
pub mod overrides;
pub mod peak;
pub mod phase;
pub mod probes;
pub mod server;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
pub mod systemd;
pub mod tasks;
pub mod telemetry;
