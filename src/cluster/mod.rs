//! The Kubernetes side: detecting rollouts, reading their progress and pods, rolling back,
//! and recording decisions on the Deployment.

pub mod caches;
pub mod leader;
pub mod pods;
pub mod record;
pub mod rollback;
pub mod rollout;
pub mod version;
