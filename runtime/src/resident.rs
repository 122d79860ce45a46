//! Launch arguments kept in another memory (a GPU's) from one launch to the next.
//!
//! The executor hands a launcher host buffers ([`Arg`]s). A launcher whose kernels address
//! another memory stages each argument there through a [`Resident`]:
//! - **the run's arena** has one mirror there, at the same offsets. An output a kernel writes
//!   stays where the next kernel reads it, and crosses back only when the executor fetches it
//!   ([`Launcher::fetch`]); the inputs the executor stores in the arena cross when it says so
//!   ([`Launcher::stored`]). Copying every buffer over and back at each launch cost more than
//!   the kernels;
//! - **weights**, the executor's constant ranges, are copied once and kept
//!   ([`ConstantCache`]);
//! - **other read-only arguments** (inputs read in place, a generation's State) are copied once
//!   per run: no step writes them (`Executor`'s `check_writes`);
//! - **anything else** (a prepare step's output, which lies outside any arena) is copied over
//!   for its launch and back after it.
//!
//! The mirror's bytes, like the host arena's, are unspecified when a run starts: every kernel
//! writes a buffer's elements before any kernel reads them.
//!
//! [`HostMemory`] is a "device" of separate host allocations: the GPU simulator stages its
//! arguments through it, so the suite's simulated runs check this staging (a forgotten upload
//! or fetch gives wrong outputs there).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ptr::NonNull;

use crate::constants::ConstantCache;
use crate::{Arg, Copies, LaunchError};

/// Memory that kernels address and the host reaches only by copies.
pub trait DeviceMemory {
    /// One allocation, freed when dropped.
    type Buffer;

    /// `bytes` bytes (at least one is allocated), their values unspecified.
    fn alloc(&self, bytes: usize) -> Result<Self::Buffer, LaunchError>;

    /// Copies `src` into `dst` from its byte `at` (inside it: the caller checks).
    fn upload(&self, dst: &mut Self::Buffer, at: usize, src: &[u8]) -> Result<(), LaunchError>;

    /// Copies `dst.len()` bytes of `src` from its byte `at` into `dst`, complete on return.
    fn download(&self, src: &Self::Buffer, at: usize, dst: &mut [u8]) -> Result<(), LaunchError>;

    /// The address at which kernels reach the buffer's first byte.
    fn address(&self, b: &Self::Buffer) -> u64;
}

/// The arena in the other memory: `host` is the running executor's `(address, bytes)`, none
/// between runs; `buffer` holds `bytes`, kept for the next run.
struct Mirror<B> {
    host: Option<(usize, usize)>,
    buffer: B,
    bytes: usize,
}

/// A launch's arguments in the other memory: their addresses there, and the copies made for
/// this launch alone (by argument), which go back to the host after it where written.
pub struct Staged<B> {
    /// By argument, in the launch's order.
    pub addresses: Vec<u64>,
    temps: Vec<(usize, B)>,
}

impl<B> Staged<B> {
    /// Whether the launch has copies of its own, which must outlive it (and go back after it).
    pub fn has_copies(&self) -> bool {
        !self.temps.is_empty()
    }
}

/// The copies a launcher keeps in another memory (see the module doc).
pub struct Resident<M: DeviceMemory> {
    memory: M,
    constants: ConstantCache<M::Buffer>,
    arena: Option<Mirror<M::Buffer>>,
    /// Read-only arguments outside the arena and the constants, copied once this run.
    run_inputs: HashMap<(usize, usize), M::Buffer>,
    /// The last run's, by the same keys: an argument at the same host address and length
    /// this run gets its copy's memory again, so that its device address stays the same (a
    /// GPU's batches are replayed as graphs only when every address is as captured).
    spare: HashMap<(usize, usize), M::Buffer>,
}

impl<M: DeviceMemory> Resident<M> {
    /// Nothing kept yet, in `memory`.
    pub fn new(memory: M) -> Resident<M> {
        Resident {
            memory,
            constants: ConstantCache::default(),
            arena: None,
            run_inputs: HashMap::new(),
            spare: HashMap::new(),
        }
    }

    /// The memory the copies are in.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// See [`Copies::constants`].
    pub fn set_constant(&mut self, ranges: &[(usize, usize)]) {
        self.constants.set_constant(ranges);
    }

    /// A run begins with its arena `arena`, or a run ends (`None`; the prepare steps run
    /// outside any): the last run's read-only copies are kept only for their memory (the next
    /// run copies its arguments into them again), and no argument maps to the
    /// mirror until the next run names its arena, since the host may free or reuse that
    /// memory meanwhile. The mirror's memory is kept while it is large enough.
    pub fn set_arena(&mut self, arena: Option<&[u8]>) -> Result<(), LaunchError> {
        // A run's end keeps its copies' memory for the next; what that run does not take
        // again is freed at its end.
        if !self.run_inputs.is_empty() {
            self.spare = std::mem::take(&mut self.run_inputs);
        }
        if let Some(m) = &mut self.arena {
            m.host = None;
        }
        let Some(a) = arena else {
            return Ok(());
        };
        let host = (a.as_ptr() as usize, a.len());
        if self.arena.as_ref().is_none_or(|m| m.bytes < host.1) {
            // Freed first: the old and the new mirror are never held at once.
            self.arena = None;
            let bytes = host.1.max(1);
            let buffer = self.memory.alloc(bytes)?;
            self.arena = Some(Mirror {
                host: None,
                buffer,
                bytes,
            });
        }
        if let Some(m) = &mut self.arena {
            m.host = Some(host);
        }
        Ok(())
    }

    /// Where `len` bytes at host address `addr` lie in the arena's mirror, if they do. An
    /// empty buffer's address must lie inside too: a kernel may load from it at a clamped
    /// index (`launcher::arguments`).
    fn in_arena(&self, addr: usize, len: usize) -> Option<usize> {
        let (base, bytes) = self.arena.as_ref()?.host?;
        let at = addr.checked_sub(base)?;
        let end = at.checked_add(len)?;
        (end <= bytes && at < bytes).then_some(at)
    }

    /// The executor wrote `bytes` (in the arena: elsewhere nothing is kept to update).
    pub fn stored(&mut self, bytes: &[u8]) -> Result<(), LaunchError> {
        let at = self.in_arena(bytes.as_ptr() as usize, bytes.len());
        match (at, &mut self.arena) {
            (Some(at), Some(m)) if !bytes.is_empty() => {
                self.memory.upload(&mut m.buffer, at, bytes)
            }
            _ => Ok(()),
        }
    }

    /// The kernels' values of `bytes` (in the arena: elsewhere the host's are current).
    pub fn fetch(&mut self, bytes: &mut [u8]) -> Result<(), LaunchError> {
        let at = self.in_arena(bytes.as_ptr() as usize, bytes.len());
        match (at, &self.arena) {
            (Some(at), Some(m)) if !bytes.is_empty() => self.memory.download(&m.buffer, at, bytes),
            _ => Ok(()),
        }
    }

    /// The other memory's copies of `args` for one launch (see the module doc).
    pub fn stage(&mut self, args: &[Arg<'_>]) -> Result<Staged<M::Buffer>, LaunchError> {
        let mut staged = Staged {
            addresses: Vec::with_capacity(args.len()),
            temps: Vec::new(),
        };
        for (i, a) in args.iter().enumerate() {
            let (addr, len) = (a.addr(), a.len());
            if let (Some(at), Some(m)) = (self.in_arena(addr, len), &self.arena) {
                staged
                    .addresses
                    .push(self.memory.address(&m.buffer) + at as u64);
                continue;
            }
            let address = match a {
                Arg::In(b) => self.kept(b)?,
                Arg::Out(_) => None,
            };
            if let Some(address) = address {
                staged.addresses.push(address);
                continue;
            }
            let bytes: &[u8] = match a {
                Arg::In(b) => b,
                Arg::Out(b) => b,
            };
            staged.addresses.push(0);
            staged.temps.push((i, self.copy(bytes)?));
        }
        for (i, t) in &staged.temps {
            staged.addresses[*i] = self.memory.address(t);
        }
        Ok(staged)
    }

    /// The address of a kept copy of read-only `b`: a weight's, or this run's.
    fn kept(&mut self, b: &[u8]) -> Result<Option<u64>, LaunchError> {
        if b.is_empty() {
            return Ok(None);
        }
        let key = (b.as_ptr() as usize, b.len());
        let Resident {
            memory,
            constants,
            arena,
            run_inputs,
            spare,
        } = self;
        if let Some(c) = constants.get(key, || copy(memory, b))? {
            return Ok(Some(memory.address(c)));
        }
        if arena.as_ref().is_none_or(|m| m.host.is_none()) {
            return Ok(None);
        }
        let c = match run_inputs.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match spare.remove(&key) {
                Some(mut again) => {
                    memory.upload(&mut again, 0, b)?;
                    e.insert(again)
                }
                None => e.insert(copy(memory, b)?),
            },
        };
        Ok(Some(memory.address(c)))
    }

    fn copy(&self, bytes: &[u8]) -> Result<M::Buffer, LaunchError> {
        copy(&self.memory, bytes)
    }

    /// Copies the written arguments' copies of this launch back into `args`.
    pub fn finish(
        &self,
        args: &mut [Arg<'_>],
        staged: Staged<M::Buffer>,
    ) -> Result<(), LaunchError> {
        for (i, t) in &staged.temps {
            if let Some(Arg::Out(out)) = args.get_mut(*i) {
                if !out.is_empty() {
                    self.memory.download(t, 0, out)?;
                }
            }
        }
        Ok(())
    }
}

impl<M: DeviceMemory> Copies for RefCell<Resident<M>> {
    fn constants(&self, ranges: &[(usize, usize)]) -> Result<(), LaunchError> {
        self.borrow_mut().set_constant(ranges);
        Ok(())
    }

    fn arena(&self, arena: Option<&[u8]>) -> Result<(), LaunchError> {
        self.borrow_mut().set_arena(arena)
    }

    fn stored(&self, bytes: &[u8]) -> Result<(), LaunchError> {
        self.borrow_mut().stored(bytes)
    }

    fn fetch(&self, bytes: &mut [u8]) -> Result<(), LaunchError> {
        self.borrow_mut().fetch(bytes)
    }
}

/// A new buffer holding `bytes` (one byte, unspecified, when there are none).
fn copy<M: DeviceMemory>(memory: &M, bytes: &[u8]) -> Result<M::Buffer, LaunchError> {
    let mut b = memory.alloc(bytes.len().max(1))?;
    if !bytes.is_empty() {
        memory.upload(&mut b, 0, bytes)?;
    }
    Ok(b)
}

/// Host allocations standing for a GPU's memory (the simulator's): kernels get their
/// addresses, as a GPU's kernels get device addresses, and reach them as host slices through
/// [`Resident::with_host_args`].
#[derive(Debug, Default)]
pub struct HostMemory;

/// One allocation of [`HostMemory`]: 8-byte words, owned through a raw pointer so that the
/// slices a launch makes of it may write (see `with_host_args`).
pub struct HostBuffer {
    words: NonNull<[u64]>,
}

impl HostBuffer {
    /// The address of its byte `at`, with `len` bytes inside it from there.
    fn span(&self, at: usize, len: usize) -> Result<*mut u8, LaunchError> {
        let bytes = self.words.len() * 8;
        match at.checked_add(len) {
            // SAFETY: `at` is inside the allocation (or one past it, when `len` is 0).
            Some(end) if end <= bytes => Ok(unsafe { self.words.as_ptr().cast::<u8>().add(at) }),
            _ => Err(LaunchError::Backend(format!(
                "a copy of {len} bytes at byte {at} of a {bytes}-byte device buffer"
            ))),
        }
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: `words` came from `Box::into_raw` in `HostMemory::alloc` and is freed once.
        drop(unsafe { Box::from_raw(self.words.as_ptr()) });
    }
}

impl DeviceMemory for HostMemory {
    type Buffer = HostBuffer;

    fn alloc(&self, bytes: usize) -> Result<HostBuffer, LaunchError> {
        let n = bytes.max(1).div_ceil(8);
        let mut v: Vec<u64> = Vec::new();
        v.try_reserve_exact(n).map_err(|_| {
            LaunchError::Backend(format!(
                "{bytes} bytes of device memory cannot be allocated"
            ))
        })?;
        // Filled with NaN bits: a kernel reading what no one wrote reads garbage, as on a GPU.
        v.resize(n, u64::MAX);
        let words = NonNull::from(Box::leak(v.into_boxed_slice()));
        Ok(HostBuffer { words })
    }

    fn upload(&self, dst: &mut HostBuffer, at: usize, src: &[u8]) -> Result<(), LaunchError> {
        let p = dst.span(at, src.len())?;
        // SAFETY: `span` checked the range, which `dst` owns and no slice borrows now
        // (`with_host_args`' slices live only during a launch).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    fn download(&self, src: &HostBuffer, at: usize, dst: &mut [u8]) -> Result<(), LaunchError> {
        let p = src.span(at, dst.len())?;
        // SAFETY: as in `upload`; `dst` is host memory, never a device buffer's.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn address(&self, b: &HostBuffer) -> u64 {
        // Exposed: `with_host_args` makes its slices from the address.
        b.words.as_ptr().cast::<u8>().expose_provenance() as u64
    }
}

/// An argument as a launch on [`HostMemory`] sees it: its address there, its length, and
/// whether the launch writes it.
#[derive(Clone, Copy, Debug)]
pub struct HostArg {
    address: u64,
    len: usize,
    written: bool,
}

impl Resident<HostMemory> {
    /// Runs `run` on the copies of `args` in host memory standing for a device's, as slices
    /// of the same lengths (each argument's own), then copies the launch's temporaries back.
    pub fn with_host_args<R>(
        &mut self,
        args: &mut [Arg<'_>],
        run: impl FnOnce(&mut [Arg<'_>]) -> Result<R, LaunchError>,
    ) -> Result<R, LaunchError> {
        let staged = self.stage(args)?;
        self.run_staged(args, staged, run)
    }

    /// [`Resident::with_host_args`] on copies [`Resident::stage`] made.
    pub fn run_staged<R>(
        &mut self,
        args: &mut [Arg<'_>],
        staged: Staged<HostBuffer>,
        run: impl FnOnce(&mut [Arg<'_>]) -> Result<R, LaunchError>,
    ) -> Result<R, LaunchError> {
        let device = host_args(args, &staged);
        // SAFETY: `stage` gave each argument the address of `a.len()` bytes of a buffer this
        // `Resident` holds until it returns (the arena's mirror at the argument's offset,
        // which lies inside it, or a kept or temporary copy of exactly its bytes), and the
        // temporaries are `staged`'s, held until after `run`.
        let result = unsafe { on_host(&device, run) };
        // A failed launch's outputs are not the kernel's: nothing goes back.
        let out = result?;
        self.finish(args, staged)?;
        Ok(out)
    }

    /// Runs `run` on the arguments `device` describes: a launch queued earlier, whose
    /// arguments had no temporaries ([`Staged::has_copies`]).
    ///
    /// # Safety
    /// `device` must be [`host_args`] of a staging by this `Resident` without temporaries,
    /// and no [`Resident::set_arena`] or [`Resident::set_constant`] may have been called
    /// since: the buffers its addresses point into are then still the ones staged.
    pub unsafe fn run_queued<R>(
        &mut self,
        device: &[HostArg],
        run: impl FnOnce(&mut [Arg<'_>]) -> Result<R, LaunchError>,
    ) -> Result<R, LaunchError> {
        // SAFETY: the caller's contract; `self`, borrowed mutably, holds the buffers.
        unsafe { on_host(device, run) }
    }
}

/// The arguments `staged` gave `args`, as the launch sees them.
pub fn host_args(args: &[Arg<'_>], staged: &Staged<HostBuffer>) -> Vec<HostArg> {
    args.iter()
        .zip(&staged.addresses)
        .map(|(a, &address)| HostArg {
            address,
            len: a.len(),
            written: matches!(a, Arg::Out(_)),
        })
        .collect()
}

/// Runs `run` on slices of host memory at `device`'s addresses.
///
/// # Safety
/// Each address must be that of `len` bytes of a [`HostBuffer`] alive until this returns,
/// allocated through raw pointers that may write, which nothing else touches meanwhile; a
/// written argument's bytes must overlap no other argument's.
unsafe fn on_host<R>(
    device: &[HostArg],
    run: impl FnOnce(&mut [Arg<'_>]) -> Result<R, LaunchError>,
) -> Result<R, LaunchError> {
    let mut args: Vec<Arg<'_>> = device
        .iter()
        .map(|a| {
            let p = std::ptr::with_exposed_provenance_mut::<u8>(a.address as usize);
            // SAFETY: the caller's contract. A written argument overlaps no other on the host
            // (`&mut`), and the mirror keeps the host's offsets while copies are separate
            // allocations, so its slice overlaps none of theirs either.
            unsafe {
                match (a.written, a.len) {
                    (false, 0) => Arg::In(&[]),
                    (true, 0) => Arg::Out(&mut []),
                    (false, n) => Arg::In(std::slice::from_raw_parts(p, n)),
                    (true, n) => Arg::Out(std::slice::from_raw_parts_mut(p, n)),
                }
            }
        })
        .collect();
    let result = run(&mut args);
    drop(args);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(r: &mut Resident<HostMemory>, args: &mut [Arg<'_>], f: impl Fn(&mut [Arg<'_>])) {
        let got = r.with_host_args(args, |a| {
            f(a);
            Ok(())
        });
        assert!(got.is_ok());
    }

    #[test]
    fn an_arena_output_stays_until_fetched() {
        let mut arena = vec![0u8; 64];
        let mut r = Resident::new(HostMemory);
        assert!(r.set_arena(Some(&arena)).is_ok());
        arena[..8].copy_from_slice(&[1; 8]);
        assert!(r.stored(&arena[..8]).is_ok());
        // A kernel doubles bytes 0..8 into 8..16.
        let (input, output) = arena.split_at_mut(8);
        let mut args = [Arg::Out(&mut output[..8]), Arg::In(input)];
        host(&mut r, &mut args, |a| {
            let x: Vec<u8> = match &a[1] {
                Arg::In(b) => b.to_vec(),
                Arg::Out(_) => Vec::new(),
            };
            if let Arg::Out(o) = &mut a[0] {
                for (o, x) in o.iter_mut().zip(x) {
                    *o = 2 * x;
                }
            }
        });
        // The host's bytes are untouched until the executor fetches them.
        assert_eq!(arena[8..16], [0; 8]);
        assert!(r.fetch(&mut arena[8..16]).is_ok());
        assert_eq!(arena[8..16], [2; 8]);
        // The run is over: the host may reuse that memory, and nothing maps to the mirror,
        // which is kept for the next run that fits it.
        let mirror = r.arena.as_ref().map(|m| r.memory.address(&m.buffer));
        assert!(r.set_arena(None).is_ok());
        assert_eq!(r.in_arena(arena.as_ptr() as usize, 8), None);
        assert!(r.set_arena(Some(&arena[..32])).is_ok());
        assert_eq!(
            r.arena.as_ref().map(|m| r.memory.address(&m.buffer)),
            mirror
        );
        // An empty buffer at the arena's end would be read past it: it is not the mirror's.
        assert_eq!(r.in_arena(arena.as_ptr() as usize + 32, 0), None);
        assert_eq!(r.in_arena(arena.as_ptr() as usize + 31, 0), Some(31));
    }

    #[test]
    fn arguments_outside_the_arena_are_copied() {
        let weight = vec![3u8; 16];
        let mut r = Resident::new(HostMemory);
        r.set_constant(&[(weight.as_ptr() as usize, 16)]);
        let mut out = vec![0u8; 4];
        // No arena (a prepare step): the output crosses back after its launch.
        for _ in 0..2 {
            let mut args = [Arg::Out(&mut out), Arg::In(&weight)];
            host(&mut r, &mut args, |a| {
                if let Arg::Out(o) = &mut a[0] {
                    o.fill(9);
                }
            });
        }
        assert_eq!(out, [9; 4]);
        assert_eq!(r.constants.len(), 1);
        // An input read in place is copied once per run, and again in the next run, into the
        // same memory (a graph's addresses stay valid); one of another length into another.
        let mut state = [5u8; 16];
        let arena = [0u8; 8];
        let mut addresses = Vec::new();
        for (value, len) in [(5, 8), (6, 8), (7, 16)] {
            state.fill(value);
            assert!(r.set_arena(Some(&arena)).is_ok());
            let mut args = [Arg::In(&state[..len])];
            host(&mut r, &mut args, |a| {
                assert!(matches!(&a[0], Arg::In(b) if b.iter().all(|&x| x == value)));
            });
            assert_eq!(r.run_inputs.len(), 1);
            addresses.extend(r.run_inputs.values().map(|b| r.memory.address(b)));
            assert!(r.set_arena(None).is_ok());
        }
        assert_eq!(addresses[0], addresses[1]);
        assert_ne!(addresses[1], addresses[2]);
        // The 16-byte copy is kept for the next run; the 8-byte one is freed.
        assert_eq!(r.spare.len(), 1);
    }

    #[test]
    fn copies_outside_a_buffer_are_refused() {
        let m = HostMemory;
        let Ok(mut b) = m.alloc(8) else {
            panic!("8 bytes")
        };
        assert!(m.upload(&mut b, 4, &[0; 8]).is_err());
        assert!(m.download(&b, usize::MAX, &mut [0; 2]).is_err());
        assert!(m.upload(&mut b, 0, &[7; 8]).is_ok());
        let mut back = [0; 8];
        assert!(m.download(&b, 0, &mut back).is_ok());
        assert_eq!(back, [7; 8]);
    }
}
