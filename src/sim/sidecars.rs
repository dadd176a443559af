//! Extra containers of a scenario's Deployment (`sidecars:`, an addition to the scenario
//! format): a service-mesh proxy or an agent beside the app container, listed after it or
//! before it. The app container is always named like the Deployment and runs the version.

use serde::Deserialize;
use serde::de::Error as _;

/// Where a sidecar sits in the pod's `containers` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// Before the app container (as some injectors and hand-written manifests put it).
    First,
    /// After the app container.
    #[default]
    Last,
}

/// What the extra container is to the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// In `containers`, beside the app container.
    #[default]
    Container,
    /// A native sidecar: in `initContainers` with `restartPolicy: Always`; started before the
    /// app container and running beside it.
    Native,
    /// An init container: runs to completion before the app container starts.
    Init,
}

/// One extra container: `istio-proxy` (a known sidecar with its usual image) or
/// `{name, image, position, kind, fails_to_start}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    pub name: String,
    pub image: String,
    pub position: Position,
    pub kind: Kind,
    /// Its first starts that exit with an error (a proxy or agent that cannot reach its
    /// control plane yet, a migration that waits for its database); the kubelet restarts it as
    /// any container.
    pub fails_to_start: u32,
}

/// The image a known sidecar runs when the scenario names none.
fn usual_image(name: &str) -> Option<&'static str> {
    Some(match name {
        "istio-proxy" => "docker.io/istio/proxyv2:1.22.0",
        "linkerd-proxy" => "cr.l5d.io/linkerd/proxy:stable-2.14.10",
        "vault-agent" => "hashicorp/vault:1.17.2",
        "cloud-sql-proxy" => "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.11.4",
        "fluent-bit" => "cr.fluentbit.io/fluent/fluent-bit:3.0.7",
        _ => return None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Full {
    name: String,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    position: Position,
    #[serde(default)]
    kind: Kind,
    #[serde(default)]
    fails_to_start: u32,
}

impl<'de> Deserialize<'de> for Sidecar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let full = match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(name) => Full {
                name,
                image: None,
                position: Position::Last,
                kind: Kind::Container,
                fails_to_start: 0,
            },
            v @ serde_json::Value::Object(_) => {
                serde_json::from_value(v).map_err(|e| D::Error::custom(e.to_string()))?
            }
            other => {
                return Err(D::Error::custom(format!(
                    "{other} is not a container name or a map {{name, image, position}}"
                )));
            }
        };
        let image = match full.image {
            Some(i) if !i.trim().is_empty() => i,
            Some(_) => return Err(D::Error::custom("image: must not be empty")),
            None => usual_image(&full.name)
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "image: missing for {:?} (only istio-proxy, linkerd-proxy, vault-agent, cloud-sql-proxy and fluent-bit have a default)",
                        full.name
                    ))
                })?
                .to_string(),
        };
        Ok(Sidecar {
            name: full.name,
            image,
            position: full.position,
            kind: full.kind,
            fails_to_start: full.fails_to_start,
        })
    }
}

/// Checks a Deployment's sidecars: names that Kubernetes accepts (an RFC 1123 label), unique,
/// and not the app container's (the Deployment's name). Errors name the field under `field`.
pub fn check(sidecars: &[Sidecar], app: &str, field: &str) -> Result<(), (String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in sidecars.iter().enumerate() {
        let f = format!("{field}[{i}].name");
        let label = !s.name.is_empty()
            && s.name.len() <= 63
            && s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.name.starts_with('-')
            && !s.name.ends_with('-');
        if !label {
            return Err((
                f,
                format!(
                    "{:?} is not a container name (lower-case letters, digits and '-', at most 63)",
                    s.name
                ),
            ));
        }
        if s.name == app {
            return Err((f, format!("{app:?} is the app container's name")));
        }
        if !seen.insert(s.name.as_str()) {
            return Err((f, format!("{:?} is listed twice", s.name)));
        }
    }
    Ok(())
}

/// The pod template's `containers`: the app container `app` with the sidecars around it.
pub fn containers(app: serde_json::Value, sidecars: &[Sidecar]) -> Vec<serde_json::Value> {
    let container = |s: &Sidecar| serde_json::json!({"name": s.name, "image": s.image});
    let beside = |p: Position| {
        sidecars
            .iter()
            .filter(move |s| s.kind == Kind::Container && s.position == p)
            .map(container)
    };
    let mut out: Vec<serde_json::Value> = beside(Position::First).collect();
    out.push(app);
    out.extend(beside(Position::Last));
    out
}

/// The pod template's `initContainers`, in the order listed (empty: none).
pub fn init_containers(sidecars: &[Sidecar]) -> Vec<serde_json::Value> {
    sidecars
        .iter()
        .filter_map(|s| match s.kind {
            Kind::Container => None,
            Kind::Init => Some(serde_json::json!({"name": s.name, "image": s.image})),
            Kind::Native => Some(
                serde_json::json!({"name": s.name, "image": s.image, "restartPolicy": "Always"}),
            ),
        })
        .collect()
}

/// `registry/app:v1` with its tag replaced by `tag` (`kubectl set image` keeps the repository).
pub fn with_tag(image: &str, tag: &str) -> String {
    let (name, _digest) = image.split_once('@').unwrap_or((image, ""));
    let repository = match crate::cluster::version::image_tag(name) {
        Some(old) => name.strip_suffix(old).and_then(|r| r.strip_suffix(':')),
        None => Some(name),
    }
    .unwrap_or(name);
    format!("{repository}:{tag}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_known_sidecar_needs_only_its_name() {
        let s: Vec<Sidecar> = serde_norway::from_str(
            "[istio-proxy, {name: shipper, image: 'r/shipper:1', position: first}]",
        )
        .unwrap();
        assert_eq!(s[0].image, "docker.io/istio/proxyv2:1.22.0");
        assert_eq!(s[0].position, Position::Last);
        assert_eq!(s[1].position, Position::First);
        let c = containers(serde_json::json!({"name": "app"}), &s);
        let names: Vec<&str> = c.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["shipper", "app", "istio-proxy"]);
    }

    #[test]
    fn init_containers_and_native_sidecars_go_to_init_containers_in_order() {
        let s: Vec<Sidecar> = serde_norway::from_str(
            "[{name: migrate, image: 'r/m:1', kind: init}, {name: istio-proxy, kind: native, fails_to_start: 1}, fluent-bit]",
        )
        .unwrap();
        assert_eq!(s[1].fails_to_start, 1);
        let init = init_containers(&s);
        assert_eq!(
            init[0],
            serde_json::json!({"name": "migrate", "image": "r/m:1"})
        );
        assert_eq!(init[1]["restartPolicy"], "Always");
        let c = containers(serde_json::json!({"name": "app"}), &s);
        let names: Vec<&str> = c.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["app", "fluent-bit"]);
    }

    #[test]
    fn an_unknown_sidecar_without_an_image_is_an_error() {
        let e = serde_norway::from_str::<Vec<Sidecar>>("[shipper]").unwrap_err();
        assert!(e.to_string().contains("image: missing"), "{e}");
        let e = serde_norway::from_str::<Vec<Sidecar>>("[{name: x, image: y, where: first}]")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn names_are_checked() {
        let s = |n: &str| Sidecar {
            name: n.into(),
            image: "i:1".into(),
            position: Position::Last,
            kind: Kind::Container,
            fails_to_start: 0,
        };
        assert!(check(&[s("istio-proxy")], "app", "f").is_ok());
        assert!(check(&[s("app")], "app", "f").is_err());
        assert!(check(&[s("Bad_Name")], "app", "f").is_err());
        assert!(check(&[s("a"), s("a")], "app", "f").is_err());
    }

    #[test]
    fn set_image_keeps_the_repository() {
        assert_eq!(
            with_tag("registry:5000/ns/app:v1", "v2"),
            "registry:5000/ns/app:v2"
        );
        assert_eq!(
            with_tag("registry:5000/ns/app", "v2"),
            "registry:5000/ns/app:v2"
        );
        assert_eq!(with_tag("r/app:v1@sha256:abc", "v2"), "r/app:v2");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod scenario_tests {
    use crate::sim::scenario::{Action, Scenario};

    fn error_of(text: &str) -> String {
        match Scenario::parse(text, "bad.yaml") {
            Ok(_) => panic!("should not parse: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn set_image_and_sidecars_parse() {
        let s = Scenario::parse(
            "name: x\ndeployments: [{ref: a/b, version: v1, sidecars: [istio-proxy]}]\nscript:\n  - {at: 1s, set_image: {deployment: a/b, version: v2}}\n  - {at: 2s, set_image: {deployment: a/b, container: istio-proxy, version: 1.22.1}}\n",
            "f",
        )
        .unwrap();
        assert_eq!(s.deployments[0].sidecars[0].name, "istio-proxy");
        assert_eq!(
            s.script[1].action,
            Action::SetImage {
                deployment: "a/b".into(),
                version: "1.22.1".into(),
                container: Some("istio-proxy".into()),
            }
        );
    }

    #[test]
    fn bad_set_image_and_sidecars_name_the_field() {
        let cases = [
            (
                "name: x\ndeployments: [{ref: a/b, version: v1}]\nscript: [{at: 1s, set_image: {deployment: a/b, container: istio-proxy, version: v2}}]\n",
                "script[0].set_image.container",
            ),
            (
                "name: x\ndeployments: [{ref: a/b, version: v1}]\nscript: [{at: 1s, set_image: {deployment: a/b, version: 'v 2'}}]\n",
                "script[0].set_image.version",
            ),
            (
                "name: x\ndeployments: [{ref: a/b, version: v1}]\nscript: [{at: 1s, set_image: {deployment: a/c, version: v2}}]\n",
                "script[0].set_image.deployment",
            ),
            (
                "name: x\ndeployments: [{ref: a/b, version: v1, sidecars: [{name: b, image: 'r/b:1'}]}]\n",
                "deployments[0].sidecars[0].name",
            ),
            (
                "name: x\ndeployments: [{ref: a/b, version: v1, sidecars: [log-shipper]}]\n",
                "deployments[0].sidecars[0]",
            ),
        ];
        for (text, needle) in cases {
            let msg = error_of(text);
            assert!(msg.starts_with("bad.yaml: "), "{msg}");
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
    }
}
