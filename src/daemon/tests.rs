//! Detection: which recorded phase resumes, which unrecorded rollout is judged.

use super::first_sight::{first_sight_start, unrecorded_may_be_judged};
use super::*;
use crate::cluster::record::{Outcome, PAGE_DELIVERED_ANNOTATION, RolloutState};
use crate::cluster::rollout;
use crate::judge::Reason;
use crate::phase::Phase;
use crate::session::Start;

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

const WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// A moment `secs` seconds before or after a fixed `now`.
fn at(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// What the first sight of an unrecorded or recorded revision starts.
#[derive(Debug, PartialEq)]
enum Want {
    Nothing,
    Resume,
    /// Judged from now, as a rollout just detected.
    FromNow,
    /// Judged from when it began; `complete`: its window runs from then too.
    FromItsStart {
        began: jiff::Timestamp,
        complete: bool,
    },
}

fn want(got: Option<(Start, bool)>) -> Want {
    match got {
        None => Want::Nothing,
        Some((Start::Resume(_), true)) => Want::Resume,
        Some((Start::Fresh, false)) => Want::FromNow,
        Some((Start::Unrecorded { began, complete }, false)) => {
            Want::FromItsStart { began, complete }
        }
        Some(other) => panic!("resumed flag disagrees with the start: {other:?}"),
    }
}

#[test]
fn first_sight_judges_an_unrecorded_rollout_from_when_it_began_within_its_window() {
    let rolling = deployment(2, "r/app:v2", true, false);
    let complete = deployment(2, "r/app:v2", false, false);
    let paused = deployment(2, "r/app:v2", true, true);
    let first = deployment(1, "r/app:v1", true, false);
    // Our rollback of revision 2 (v2) made revision 3, running v1 again.
    let ours = deployment(3, "r/app:v1", false, false);
    let mut rolled_back = state(
        2,
        Phase::Settled {
            outcome: Outcome::RolledBack,
            reason: Reason::Health,
        },
    );
    rolled_back.rollback_fingerprint = Some(fingerprint(&ours));
    // Then a person brought v2 back (revision 4): their choice, not a rollout to judge.
    let undone = deployment(4, "r/app:v2", false, false);
    let mut rolled_back_settled = state(
        2,
        Phase::Settled {
            outcome: Outcome::RolledBack,
            reason: Reason::Health,
        },
    );
    rolled_back_settled.judged_template = Some(fingerprint(&rolling));
    rolled_back_settled.rollback_fingerprint = Some(fingerprint(&ours));
    let passed = |revision| {
        state(
            revision,
            Phase::Settled {
                outcome: Outcome::Passed,
                reason: Reason::None,
            },
        )
    };
    let watching = state(
        2,
        Phase::Watching {
            since: at(-60),
            until: None,
        },
    );
    let ten_minutes_ago = Some(at(-600));
    let long_ago = Some(at(-16 * 60));
    let from_start = |began: Option<jiff::Timestamp>, complete| Want::FromItsStart {
        began: began.unwrap(),
        complete,
    };
    type Case<'a> = (
        &'a str,
        &'a Deployment,
        Option<RolloutState>,
        Option<jiff::Timestamp>,
        Want,
    );
    let cases: Vec<Case> = vec![
        (
            "complete, began 10 of 15 minutes ago: the rest of its window",
            &complete,
            None,
            ten_minutes_ago,
            from_start(ten_minutes_ago, true),
        ),
        (
            "complete, began before the window",
            &complete,
            None,
            long_ago,
            Want::Nothing,
        ),
        (
            "complete, when it began cannot be told",
            &complete,
            None,
            None,
            Want::Nothing,
        ),
        (
            "complete, began exactly a window ago",
            &complete,
            None,
            Some(at(-15 * 60)),
            Want::Nothing,
        ),
        (
            "complete, its start later than our clock",
            &complete,
            None,
            Some(at(2)),
            from_start(Some(at(2)), true),
        ),
        (
            "rolling out, when it began cannot be told: as a rollout just detected",
            &rolling,
            None,
            None,
            Want::FromNow,
        ),
        (
            "rolling out, began 10 minutes ago: its deadline counts from then",
            &rolling,
            None,
            ten_minutes_ago,
            from_start(ten_minutes_ago, false),
        ),
        (
            "rolling out, began before the window: as a rollout just detected",
            &rolling,
            None,
            long_ago,
            Want::FromNow,
        ),
        (
            "recorded and watching: resumed",
            &complete,
            Some(watching),
            ten_minutes_ago,
            Want::Resume,
        ),
        (
            "recorded and settled for this revision",
            &complete,
            Some(passed(2)),
            ten_minutes_ago,
            Want::Nothing,
        ),
        (
            "recorded for an older revision only",
            &complete,
            Some(passed(1)),
            ten_minutes_ago,
            from_start(ten_minutes_ago, true),
        ),
        (
            "paused by a person",
            &paused,
            None,
            ten_minutes_ago,
            Want::Nothing,
        ),
        (
            "the first revision is a creation",
            &first,
            None,
            ten_minutes_ago,
            Want::Nothing,
        ),
        (
            "the revision our rollback made",
            &ours,
            Some(rolled_back),
            ten_minutes_ago,
            Want::Nothing,
        ),
        (
            "a person brought back the release we rolled back",
            &undone,
            Some(rolled_back_settled),
            ten_minutes_ago,
            Want::Nothing,
        ),
    ];
    for (what, d, state, began, expected) in cases {
        let revision = rollout::revision(d.annotations()).unwrap();
        let got = first_sight_start(d, revision, state.as_ref(), began, at(0), WINDOW);
        assert_eq!(want(got), expected, "{what}");
    }
}

/// `d` with its rollout completed at `completed`, as the controller writes it.
fn completed_at(mut d: Deployment, completed: jiff::Timestamp) -> Deployment {
    let condition = &mut d.status.as_mut().unwrap().conditions.as_mut().unwrap()[0];
    condition.last_update_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        completed,
    ));
    d
}

#[test]
fn a_rollout_completed_before_the_window_is_ruled_out_without_reading_its_replica_sets() {
    let complete = deployment(2, "r/app:v2", false, false);
    let rolling = deployment(2, "r/app:v2", true, false);
    let cases = [
        (
            "completed 16 minutes ago",
            completed_at(complete.clone(), at(-16 * 60)),
            false,
        ),
        (
            "completed 5 minutes ago",
            completed_at(complete.clone(), at(-300)),
            true,
        ),
        ("when it completed cannot be told", complete, true),
        ("still rolling out", rolling, true),
    ];
    for (what, d, want) in cases {
        assert_eq!(
            unrecorded_may_be_judged(&d, 2, None, at(0), || WINDOW),
            want,
            "{what}"
        );
    }
    // A recorded revision needs no window.
    let recorded = state(2, Phase::start());
    assert!(!unrecorded_may_be_judged(
        &deployment(2, "r/app:v2", false, false),
        2,
        Some(&recorded),
        at(0),
        || panic!("the window was asked for a recorded revision")
    ));
}

#[test]
fn first_sight_resumes_a_recorded_watch_before_judging_an_unrecorded_one() {
    let rolling = deployment(2, "r/app:v2", true, false);
    let recorded = state(2, Phase::start());
    assert_eq!(
        first_sight_start(&rolling, 2, Some(&recorded), Some(at(-10)), at(0), WINDOW),
        Some((Start::Resume(Box::new(recorded)), true))
    );
    assert_eq!(
        first_sight_start(&rolling, 2, None, None, at(0), WINDOW),
        Some((Start::Fresh, false))
    );
    let complete = deployment(2, "r/app:v2", false, false);
    assert_eq!(
        first_sight_start(&complete, 2, None, None, at(0), WINDOW),
        None
    );
}
