//! Which keys changed since a generation, for readers that only want to redo the work of what
//! changed (the traffic model reads a Deployment's ready pods again only when they may differ).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// The latest change of each key, numbered: a reader remembers the generation it last saw and
/// asks for the keys changed after it. Memory is one entry per key ever marked.
#[derive(Debug)]
pub struct ChangeLog<K> {
    generation: u64,
    latest: HashMap<K, u64>,
    by_generation: BTreeMap<u64, K>,
}

impl<K> Default for ChangeLog<K> {
    fn default() -> Self {
        ChangeLog {
            generation: 0,
            latest: HashMap::new(),
            by_generation: BTreeMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> ChangeLog<K> {
    /// Records that `key` changed now.
    pub fn mark(&mut self, key: &K) {
        self.generation += 1;
        let generation = self.generation;
        match self.latest.get_mut(key) {
            Some(previous) => {
                let old = std::mem::replace(previous, generation);
                if let Some(k) = self.by_generation.remove(&old) {
                    self.by_generation.insert(generation, k);
                }
            }
            None => {
                self.latest.insert(key.clone(), generation);
                self.by_generation.insert(generation, key.clone());
            }
        }
    }

    /// The generation of the latest change (0 before any).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The keys changed after `generation`, oldest change first.
    pub fn since(&self, generation: u64) -> Vec<K> {
        self.by_generation
            .range(generation.saturating_add(1)..)
            .map(|(_, k)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_each_key_changed_after_its_generation_once() {
        let mut log = ChangeLog::default();
        assert!(log.since(0).is_empty());
        log.mark(&"a");
        log.mark(&"b");
        let seen = log.generation();
        log.mark(&"a");
        log.mark(&"a");
        assert_eq!(log.since(0), vec!["b", "a"]);
        assert_eq!(log.since(seen), vec!["a"]);
        assert!(log.since(log.generation()).is_empty());
    }
}
