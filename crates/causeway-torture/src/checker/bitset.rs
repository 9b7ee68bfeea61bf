//! A growable bit set: the strict causal ancestors of one write among the
//! writes of its key (indexed by the order they were invoked).

/// Set of small integers.
#[derive(Debug, Clone, Default)]
pub struct BitSet(Vec<u64>);

impl BitSet {
    /// Adds `i`.
    pub fn insert(&mut self, i: u32) {
        let w = (i / 64) as usize;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }

    /// True when `i` is in the set.
    pub fn contains(&self, i: u32) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &BitSet) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_union() {
        let mut a = BitSet::default();
        a.insert(3);
        a.insert(130);
        let mut b = BitSet::default();
        b.insert(64);
        b.union_with(&a);
        for i in [3, 64, 130] {
            assert!(b.contains(i), "{i}");
        }
        assert!(!b.contains(4));
        assert!(!b.contains(10_000));
        assert!(!a.contains(64));
    }
}
