//! Why a rollout ended the way it did: the [`Reason`] every verdict, page, Event and metric
//! carries.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a rollout ended the way it did (docs/policy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ErrorRate,
    Health,
    VersionMismatch,
    DependencyCheck,
    Smoke,
    Crashloop,
    ImagePull,
    Pending,
    RolloutTimeout,
    ProviderBlind,
    None,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ErrorRate => "error_rate",
            Reason::Health => "health",
            Reason::VersionMismatch => "version_mismatch",
            Reason::DependencyCheck => "dependency_check",
            Reason::Smoke => "smoke",
            Reason::Crashloop => "crashloop",
            Reason::ImagePull => "image_pull",
            Reason::Pending => "pending",
            Reason::RolloutTimeout => "rollout_timeout",
            Reason::ProviderBlind => "provider_blind",
            Reason::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        ALL_REASONS.iter().copied().find(|r| r.as_str() == s)
    }
}

pub const ALL_REASONS: [Reason; 11] = [
    Reason::ErrorRate,
    Reason::Health,
    Reason::VersionMismatch,
    Reason::DependencyCheck,
    Reason::Smoke,
    Reason::Crashloop,
    Reason::ImagePull,
    Reason::Pending,
    Reason::RolloutTimeout,
    Reason::ProviderBlind,
    Reason::None,
];

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
