//! The simulated cluster against a real kube-rs client: watchers, revisions, rollbacks the way
//! kubectl sends them, pod failure states, patches and error bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours, PodMode};
use deploy_watchdog::sim::cluster::SimCluster;
use deploy_watchdog::sim::scenario::{ApiState, DeploymentSpec};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const REVISION: &str = "deployment.kubernetes.io/revision";

fn spec(reference: &str, version: &str, replicas: i32, opted_in: bool) -> DeploymentSpec {
    DeploymentSpec {
        reference: reference.into(),
        replicas,
        version: version.into(),
        opted_in,
        paused: false,
        annotations: BTreeMap::new(),
        sidecars: Vec::new(),
        strategy: Default::default(),
        progress_deadline: None,
        gitops: None,
    }
}

async fn start(behaviours: Behaviours) -> (SimCluster, Client, CancellationToken) {
    let sim = SimCluster::new(behaviours);
    let shutdown = CancellationToken::new();
    let addr = sim.start(shutdown.clone()).await.unwrap();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (sim, Client::try_from(config).unwrap(), shutdown)
}

/// Polls `check` until it returns Some, failing after a generous deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn revision_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.annotations.as_ref()?.get(REVISION).cloned()
}

async fn rollout_complete(deploys: &Api<Deployment>, name: &str) -> Option<Deployment> {
    let d = deploys.get(name).await.ok()?;
    let status = d.status.clone()?;
    let want = d.spec.as_ref()?.replicas?;
    let done = status.observed_generation >= d.metadata.generation
        && status.updated_replicas == Some(want)
        && status.replicas == Some(want)
        && status.available_replicas == Some(want);
    done.then_some(d)
}

async fn replicasets(client: &Client, ns: &str, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn watcher_sees_opted_in_deployments_and_relists_after_expire() {
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    sim.add_deployment(&spec("production/app", "v1", 2, true));
    sim.add_deployment(&spec("production/other", "v1", 1, false));
    let api: Api<Deployment> = Api::all(client.clone());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let cfg = watcher::Config::default().labels("deploy-watchdog.io/enabled=true");
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, cfg).boxed();
        while let Some(ev) = stream.next().await {
            let entry = match ev {
                Ok(watcher::Event::Init) => "init".to_string(),
                Ok(watcher::Event::InitApply(d)) | Ok(watcher::Event::Apply(d)) => {
                    let rev = revision_of(&d.metadata).unwrap_or_default();
                    format!("apply {} rev={rev}", d.metadata.name.unwrap_or_default())
                }
                Ok(watcher::Event::Delete(d)) => {
                    format!("delete {}", d.metadata.name.unwrap_or_default())
                }
                Ok(watcher::Event::InitDone) => "init-done".to_string(),
                Err(e) => format!("error {e}"),
            };
            log.lock().unwrap().push(entry);
        }
    });
    let has = |s: &str| seen.lock().unwrap().iter().any(|e| e.contains(s));
    eventually("the initial list", || async {
        has("init-done").then_some(())
    })
    .await;
    assert!(has("apply app rev=1"));
    assert!(
        !has("apply other"),
        "opted-out deployment must not be listed: {:?}",
        seen.lock().unwrap()
    );

    sim.deploy("production", "app", "v2").unwrap();
    eventually("a MODIFIED with revision 2", || async {
        has("apply app rev=2").then_some(())
    })
    .await;

    sim.set_api_state(ApiState::Expire);
    let inits = || seen.lock().unwrap().iter().filter(|e| *e == "init").count();
    eventually("a relist after 410 Gone", || async {
        (inits() >= 2).then_some(())
    })
    .await;
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("410") || e.contains("Expired") || e.contains("too old")),
        "{:?}",
        seen.lock().unwrap()
    );
    sim.deploy("production", "app", "v3").unwrap();
    eventually("events after the relist", || async {
        has("apply app rev=3").then_some(())
    })
    .await;

    sim.delete("production", "app").unwrap();
    eventually("a DELETED", || async { has("delete app").then_some(()) }).await;
    assert!(
        replicasets(&client, "production", "app").await.is_empty(),
        "ReplicaSets are garbage-collected"
    );
    task.abort();
    shutdown.cancel();
}

#[tokio::test]
async fn deploy_then_kubectl_style_rollback_reuses_and_renumbers_the_old_replicaset() {
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    sim.add_deployment(&spec("production/app", "v1", 3, true));
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "production");
    let d = rollout_complete(&deploys, "app")
        .await
        .expect("healthy at revision 1 on return");
    assert_eq!(revision_of(&d.metadata).as_deref(), Some("1"));

    sim.deploy("production", "app", "v2").unwrap();
    let d = eventually("revision 2 rolled out", || async {
        rollout_complete(&deploys, "app")
            .await
            .filter(|d| revision_of(&d.metadata).as_deref() == Some("2"))
    })
    .await;
    assert_eq!(d.metadata.generation, Some(2));
    let rss = replicasets(&client, "production", "app").await;
    assert_eq!(rss.len(), 2);
    let old = rss
        .iter()
        .find(|rs| revision_of(&rs.metadata).as_deref() == Some("1"))
        .unwrap()
        .clone();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(
        sim.ready_pods_by_version("production", "app"),
        vec![("v2".to_string(), 3)]
    );

    // Exactly kubectl rollout undo's patch: the old template minus its hash label, and the
    // old ReplicaSet's annotations minus the controller's own.
    let mut template = serde_json::to_value(&old.spec.as_ref().unwrap().template).unwrap();
    template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pod-template-hash");
    let annotations = json!({REVISION: "2"});
    let patch = json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    let pp = PatchParams::default();
    deploys
        .patch(
            "app",
            &pp,
            &Patch::<()>::Json(serde_json::from_value(patch).unwrap()),
        )
        .await
        .unwrap();
    let d = eventually("the rollback rolled out", || async {
        rollout_complete(&deploys, "app")
            .await
            .filter(|d| revision_of(&d.metadata).as_deref() == Some("3"))
    })
    .await;
    assert_eq!(
        sim.current_version("production", "app").as_deref(),
        Some("v1")
    );
    let rss = replicasets(&client, "production", "app").await;
    assert_eq!(rss.len(), 2, "no new ReplicaSet for a rollback");
    let reused = rss
        .iter()
        .find(|rs| rs.metadata.name == old.metadata.name)
        .unwrap();
    let anns = reused.metadata.annotations.clone().unwrap();
    assert_eq!(anns.get(REVISION).map(String::as_str), Some("3"));
    assert_eq!(
        anns.get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );
    assert!(
        d.status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"))
    );
    let changes = sim.template_changes();
    assert_eq!(
        changes.len(),
        1,
        "only the API patch counts, not the runner's deploy"
    );
    assert_eq!(
        (changes[0].namespace.as_str(), changes[0].name.as_str()),
        ("production", "app")
    );
    assert!(
        sim.request_counts()
            .get("PATCH deployments")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    shutdown.cancel();
}

#[tokio::test]
async fn crashloop_and_pending_pods_show_what_kubectl_shows() {
    let behaviours = Behaviours::default();
    behaviours.set(
        AppKey::new("production", "app", "v2"),
        Behaviour {
            pods: PodMode::Crashloop,
            ..Default::default()
        },
    );
    let pending = Behaviour {
        pods: PodMode::Pending,
        pending_reason: "0/3 nodes are available: 3 Insufficient memory.".into(),
        ..Default::default()
    };
    behaviours.set(AppKey::new("production", "big", "v1"), pending);
    let (sim, client, shutdown) = start(behaviours.clone()).await;
    sim.add_deployment(&spec("production/app", "v1", 2, true));
    sim.add_deployment(&spec("production/big", "v1", 1, true));
    sim.deploy("production", "app", "v2").unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "production");
    let crashing = eventually("a crash-looping pod", || async {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/version=v2,app=app"))
            .await
            .ok()?;
        list.items.into_iter().find(|p| {
            let cs = &p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            cs.iter().any(|c| {
                c.restart_count > 0
                    && c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
            })
        })
    })
    .await;
    let cs = &crashing.status.unwrap().container_statuses.unwrap()[0];
    assert!(!cs.ready);
    assert_eq!(
        cs.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );

    let big = pods
        .list(&ListParams::default().labels("app=big"))
        .await
        .unwrap()
        .items;
    assert_eq!(big.len(), 1);
    let status = big[0].status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let cond = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert_eq!(
        cond.message.as_deref(),
        Some("0/3 nodes are available: 3 Insufficient memory.")
    );
    assert!(big[0].spec.as_ref().unwrap().node_name.is_none());
    let events: Api<Event> = Api::namespaced(client.clone(), "production");
    let name = big[0].metadata.name.clone().unwrap();
    let evs = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items;
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("FailedScheduling")
                && e.type_.as_deref() == Some("Warning"))
    );

    // A version that recovers: its pods become ready once the behaviour changes.
    behaviours.set(AppKey::new("production", "app", "v2"), Behaviour::default());
    sim.behaviours_changed();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "production");
    eventually("recovery", || async {
        rollout_complete(&deploys, "app").await
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn strategic_merge_patch_updates_a_container_by_name_and_errors_are_status_objects() {
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    sim.add_deployment(&spec("staging/web", "v1", 1, true));
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "staging");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "registry.example.com/staging/web:v9"}]}}}});
    let d = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(
        containers[0].image.as_deref(),
        Some("registry.example.com/staging/web:v9")
    );
    assert_eq!(
        containers[0].ports.as_ref().map(Vec::len),
        Some(1),
        "other fields kept"
    );
    eventually("revision 2", || async {
        rollout_complete(&deploys, "web")
            .await
            .filter(|d| revision_of(&d.metadata).as_deref() == Some("2"))
    })
    .await;

    match deploys.get("missing").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
            assert_eq!(status.message, "deployments.apps \"missing\" not found");
        }
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    let d = deploys.get("web").await.unwrap();
    let mut stale = d.clone();
    stale.metadata.resource_version = Some("1".into());
    match deploys.replace("web", &Default::default(), &stale).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
        }
        other => panic!("expected a 409 Conflict, got {other:?}"),
    }
    shutdown.cancel();
}

#[tokio::test]
async fn leases_conflict_on_stale_updates_and_events_are_recorded_in_both_shapes() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::events::v1::Event as NewEvent;
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "deploy-watchdog");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let created = leases.create(&Default::default(), &lease).await.unwrap();
    match leases.create(&Default::default(), &lease).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let updated = leases
        .replace("leader", &Default::default(), &mine)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    // A second writer with the old resourceVersion loses.
    match leases.replace("leader", &Default::default(), &mine).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected Conflict, got {other:?}"),
    }

    let new_events: Api<NewEvent> = Api::namespaced(client.clone(), "production");
    let ev: NewEvent = serde_json::from_value(json!({
        "metadata": {"generateName": "app."},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"kind": "Deployment", "namespace": "production", "name": "app", "apiVersion": "apps/v1"},
        "reason": "RolledBack", "note": "Rolled back v2 to v1", "type": "Warning",
        "action": "Rollback", "reportingController": "deploy-watchdog.io/watchdog", "reportingInstance": "watchdog-0"
    }))
    .unwrap();
    new_events.create(&Default::default(), &ev).await.unwrap();
    let core: Api<Event> = Api::namespaced(client.clone(), "production");
    let listed = core
        .list(&ListParams::default().fields("involvedObject.name=app"))
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].message.as_deref(), Some("Rolled back v2 to v1"));
    assert_eq!(
        listed[0].reporting_component.as_deref(),
        Some("deploy-watchdog.io/watchdog")
    );
    let recorded = sim.events();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["note"], "Rolled back v2 to v1");
    assert_eq!(recorded[0]["regarding"]["name"], "app");
    assert_eq!(sim.request_counts().get("CREATE events").copied(), Some(1));
    shutdown.cancel();
}

#[tokio::test]
async fn api_down_refuses_connections_and_up_restores_them_on_the_same_port() {
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    sim.add_deployment(&spec("production/app", "v1", 1, true));
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "production");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let watch_api = deploys.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(d)) = ev {
                log.lock()
                    .unwrap()
                    .push(revision_of(&d.metadata).unwrap_or_default());
            }
        }
    });
    assert!(deploys.get("app").await.is_ok());
    sim.set_api_state(ApiState::DropWatches);
    sim.set_api_state(ApiState::Down);
    // The connection pool may hold a connection that the server is closing: a few tries.
    eventually("requests to fail", || async {
        deploys.get("app").await.is_err().then_some(())
    })
    .await;
    sim.deploy("production", "app", "v2").unwrap();
    sim.set_api_state(ApiState::Up);
    eventually("requests to work again", || async {
        deploys.get("app").await.ok()
    })
    .await;
    eventually("the watcher to catch up", || async {
        seen.lock().unwrap().iter().any(|r| r == "2").then_some(())
    })
    .await;
    assert!(
        sim.request_counts()
            .get("WATCH deployments")
            .copied()
            .unwrap_or(0)
            >= 2
    );
    task.abort();
    shutdown.cancel();
}

#[tokio::test]
async fn streaming_list_watchers_get_the_initial_state_then_changes() {
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    sim.add_deployment(&spec("production/app", "v1", 1, true));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "production");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let cfg = watcher::Config::default()
            .streaming_lists()
            .labels("app=app");
        let mut stream = watcher(pods, cfg).boxed();
        while let Some(ev) = stream.next().await {
            let entry = match ev {
                Ok(watcher::Event::InitApply(p)) => format!(
                    "init-apply {}",
                    p.metadata.labels.unwrap_or_default()["app.kubernetes.io/version"]
                ),
                Ok(watcher::Event::InitDone) => "init-done".into(),
                Ok(watcher::Event::Apply(p)) => format!(
                    "apply {}",
                    p.metadata.labels.unwrap_or_default()["app.kubernetes.io/version"]
                ),
                Ok(_) => continue,
                Err(e) => format!("error {e}"),
            };
            log.lock().unwrap().push(entry);
        }
    });
    let has = |s: &str| seen.lock().unwrap().iter().any(|e| e == s);
    eventually("the initial state", || async {
        has("init-done").then_some(())
    })
    .await;
    assert!(has("init-apply v1"), "{:?}", seen.lock().unwrap());
    sim.deploy("production", "app", "v2").unwrap();
    eventually("new pods", || async { has("apply v2").then_some(()) }).await;
    assert!(
        !seen.lock().unwrap().iter().any(|e| e.starts_with("error")),
        "{:?}",
        seen.lock().unwrap()
    );
    task.abort();
    shutdown.cancel();
}

fn waiting_reason(p: &Pod) -> Option<String> {
    let cs = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .clone();
    cs.state?.waiting?.reason
}

#[tokio::test]
async fn image_pull_config_error_slow_start_and_recreate_follow_their_behaviour() {
    let behaviours = Behaviours::default();
    let set = |name: &str, b: Behaviour| behaviours.set(AppKey::new("staging", name, "v2"), b);
    set(
        "pull",
        Behaviour {
            pods: PodMode::ImagePullError,
            ..Default::default()
        },
    );
    set(
        "config",
        Behaviour {
            pods: PodMode::ConfigError,
            ..Default::default()
        },
    );
    set(
        "slow",
        Behaviour {
            pods: PodMode::SlowStart,
            ready_after: Duration::from_millis(800),
            ..Default::default()
        },
    );
    let (sim, client, shutdown) = start(behaviours.clone()).await;
    for name in ["pull", "config", "slow", "recreate"] {
        sim.add_deployment(&spec(&format!("staging/{name}"), "v1", 2, true));
    }
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "staging");
    let recreate = json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}}});
    deploys
        .patch("recreate", &PatchParams::default(), &Patch::Merge(recreate))
        .await
        .unwrap();
    for name in ["pull", "config", "slow", "recreate"] {
        sim.deploy("staging", name, "v2").unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "staging");
    let v2 = |app: &'static str| {
        let pods = pods.clone();
        async move {
            pods.list(
                &ListParams::default().labels(&format!("app={app},app.kubernetes.io/version=v2")),
            )
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        }
    };
    eventually("ErrImagePull then ImagePullBackOff", || async {
        let reasons: Vec<_> = v2("pull").await.iter().filter_map(waiting_reason).collect();
        reasons
            .iter()
            .any(|r| r == "ImagePullBackOff")
            .then_some(())
    })
    .await;
    let pulled = v2("pull").await;
    let status = pulled[0].status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    eventually("CreateContainerConfigError", || async {
        let p = v2("config").await;
        let cs = p
            .first()?
            .status
            .clone()?
            .container_statuses?
            .first()?
            .clone();
        let w = cs.state?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(w.message)
    })
    .await
    .filter(|m| m.contains("configmap \"config-config\" not found"))
    .expect("the missing ConfigMap named");
    // Slow start: running but not ready at first, ready after `ready_after`.
    eventually("slow pods running, not ready", || async {
        let p = v2("slow").await;
        p.iter()
            .any(|p| {
                let cs = &p
                    .status
                    .clone()
                    .unwrap_or_default()
                    .container_statuses
                    .unwrap_or_default();
                cs.first().is_some_and(|c| {
                    !c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })
            })
            .then_some(())
    })
    .await;
    eventually("slow pods ready", || async {
        (sim.ready_pods_by_version("staging", "slow") == [("v2".to_string(), 2)]).then_some(())
    })
    .await;
    eventually("the Recreate rollout", || async {
        (sim.ready_pods_by_version("staging", "recreate") == [("v2".to_string(), 2)]).then_some(())
    })
    .await;
    assert_eq!(
        sim.ready_pods_by_version("staging", "pull"),
        [("v1".to_string(), 2)],
        "old pods kept"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_rollback_for_a_revision_a_newer_rollout_replaced_is_refused_and_changes_nothing() {
    use deploy_watchdog::cluster::rollback::{self, RollbackError};
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    sim.add_deployment(&spec("production/app", "v1", 2, true));
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "production");
    for (version, revision) in [("v2", "2"), ("v3", "3")] {
        sim.deploy("production", "app", version).unwrap();
        eventually("the rollout", || async {
            rollout_complete(&deploys, "app")
                .await
                .filter(|d| revision_of(&d.metadata).as_deref() == Some(revision))
        })
        .await;
    }
    // A session still judging revision 2 (its watch had not reported revision 3) decides to
    // roll back: undoing now would undo v3, which nobody judged.
    let result = rollback::execute(&client, "production", "app", 2, |_| BTreeMap::new()).await;
    assert!(
        matches!(
            result,
            Err(RollbackError::Superseded {
                revision: 2,
                current: 3,
                ..
            })
        ),
        "{result:?}"
    );
    let d = deploys.get("app").await.unwrap();
    assert_eq!(revision_of(&d.metadata).as_deref(), Some("3"));
    assert_eq!(
        sim.ready_pods_by_version("production", "app"),
        vec![("v3".to_string(), 2)]
    );
    // The rollout being judged is still rolled back as before.
    let plan = rollback::execute(&client, "production", "app", 3, |_| BTreeMap::new())
        .await
        .expect("revision 3 is current");
    assert_eq!(plan.target_revision, 2);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_the_stopped_controller_has_not_numbered_is_not_rolled_back_over() {
    use deploy_watchdog::cluster::rollback::{self, RollbackError};
    use deploy_watchdog::cluster::rollout;
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    sim.add_deployment(&spec("production/app", "v1", 2, true));
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "production");
    sim.deploy("production", "app", "v2").unwrap();
    let judged = eventually("revision 2", || async {
        rollout_complete(&deploys, "app")
            .await
            .filter(|d| revision_of(&d.metadata).as_deref() == Some("2"))
    })
    .await;
    let fingerprint = rollout::template_fingerprint(&judged.spec.as_ref().unwrap().template);
    let generation = judged.metadata.generation.unwrap();

    // Annotations are copied to ReplicaSets, so the API server counts them as a change of the
    // Deployment's generation too (`strategy.go`); status is the controller's business.
    let annotated = deploys
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"team": "payments"}}})),
        )
        .await
        .unwrap();
    assert_eq!(annotated.metadata.generation, Some(generation + 1));

    // A controller-manager failover: the next release lands, and nothing numbers it.
    sim.set_controller_running(false);
    sim.deploy("production", "app", "v3").unwrap();
    let d = deploys.get("app").await.unwrap();
    assert_eq!(d.metadata.generation, Some(generation + 2));
    assert_eq!(revision_of(&d.metadata).as_deref(), Some("2"));
    assert!(d.status.unwrap().observed_generation < Some(generation + 2));

    // The check on the revision alone would undo v3; the judged template says it is not v2.
    let result =
        rollback::execute_judged(&client, "production", "app", 2, Some(&fingerprint), |_| {
            BTreeMap::new()
        })
        .await;
    assert!(
        matches!(
            result,
            Err(RollbackError::TemplateReplaced { revision: 2, .. })
        ),
        "{result:?}"
    );
    assert_eq!(
        sim.current_version("production", "app").as_deref(),
        Some("v3")
    );
    assert!(sim.template_changes().is_empty());

    // A patch that tests a generation that is no longer the object's fails, as json-patch does.
    let stale = json!([
        {"op": "test", "path": "/metadata/generation", "value": generation},
        {"op": "replace", "path": "/spec/replicas", "value": 5},
    ]);
    let err = deploys
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(stale).unwrap()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err:?}"
    );

    // Back up: the controller numbers v3 and rolls it out.
    sim.set_controller_running(true);
    eventually("revision 3", || async {
        rollout_complete(&deploys, "app")
            .await
            .filter(|d| revision_of(&d.metadata).as_deref() == Some("3"))
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_new_replica_set_is_created_at_server_time_when_the_controller_takes_up_the_template() {
    let (sim, client, shutdown) = start(Behaviours::default()).await;
    sim.add_deployment(&spec("production/app", "v1", 2, true));
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "production");
    eventually("revision 1 complete", || rollout_complete(&deploys, "app")).await;
    // Paused, the controller syncs the new template without a ReplicaSet or a revision for it.
    sim.set_paused("production", "app", true).unwrap();
    sim.deploy("production", "app", "v2").unwrap();
    eventually("the paused template change observed", || async {
        let d = deploys.get("app").await.ok()?;
        (d.status?.observed_generation >= d.metadata.generation).then_some(())
    })
    .await;
    let revisions = |sets: Vec<ReplicaSet>| -> Vec<String> {
        sets.iter()
            .filter_map(|rs| revision_of(&rs.metadata))
            .collect()
    };
    assert_eq!(
        revisions(replicasets(&client, "production", "app").await),
        ["1"]
    );
    let d = deploys.get("app").await.unwrap();
    assert_eq!(revision_of(&d.metadata).as_deref(), Some("1"));
    // Creation times have whole seconds: let one pass, so the template change's second and the
    // resume's differ.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resumed = jiff::Timestamp::now();
    sim.set_paused("production", "app", false).unwrap();
    let created = eventually("revision 2's ReplicaSet", || async {
        replicasets(&client, "production", "app")
            .await
            .into_iter()
            .find(|rs| revision_of(&rs.metadata).as_deref() == Some("2"))
            .and_then(|rs| rs.metadata.creation_timestamp)
    })
    .await
    .0;
    let after = jiff::Timestamp::now();
    // The API server's clock when the controller created it (at the resume), in whole seconds.
    assert!(
        created.as_second() >= resumed.as_second() && created <= after,
        "created {created}, resumed {resumed}, seen {after}"
    );
    assert_eq!(created.subsec_nanosecond(), 0, "{created}");
    shutdown.cancel();
}
