//! Service names to dense `u32` ids, so hot paths hash and compare integers, not strings.
//!
//! Names that left every window are freed ([`Interner::retain`]) and their ids reused, so a
//! landscape whose names churn (pods, client-chosen hosts) does not grow the table without
//! bound.

use std::sync::{Arc, LazyLock};

/// What a freed id's slot holds until it is reused.
static FREED: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// Interned names: `id → name` and `name → id`.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: foldhash::HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
    /// Ids freed by [`Interner::retain`], reused first.
    free: Vec<u32>,
    /// Live names after the last [`Interner::retain`] (the next one is due at twice as many).
    live_after_retain: usize,
}

/// Names below this many are never worth a collection.
const MIN_COLLECT: usize = 4_096;

impl Interner {
    /// The id of `name`, interning it on first sight.
    #[inline]
    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        self.insert(Arc::from(name))
    }

    /// The id of `name`, sharing its allocation on first sight.
    pub(crate) fn intern_arc(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.ids.get(&**name) {
            return id;
        }
        self.insert(Arc::clone(name))
    }

    fn insert(&mut self, name: Arc<str>) -> u32 {
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Arc::clone(&name);
                id
            }
            None => {
                self.names.push(Arc::clone(&name));
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(name, id);
        id
    }

    /// The name of `id`.
    pub(crate) fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// Names interned and not freed.
    pub(crate) fn len(&self) -> usize {
        self.names.len() - self.free.len()
    }

    /// Whether a collection is due: twice as many names as the last one kept (and at least
    /// [`MIN_COLLECT`]), so that collections cost O(1) amortized per name interned.
    pub(crate) fn collection_due(&self) -> bool {
        self.len() >= MIN_COLLECT.max(2 * self.live_after_retain)
    }

    /// The id space (`0..id_bound()`), for marking live ids.
    pub(crate) fn id_bound(&self) -> usize {
        self.names.len()
    }

    /// Frees every name whose id is not marked in `live` (indexed by id, at least
    /// [`Interner::id_bound`] long); their ids are reused by later names.
    pub(crate) fn retain(&mut self, live: &[bool]) {
        for (id, (slot, &live)) in self.names.iter_mut().zip(live).enumerate() {
            if !live && !Arc::ptr_eq(slot, &FREED) {
                let name = std::mem::replace(slot, Arc::clone(&FREED));
                self.ids.remove(&name);
                self.free.push(id as u32);
            }
        }
        self.ids.shrink_to(self.ids.len() * 2);
        self.live_after_retain = self.len();
    }
}

/// Marks both ids of `key` (a [`pair_key`]) in `live`.
#[inline]
pub(crate) fn mark_pair(live: &mut [bool], key: u64) {
    let (s, d) = pair_ids(key);
    live[s as usize] = true;
    live[d as usize] = true;
}

/// The key of a pair of ids in hash maps.
#[inline]
pub(crate) fn pair_key(source: u32, destination: u32) -> u64 {
    (u64::from(source) << 32) | u64::from(destination)
}

/// The ids of a [`pair_key`].
#[inline]
pub(crate) fn pair_ids(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_names_are_forgotten_and_their_ids_reused() {
        let mut i = Interner::default();
        let a = i.intern("a");
        let b = i.intern("b");
        let c = i.intern("c");
        let mut live = vec![false; i.id_bound()];
        live[b as usize] = true;
        i.retain(&live);
        assert_eq!(i.len(), 1);
        assert_eq!(&**i.name(b), "b");
        assert_eq!(i.intern("b"), b, "kept names keep their id");
        // new names take the freed ids; the old names are gone
        let d = i.intern("d");
        let e = i.intern("e");
        let mut reused = [d, e];
        reused.sort_unstable();
        let mut freed = [a, c];
        freed.sort_unstable();
        assert_eq!(reused, freed);
        assert_eq!(&**i.name(d), "d");
        assert_eq!(i.id_bound(), 3);
        assert_ne!(i.intern("a"), b);
        assert_eq!(i.len(), 4);
    }
}
