use super::*;
use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

const UID: &str = "d-uid-1";

fn template(version: &str, hash: Option<&str>) -> PodTemplateSpec {
    let mut labels = BTreeMap::from([
        ("app".to_string(), "app".to_string()),
        ("app.kubernetes.io/version".to_string(), version.to_string()),
    ]);
    if let Some(h) = hash {
        labels.insert(HASH_LABEL.into(), h.into());
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(format!("registry.example.com/production/app:{version}")),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// `Deployment::test()`-style builder.
struct D(Deployment);

impl D {
    fn at(version: &str, revision: i64) -> D {
        D(Deployment {
            metadata: ObjectMeta {
                name: Some("app".into()),
                namespace: Some("production".into()),
                uid: Some(UID.into()),
                annotations: Some(BTreeMap::from([
                    (
                        "deployment.kubernetes.io/revision".to_string(),
                        revision.to_string(),
                    ),
                    ("team".to_string(), "payments".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "app".into())])),
                    ..Default::default()
                },
                template: template(version, None),
                ..Default::default()
            }),
            status: None,
        })
    }
    fn paused(mut self) -> D {
        if let Some(s) = self.0.spec.as_mut() {
            s.paused = Some(true);
        }
        self
    }
    fn annotation(mut self, k: &str, v: &str) -> D {
        self.0
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(k.into(), v.into());
        self
    }
}

fn rs(version: &str, revision: i64, hash: &str, owner: &str) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("app-{hash}")),
            annotations: Some(BTreeMap::from([
                (
                    "deployment.kubernetes.io/revision".to_string(),
                    revision.to_string(),
                ),
                (
                    "deployment.kubernetes.io/desired-replicas".to_string(),
                    "3".to_string(),
                ),
                ("team".to_string(), format!("team-at-{version}")),
            ])),
            labels: Some(BTreeMap::from([(HASH_LABEL.to_string(), hash.to_string())])),
            owner_references: Some(vec![OwnerReference {
                uid: owner.into(),
                controller: Some(true),
                kind: "Deployment".into(),
                name: "app".into(),
                api_version: "apps/v1".into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            template: Some(template(version, Some(hash))),
            ..Default::default()
        }),
        status: None,
    }
}

#[test]
fn undo_targets_the_second_highest_revision_and_strips_the_hash() {
    let d = D::at("v3", 3).0;
    let sets = [
        rs("v1", 1, "aaa", UID),
        rs("v3", 3, "ccc", UID),
        rs("v2", 2, "bbb", UID),
    ];
    let p = plan(&d, &sets).expect("plan");
    assert_eq!(p.target_revision, 2);
    assert_eq!(p.target_hash.as_deref(), Some("bbb"));
    assert_eq!(p.target_version.as_deref(), Some("v2"));
    let labels = p
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("labels");
    assert!(!labels.contains_key(HASH_LABEL));
}

#[test]
fn annotations_come_from_the_replicaset_but_revision_keys_from_the_deployment() {
    let d = D::at("v2", 2)
        .annotation("deployment.kubernetes.io/revision-history", "1")
        .0;
    let sets = [rs("v1", 1, "aaa", UID), rs("v2", 2, "bbb", UID)];
    let p = plan(&d, &sets).expect("plan");
    assert_eq!(
        p.annotations.get("team").map(String::as_str),
        Some("team-at-v1")
    );
    assert_eq!(
        p.annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    assert_eq!(
        p.annotations
            .get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );
    // Skipped keys the Deployment does not carry are not taken from the ReplicaSet either.
    assert!(
        !p.annotations
            .contains_key("deployment.kubernetes.io/desired-replicas")
    );
}

#[test]
fn the_patch_is_kubectls_json_patch_with_our_state_added() {
    let d = D::at("v2", 2).0;
    let p = plan(&d, &[rs("v1", 1, "aaa", UID), rs("v2", 2, "bbb", UID)]).expect("plan");
    let patch = p.patch(&BTreeMap::from([(
        "deploy-watchdog.io/state".to_string(),
        "{}".to_string(),
    )]));
    assert_eq!(patch[0]["op"], "replace");
    assert_eq!(patch[0]["path"], "/spec/template");
    assert_eq!(
        patch[0]["value"]["metadata"]["labels"]["app.kubernetes.io/version"],
        "v1"
    );
    assert_eq!(patch[1]["path"], "/metadata/annotations");
    assert_eq!(patch[1]["value"]["deploy-watchdog.io/state"], "{}");
    assert_eq!(patch[1]["value"]["team"], "team-at-v1");
}

#[test]
fn renumbered_revisions_are_followed_by_number_not_by_name() {
    // Undoing 3 → 1 made ReplicaSet "aaa" revision 4; undo now goes back to "ccc" (3).
    let d = D::at("v1", 4).0;
    let sets = [
        rs("v1", 4, "aaa", UID),
        rs("v2", 2, "bbb", UID),
        rs("v3", 3, "ccc", UID),
    ];
    let p = plan(&d, &sets).expect("plan");
    assert_eq!(
        (p.target_revision, p.target_hash.as_deref()),
        (3, Some("ccc"))
    );
}

#[test]
fn a_paused_deployment_is_refused_like_kubectl() {
    let d = D::at("v2", 2).paused().0;
    let err = plan(&d, &[rs("v1", 1, "aaa", UID), rs("v2", 2, "bbb", UID)]).expect_err("paused");
    assert_eq!(
        err.to_string(),
        "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again"
    );
}

#[test]
fn a_template_that_already_matches_is_skipped() {
    // Someone already rolled back: the Deployment runs v1 but revision 2 (v1's RS renumbered... not yet).
    let d = D::at("v1", 2).0;
    let err = plan(&d, &[rs("v1", 1, "aaa", UID), rs("v2", 2, "bbb", UID)]).expect_err("matches");
    assert_eq!(err, Refusal::AlreadyMatches(1));
    // kubectl names the requested --to-revision, 0 for a plain undo (tests/kubectl_parity.rs).
    assert_eq!(
        err.to_string(),
        "skipped rollback (current template already matches revision 0)"
    );
}

#[test]
fn no_history_and_foreign_replicasets() {
    let d = D::at("v1", 1).0;
    assert_eq!(
        plan(&d, &[rs("v1", 1, "aaa", UID)]),
        Err(Refusal::NoHistory("app".into()))
    );
    // A ReplicaSet of another Deployment with the same labels is not history.
    assert_eq!(
        plan(
            &d,
            &[rs("v1", 1, "aaa", UID), rs("v0", 5, "zzz", "other-uid")]
        ),
        Err(Refusal::NoHistory("app".into()))
    );
}

#[test]
fn unreachable_or_overloaded_api_servers_are_retried_refusals_are_final() {
    let api = |code: u16| RollbackError::PatchDeployment {
        namespace: "production".into(),
        name: "app".into(),
        source: kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        })),
    };
    assert!(api(503).is_transient());
    assert!(api(429).is_transient());
    assert!(!api(422).is_transient());
    assert!(!api(403).is_transient());
    let timeout = RollbackError::Timeout {
        what: "patching",
        namespace: "p".into(),
        name: "a".into(),
    };
    assert!(timeout.is_transient());
    let paused = RollbackError::Refused {
        namespace: "p".into(),
        name: "a".into(),
        refusal: Refusal::Paused("a".into()),
    };
    assert!(!paused.is_transient());
}

/// `rs` without its revision annotation (adopted, or made before revisions existed).
fn unnumbered(version: &str, hash: &str) -> ReplicaSet {
    let mut r = rs(version, 0, hash, UID);
    if let Some(a) = r.metadata.annotations.as_mut() {
        a.remove("deployment.kubernetes.io/revision");
    }
    r
}

#[test]
fn a_replicaset_without_a_revision_is_revision_0_as_in_kubectl() {
    // kubectl's deploymentutil.Revision: no annotation is 0, so it is the previous revision.
    let d = D::at("v2", 2).0;
    let p = plan(&d, &[unnumbered("v1", "aaa"), rs("v2", 2, "bbb", UID)]).expect("plan");
    assert_eq!(
        (p.target_revision, p.target_hash.as_deref()),
        (0, Some("aaa"))
    );
    // One whose annotation is not a number is passed over (kubectl's parse error).
    let mut garbled = rs("v0", 1, "zzz", UID);
    if let Some(a) = garbled.metadata.annotations.as_mut() {
        a.insert("deployment.kubernetes.io/revision".into(), "x".into());
    }
    let p = plan(
        &d,
        &[garbled, unnumbered("v1", "aaa"), rs("v2", 2, "bbb", UID)],
    )
    .expect("plan");
    assert_eq!(p.target_hash.as_deref(), Some("aaa"));
}

#[test]
fn our_annotations_are_never_brought_back_from_the_replicaset() {
    // The controller copied the Deployment's annotations of that time onto v1's ReplicaSet: an
    // old state, its digest and a page already delivered for revision 1.
    let mut old = rs("v1", 1, "aaa", UID);
    if let Some(a) = old.metadata.annotations.as_mut() {
        a.insert("deploy-watchdog.io/state".into(), "{\"revision\":1}".into());
        a.insert("deploy-watchdog.io/state-digest".into(), "0123".into());
        a.insert("deploy-watchdog.io/page-delivered".into(), "1".into());
        a.insert(
            "deploy-watchdog.io/error-rate-threshold".into(),
            "0.5".into(),
        );
    }
    let d = D::at("v2", 2)
        .annotation("deploy-watchdog.io/state", "{\"revision\":2}")
        .annotation("deploy-watchdog.io/error-rate-threshold", "0.1")
        .0;
    let p = plan(&d, &[old, rs("v2", 2, "bbb", UID)]).expect("plan");
    let a = &p.annotations;
    assert_eq!(a.get("deploy-watchdog.io/page-delivered"), None);
    assert_eq!(a.get("deploy-watchdog.io/state-digest"), None);
    assert_eq!(
        a.get("deploy-watchdog.io/state").map(String::as_str),
        Some("{\"revision\":2}")
    );
    assert_eq!(
        a.get("deploy-watchdog.io/error-rate-threshold")
            .map(String::as_str),
        Some("0.1")
    );
    // kubectl's own behaviour for everything else: the ReplicaSet's annotations.
    assert_eq!(a.get("team").map(String::as_str), Some("team-at-v1"));
}

#[test]
fn the_patch_restores_the_replicasets_json_with_fields_these_types_do_not_know() {
    let d = D::at("v2", 2).0;
    let sets = [rs("v1", 1, "aaa", UID), rs("v2", 2, "bbb", UID)];
    let mut raw: Vec<serde_json::Value> = sets
        .iter()
        .map(|s| serde_json::to_value(s).expect("json"))
        .collect();
    raw[0]["spec"]["template"]["spec"]["hostnameOverride"] = json!("app-host");
    let p = plan(&d, &sets).expect("plan").with_raw_template(&raw);
    let patch = p.patch(&BTreeMap::new());
    let template = &patch[0]["value"];
    assert_eq!(template["spec"]["hostnameOverride"], "app-host");
    assert_eq!(template["metadata"]["labels"].get(HASH_LABEL), None);
    assert_eq!(
        template["metadata"]["labels"]["app.kubernetes.io/version"],
        "v1"
    );
}
