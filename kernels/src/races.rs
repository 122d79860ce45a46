//! Race detection for the interpreter's GPU semantics ([`crate::interp::run_gpu`]).
//!
//! A GPU runs a kernel's blocks and threads at once, in no order the code can rely on; the
//! interpreter runs them one after another. So that an in-order run proves the kernel right
//! for every order, each element of a buffer other threads can see (an output parameter, a
//! shared array) remembers which thread wrote it and which read it. Two threads touching one
//! element, one of them writing, is a race unless a barrier of their block lies between: for
//! shared arrays. For output parameters every such pair counts, barrier or not (stricter than a
//! GPU, where a block barrier orders global memory too; no template relies on that). Reads of
//! input parameters are never raced (nothing writes them), so they are not recorded. A warp
//! barrier counts as a block's (no template emits one yet), and shared arrays start zeroed,
//! where a GPU's hold whatever was there.

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
        write!(f, "block {} thread {}", self.block, self.thread)
    }
}

/// Who has touched one element since it was last ordered.
#[derive(Clone, Copy, Debug, Default)]
struct Access {
    writer: Option<Agent>,
    reader: Option<Agent>,
    /// More than one thread has read it.
    readers: bool,
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

    /// A barrier of the running block (or a new block): its shared arrays' earlier accesses
    /// are ordered before every later one.
    pub fn barrier(&mut self) {
        let tracked = &self.tracked;
        self.accesses
            .retain(|(b, _), _| !tracked.get(b).copied().unwrap_or(false));
    }

    /// The running thread reads element `index` of `buffer`.
    pub fn read(&mut self, buffer: usize, index: usize) -> Result<(), Race> {
        if !self.tracked.contains_key(&buffer) {
            return Ok(());
        }
        let now = self.now;
        let a = self.accesses.entry((buffer, index)).or_default();
        if let Some(w) = a.writer.filter(|w| *w != now) {
            return Err(race(buffer, index, w, now));
        }
        match a.reader {
            None => a.reader = Some(now),
            Some(r) if r != now => a.readers = true,
            Some(_) => {}
        }
        Ok(())
    }

    /// The running thread writes element `index` of `buffer`.
    pub fn write(&mut self, buffer: usize, index: usize) -> Result<(), Race> {
        if !self.tracked.contains_key(&buffer) {
            return Ok(());
        }
        let now = self.now;
        let a = self.accesses.entry((buffer, index)).or_default();
        if let Some(w) = a.writer.filter(|w| *w != now) {
            return Err(race(buffer, index, w, now));
        }
        if let Some(r) = a.reader.filter(|r| *r != now || a.readers) {
            return Err(race(buffer, index, r, now));
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
    fn a_barrier_orders_shared_arrays_only() {
        let mut r = Races::new([0], [4]);
        r.now = at(0, 1);
        assert!(r.write(0, 1).is_ok());
        assert!(r.write(4, 1).is_ok());
        r.barrier();
        r.now = at(0, 2);
        assert!(r.read(4, 1).is_ok());
        assert!(r.read(0, 1).is_err());
        // Untracked buffers (inputs, locals) never race.
        assert!(r.write(2, 1).is_ok());
    }
}
