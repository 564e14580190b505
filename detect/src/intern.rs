//! Service names to dense `u32` ids, so hot paths hash and compare integers, not strings.

use std::sync::Arc;

/// Interned names: `id → name` and `name → id`, plus each name's rank in sorted order.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: foldhash::HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
    /// `ranks[id]` = position of the name in sorted order, for sorting pairs by name with
    /// integer compares; recomputed when names were added.
    ranks: Vec<u32>,
}

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
        let id = self.names.len() as u32;
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, id);
        id
    }

    /// The name of `id`.
    pub(crate) fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// Ranks by name, `ranks()[id]`, current for every id handed out so far.
    pub(crate) fn ranks(&mut self) -> &[u32] {
        if self.ranks.len() != self.names.len() {
            let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
            order.sort_unstable_by(|&a, &b| self.names[a as usize].cmp(&self.names[b as usize]));
            self.ranks = vec![0; order.len()];
            for (rank, id) in order.into_iter().enumerate() {
                self.ranks[id as usize] = rank as u32;
            }
        }
        &self.ranks
    }
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
