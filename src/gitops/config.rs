//! The `gitops:` section of the config, and the per-Deployment `deploy-watchdog.io/gitops` mode.

use crate::config::{SampleSpan, Timeout};

use serde::{Deserialize, Serialize};

/// What the watchdog does with a Deployment a GitOps controller manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GitopsMode {
    /// Pause the owner's sync before the rollback, resume it when Git moves on.
    #[default]
    Pause,
    /// Touch neither the owner nor the Deployment: page with the commands to run.
    PageOnly,
    /// Treat the Deployment as unmanaged.
    Off,
}

impl GitopsMode {
    pub fn parse(value: &str) -> Result<GitopsMode, String> {
        match value {
            "pause" => Ok(GitopsMode::Pause),
            "page_only" | "page-only" => Ok(GitopsMode::PageOnly),
            "off" => Ok(GitopsMode::Off),
            _ => Err(format!("{value:?} is not pause, page_only or off")),
        }
    }
}

/// `gitops:` — either just a mode (`gitops: page_only`) or the whole map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GitopsConfig {
    pub mode: GitopsMode,
    /// Where Argo CD keeps its Applications (a tracking id without a namespace names one here).
    pub argocd_namespace: String,
    /// The label Argo CD's label tracking uses; empty turns label tracking off. Helm charts set
    /// this label too, so an Application found by it must list the Deployment among its
    /// resources.
    pub instance_label: String,
    /// Pause an Application with `argocd.argoproj.io/skip-reconcile` instead of turning
    /// automated sync off (Argo CD then stops refreshing it too, so Git moving on cannot be
    /// seen: the sync is resumed by hand).
    pub argocd_skip_reconcile: bool,
    /// Argo CD's self-heal timeout (`--self-heal-timeout-seconds`): how long after a rollback
    /// the watchdog checks that it held.
    pub argocd_self_heal_timeout: Timeout,
    /// How often Slack is reminded of a sync still paused (at most a day).
    pub reminder_interval: SampleSpan,
}

impl Default for GitopsConfig {
    fn default() -> Self {
        GitopsConfig {
            mode: GitopsMode::Pause,
            argocd_namespace: "argocd".into(),
            instance_label: "app.kubernetes.io/instance".into(),
            argocd_skip_reconcile: false,
            argocd_self_heal_timeout: const { Timeout::from_secs(5) },
            reminder_interval: const { SampleSpan::from_secs(3600) },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Fields {
    mode: GitopsMode,
    argocd_namespace: String,
    instance_label: String,
    argocd_skip_reconcile: bool,
    argocd_self_heal_timeout: Timeout,
    reminder_interval: SampleSpan,
}

impl Default for Fields {
    fn default() -> Self {
        let d = GitopsConfig::default();
        Fields {
            mode: d.mode,
            argocd_namespace: d.argocd_namespace,
            instance_label: d.instance_label,
            argocd_skip_reconcile: d.argocd_skip_reconcile,
            argocd_self_heal_timeout: d.argocd_self_heal_timeout,
            reminder_interval: d.reminder_interval,
        }
    }
}

impl<'de> Deserialize<'de> for GitopsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = GitopsConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("pause, page_only, off, or a map with `mode`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GitopsConfig, E> {
                let mode = GitopsMode::parse(v).map_err(E::custom)?;
                Ok(GitopsConfig {
                    mode,
                    ..GitopsConfig::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<GitopsConfig, A::Error> {
                let f = Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if f.argocd_self_heal_timeout.is_zero() || f.reminder_interval.is_zero() {
                    return Err(serde::de::Error::custom(
                        "argocd_self_heal_timeout and reminder_interval must be more than 0",
                    ));
                }
                Ok(GitopsConfig {
                    mode: f.mode,
                    argocd_namespace: f.argocd_namespace,
                    instance_label: f.instance_label,
                    argocd_skip_reconcile: f.argocd_skip_reconcile,
                    argocd_self_heal_timeout: f.argocd_self_heal_timeout,
                    reminder_interval: f.reminder_interval,
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_mode_or_a_map_is_read_and_a_bad_one_is_named() {
        let c: GitopsConfig = serde_json::from_str(r#""page_only""#).unwrap();
        assert_eq!(c.mode, GitopsMode::PageOnly);
        let c: GitopsConfig =
            serde_json::from_str(r#"{"mode": "off", "argocd_namespace": "gitops"}"#).unwrap();
        assert_eq!(
            (c.mode, c.argocd_namespace.as_str()),
            (GitopsMode::Off, "gitops")
        );
        let e = serde_json::from_str::<GitopsConfig>(r#""later""#).unwrap_err();
        assert!(e.to_string().contains("\"later\" is not pause"), "{e}");
        let e = serde_json::from_str::<GitopsConfig>(r#"{"mdoe": "off"}"#).unwrap_err();
        assert!(e.to_string().contains("mdoe"), "{e}");
    }
}
