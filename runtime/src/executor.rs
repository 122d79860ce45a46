//! Runs a Plan: one arena per run (its memory kept for the next), weights loaded once, kernels
//! launched through one C ABI.
//!
//! The arena is not cleared between runs: every kernel writes each element of a buffer before
//! any kernel reads it. Debug builds fill the arena with NaN bits before each run, so the
//! test suite fails on a kernel that breaks this.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::host_bytes::{load, store, stored_bytes};
use crate::launcher::buffer_bytes;
use crate::plan::{numel, root};
use crate::quant::GROUP_ROWS;
use crate::run_steps::Run;
use crate::weights::{readable_in_place, Memory};
use crate::{
    bind_dims, storage_bytes, BindError, Buffer, Copies, DType, Device, Dim, LaunchError, Launcher,
    Plan, Step, Storage, Tensor, WeightBytes, WeightData,
};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The inputs do not fit the model.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A weight could not be loaded.
    #[error("{0}")]
    Weight(String),
    /// The run's memory cannot be allocated.
    #[error("{0}")]
    Memory(String),
    /// A prepare step failed in an earlier call, and the weights it released are gone.
    #[error("the weights' prepare steps failed earlier; load the weights again")]
    Unprepared,
    /// The launcher's kernels cannot address the memory this executor keeps buffers in.
    #[error("this executor keeps its buffers in host memory, which {0:?} kernels cannot read")]
    Device(Device),
    /// The plan breaks an invariant the executor relies on.
    #[error("invalid plan: {0}")]
    Plan(String),
    /// A kernel's check failed (an index out of range, ...).
    #[error("{origin}: {message} (step {step}, kernel `{kernel}`)")]
    Check {
        /// The step.
        step: usize,
        /// The kernel's name.
        kernel: String,
        /// Where in the source the failing operation is (see `Step::Kernel`).
        origin: String,
        /// What the check guards.
        message: String,
    },
    /// The launcher could not copy the arena's inputs or outputs between its memory and the
    /// host's.
    #[error("copying between the host and the kernels' memory: {0}")]
    Transfer(LaunchError),
    /// The backend could not run a kernel.
    #[error("step {step} (kernel `{kernel}`): {message}")]
    Launch {
        /// The step.
        step: usize,
        /// The kernel's name.
        kernel: String,
        /// The backend's message.
        message: String,
    },
}

/// A plan with its weights loaded. It borrows the plan and whatever the weights were read
/// from (a memory-mapped checkpoint), so mapped weights cannot outlive their mapping.
pub struct Executor<'p> {
    plan: &'p Plan,
    /// Memory of the top-level `Storage::Weight` buffers, by buffer: loaded weights from
    /// `new`, prepared ones once `prepare` computes them.
    weights: HashMap<usize, Memory<'p>>,
    /// Whether the prepare steps have run.
    prepared: Prepared,
    /// Prepare steps whose outputs another executor computed and shares (see
    /// [`Executor::sharing`]).
    skipped: HashSet<usize>,
    /// The arena of the last run, kept for the next: a run of the same or smaller size
    /// reuses it as it is instead of asking the OS for fresh pages (a 500 MB arena of logits
    /// cost more in page faults than the run's kernels).
    arena: Vec<u64>,
    /// The last arena layout and the dims it was made for (see `layout_for`).
    laid_out: Option<(HashMap<String, i64>, crate::ArenaLayout)>,
    /// `Plan::sizes_grow`, once.
    sizes_grow: bool,
}

/// How far the prepare steps got.
#[derive(Clone, Copy, PartialEq)]
enum Prepared {
    /// Not run yet.
    Not,
    /// One failed: some sources may already be released, so they cannot run again.
    Failed,
    /// All ran.
    Done,
}

fn words(bytes: usize) -> usize {
    bytes.div_ceil(8)
}

/// The bytes of each buffer of a frame for these dims.
fn frame_bytes(buffers: &[Buffer], dims: &HashMap<String, i64>) -> Vec<usize> {
    (0..buffers.len())
        .map(|b| buffer_bytes(buffers, b, dims))
        .collect()
}

/// `n` zeroed words, or an error naming `what` when they cannot be allocated: a model with
/// absurd weights is an error, not an allocator abort.
fn zeroed(n: usize, what: impl Fn() -> String) -> Result<Vec<u64>, RunError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        RunError::Memory(format!(
            "{} needs {} bytes, which cannot be allocated",
            what(),
            n.saturating_mul(8)
        ))
    })?;
    v.resize(n, 0);
    Ok(v)
}

fn bytes_of(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no invalid bit patterns and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), v.len() * 8) }
}

impl<'p> Executor<'p> {
    /// Loads every weight of the plan through `source(name, dtype, shape)`. A source that
    /// hands out bytes in place (a memory-mapped checkpoint) must outlive the executor; those
    /// bytes are not copied unless their address is misaligned for the dtype.
    pub fn new<W: Into<WeightData<'p>>>(
        plan: &'p Plan,
        source: impl FnMut(&str, DType, &[usize]) -> Result<W, String>,
    ) -> Result<Executor<'p>, RunError> {
        Executor::load(plan, source, HashMap::new(), HashSet::new())
    }

    /// Like [`Executor::new`], but the weight buffers `pairs` names (this plan's buffer, the
    /// buffer of `donor`'s plan holding the same values: `compiler::lower::same_weights`
    /// finds them) share `donor`'s memory, which must be prepared. The prepare steps that
    /// computed them are skipped, and weights that only those steps read are not loaded: a
    /// model's prefill and step hold their weights once.
    pub fn sharing<W: Into<WeightData<'p>>>(
        plan: &'p Plan,
        source: impl FnMut(&str, DType, &[usize]) -> Result<W, String>,
        donor: &mut Executor<'_>,
        pairs: &[(usize, usize)],
    ) -> Result<Executor<'p>, RunError> {
        if donor.prepared != Prepared::Done {
            return Err(RunError::Unprepared);
        }
        let none = HashMap::new();
        let mut shared = HashMap::new();
        for &(mine, theirs) in pairs {
            let (Some(b), Some(t)) = (plan.buffers.get(mine), donor.plan.buffers.get(theirs))
            else {
                continue;
            };
            let same =
                (b.dtype, b.blocks) == (t.dtype, t.blocks) && numel(b, &none) == numel(t, &none);
            let theirs = donor.plan.root(theirs);
            if let (true, Some(m)) = (same, donor.weights.get_mut(&theirs)) {
                if let Some(v) = m.share() {
                    shared.insert(plan.root(mine), Memory::Shared(v));
                }
            }
        }
        let skipped = plan
            .prepare
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.args()
                    .first()
                    .is_some_and(|&o| shared.contains_key(&plan.root(o)))
            })
            .map(|(j, _)| j)
            .collect();
        Executor::load(plan, source, shared, skipped)
    }

    /// Loads the weights that the run or the prepare steps not `skipped` read, besides those
    /// in `weights` already.
    fn load<W: Into<WeightData<'p>>>(
        plan: &'p Plan,
        mut source: impl FnMut(&str, DType, &[usize]) -> Result<W, String>,
        mut weights: HashMap<usize, Memory<'p>>,
        skipped: HashSet<usize>,
    ) -> Result<Executor<'p>, RunError> {
        check_writes(plan)?;
        let none = HashMap::new();
        // Calls pass their kinds every top-level buffer the kinds read.
        let mut read: HashSet<usize> = plan
            .steps
            .iter()
            .flat_map(|s| s.args().iter().map(|&b| plan.root(b)))
            .collect();
        read.extend(plan.outputs.iter().map(|o| plan.root(o.buffer)));
        for (j, s) in plan.prepare.iter().enumerate() {
            if !skipped.contains(&j) {
                read.extend(s.args().iter().map(|&b| plan.root(b)));
            }
        }
        for w in &plan.weights {
            let r = plan.root(w.buffer);
            // Shared already, or read by nothing that runs here.
            if weights.contains_key(&r) || (!skipped.is_empty() && !read.contains(&r)) {
                continue;
            }
            let b = &plan.buffers[w.buffer];
            let shape: Vec<usize> = b
                .shape
                .iter()
                .map(|d| d.as_const().unwrap_or(0).max(0) as usize)
                .collect();
            let bytes = b.bytes(numel(b, &none));
            let what = || format!("weight `{}`", w.name);
            let memory = match source(&w.name, b.dtype, &shape)
                .map_err(RunError::Weight)?
                .into()
            {
                WeightData::InPlace { bytes: m, .. } if m.len() != bytes => {
                    return Err(RunError::Weight(format!(
                        "weight `{}` has {} bytes, but its buffer needs {bytes}",
                        w.name,
                        m.len()
                    )))
                }
                WeightData::InPlace { bytes: m, file } if readable_in_place(m, b) => {
                    Memory::Mapped(m, file)
                }
                WeightData::InPlace { bytes: m, file } => {
                    let mut mem = zeroed(words(bytes), what)?;
                    bytes_of(&mut mem)[..bytes].copy_from_slice(m);
                    // The copy read every page; the copy is what kernels use.
                    file.release(m);
                    Memory::Owned(mem)
                }
                WeightData::Bytes(m) => {
                    let format = b.blocks.filter(|_| m.len() == bytes).ok_or_else(|| {
                        RunError::Weight(format!(
                            "weight `{}` has {} bytes, but its buffer needs {bytes}",
                            w.name,
                            m.len()
                        ))
                    })?;
                    let mut mem = zeroed(words(bytes), what)?;
                    let rows = shape.first().copied().unwrap_or(1);
                    format
                        .interleave(&m, rows, &mut bytes_of(&mut mem)[..bytes])
                        .ok_or_else(|| {
                            RunError::Weight(format!(
                                "weight `{}` of shape {shape:?} is not whole groups of \
                                 {GROUP_ROWS} rows of {format:?} blocks",
                                w.name
                            ))
                        })?;
                    Memory::Owned(mem)
                }
                WeightData::Tensor(_) if b.blocks.is_some() => {
                    return Err(RunError::Weight(format!(
                        "weight `{}` was compiled to be read as {:?} blocks from a GGUF \
                         checkpoint: pass --weights FILE.gguf with that tensor type",
                        w.name,
                        b.blocks.map_or(String::new(), |q| format!("{q:?}"))
                    )))
                }
                WeightData::Tensor(t) => {
                    let mut mem = zeroed(words(bytes), what)?;
                    store(&t, b.dtype, bytes_of(&mut mem));
                    Memory::Owned(mem)
                }
            };
            weights.insert(r, memory);
        }
        Ok(Executor {
            plan,
            weights,
            prepared: Prepared::Not,
            skipped,
            arena: Vec::new(),
            laid_out: None,
            sizes_grow: plan.sizes_grow(),
        })
    }

    /// Loads every weight anew through `source`, keeping the arena and its layout: a training
    /// loop hands each step's weights to one executor instead of a fresh one whose arena the
    /// OS must fault in again. The prepare steps run again at the next [`Executor::prepare`].
    pub fn reload<W: Into<WeightData<'p>>>(
        &mut self,
        source: impl FnMut(&str, DType, &[usize]) -> Result<W, String>,
    ) -> Result<(), RunError> {
        let fresh = Executor::load(self.plan, source, HashMap::new(), self.skipped.clone())?;
        self.weights = fresh.weights;
        self.prepared = Prepared::Not;
        Ok(())
    }

    /// The bytes of weights this executor holds now, mapped and owned. After `prepare`, the
    /// weights that only prepare steps read are gone.
    pub fn weight_bytes(&self) -> WeightBytes {
        self.weights
            .values()
            .map(Memory::bytes)
            .fold(WeightBytes::default(), |a, b| WeightBytes {
                mapped: a.mapped + b.mapped,
                owned: a.owned + b.owned,
            })
    }

    /// The plan this executor runs.
    pub fn plan(&self) -> &Plan {
        self.plan
    }

    /// Binds the dims from the inputs (and `explicit`), checking the inputs.
    pub fn bind(
        &self,
        inputs: &HashMap<String, Tensor>,
        explicit: &HashMap<String, i64>,
    ) -> Result<HashMap<String, i64>, BindError> {
        let declared: Vec<(&str, DType, &[Dim])> = self
            .plan
            .inputs
            .iter()
            .map(|b| {
                let buf = &self.plan.buffers[b.buffer];
                (b.name.as_str(), buf.dtype, buf.shape.as_slice())
            })
            .collect();
        bind_dims(
            &declared,
            &self.plan.symbols,
            &self.plan.dim_checks,
            inputs,
            explicit,
        )
    }

    /// Runs the prepare steps (values computed from the weights alone), once. Each prepared
    /// value gets its memory just before its step, and a weight that the run does not read is
    /// released right after the last prepare step that reads it, so a transposed copy replaces
    /// its source instead of sitting beside it. `run` does this itself the first time.
    pub fn prepare(&mut self, launcher: &dyn Launcher) -> Result<(), RunError> {
        match self.prepared {
            Prepared::Done => Ok(()),
            Prepared::Failed => Err(RunError::Unprepared),
            Prepared::Not => {
                // This executor's weights may sit where an earlier one's were: no launcher
                // keeps copies of those past this point.
                let result = tell(launcher, |c| c.constants(&[]).and_then(|()| c.arena(None)))
                    .and_then(|()| self.prepare_steps(launcher));
                self.prepared = match result {
                    Ok(()) => Prepared::Done,
                    Err(_) => Prepared::Failed,
                };
                result
            }
        }
    }

    /// Runs the prepare steps, releasing each source after its last reader.
    fn prepare_steps(&mut self, launcher: &dyn Launcher) -> Result<(), RunError> {
        let plan = self.plan;
        let none = HashMap::new();
        // Prepare steps read no dims, but kernels take one value per symbol all the same.
        let zeros = plan.dim_values(&none);
        let mut run = Run::new(launcher, &zeros)?;
        let bytes = frame_bytes(&plan.buffers, &none);
        // Prepare steps read and write weight buffers only: no arena.
        let no_arena = vec![None; plan.buffers.len()];
        let mut needed: HashSet<usize> = plan
            .steps
            .iter()
            .flat_map(|s| s.args().iter().map(|&b| plan.root(b)))
            .collect();
        needed.extend(plan.outputs.iter().map(|o| plan.root(o.buffer)));
        let mut last_read = HashMap::new();
        for (j, s) in plan.prepare.iter().enumerate() {
            for &b in s.args().iter().skip(1) {
                last_read.insert(plan.root(b), j);
            }
        }
        for (j, step) in plan.prepare.iter().enumerate() {
            if self.skipped.contains(&j) {
                continue;
            }
            if let Some(&out) = step.args().first() {
                let out = plan.root(out);
                if let Entry::Vacant(e) = self.weights.entry(out) {
                    let bytes = numel(&plan.buffers[out], &none)
                        .saturating_mul(storage_bytes(plan.buffers[out].dtype));
                    let what = || format!("prepared weight buffer {out}");
                    e.insert(Memory::Owned(zeroed(words(bytes), what)?));
                }
            }
            let ptrs = self.pointers(&plan.buffers, &no_arena, std::ptr::null_mut(), &[]);
            // SAFETY: the pointers are the weights' memory (the only buffers prepare steps
            // touch), owned for the outputs, which no other step reads meanwhile.
            let ran = unsafe { run.steps(plan, std::slice::from_ref(step), &bytes, &ptrs) };
            // A weight is released only once the launches that read it have run.
            ran.and(run.finish())?;
            self.release(|b| needed.contains(b) || last_read.get(b).is_some_and(|&l| l > j));
        }
        self.release(|b| needed.contains(b));
        Ok(())
    }

    /// Releases the weights that `keep` says no.
    fn release(&mut self, keep: impl Fn(&usize) -> bool) {
        let gone: Vec<usize> = self.weights.keys().filter(|b| !keep(b)).copied().collect();
        for b in gone {
            if let Some(m) = self.weights.remove(&b) {
                m.release();
            }
        }
    }

    /// Pointers to every buffer of a frame: weights, the call's slots, or the arena.
    fn pointers(
        &mut self,
        buffers: &[Buffer],
        offsets: &[Option<usize>],
        base: *mut u8,
        slots: &[*mut u8],
    ) -> Vec<*mut u8> {
        (0..buffers.len())
            .map(|b| {
                let r = root(buffers, b);
                match buffers[r].storage {
                    Storage::Weight => self
                        .weights
                        .get_mut(&r)
                        .map_or(std::ptr::null_mut(), Memory::ptr),
                    Storage::Slot(i) => slots[i],
                    // SAFETY: the offset is inside the arena, which the layout sized.
                    _ => offsets[r].map_or(std::ptr::null_mut(), |o| unsafe { base.add(o) }),
                }
            })
            .collect()
    }

    /// The arena layout for these dims. Where every arena buffer's size grows with every dim
    /// (`Plan::sizes_grow`), a layout made for larger dims holds these too: the last one is
    /// reused while the dims stay within those it was made for, and a new one is made with
    /// room to grow (each dim an eighth larger), so that a generation step, whose context
    /// grows by a position, lays its arena out (a sort and a packing of every buffer) only
    /// every so many steps.
    fn layout_for(&mut self, dims: &HashMap<String, i64>) -> crate::ArenaLayout {
        let plan = self.plan;
        if !self.sizes_grow {
            return plan.layout(dims);
        }
        if let Some((bound, layout)) = &self.laid_out {
            let within = dims
                .iter()
                .all(|(k, v)| bound.get(k).is_some_and(|b| v <= b));
            if within && bound.len() == dims.len() {
                return layout.clone();
            }
        }
        let grown: HashMap<String, i64> = dims
            .iter()
            .map(|(k, &v)| (k.clone(), v.saturating_add(v.max(0) / 8)))
            .collect();
        let layout = plan.layout(&grown);
        self.laid_out = Some((grown, layout.clone()));
        layout
    }

    /// Runs the plan once; returns the outputs in declaration order.
    pub fn run(
        &mut self,
        launcher: &dyn Launcher,
        inputs: &HashMap<String, Tensor>,
        explicit: &HashMap<String, i64>,
    ) -> Result<Vec<(String, Tensor)>, RunError> {
        let outputs = self.run_in_arena(launcher, inputs, explicit);
        // However the run ended, the arena is no longer the kernels': its memory may be freed
        // or hold other buffers before the next run names it again.
        let ended = tell(launcher, |c| c.arena(None));
        let outputs = outputs?;
        ended.map(|()| outputs)
    }

    /// [`Executor::run`], the arena named to the launcher's copies but not released.
    fn run_in_arena(
        &mut self,
        launcher: &dyn Launcher,
        inputs: &HashMap<String, Tensor>,
        explicit: &HashMap<String, i64>,
    ) -> Result<Vec<(String, Tensor)>, RunError> {
        let plan = self.plan;
        let dims = self.bind(inputs, explicit)?;
        self.prepare(launcher)?;
        // From here on no step writes a weight (`check_writes`).
        let constant: Vec<(usize, usize)> = self.weights.values().map(Memory::range).collect();
        tell(launcher, |c| c.constants(&constant))?;
        let dim_values = plan.dim_values(&dims);
        let layout = self.layout_for(&dims);
        // A huge dim must be an error, not an abort in the allocator.
        let need = words(layout.bytes);
        let mut arena = std::mem::take(&mut self.arena);
        if arena.len() < need {
            // A run that outgrows the last one (a generation step, whose context grows by a
            // position each time) gets half as much again, so that its fresh pages are
            // faulted in only every so many steps, not at each.
            let grown = if arena.is_empty() {
                need
            } else {
                need.max(arena.len().saturating_add(arena.len() / 2))
            };
            // Freed first, so the old and the new arena are never held at once.
            drop(arena);
            arena = match zeroed(grown, || "the arena for these dims".to_string()) {
                Ok(a) => a,
                Err(_) if grown > need => zeroed(need, || "the arena for these dims".to_string())?,
                Err(e) => return Err(e),
            };
            if cfg!(debug_assertions) {
                arena.fill(u64::MAX);
            }
        } else if cfg!(debug_assertions) {
            // Kernels write every element of a buffer before they read it, so a reused arena
            // needs no zeroing (107 MB of a Llama training step took ~15% of the step). Debug
            // builds, the tests', fill it with NaN bits instead: a kernel that read what it
            // had not written would fail the tests, not quietly read the last run's values.
            arena[..need].fill(u64::MAX);
        }
        tell(launcher, |c| c.arena(Some(bytes_of(&mut arena))))?;
        if cfg!(debug_assertions) {
            // The kernels' copy, where they have their own, gets the NaN bits too.
            tell(launcher, |c| c.stored(&bytes_of(&mut arena)[..need * 8]))?;
        }
        // Inputs whose values are already in their storage layout are read where they are
        // (a generation's State, a cache of megabytes, is not copied at every step).
        let mut in_place = HashMap::new();
        for b in &plan.inputs {
            let root = plan.root(b.buffer);
            let dtype = plan.buffers[b.buffer].dtype;
            let n = plan.numel(b.buffer, &dims) * storage_bytes(dtype);
            if let Some(p) = stored_bytes(&inputs[&b.name], dtype, n) {
                in_place.insert(root, p.as_ptr().cast_mut());
                continue;
            }
            let off = layout.top[root].expect("inputs live in the arena");
            let bytes = &mut bytes_of(&mut arena)[off..off + n];
            store(&inputs[&b.name], dtype, bytes);
            tell(launcher, |c| c.stored(bytes))?;
        }
        let base = arena.as_mut_ptr().cast::<u8>();
        let mut ptrs = self.pointers(&plan.buffers, &layout.top, base, &[]);
        for (b, p) in ptrs.iter_mut().enumerate() {
            if let Some(&input) = in_place.get(&plan.root(b)) {
                // Kernels only read inputs (`check_writes`): the borrowed tensor is not written.
                *p = input;
            }
        }
        let mut run = Run::new(launcher, &dim_values)?;
        // Every buffer's bytes for these dims, once: not at each of a step's launches.
        let bytes = frame_bytes(&plan.buffers, &dims);
        let kind_bytes: Vec<Vec<usize>> = plan
            .kinds
            .iter()
            .map(|k| frame_bytes(&k.buffers, &dims))
            .collect();
        let mut ran = Ok(());
        for (i, step) in plan.steps.iter().enumerate() {
            ran = match step {
                Step::Call { kind, args } => {
                    let k = &plan.kinds[*kind];
                    let slots: Vec<*mut u8> = args.iter().map(|&b| ptrs[b]).collect();
                    // SAFETY: the call's region is inside the arena the layout sized.
                    let region = unsafe { base.add(layout.calls[i]) };
                    let kptrs = self.pointers(&k.buffers, &layout.kinds[*kind], region, &slots);
                    // SAFETY: the kind's buffers are in its region of the arena or are the
                    // caller's, laid out for these dims; the run holds the arena exclusively.
                    unsafe { run.steps(plan, &k.steps, &kind_bytes[*kind], &kptrs) }
                }
                // SAFETY: the top level's buffers are weights or in the arena, laid out for
                // these dims; the run holds the arena exclusively.
                s => unsafe { run.steps(plan, std::slice::from_ref(s), &bytes, &ptrs) },
            };
            if ran.is_err() {
                break;
            }
        }
        let finished = run.finish();
        ran.and(finished)?;
        run.report(plan);
        let mut out = Vec::new();
        let arena_at = |p: *mut u8, n: usize| {
            let at = (p as usize).checked_sub(base as usize)?;
            (at.checked_add(n)? <= need * 8).then_some(at)
        };
        for b in &plan.outputs {
            let buf = &plan.buffers[b.buffer];
            let shape: Vec<usize> = buf
                .shape
                .iter()
                .map(|d| d.eval(&|s| dims.get(s).copied()).unwrap_or(0).max(0) as usize)
                .collect();
            let n = plan.numel(b.buffer, &dims) * storage_bytes(buf.dtype);
            let bytes: &[u8] = match arena_at(ptrs[b.buffer], n) {
                _ if n == 0 => &[],
                Some(at) => {
                    // The kernels' values, from their memory where they keep the arena.
                    let bytes = &mut bytes_of(&mut arena)[at..at + n];
                    tell(launcher, |c| c.fetch(bytes))?;
                    bytes
                }
                // SAFETY: the pointer is to `n` bytes of this buffer's storage (a weight or an
                // input read in place), which no step wrote.
                None => unsafe { std::slice::from_raw_parts(ptrs[b.buffer], n) },
            };
            out.push((b.name.clone(), load(bytes, buf.dtype, shape)));
        }
        // The pointers into it are dead now; the next run reuses its pages.
        self.arena = arena;
        Ok(out)
    }
}

/// Tells `launcher`'s copies of the executor's buffers, where it keeps any
/// ([`Launcher::copies`]), what `what` says.
fn tell(
    launcher: &dyn Launcher,
    what: impl FnOnce(&dyn Copies) -> Result<(), LaunchError>,
) -> Result<(), RunError> {
    launcher
        .copies()
        .map_or(Ok(()), what)
        .map_err(RunError::Transfer)
}

/// Mapped weights are read-only memory, and inputs are read in place from the caller's
/// tensors, so no step may write a loaded weight or an input. A kernel step
/// writes only its first buffer (the lowering makes every kernel so, see `Step::Kernel`) and
/// a call only its first argument; in a layer kind, a kernel writing slot `i ≥ 1` would write
/// the caller's operand, which may be a weight.
fn check_writes(plan: &Plan) -> Result<(), RunError> {
    // Inputs too: a run reads them in place from the caller's tensors.
    let loaded: HashSet<usize> = plan
        .weights
        .iter()
        .chain(&plan.inputs)
        .map(|w| plan.root(w.buffer))
        .collect();
    let top = plan.prepare.iter().chain(&plan.steps);
    if let Some(s) = top
        .filter_map(|s| s.args().first())
        .find(|&&b| loaded.contains(&plan.root(b)))
    {
        return Err(RunError::Plan(format!(
            "a step writes weight or input buffer {s}, which is read-only"
        )));
    }
    for k in &plan.kinds {
        for &b in k.steps.iter().filter_map(|s| s.args().first()) {
            if let Storage::Slot(i @ 1..) = k.buffers[root(&k.buffers, b)].storage {
                return Err(RunError::Plan(format!(
                    "a step of kind `{}` writes its argument {i}, which may be a read-only weight",
                    k.name
                )));
            }
        }
    }
    Ok(())
}
