//! Runs a Plan: one arena per run, weights loaded once, kernels launched through one C ABI.

use std::collections::HashMap;

use crate::{bind_dims, storage_bytes, BindError, DType, Data, Dim, Plan, Storage, Tensor};

/// Launches compiled kernels. `args` are buffer pointers in the kernel's parameter order with
/// the status word last; `lens` are their element counts (for backends that check bounds).
pub trait Launcher {
    /// Runs kernel number `kernel` once.
    fn launch(
        &self,
        kernel: usize,
        args: &[*mut u8],
        lens: &[usize],
        dims: &[i64],
    ) -> Result<(), String>;
}

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
    /// A kernel's check failed (an index out of range, ...).
    #[error("step {step} (kernel `{kernel}`): {message}")]
    Check {
        /// The step.
        step: usize,
        /// The kernel's name.
        kernel: String,
        /// What the check guards.
        message: String,
    },
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

/// A plan with its weights loaded.
pub struct Executor<'p> {
    plan: &'p Plan,
    weights: HashMap<usize, Vec<u64>>,
}

fn words(bytes: usize) -> usize {
    bytes.div_ceil(8)
}

/// Writes a tensor's elements into raw storage of its buffer's dtype.
fn store(t: &Tensor, dtype: DType, dst: &mut [u8]) {
    match (&t.data, storage_bytes(dtype)) {
        (Data::F32(v), 4) => {
            for (c, x) in dst.chunks_exact_mut(4).zip(v) {
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
        (Data::I64(v), 8) => {
            for (c, x) in dst.chunks_exact_mut(8).zip(v) {
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
        (Data::Bool(v), 1) => {
            for (c, x) in dst.iter_mut().zip(v) {
                *c = u8::from(*x);
            }
        }
        // Mixed kinds were refused by binding; convert through f32 as a last resort.
        (_, 4) => store(&Tensor::f32(t.shape.clone(), t.to_f32()), dtype, dst),
        (_, 8) => {
            let v = t.to_f32().iter().map(|&x| x as i64).collect();
            store(&Tensor::int(DType::I64, t.shape.clone(), v), dtype, dst)
        }
        _ => {
            let v = t.to_f32().iter().map(|&x| x != 0.0).collect();
            store(&Tensor::bool(t.shape.clone(), v), dtype, dst)
        }
    }
}

/// Reads raw storage of a dtype back into a tensor.
fn load(src: &[u8], dtype: DType, shape: Vec<usize>) -> Tensor {
    match storage_bytes(dtype) {
        4 => Tensor {
            dtype,
            ..Tensor::f32(
                shape,
                src.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        },
        8 => Tensor::int(
            dtype,
            shape,
            src.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        _ => Tensor::bool(shape, src.iter().map(|&b| b != 0).collect()),
    }
}

fn bytes_of(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no invalid bit patterns and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), v.len() * 8) }
}

impl<'p> Executor<'p> {
    /// Loads every weight of the plan through `source(name, dtype, shape)`.
    pub fn new(
        plan: &'p Plan,
        mut source: impl FnMut(&str, DType, &[usize]) -> Result<Tensor, String>,
    ) -> Result<Executor<'p>, RunError> {
        let mut weights = HashMap::new();
        let none = HashMap::new();
        for w in &plan.weights {
            let b = &plan.buffers[w.buffer];
            let shape: Vec<usize> = b
                .shape
                .iter()
                .map(|d| d.as_const().unwrap_or(0).max(0) as usize)
                .collect();
            let t = source(&w.name, b.dtype, &shape).map_err(RunError::Weight)?;
            let mut mem = vec![0u64; words(plan.numel(w.buffer, &none) * storage_bytes(b.dtype))];
            store(&t, b.dtype, bytes_of(&mut mem));
            weights.insert(w.buffer, mem);
        }
        Ok(Executor { plan, weights })
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
        bind_dims(&declared, &self.plan.symbols, inputs, explicit)
    }

    /// Runs the plan once; returns the outputs in declaration order.
    pub fn run(
        &mut self,
        launcher: &dyn Launcher,
        inputs: &HashMap<String, Tensor>,
        explicit: &HashMap<String, i64>,
    ) -> Result<Vec<(String, Tensor)>, RunError> {
        let plan = self.plan;
        let dims = self.bind(inputs, explicit)?;
        let dim_values = plan.dim_values(&dims);
        let (offsets, arena_bytes) = plan.layout(&dims);
        // A huge dim must be an error, not an abort in the allocator.
        let mut arena: Vec<u64> = Vec::new();
        arena.try_reserve_exact(words(arena_bytes)).map_err(|_| {
            RunError::Memory(format!(
                "the arena for these dims needs {arena_bytes} bytes, which cannot be allocated"
            ))
        })?;
        arena.resize(words(arena_bytes), 0);
        let mut status = vec![0i64; 1];
        for b in &plan.inputs {
            let off = offsets[b.buffer].expect("inputs live in the arena");
            let n = plan.numel(b.buffer, &dims) * storage_bytes(plan.buffers[b.buffer].dtype);
            store(
                &inputs[&b.name],
                plan.buffers[b.buffer].dtype,
                &mut bytes_of(&mut arena)[off..off + n],
            );
        }
        let base = arena.as_mut_ptr().cast::<u8>();
        let pointer = |weights: &mut HashMap<usize, Vec<u64>>, buffer: usize| -> *mut u8 {
            let root = plan.root(buffer);
            match plan.buffers[root].storage {
                Storage::Weight => weights
                    .get_mut(&root)
                    .map_or(std::ptr::null_mut(), |w| w.as_mut_ptr().cast()),
                // SAFETY: the offset is inside the arena, which layout() sized for these dims.
                _ => unsafe { base.add(offsets[root].expect("arena buffers have offsets")) },
            }
        };
        // ARCHC_PROFILE=1 prints the slowest kernels of each run to stderr.
        let profile = std::env::var_os("ARCHC_PROFILE").is_some();
        let mut times: Vec<(f64, usize)> = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            let started = std::time::Instant::now();
            let mut args: Vec<*mut u8> = step
                .args
                .iter()
                .map(|&b| pointer(&mut self.weights, b))
                .collect();
            let mut lens: Vec<usize> = step.args.iter().map(|&b| plan.numel(b, &dims)).collect();
            args.push(status.as_mut_ptr().cast());
            lens.push(1);
            let kernel = || plan.kernels[step.kernel].clone();
            launcher
                .launch(step.kernel, &args, &lens, &dim_values)
                .map_err(|message| RunError::Launch {
                    step: i,
                    kernel: kernel(),
                    message,
                })?;
            if profile {
                times.push((started.elapsed().as_secs_f64(), i));
            }
            if status[0] != 0 {
                let message = plan
                    .checks
                    .get((status[0] - 1) as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("check {} failed", status[0]));
                return Err(RunError::Check {
                    step: i,
                    kernel: kernel(),
                    message,
                });
            }
        }
        if profile {
            let total: f64 = times.iter().map(|t| t.0).sum();
            times.sort_by(|a, b| b.0.total_cmp(&a.0));
            eprintln!("profile: {} steps, {:.2} ms", times.len(), total * 1e3);
            for (t, i) in times.iter().take(12) {
                eprintln!(
                    "  {:8.3} ms  {}",
                    t * 1e3,
                    plan.kernels[plan.steps[*i].kernel]
                );
            }
        }
        let mut out = Vec::new();
        for b in &plan.outputs {
            let buf = &plan.buffers[b.buffer];
            let shape: Vec<usize> = buf
                .shape
                .iter()
                .map(|d| d.eval(&|s| dims.get(s).copied()).unwrap_or(0).max(0) as usize)
                .collect();
            let n = plan.numel(b.buffer, &dims) * storage_bytes(buf.dtype);
            let p = pointer(&mut self.weights, b.buffer);
            // SAFETY: `p` points at `n` bytes of this buffer's storage (arena or weight).
            let bytes = unsafe { std::slice::from_raw_parts(p, n) };
            out.push((b.name.clone(), load(bytes, buf.dtype, shape)));
        }
        Ok(out)
    }
}
