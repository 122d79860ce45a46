//! Copies of constant buffers kept in another memory (a GPU's): what `Launcher::constants`
//! lets a launcher do with the executor's weights, which hold the same bytes from prepare on.
//!
//! The executor names the address ranges that stay constant; a launch argument lying inside
//! one is copied over once and reused at every later launch. When the ranges change, every
//! copy is dropped. An executor clears them (names none) before its prepare steps run, so a
//! new executor's weights, even at addresses a dropped one's had, are never served its
//! copies.

use std::collections::HashMap;

/// Copies of type `B` of the argument ranges `(address, bytes)` that lie in constant memory.
#[derive(Debug)]
pub struct ConstantCache<B> {
    constant: Vec<(usize, usize)>,
    copies: HashMap<(usize, usize), B>,
}

impl<B> Default for ConstantCache<B> {
    fn default() -> ConstantCache<B> {
        ConstantCache {
            constant: Vec::new(),
            copies: HashMap::new(),
        }
    }
}

impl<B> ConstantCache<B> {
    /// The ranges whose bytes stay the same until the next call; other ranges than the last
    /// call's drop every copy.
    pub fn set_constant(&mut self, ranges: &[(usize, usize)]) {
        let mut ranges = ranges.to_vec();
        ranges.sort_unstable();
        if ranges != self.constant {
            self.copies.clear();
            self.constant = ranges;
        }
    }

    /// Whether `len` bytes at `addr` lie inside one constant range.
    pub fn is_constant(&self, addr: usize, len: usize) -> bool {
        let end = addr.saturating_add(len);
        self.constant
            .iter()
            .any(|&(a, n)| a <= addr && end <= a.saturating_add(n))
    }

    /// The copy of `len` bytes at `addr`, made by `copy` the first time, if they are constant
    /// (None: copy them at each use).
    pub fn get<E>(
        &mut self,
        (addr, len): (usize, usize),
        copy: impl FnOnce() -> Result<B, E>,
    ) -> Result<Option<&B>, E> {
        if len == 0 || !self.is_constant(addr, len) {
            return Ok(None);
        }
        let made = match self.copies.entry((addr, len)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(copy()?),
        };
        Ok(Some(made))
    }

    /// How many copies are kept.
    pub fn len(&self) -> usize {
        self.copies.len()
    }

    /// Whether no copy is kept.
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_ranges_are_copied_once() {
        let mut c: ConstantCache<Vec<u8>> = ConstantCache::default();
        c.set_constant(&[(1000, 100)]);
        let mut copies = 0;
        for _ in 0..3 {
            let got = c.get::<()>((1010, 20), || {
                copies += 1;
                Ok(vec![7; 20])
            });
            assert_eq!(got, Ok(Some(&vec![7; 20])));
        }
        assert_eq!(copies, 1);
        // Not inside a constant range: copied at each use, never kept.
        assert_eq!(c.get::<()>((1090, 20), || Ok(vec![0])), Ok(None));
        assert_eq!(c.get::<()>((5000, 8), || Ok(vec![0])), Ok(None));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn other_ranges_drop_every_copy() {
        let mut c: ConstantCache<u32> = ConstantCache::default();
        c.set_constant(&[(0, 64), (128, 64)]);
        assert_eq!(c.get::<()>((0, 64), || Ok(1)), Ok(Some(&1)));
        // The same ranges in another order keep the copies.
        c.set_constant(&[(128, 64), (0, 64)]);
        assert_eq!(c.len(), 1);
        // Other weights, perhaps at the same address: the old copy is never served.
        c.set_constant(&[(0, 64)]);
        assert!(c.is_empty());
        assert_eq!(c.get::<()>((0, 64), || Ok(2)), Ok(Some(&2)));
        // A failed copy keeps nothing.
        c.set_constant(&[(0, 32)]);
        assert_eq!(c.get((0, 32), || Err("no memory")), Err("no memory"));
        assert!(c.is_empty());
    }
}
