//! The deployed version of a Deployment: what its main container runs.
//!
//! A kubelet runs images, not labels. `kubectl set image` changes a container's image and leaves
//! `app.kubernetes.io/version` (and any version annotation) as it was, so a label that
//! disagrees with the image is stale: by default the image wins and the disagreement is
//! reported. In a pod with sidecars (a service mesh proxy, a secrets agent) the version is the
//! main container's: the one the config or an annotation names, else the container named like
//! the Deployment, else the first that is not a known sidecar.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use kube::ResourceExt;

use crate::config::{VersionConfig, VersionSource};

/// The annotation that names a Deployment's main container.
pub const CONTAINER_ANNOTATION: &str = "deploy-watchdog.io/version-container";

/// Containers that meshes, agents and proxies inject beside the app: never the app itself
/// unless named so.
pub const KNOWN_SIDECARS: [&str; 12] = [
    "istio-proxy",
    "linkerd-proxy",
    "consul-dataplane",
    "consul-connect-envoy-sidecar",
    "envoy-sidecar",
    "kuma-sidecar",
    "aws-appmesh-envoy",
    "vault-agent",
    "cloud-sql-proxy",
    "cloudsql-proxy",
    "datadog-agent",
    "fluent-bit",
];

/// `registry:5000/app:v1.2.3@sha256:…` → `v1.2.3`.
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':')
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty())
}

/// The main container of `template` of the Deployment `deployment`: `named` when given and
/// present, else the container named like the Deployment, else the first that is not a known
/// sidecar, else the first.
pub fn main_container<'a>(
    template: &'a PodTemplateSpec,
    deployment: &str,
    named: Option<&str>,
) -> Option<&'a Container> {
    let containers = &template.spec.as_ref()?.containers;
    let by_name = |n: &str| containers.iter().find(|c| c.name == n);
    named
        .filter(|n| !n.is_empty())
        .and_then(by_name)
        .or_else(|| by_name(deployment))
        .or_else(|| {
            containers
                .iter()
                .find(|c| !KNOWN_SIDECARS.contains(&c.name.as_str()))
        })
        .or_else(|| containers.first())
}

/// The main container's image tag in `template`, under the Deployment's own rule for which
/// container is main.
pub fn template_image_version(
    template: &PodTemplateSpec,
    deployment: &Deployment,
    rule: &VersionConfig,
) -> Option<String> {
    let c = main_container(
        template,
        &deployment.name_any(),
        Some(named(deployment, rule)),
    )?;
    image_tag(c.image.as_deref()?).map(str::to_string)
}

/// The container the annotation, else the config, names as main ("" when neither does).
fn named<'a>(d: &'a Deployment, rule: &'a VersionConfig) -> &'a str {
    d.annotations()
        .get(CONTAINER_ANNOTATION)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or(rule.container.as_str())
}

/// The version of a Deployment as the configured rule reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reading {
    /// The deployed version.
    pub version: Option<String>,
    /// The main container's name.
    pub container: Option<String>,
    /// A label or annotation that disagrees with the image the main container runs: stale.
    pub stale: Option<Stale>,
}

/// A version label or annotation left behind by an image change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// `label` or `annotation`.
    pub kind: &'static str,
    pub key: String,
    pub value: String,
}

/// Reads the deployed version of `d` by `rule`.
pub fn read(d: &Deployment, rule: &VersionConfig) -> Reading {
    let Some(template) = d.spec.as_ref().map(|s| &s.template) else {
        return Reading::default();
    };
    let main = main_container(template, &d.name_any(), Some(named(d, rule)));
    let image = main
        .and_then(|c| c.image.as_deref())
        .and_then(image_tag)
        .map(str::to_string);
    let container = main.map(|c| c.name.clone());
    let label = || {
        template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(&rule.key))
            .cloned()
    };
    let annotation = || d.annotations().get(&rule.key).cloned();
    let version = match rule.source {
        VersionSource::Label => label().or(image),
        VersionSource::Image => image,
        VersionSource::Annotation => annotation(),
        VersionSource::PreferImage => {
            let declared = label()
                .map(|v| ("label", v))
                .or_else(|| annotation().map(|v| ("annotation", v)));
            let stale = match (&image, declared.as_ref()) {
                (Some(image), Some((kind, value))) if image != value => Some(Stale {
                    kind,
                    key: rule.key.clone(),
                    value: value.clone(),
                }),
                _ => None,
            };
            return Reading {
                version: image.or_else(|| declared.map(|(_, v)| v)),
                container,
                stale,
            };
        }
    };
    Reading {
        version,
        container,
        stale: None,
    }
}

/// Which containers other than the main one changed image between two templates, e.g.
/// `istio-proxy docker.io/istio/proxyv2:1.22.0 → 1.22.1`; empty when none did.
pub fn other_changes(
    before: &[(String, String)],
    after: &PodTemplateSpec,
    main: Option<&str>,
) -> Vec<String> {
    let Some(spec) = after.spec.as_ref() else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    for c in &spec.containers {
        if Some(c.name.as_str()) == main {
            continue;
        }
        let now = c.image.clone().unwrap_or_default();
        match before.iter().find(|(n, _)| *n == c.name) {
            Some((_, was)) if *was == now => {}
            Some((_, was)) => changes.push(format!("{} {was} → {}", c.name, short(&now, was))),
            None => changes.push(format!("{} added ({now})", c.name)),
        }
    }
    for (name, _) in before {
        if !spec.containers.iter().any(|c| c.name == *name) && Some(name.as_str()) != main {
            changes.push(format!("{name} removed"));
        }
    }
    changes
}

/// The new image as briefly as it reads: only its tag when the repository stayed.
fn short<'a>(now: &'a str, was: &str) -> &'a str {
    let repository = |i: &'a str| -> Option<(&'a str, &'a str)> {
        let tag = image_tag(i).filter(|_| !i.contains('@'))?;
        Some((i.strip_suffix(tag)?, tag))
    };
    match (
        repository(now),
        image_tag(was).and_then(|t| was.strip_suffix(t)),
    ) {
        (Some((repo, tag)), Some(was_repo)) if repo == was_repo => tag,
        _ => now,
    }
}

/// The `(name, image)` of every container of a template.
pub fn images(template: &PodTemplateSpec) -> Vec<(String, String)> {
    template
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// How a message names a version change: `v1.2.2 → v1.2.3 (image), label still says v1.2.2`.
pub fn describe(from: Option<&str>, to: Option<&str>, stale: Option<&Stale>) -> String {
    let (from, to) = (
        from.unwrap_or("the previous revision"),
        to.unwrap_or("the new revision"),
    );
    match stale {
        Some(s) => format!("{from} → {to} (image), {} still says {}", s.kind, s.value),
        None => format!("{from} → {to}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(label: Option<&str>, containers: &[(&str, &str)]) -> Deployment {
        let mut template = PodTemplateSpec {
            metadata: Some(ObjectMeta::default()),
            spec: Some(Default::default()),
        };
        if let Some(v) = label {
            template.metadata.as_mut().unwrap().labels =
                Some([("app.kubernetes.io/version".to_string(), v.to_string())].into());
        }
        template.spec.as_mut().unwrap().containers = containers
            .iter()
            .map(|(n, i)| Container {
                name: n.to_string(),
                image: Some(i.to_string()),
                ..Default::default()
            })
            .collect();
        Deployment {
            metadata: ObjectMeta {
                name: Some("app".into()),
                namespace: Some("prod".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                template,
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn image_tags() {
        assert_eq!(
            image_tag("registry.example.com/prod/app:v1.2.3"),
            Some("v1.2.3")
        );
        assert_eq!(image_tag("localhost:5000/app:v2"), Some("v2"));
        assert_eq!(image_tag("localhost:5000/app"), None);
        assert_eq!(image_tag("app:v1@sha256:abc"), Some("v1"));
    }

    #[test]
    fn a_stale_label_loses_to_the_image_and_is_reported() {
        let d = deployment(Some("v1.2.2"), &[("app", "r/app:v1.2.3")]);
        let r = read(&d, &VersionConfig::default());
        assert_eq!(r.version.as_deref(), Some("v1.2.3"));
        let stale = r.stale.unwrap();
        assert_eq!((stale.kind, stale.value.as_str()), ("label", "v1.2.2"));
        assert_eq!(
            describe(Some("v1.2.2"), r.version.as_deref(), Some(&stale)),
            "v1.2.2 → v1.2.3 (image), label still says v1.2.2"
        );
    }

    #[test]
    fn a_label_that_agrees_is_not_stale() {
        let d = deployment(Some("v1.2.3"), &[("app", "r/app:v1.2.3")]);
        let r = read(&d, &VersionConfig::default());
        assert_eq!((r.version.as_deref(), r.stale), (Some("v1.2.3"), None));
    }

    #[test]
    fn the_label_mode_still_believes_the_label() {
        let d = deployment(Some("v1.2.2"), &[("app", "r/app:v1.2.3")]);
        let rule = VersionConfig {
            source: VersionSource::Label,
            ..Default::default()
        };
        assert_eq!(read(&d, &rule).version.as_deref(), Some("v1.2.2"));
    }

    #[test]
    fn an_untagged_image_falls_back_to_the_label() {
        let d = deployment(Some("v1.2.2"), &[("app", "r/app@sha256:abc")]);
        let r = read(&d, &VersionConfig::default());
        assert_eq!((r.version.as_deref(), r.stale), (Some("v1.2.2"), None));
    }

    #[test]
    fn a_sidecar_listed_first_is_not_the_main_container() {
        let d = deployment(
            None,
            &[
                ("istio-proxy", "docker.io/istio/proxyv2:1.22.0"),
                ("web", "r/web:v3"),
            ],
        );
        let r = read(&d, &VersionConfig::default());
        assert_eq!(r.version.as_deref(), Some("v3"));
        assert_eq!(r.container.as_deref(), Some("web"));
    }

    #[test]
    fn the_container_named_like_the_deployment_is_main() {
        let d = deployment(None, &[("migrate", "r/tools:v9"), ("app", "r/app:v3")]);
        assert_eq!(
            read(&d, &VersionConfig::default()).version.as_deref(),
            Some("v3")
        );
    }

    #[test]
    fn config_or_annotation_names_the_main_container() {
        let mut d = deployment(None, &[("app", "r/app:v3"), ("worker", "r/worker:w7")]);
        let rule = VersionConfig {
            container: "worker".into(),
            ..Default::default()
        };
        assert_eq!(read(&d, &rule).version.as_deref(), Some("w7"));
        d.metadata.annotations = Some([(CONTAINER_ANNOTATION.into(), "app".into())].into());
        assert_eq!(read(&d, &rule).version.as_deref(), Some("v3"));
        // A name that matches nothing falls back to the usual choice.
        d.metadata.annotations = Some([(CONTAINER_ANNOTATION.into(), "nope".into())].into());
        assert_eq!(read(&d, &rule).version.as_deref(), Some("v3"));
    }

    #[test]
    fn sidecar_changes_are_named() {
        let before = vec![
            ("app".to_string(), "r/app:v1".to_string()),
            (
                "istio-proxy".to_string(),
                "docker.io/istio/proxyv2:1.22.0".to_string(),
            ),
        ];
        let d = deployment(
            None,
            &[
                ("app", "r/app:v1"),
                ("istio-proxy", "docker.io/istio/proxyv2:1.22.1"),
            ],
        );
        let t = &d.spec.as_ref().unwrap().template;
        assert_eq!(
            other_changes(&before, t, Some("app")),
            vec!["istio-proxy docker.io/istio/proxyv2:1.22.0 → 1.22.1".to_string()]
        );
        assert!(other_changes(&images(t), t, Some("app")).is_empty());
    }
}
