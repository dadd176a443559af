//! What a rollout changed beyond its version (a stale version label, sidecars with a new
//! image), for the messages that describe it.

use k8s_openapi::api::apps::v1::Deployment;

use super::Before;
use crate::config::Config;

/// What a rollout changed that its versions alone do not say.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Change {
    /// `v1.2.2 → v1.2.3 (image), label still says v1.2.2`, when the label is stale.
    pub(super) stale: Option<String>,
    /// Containers other than the main one whose image changed, e.g. `istio-proxy
    /// docker.io/istio/proxyv2:1.22.0 → 1.22.1`.
    pub(super) others: Vec<String>,
    /// The main container.
    pub(super) main: Option<String>,
}

impl Change {
    /// One clause for messages: `v1.2.2 → v1.2.3 (image), label still says v1.2.2; sidecar
    /// istio-proxy … → 1.22.1 (app unchanged)`.
    pub(super) fn describe(&self, same_version: bool) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.stale {
            parts.push(s.clone());
        }
        if !self.others.is_empty() {
            let main = self.main.as_deref().unwrap_or("main container");
            let mut s = format!("changed: {}", self.others.join(", "));
            if same_version {
                s.push_str(&format!(" ({main} unchanged)"));
            }
            parts.push(s);
        }
        parts.join("; ")
    }
}

pub(super) fn change_note(d: &Deployment, cfg: &Config, before: &Before) -> Option<Change> {
    let reading = crate::cluster::version::read(d, &cfg.version);
    let stale = reading.stale.as_ref().map(|s| {
        crate::cluster::version::describe(
            before.version.as_deref(),
            reading.version.as_deref(),
            Some(s),
        )
    });
    let others = match (d.spec.as_ref(), before.images.is_empty()) {
        (Some(spec), false) => crate::cluster::version::other_changes(
            &before.images,
            &spec.template,
            reading.container.as_deref(),
        ),
        _ => Vec::new(),
    };
    (stale.is_some() || !others.is_empty()).then_some(Change {
        stale,
        others,
        main: reading.container,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn deployment(label: &str, containers: &[(&str, &str)]) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "namespace": "production"},
            "spec": {
                "selector": {},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/version": label}},
                    "spec": {"containers": containers.iter()
                        .map(|(n, i)| serde_json::json!({"name": n, "image": i}))
                        .collect::<Vec<_>>()},
                },
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_set_image_deploy_names_the_image_and_the_stale_label() {
        let d = deployment("v1.2.2", &[("app", "r/production/app:v1.2.3")]);
        let before = Before {
            version: Some("v1.2.2".into()),
            images: Vec::new(),
        };
        let change = change_note(&d, &Config::default(), &before).unwrap();
        assert_eq!(
            change.describe(false),
            "v1.2.2 → v1.2.3 (image), label still says v1.2.2"
        );
    }

    #[test]
    fn a_sidecar_only_change_names_the_sidecar() {
        let d = deployment(
            "v1.2.2",
            &[
                ("istio-proxy", "docker.io/istio/proxyv2:1.22.1"),
                ("app", "r/production/app:v1.2.2"),
            ],
        );
        let before = Before {
            version: Some("v1.2.2".into()),
            images: vec![
                (
                    "istio-proxy".into(),
                    "docker.io/istio/proxyv2:1.22.0".into(),
                ),
                ("app".into(), "r/production/app:v1.2.2".into()),
            ],
        };
        let change = change_note(&d, &Config::default(), &before).unwrap();
        assert_eq!(
            change.describe(true),
            "changed: istio-proxy docker.io/istio/proxyv2:1.22.0 → 1.22.1 (app unchanged)"
        );
    }

    #[test]
    fn a_plain_deploy_has_nothing_more_to_say() {
        let d = deployment("v1.2.3", &[("app", "r/production/app:v1.2.3")]);
        let before = Before {
            version: Some("v1.2.2".into()),
            images: Vec::new(),
        };
        assert_eq!(change_note(&d, &Config::default(), &before), None);
    }
}
