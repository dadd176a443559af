//! The resources served and the discovery documents (`/version`, `/api`, `/apis`, and an
//! APIResourceList per group version). Only the plain (non-aggregated) discovery format is
//! served: kubectl asks for aggregated discovery first and falls back to this on its own.

use serde_json::{Value, json};

use super::store::Kind;

/// One served resource (a group/version/plural).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind_name: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub in_all: bool,
    pub has_status: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// True when stored objects are already in this resource's version.
    pub fn storage_form_is_view(&self) -> bool {
        !(self.kind == Kind::Event && self.group == "events.k8s.io")
    }

    /// A view of a stored object as this resource's version.
    pub fn view(&self, obj: &Value) -> Value {
        if self.kind == Kind::Event && self.group == "events.k8s.io" {
            super::events::core_to_events(obj)
        } else {
            obj.clone()
        }
    }
    /// A request body in this resource's version, as stored.
    pub fn storage_form(&self, obj: &Value) -> Value {
        if self.kind == Kind::Event && self.group == "events.k8s.io" {
            super::events::events_to_core(obj)
        } else {
            obj.clone()
        }
    }
}

// A table row per resource; a struct literal for each would hide the table.
#[allow(clippy::too_many_arguments)]
const fn res(
    kind: Kind,
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind_name: &'static str,
    short_names: &'static [&'static str],
    in_all: bool,
    has_status: bool,
) -> Resource {
    Resource {
        kind,
        group,
        version: "v1",
        plural,
        singular,
        kind_name,
        namespaced: true,
        short_names,
        in_all,
        has_status,
    }
}

pub const RESOURCES: [Resource; 7] = [
    res(Kind::Pod, "", "pods", "pod", "Pod", &["po"], true, true),
    res(
        Kind::Event,
        "",
        "events",
        "event",
        "Event",
        &["ev"],
        false,
        false,
    ),
    Resource {
        kind: Kind::Namespace,
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind_name: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        in_all: false,
        has_status: true,
    },
    res(
        Kind::Deployment,
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        &["deploy"],
        true,
        true,
    ),
    res(
        Kind::ReplicaSet,
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        &["rs"],
        true,
        true,
    ),
    res(
        Kind::Event,
        "events.k8s.io",
        "events",
        "event",
        "Event",
        &[],
        false,
        false,
    ),
    res(
        Kind::Lease,
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        &[],
        false,
        false,
    ),
];

/// A custom resource of a GitOps controller, as its CRD defines it.
const fn custom(
    kind: Kind,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind_name: &'static str,
    short_names: &'static [&'static str],
) -> Resource {
    Resource {
        kind,
        group,
        version,
        plural,
        singular,
        kind_name,
        namespaced: true,
        short_names,
        in_all: false,
        has_status: true,
    }
}

/// The GitOps custom resources, served only while their CRDs are installed.
pub const CUSTOM: [Resource; 4] = [
    custom(
        Kind::Application,
        "argoproj.io",
        "v1alpha1",
        "applications",
        "application",
        "Application",
        &["app", "apps"],
    ),
    custom(
        Kind::ApplicationSet,
        "argoproj.io",
        "v1alpha1",
        "applicationsets",
        "applicationset",
        "ApplicationSet",
        &["appset", "appsets"],
    ),
    custom(
        Kind::Kustomization,
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "kustomizations",
        "kustomization",
        "Kustomization",
        &["ks"],
    ),
    custom(
        Kind::HelmRelease,
        "helm.toolkit.fluxcd.io",
        "v2",
        "helmreleases",
        "helmrelease",
        "HelmRelease",
        &["hr"],
    ),
];

pub fn find(group: &str, version: &str, plural: &str) -> Option<Resource> {
    RESOURCES
        .iter()
        .chain(CUSTOM.iter())
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The served version of a custom resource group, when `installed` lists it.
fn custom_version(group: &str, installed: &[&str]) -> Option<&'static str> {
    CUSTOM
        .iter()
        .find(|r| r.group == group && installed.contains(&r.group))
        .map(|r| r.version)
}

/// The resource that serves `kind` in its canonical (storage) group.
pub fn canonical(kind: Kind) -> Option<Resource> {
    RESOURCES.iter().copied().find(|r| r.kind == kind)
}

pub fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "60a317eadfcb839692a68eab88b2096f4d708f4f",
        "gitTreeState": "clean", "buildDate": "2025-04-23T13:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
        "platform": "linux/amd64"})
}

pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
}

const GROUPS: [&str; 3] = ["apps", "events.k8s.io", "coordination.k8s.io"];

/// The served groups: the built-in ones, then the custom groups `installed`.
pub fn group_list(installed: &[&str]) -> Value {
    let mut groups: Vec<Value> = GROUPS.iter().map(|g| group(g, installed)).collect();
    let mut custom: Vec<&str> = CUSTOM
        .iter()
        .map(|r| r.group)
        .filter(|g| installed.contains(g))
        .collect();
    custom.dedup();
    groups.extend(custom.iter().map(|g| group(g, installed)));
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(name: &str, installed: &[&str]) -> Value {
    let version = custom_version(name, installed).unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

pub fn is_group(name: &str, installed: &[&str]) -> bool {
    GROUPS.contains(&name) || custom_version(name, installed).is_some()
}

pub fn resource_list(group: &str, version: &str, installed: &[&str]) -> Option<Value> {
    let served = match custom_version(group, installed) {
        Some(v) => v == version,
        None => version == "v1" && (group.is_empty() || GROUPS.contains(&group)),
    };
    if !served {
        return None;
    }
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut list = Vec::new();
    for r in RESOURCES
        .iter()
        .chain(CUSTOM.iter())
        .filter(|r| r.group == group)
    {
        let mut entry = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind_name, "verbs": verbs, "storageVersionHash": format!("{:x}", super::objects::fnv1a32(r.plural.as_bytes()))});
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if r.in_all {
            entry["categories"] = json!(["all"]);
        }
        list.push(entry);
        if matches!(r.kind, Kind::Deployment | Kind::ReplicaSet) {
            list.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": true,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if r.has_status {
            list.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind_name, "verbs": ["get", "patch", "update"]}));
        }
        if matches!(r.kind, Kind::Deployment | Kind::ReplicaSet) {
            list.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}
