//! The daemon's live picture: sessions publish their rollout's view, the status page and
//! `/api/v1/rollouts` read it. In memory only; the cluster keeps the record.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Report, RolloutView, VerdictView};

/// Verdicts kept for the page.
const RECENT: usize = 50;
/// Points kept per chart: a long window at a short interval is thinned to this many.
pub const MAX_POINTS: usize = 600;

#[derive(Default)]
struct State {
    live: BTreeMap<(String, String), (u64, RolloutView)>,
    /// The last view of each Deployment whose watch ended.
    ended: BTreeMap<(String, String), RolloutView>,
    recent: VecDeque<VerdictView>,
    next_id: u64,
    findings: Vec<crate::doctor::Finding>,
}

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct Board {
    state: Arc<Mutex<State>>,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session's place on the board; dropping it moves the rollout to the ended ones.
    pub fn entry(&self, view: RolloutView) -> Entry {
        let key = (view.namespace.clone(), view.name.clone());
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.ended.remove(&key);
        s.live.insert(key.clone(), (id, view));
        Entry {
            board: self.clone(),
            key,
            id,
        }
    }

    /// What the page and `/api/v1/rollouts` show.
    pub fn report(&self, now: jiff::Timestamp) -> Report {
        let s = self.lock();
        let mut rollouts: Vec<RolloutView> = s.live.values().map(|(_, v)| v.clone()).collect();
        rollouts.extend(s.ended.values().cloned());
        for v in &mut rollouts {
            if let Some(w) = v.window_seconds {
                v.set_window(std::time::Duration::from_secs(w), now);
            }
        }
        Report {
            rollouts,
            recent: s.recent.iter().cloned().collect(),
            findings: s.findings.clone(),
        }
    }

    /// The start-up checks' findings, shown beside the rollouts.
    pub fn set_findings(&self, findings: Vec<crate::doctor::Finding>) {
        self.lock().findings = findings;
    }

    /// The start-up checks' findings (empty until they are done).
    pub fn findings(&self) -> Vec<crate::doctor::Finding> {
        self.lock().findings.clone()
    }
}

/// One session's handle on the board.
pub struct Entry {
    board: Board,
    key: (String, String),
    id: u64,
}

impl Entry {
    /// Changes this rollout's view.
    pub fn update(&self, f: impl FnOnce(&mut RolloutView)) {
        let mut s = self.board.lock();
        if let Some((id, v)) = s.live.get_mut(&self.key)
            && *id == self.id
        {
            f(v);
        }
    }

    /// Adds a verdict to the recent ones.
    pub fn verdict(&self, v: VerdictView) {
        let mut s = self.board.lock();
        s.recent.push_front(v);
        s.recent.truncate(RECENT);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut s = self.board.lock();
        if s.live.get(&self.key).is_some_and(|(id, _)| *id == self.id)
            && let Some((_, view)) = s.live.remove(&self.key)
        {
            s.ended.insert(self.key.clone(), view);
        }
    }
}

/// Adds a chart point, thinning the series to [`MAX_POINTS`] by dropping every other point.
pub fn push_point(series: &mut Vec<super::RatePoint>, p: super::RatePoint) {
    series.push(p);
    if series.len() > MAX_POINTS {
        let mut i = 0;
        series.retain(|_| {
            i += 1;
            i % 2 == 1
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::record::RolloutState;

    fn view(name: &str) -> RolloutView {
        super::super::view_of_state("ns", name, &RolloutState::test(2))
    }

    #[test]
    fn an_ended_session_stays_on_the_board_until_a_new_one_replaces_it() {
        let board = Board::default();
        let a = board.entry(view("a"));
        a.update(|v| v.phase = "watching".into());
        assert_eq!(
            board.report(jiff::Timestamp::UNIX_EPOCH).rollouts[0].phase,
            "watching"
        );
        let newer = board.entry(view("a"));
        // The older session's updates and end no longer touch the newer one.
        a.update(|v| v.phase = "superseded".into());
        drop(a);
        let r = board.report(jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(r.rollouts.len(), 1);
        assert_eq!(r.rollouts[0].phase, "rolling_out");
        newer.update(|v| v.phase = "passed".into());
        drop(newer);
        let r = board.report(jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(r.rollouts.len(), 1);
        assert_eq!(r.rollouts[0].phase, "passed");
    }

    #[test]
    fn a_long_series_is_thinned_not_cut() {
        let mut s = Vec::new();
        for i in 0..(MAX_POINTS * 3) {
            push_point(
                &mut s,
                super::super::RatePoint {
                    t: i as f64,
                    ratio: 0.0,
                },
            );
        }
        assert!(s.len() <= MAX_POINTS && s.len() > MAX_POINTS / 4);
        assert_eq!(s[0].t, 0.0);
        assert!(s.last().is_some_and(|p| p.t > (MAX_POINTS * 2) as f64));
    }
}
