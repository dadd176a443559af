//! Detection: which recorded phase resumes, which unrecorded rollout is judged.

use super::*;
use crate::cluster::record::{Outcome, PAGE_DELIVERED_ANNOTATION};
use crate::judge::Reason;

/// A Deployment at `revision` running `image`, with the controller's status: `rolling` for a
/// rollout still going (old pods left), else complete.
fn deployment(revision: i64, image: &str, rolling: bool, paused: bool) -> Deployment {
    let (replicas, reason) = if rolling {
        (4, "ReplicaSetUpdated")
    } else {
        (3, "NewReplicaSetAvailable")
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app", "namespace": "production",
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string()}},
        "spec": {"replicas": 3, "paused": paused, "selector": {},
            "template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": {"replicas": replicas, "updatedReplicas": 3,
            "conditions": [{"type": "Progressing", "status": "True", "reason": reason}]},
    }))
    .unwrap()
}

fn fingerprint(d: &Deployment) -> String {
    rollout::template_fingerprint(&d.spec.as_ref().unwrap().template)
}

fn state(revision: i64, phase: Phase) -> RolloutState {
    RolloutState {
        phase,
        ..RolloutState::detected(revision, Some("v1".into()), Some("v2".into()), None)
    }
}

fn delivered(mut d: Deployment, revision: i64) -> Deployment {
    d.metadata
        .annotations
        .get_or_insert_default()
        .insert(PAGE_DELIVERED_ANNOTATION.into(), revision.to_string());
    d
}

#[test]
fn each_recorded_phase_resumes_only_where_it_still_applies() {
    let at2 = deployment(2, "r/app:v2", true, false);
    let at3 = deployment(3, "r/app:v1", true, false);
    let at3_delivered = delivered(at3.clone(), 2);
    let watching = Phase::Watching {
        since: jiff::Timestamp::UNIX_EPOCH,
        until: None,
    };
    let health = Reason::Health;
    let restored = |mut s: RolloutState| {
        s.rollback_fingerprint = Some(fingerprint(&at3));
        s
    };
    let paged = |mut s: RolloutState| {
        s.detail = Some("health failing".into());
        s
    };
    let settled = |outcome| Phase::Settled {
        outcome,
        reason: health,
    };
    let cases: Vec<(&str, &Deployment, Option<RolloutState>, bool)> = vec![
        ("nothing recorded", &at2, None, false),
        (
            "progressing, same revision",
            &at2,
            Some(state(2, Phase::start())),
            true,
        ),
        (
            "progressing, older revision",
            &at3,
            Some(state(2, Phase::start())),
            false,
        ),
        (
            "watching, same revision",
            &at2,
            Some(state(2, watching.clone())),
            true,
        ),
        (
            "watching, older revision",
            &at3,
            Some(state(2, watching)),
            false,
        ),
        (
            "rolling back, same revision",
            &at2,
            Some(state(2, Phase::RollingBack { reason: health })),
            true,
        ),
        (
            "verifying, the restored template runs",
            &at3,
            Some(restored(state(2, Phase::Verifying { reason: health }))),
            true,
        ),
        (
            "verifying, another template runs",
            &at2,
            Some(restored(state(2, Phase::Verifying { reason: health }))),
            false,
        ),
        (
            "settled, nothing owed",
            &at2,
            Some(state(2, settled(Outcome::Passed))),
            false,
        ),
        (
            "settled rolled back, page owed",
            &at3,
            Some(paged(state(2, settled(Outcome::RolledBack)))),
            true,
        ),
        (
            "settled rolled back, page delivered",
            &at3_delivered,
            Some(paged(state(2, settled(Outcome::RolledBack)))),
            false,
        ),
    ];
    for (what, d, state, want) in cases {
        let revision = rollout::revision(d.annotations()).unwrap();
        let got = resumable(d, revision, state.as_ref());
        assert_eq!(got.is_some(), want, "{what}");
        if let (Some(Start::Resume(s)), Some(recorded)) = (got, state) {
            assert_eq!(*s, recorded, "{what}: resumed from another state");
        }
    }
}

#[test]
fn only_an_unrecorded_rollout_still_rolling_out_is_judged_at_first_sight() {
    let rolling = deployment(2, "r/app:v2", true, false);
    let complete = deployment(2, "r/app:v2", false, false);
    let paused = deployment(2, "r/app:v2", true, true);
    let first = deployment(1, "r/app:v1", true, false);
    let ours = deployment(3, "r/app:v1", true, false);
    let mut rolled_back = state(
        2,
        Phase::Verifying {
            reason: Reason::Health,
        },
    );
    rolled_back.rollback_fingerprint = Some(fingerprint(&ours));
    let cases: Vec<(&str, &Deployment, Option<RolloutState>, bool)> = vec![
        ("rolling out, nothing recorded", &rolling, None, true),
        ("complete (scaling, a drain)", &complete, None, false),
        ("paused by a person", &paused, None, false),
        ("the first revision is a creation", &first, None, false),
        (
            "recorded for this revision",
            &rolling,
            Some(state(
                2,
                Phase::Settled {
                    outcome: Outcome::Passed,
                    reason: Reason::None,
                },
            )),
            false,
        ),
        (
            "recorded for an older revision",
            &rolling,
            Some(state(
                1,
                Phase::Settled {
                    outcome: Outcome::Passed,
                    reason: Reason::None,
                },
            )),
            true,
        ),
        (
            "the revision our rollback made",
            &ours,
            Some(rolled_back),
            false,
        ),
    ];
    for (what, d, state, want) in cases {
        let revision = rollout::revision(d.annotations()).unwrap();
        assert_eq!(
            unrecorded_rollout_in_progress(d, revision, state.as_ref()),
            want,
            "{what}"
        );
    }
}

#[test]
fn first_sight_resumes_a_recorded_watch_before_judging_an_unrecorded_one() {
    let rolling = deployment(2, "r/app:v2", true, false);
    let recorded = state(2, Phase::start());
    assert_eq!(
        first_sight_start(&rolling, 2, Some(&recorded)),
        Some((Start::Resume(Box::new(recorded)), true))
    );
    assert_eq!(
        first_sight_start(&rolling, 2, None),
        Some((Start::Fresh, false))
    );
    let complete = deployment(2, "r/app:v2", false, false);
    assert_eq!(first_sight_start(&complete, 2, None), None);
}
