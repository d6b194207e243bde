//! [`Recent`]: a map that keeps only its newest entries, for what the node
//! remembers per message this run (a delivery's latency) without memory
//! that grows with the history.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// At most `cap` entries; inserting past it forgets the oldest inserted.
#[derive(Debug)]
pub struct Recent<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Recent<K, V> {
    /// An empty map keeping at most `cap` (at least 1) entries.
    pub fn new(cap: usize) -> Self {
        Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Inserts (or replaces) `k`.
    pub fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// The value for `k`, if still remembered.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn keeps_the_newest_and_forgets_the_oldest() {
        let mut r = Recent::new(3);
        for i in 0..10u32 {
            r.insert(i, i * 10);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&6), None);
        assert_eq!(r.get(&9), Some(&90));
        r.insert(9, 91); // a replacement is not a new entry
        assert_eq!((r.len(), r.get(&7)), (3, Some(&70)));
    }
}
