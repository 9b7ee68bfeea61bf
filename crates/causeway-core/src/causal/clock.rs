//! Vector clocks and dependency sets.
//!
//! An [`Origin`] names one replica in one view epoch (a fresh random number per data
//! directory and epoch, so a wiped or re-sharded replica never reuses a counter). Each
//! origin numbers its writes 1, 2, 3, ...; a [`Dot`] is one such write.
//!
//! A replica's [`VClock`] entry `clock[o] = n` means: "for every write of `o` numbered
//! up to `n`, I hold that write or a version that supersedes it". Clocks only grow.
//!
//! [`Deps`] is what a client (or a stored version) depends on, grouped by the shard the
//! writes belong to, because only the replicas of a key's shard can have written it.
//! Both structures are kept as small sorted vectors: they are compared and joined on
//! every request and stored with every version, so compactness matters more than
//! asymptotics (they hold a handful of entries).

use serde::{Deserialize, Serialize};

/// One replica in one view epoch.
pub type Origin = u64;
/// A shard number within a view (shard ids "1", "2", ... are `ShardNo` 1, 2, ...).
pub type ShardNo = u32;

/// One write: the origin that accepted it and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dot {
    pub origin: Origin,
    pub counter: u64,
}

/// A vector clock: origin -> highest counter, sorted by origin, no zero entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VClock(Vec<(Origin, u64)>);

impl VClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counter for `origin` (0 when absent).
    pub fn get(&self, origin: Origin) -> u64 {
        match self.0.binary_search_by_key(&origin, |e| e.0) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Raises `origin` to at least `counter`.
    pub fn raise(&mut self, origin: Origin, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.0.binary_search_by_key(&origin, |e| e.0) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(counter),
            Err(i) => self.0.insert(i, (origin, counter)),
        }
    }

    /// True when this clock holds `dot`.
    pub fn contains(&self, dot: Dot) -> bool {
        self.get(dot.origin) >= dot.counter
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VClock) {
        for &(o, c) in &other.0 {
            self.raise(o, c);
        }
    }

    /// True when every entry of `other` is covered by `self`.
    pub fn covers(&self, other: &VClock) -> bool {
        other.0.iter().all(|&(o, c)| self.get(o) >= c)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Origin, u64)> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl FromIterator<(Origin, u64)> for VClock {
    fn from_iter<T: IntoIterator<Item = (Origin, u64)>>(iter: T) -> Self {
        let mut c = VClock::new();
        for (o, n) in iter {
            c.raise(o, n);
        }
        c
    }
}

/// Dependencies grouped by shard: shard -> clock, sorted by shard, no empty clocks.
///
/// Every stored version carries one, and most are empty, so an empty `Deps` is a
/// single null pointer (8 bytes instead of a `Vec`'s 24): at a million keys that is
/// about 25 MB less resident memory. Serialized exactly as a sequence of entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
// The box is the point: `Option<Box<Vec>>` is 8 bytes, `Vec` 24.
#[allow(clippy::box_collection)]
pub struct Deps(Option<Box<Vec<(ShardNo, VClock)>>>);

impl Deps {
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> &[(ShardNo, VClock)] {
        self.0.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }

    fn entries_mut(&mut self) -> &mut Vec<(ShardNo, VClock)> {
        self.0.get_or_insert_with(Default::default)
    }

    /// Keeps the invariant that an empty `Deps` holds no allocation (so `==` works).
    fn tidy(&mut self) {
        if self.0.as_ref().is_some_and(|v| v.is_empty()) {
            self.0 = None;
        }
    }

    /// The clock of `shard` (empty when absent).
    pub fn shard(&self, shard: ShardNo) -> Option<&VClock> {
        let e = self.entries();
        e.binary_search_by_key(&shard, |e| e.0)
            .ok()
            .map(|i| &e[i].1)
    }

    /// Joins `clock` into the entry of `shard`.
    pub fn join_shard(&mut self, shard: ShardNo, clock: &VClock) {
        if clock.is_empty() {
            return;
        }
        let e = self.entries_mut();
        match e.binary_search_by_key(&shard, |e| e.0) {
            Ok(i) => e[i].1.join(clock),
            Err(i) => e.insert(i, (shard, clock.clone())),
        }
    }

    /// Adds one write of `shard`.
    pub fn add(&mut self, shard: ShardNo, dot: Dot) {
        let e = self.entries_mut();
        match e.binary_search_by_key(&shard, |e| e.0) {
            Ok(i) => e[i].1.raise(dot.origin, dot.counter),
            Err(i) => {
                let mut c = VClock::new();
                c.raise(dot.origin, dot.counter);
                e.insert(i, (shard, c));
            }
        }
        self.tidy();
    }

    /// Drops `origin` from the clock of `shard`.
    pub fn remove(&mut self, shard: ShardNo, origin: Origin) {
        let Some(e) = self.0.as_deref_mut() else {
            return;
        };
        if let Ok(i) = e.binary_search_by_key(&shard, |e| e.0) {
            let c = &mut e[i].1;
            if let Ok(j) = c.0.binary_search_by_key(&origin, |e| e.0) {
                c.0.remove(j);
            }
            if c.is_empty() {
                e.remove(i);
            }
        }
        self.tidy();
    }

    /// Pointwise join of every shard's clock.
    pub fn join(&mut self, other: &Deps) {
        for (s, c) in other.entries() {
            self.join_shard(*s, c);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (ShardNo, &VClock)> + '_ {
        self.entries().iter().map(|(s, c)| (*s, c))
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

impl Serialize for Deps {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.entries())
    }
}

impl<'de> Deserialize<'de> for Deps {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let entries = Vec::<(ShardNo, VClock)>::deserialize(de)?;
        Ok(entries.into_iter().collect())
    }
}

impl FromIterator<(ShardNo, VClock)> for Deps {
    fn from_iter<T: IntoIterator<Item = (ShardNo, VClock)>>(iter: T) -> Self {
        let mut d = Deps::new();
        for (s, c) in iter {
            d.join_shard(s, &c);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clock() -> impl Strategy<Value = VClock> {
        proptest::collection::vec((0u64..5, 0u64..10), 0..6).prop_map(VClock::from_iter)
    }

    #[test]
    fn get_raise_contains() {
        let mut c = VClock::new();
        assert_eq!(c.get(7), 0);
        c.raise(7, 3);
        c.raise(7, 2);
        c.raise(1, 0);
        assert_eq!(c.get(7), 3);
        assert_eq!(c.len(), 1, "zero entries are never stored");
        assert!(c.contains(Dot {
            origin: 7,
            counter: 3
        }));
        assert!(!c.contains(Dot {
            origin: 7,
            counter: 4
        }));
        assert!(!c.contains(Dot {
            origin: 8,
            counter: 1
        }));
    }

    #[test]
    fn deps_group_by_shard() {
        let mut d = Deps::new();
        d.add(
            2,
            Dot {
                origin: 5,
                counter: 4,
            },
        );
        d.add(
            1,
            Dot {
                origin: 9,
                counter: 1,
            },
        );
        d.add(
            2,
            Dot {
                origin: 5,
                counter: 2,
            },
        );
        assert_eq!(d.shard(2).unwrap().get(5), 4);
        assert_eq!(d.shard(1).unwrap().get(9), 1);
        assert!(d.shard(3).is_none());
        assert_eq!(d.iter().map(|(s, _)| s).collect::<Vec<_>>(), vec![1, 2]);
    }

    proptest! {
        #[test]
        fn join_is_a_semilattice(a in clock(), b in clock(), c in clock()) {
            let j = |x: &VClock, y: &VClock| { let mut r = x.clone(); r.join(y); r };
            prop_assert_eq!(j(&a, &b), j(&b, &a));
            prop_assert_eq!(j(&j(&a, &b), &c), j(&a, &j(&b, &c)));
            prop_assert_eq!(j(&a, &a), a.clone());
            let ab = j(&a, &b);
            prop_assert!(ab.covers(&a) && ab.covers(&b));
        }

        #[test]
        fn covers_is_pointwise(a in clock(), b in clock()) {
            let expected = (0..5).all(|o| a.get(o) >= b.get(o));
            prop_assert_eq!(a.covers(&b), expected);
        }
    }
}
