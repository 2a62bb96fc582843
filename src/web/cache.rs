//! A small least-recently-used map for the event display's open files and
//! run indexes (a handful of entries: linear scans are the fastest here).

/// Least-recently-used map of at most `capacity` entries.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    capacity: usize,
    /// Oldest first.
    entries: Vec<(K, V)>,
}

impl<K: PartialEq, V: Clone> Lru<K, V> {
    /// An empty map holding at most `capacity` (at least 1) entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Vec::new(),
        }
    }

    /// The value of `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(i);
        let v = entry.1.clone();
        self.entries.push(entry);
        Some(v)
    }

    /// Insert or replace `key`, evicting the least recently used entry when full.
    pub(crate) fn put(&mut self, key: K, value: V) {
        self.entries.retain(|(k, _)| *k != key);
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut c = Lru::new(2);
        c.put(1, "a");
        c.put(2, "b");
        assert_eq!(c.get(&1), Some("a"));
        c.put(3, "c");
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.get(&3), Some("c"));
        c.put(3, "d");
        assert_eq!(c.get(&3), Some("d"));
    }
}
