//! Race detection for the interpreter's GPU semantics ([`crate::interp::run_gpu`]).
//!
//! A GPU runs a kernel's blocks and threads at once, in no order the code can rely on; the
//! interpreter runs them one after another. So that an in-order run proves the kernel right
//! for every order, each element of a buffer other threads can see (an output parameter, a
//! shared array) remembers which threads wrote and read it. Two threads touching one element,
//! one of them writing, is a race unless a barrier of their block lies between, as on a GPU,
//! where a block barrier orders the block's accesses to shared and global memory alike.
//! Threads of different blocks are never ordered: two blocks touching one element of an
//! output, one writing, is always a race. Reads of input parameters are never raced (nothing
//! writes them), so they are not recorded. A warp barrier counts as a block's (no template
//! emits one yet), and shared arrays start zeroed, where a GPU's hold whatever was there.

use std::collections::HashMap;

/// A thread: its block (the iteration of the kernel's outermost Grid loop) and its index in
/// the block (the iteration of the Thread loop, 0 outside one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Agent {
    /// The block.
    pub block: i64,
    /// The thread in the block.
    pub thread: i64,
}

impl std::fmt::Display for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.thread {
            TENSOR_CORES => write!(f, "block {}'s warpgroup products", self.block),
            t => write!(f, "block {} thread {t}", self.block),
        }
    }
}

/// What stands for a block's warpgroup products reading shared memory (`wgmma`): no thread of
/// the block, so that a write by any of its threads unordered with them races, the product's
/// issuer's own too (the tensor cores read through another proxy than its stores).
pub const TENSOR_CORES: i64 = -2;

/// What stands for "threads of this block, before one of its barriers": ordered before every
/// later access of the block's threads.
const BEFORE_BARRIER: i64 = -1;

impl Agent {
    /// Whether an access by `self` is ordered before one by `now`: the same thread, or the same
    /// block across a barrier.
    fn ordered_before(self, now: Agent) -> bool {
        self == now || (self.thread == BEFORE_BARRIER && self.block == now.block)
    }
}

/// Who has read one element since it was last ordered.
#[derive(Clone, Copy, Debug, Default)]
enum Readers {
    #[default]
    None,
    /// One thread (or a block's threads before a barrier).
    One(Agent),
    /// Several threads: the first and the latest other, and whether all were of one block.
    Many {
        first: Agent,
        last: Agent,
        one_block: bool,
    },
}

/// Who has touched one element since it was last ordered.
#[derive(Clone, Copy, Debug, Default)]
struct Access {
    writer: Option<Agent>,
    readers: Readers,
}

impl Access {
    /// The element's accesses after a barrier of `block`: its threads' are ordered.
    fn after_barrier(&mut self, block: i64) {
        let mark = |a: &mut Agent| {
            if a.block == block {
                a.thread = BEFORE_BARRIER;
            }
        };
        if let Some(w) = self.writer.as_mut() {
            mark(w);
        }
        match &mut self.readers {
            Readers::One(r) => mark(r),
            Readers::Many {
                first,
                one_block: true,
                ..
            } if first.block == block => {
                self.readers = Readers::One(Agent {
                    block,
                    thread: BEFORE_BARRIER,
                });
            }
            _ => {}
        }
    }
}

/// Two threads that touched one element unordered, one of them writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Race {
    /// The buffer.
    pub buffer: usize,
    /// The element.
    pub index: usize,
    /// The thread that touched it first.
    pub first: Agent,
    /// The thread that touched it second.
    pub second: Agent,
}

/// The accesses of one launch.
#[derive(Debug, Default)]
pub struct Races {
    /// Buffers whose accesses are recorded, and whether each is shared (per block).
    tracked: HashMap<usize, bool>,
    accesses: HashMap<(usize, usize), Access>,
    /// The thread now running.
    pub now: Agent,
}

impl Races {
    /// Records accesses to the `outputs` (global) and `shared` buffers.
    pub fn new(
        outputs: impl IntoIterator<Item = usize>,
        shared: impl IntoIterator<Item = usize>,
    ) -> Races {
        let mut tracked: HashMap<usize, bool> = outputs.into_iter().map(|b| (b, false)).collect();
        tracked.extend(shared.into_iter().map(|b| (b, true)));
        Races {
            tracked,
            ..Races::default()
        }
    }

    /// A barrier of the running block (or a new block): its earlier accesses are ordered before
    /// every later one of its threads; shared arrays, which only the block sees, forget them.
    pub fn barrier(&mut self) {
        let (tracked, block) = (&self.tracked, self.now.block);
        self.accesses.retain(|(b, _), a| {
            a.after_barrier(block);
            !tracked.get(b).copied().unwrap_or(false)
        });
    }

    /// The running thread reads element `index` of `buffer`.
    pub fn read(&mut self, buffer: usize, index: usize) -> Result<(), Race> {
        if !self.tracked.contains_key(&buffer) {
            return Ok(());
        }
        let now = self.now;
        let a = self.accesses.entry((buffer, index)).or_default();
        if let Some(w) = a.writer.filter(|w| !w.ordered_before(now)) {
            return Err(race(buffer, index, w, now));
        }
        a.readers = match a.readers {
            Readers::None => Readers::One(now),
            Readers::One(r) if r.ordered_before(now) => Readers::One(now),
            Readers::One(r) => Readers::Many {
                first: r,
                last: now,
                one_block: r.block == now.block,
            },
            Readers::Many {
                first,
                last,
                one_block,
            } => Readers::Many {
                first,
                // Never `first`, so that a write names another thread.
                last: if now == first { last } else { now },
                one_block: one_block && first.block == now.block,
            },
        };
        Ok(())
    }

    /// The running thread writes element `index` of `buffer`.
    pub fn write(&mut self, buffer: usize, index: usize) -> Result<(), Race> {
        if !self.tracked.contains_key(&buffer) {
            return Ok(());
        }
        let now = self.now;
        let a = self.accesses.entry((buffer, index)).or_default();
        if let Some(w) = a.writer.filter(|w| !w.ordered_before(now)) {
            return Err(race(buffer, index, w, now));
        }
        match a.readers {
            Readers::One(r) if !r.ordered_before(now) => return Err(race(buffer, index, r, now)),
            // Several threads read it: at least one is another.
            Readers::Many { first, last, .. } => {
                let other = if first == now { last } else { first };
                return Err(race(buffer, index, other, now));
            }
            _ => {}
        }
        a.writer = Some(now);
        Ok(())
    }
}

fn race(buffer: usize, index: usize, first: Agent, second: Agent) -> Race {
    Race {
        buffer,
        index,
        first,
        second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(block: i64, thread: i64) -> Agent {
        Agent { block, thread }
    }

    #[test]
    fn one_thread_may_read_and_write_its_own_elements() {
        let mut r = Races::new([0], []);
        r.now = at(0, 1);
        assert!(r.read(0, 5).is_ok());
        assert!(r.write(0, 5).is_ok());
        assert!(r.read(0, 5).is_ok());
        r.now = at(0, 2);
        assert!(r.write(0, 6).is_ok());
    }

    #[test]
    fn two_threads_on_one_element_race_unless_both_read() {
        let mut r = Races::new([0], []);
        r.now = at(0, 1);
        assert!(r.read(0, 5).is_ok());
        r.now = at(1, 1);
        assert!(r.read(0, 5).is_ok());
        assert_eq!(
            r.write(0, 5),
            Err(Race {
                buffer: 0,
                index: 5,
                first: at(0, 1),
                second: at(1, 1)
            })
        );
        r.now = at(0, 0);
        assert!(r.write(0, 9).is_ok());
        r.now = at(0, 3);
        assert!(r.read(0, 9).is_err());
    }

    #[test]
    fn a_barrier_orders_its_block_only() {
        let mut r = Races::new([0], [4]);
        r.now = at(0, 1);
        assert!(r.write(0, 1).is_ok());
        assert!(r.write(4, 1).is_ok());
        r.now = at(0, 2);
        assert!(r.read(0, 1).is_err());
        r.barrier();
        assert!(r.read(4, 1).is_ok());
        assert!(r.read(0, 1).is_ok());
        r.now = at(0, 3);
        assert!(r.read(0, 1).is_ok());
        // Threads 2 and 3 read it since the barrier.
        assert!(r.write(0, 1).is_err());
        r.barrier();
        assert!(r.write(0, 1).is_ok());
        // Another block is never ordered with this one, barriers or not.
        r.now = at(1, 0);
        r.barrier();
        assert!(r.read(0, 1).is_err());
        // Untracked buffers (inputs, locals) never race.
        assert!(r.write(2, 1).is_ok());
    }
}
