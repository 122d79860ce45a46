//! The Kernel IR interpreter: the oracle every backend is checked against.
//!
//! It runs every loop in order whatever its axis kind: Grid and Thread iterations are
//! independent, Reduce and Unroll loops are loops, so this is one valid schedule of each. A
//! block's Thread loops run one after the other, so a barrier between them holds by
//! construction; one inside a Thread loop cannot be run in order and is an error. Shared
//! arrays, like locals, are one zeroed copy for the whole run.
//!
//! [`run_gpu`] runs the same way with a GPU's semantics checked: each iteration of the
//! outermost Grid loops is a block with its own zeroed shared arrays, each Thread iteration a
//! thread, and two threads touching one element of an output or shared array unordered (one
//! writing) is a [`KernelError::Race`] (see [`crate::races`]).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::ir::*;
use crate::races::{Agent, Race, Races};

mod copies;
mod warpgroups;
mod warps;

/// The contents of one buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum BufData {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements, as their bits.
    F16(Vec<u16>),
    /// bf16 elements, as their bits.
    BF16(Vec<u16>),
    /// i64 elements.
    I64(Vec<i64>),
    /// One byte per boolean.
    Bool(Vec<u8>),
    /// Block-quantized elements of the given type ([`Elem::is_quantized`]), as their bytes.
    Blocks(Elem, Vec<u8>),
}

impl BufData {
    /// A zeroed buffer of `n` elements.
    pub fn zeros(elem: Elem, n: usize) -> BufData {
        match elem {
            Elem::F32 => BufData::F32(vec![0.0; n]),
            Elem::F16 => BufData::F16(vec![0; n]),
            Elem::BF16 => BufData::BF16(vec![0; n]),
            Elem::I64 => BufData::I64(vec![0; n]),
            Elem::Bool => BufData::Bool(vec![0; n]),
            q => BufData::Blocks(q, vec![0; q.bytes(n)]),
        }
    }

    fn len(&self) -> usize {
        match self {
            BufData::F32(v) => v.len(),
            BufData::F16(v) | BufData::BF16(v) => v.len(),
            BufData::I64(v) => v.len(),
            BufData::Bool(v) => v.len(),
            BufData::Blocks(q, v) => v.len() / q.size() * q.block_elems(),
        }
    }

    /// Element `at` as an f32 (floats only; others give 0).
    fn float(&self, at: usize) -> f32 {
        match self {
            BufData::F32(v) => v[at],
            BufData::F16(v) => crate::storage::f16_to_f32(v[at]),
            BufData::BF16(v) => crate::storage::bf16_to_f32(v[at]),
            BufData::Blocks(q, v) => {
                let start = at / q.block_elems() * q.size();
                let block = &v[start..start + q.size()];
                let j = at % QUANT_BLOCK;
                match q.is_grouped() {
                    true => crate::storage::group_value(*q, block, j, at / QUANT_BLOCK % 16),
                    false => crate::storage::block_value(*q, block, j),
                }
            }
            BufData::I64(_) | BufData::Bool(_) => 0.0,
        }
    }

    /// Stores an f32 into element `at` of a float buffer, rounding to its storage type.
    fn set_float(&mut self, at: usize, x: f32) {
        match self {
            BufData::F32(v) => v[at] = x,
            BufData::F16(v) => v[at] = crate::storage::f32_to_f16(x),
            BufData::BF16(v) => v[at] = crate::storage::f32_to_bf16(x),
            // The verifier refuses stores to quantized buffers.
            BufData::I64(_) | BufData::Bool(_) | BufData::Blocks(..) => {}
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    F(f32),
    I(i64),
    B(bool),
    V(Vec<f32>),
}

/// Why interpretation stopped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A `check` failed (the code tells which).
    #[error("kernel check {0} failed")]
    Check(u32),
    /// The kernel read or wrote outside a buffer: a compiler bug, caught here rather than UB.
    #[error("kernel `{kernel}` accessed buffer {buffer} at {index}, outside its {len} elements")]
    OutOfBounds {
        /// The kernel.
        kernel: String,
        /// Which buffer.
        buffer: usize,
        /// The index.
        index: i64,
        /// Its length.
        len: usize,
    },
    /// A barrier inside a Thread loop: its threads cannot all reach it before any goes on
    /// when they run in order.
    #[error("kernel `{0}` has a barrier inside a thread loop")]
    BarrierInThreadLoop(String),
    /// A lane index outside the vector's width: a compiler bug.
    #[error("kernel `{kernel}` reads lane {lane} of a {width}-lane vector")]
    Lane {
        /// The kernel.
        kernel: String,
        /// The lane read.
        lane: u8,
        /// The vector's width.
        width: usize,
    },
    /// A vector load from a block-quantized buffer at an index that is not a multiple of its
    /// width, or a row part of a group from a block (`index`) that is not: a compiler bug
    /// (code generators load its lanes from one run of a block's or group's bytes).
    #[error(
        "kernel `{kernel}` loads {width} quantized lanes at {index}, not a multiple of {width}"
    )]
    QuantLanes {
        /// The kernel.
        kernel: String,
        /// The first element loaded.
        index: i64,
        /// The vector's width.
        width: u8,
    },
    /// A warp's collective work (a tensor-core product, a fold across lanes) where whole warps
    /// cannot reach it (inside a Thread loop, outside the grid, in a block that is not whole
    /// warps), or run without the GPU semantics ([`run_gpu`]) that give each thread its own
    /// locals: a compiler bug.
    #[error("kernel `{kernel}`: warp-collective work {why}")]
    Warp {
        /// The kernel.
        kernel: String,
        /// What is wrong.
        why: &'static str,
    },
    /// An asynchronous copy misused: from or to a misaligned element, onto one another copy
    /// will write, touched before it landed, or in flight as its block ends (a compiler bug).
    #[error("kernel `{kernel}`: an asynchronous copy {why} (buffer {buffer}, element {index})")]
    Async {
        /// The kernel.
        kernel: String,
        /// What is wrong.
        why: &'static str,
        /// The buffer.
        buffer: usize,
        /// The element.
        index: i64,
    },
    /// Two threads touched one element with no order between them, one of them writing: on a
    /// GPU the result would depend on their timing.
    #[error("kernel `{kernel}`: {} and {} both touch element {} of buffer {} unordered, one writing", .race.first, .race.second, .race.index, .race.buffer)]
    Race {
        /// The kernel.
        kernel: String,
        /// The two accesses.
        race: Race,
    },
}

struct Machine<'a> {
    kernel: &'a Kernel,
    bufs: &'a mut [BufData],
    dims: &'a [i64],
    vars: HashMap<Var, Val>,
    /// How many Thread loops the current statement is inside.
    in_threads: usize,
    /// How many Grid loops the current statement is inside.
    in_grid: usize,
    /// With GPU semantics: the accesses that may race.
    races: Option<RefCell<Races>>,
    /// With GPU semantics: every other thread's copy of the locals, by thread (each thread has
    /// its own, kept across the block's Thread loops as registers are; the running thread's
    /// are in `bufs`).
    banks: Option<HashMap<i64, Vec<BufData>>>,
    /// The thread whose locals are in `bufs`.
    thread: i64,
    /// With GPU semantics: the block's asynchronous copies in flight.
    in_flight: copies::InFlight,
    /// With GPU semantics: the block's warpgroup products in flight.
    products: warpgroups::Products,
}

/// Runs a kernel on `bufs` (in parameter order, the status word last) with `dims`.
pub fn run(kernel: &Kernel, bufs: &mut [BufData], dims: &[i64]) -> Result<(), KernelError> {
    run_with(kernel, bufs, dims, None)
}

/// Runs a kernel as [`run`] does, checking a GPU's semantics: blocks own their shared arrays,
/// and unordered accesses of two threads to one element (one writing) are an error.
pub fn run_gpu(kernel: &Kernel, bufs: &mut [BufData], dims: &[i64]) -> Result<(), KernelError> {
    let outputs = (0..kernel.params.len().saturating_sub(1)).filter(|&b| kernel.params[b].output);
    let first_shared = kernel.params.len() + kernel.locals.len();
    let shared = first_shared..first_shared + kernel.shared.len();
    run_with(kernel, bufs, dims, Some(Races::new(outputs, shared)))
}

fn run_with(
    kernel: &Kernel,
    bufs: &mut [BufData],
    dims: &[i64],
    races: Option<Races>,
) -> Result<(), KernelError> {
    let mut all: Vec<BufData> = bufs.to_vec();
    all.extend(kernel.arrays().map(|l| BufData::zeros(l.elem, l.len)));
    let mut m = Machine {
        kernel,
        bufs: &mut all,
        dims,
        vars: HashMap::new(),
        in_threads: 0,
        in_grid: 0,
        banks: races.is_some().then(HashMap::new),
        races: races.map(RefCell::new),
        thread: 0,
        in_flight: copies::InFlight::default(),
        products: warpgroups::Products::default(),
    };
    let result = m.stmts(&kernel.body).and_then(|()| m.settled());
    let n = bufs.len();
    bufs.clone_from_slice(&all[..n]);
    result
}

/// A value's lanes: a vector's own, or a scalar copied into `n`.
fn lanes(v: &Val, n: usize) -> Vec<f32> {
    match v {
        Val::V(x) => x.clone(),
        s => vec![f(s); n],
    }
}

/// The widest vector among `vals` (0 when all are scalars).
fn width(vals: &[&Val]) -> usize {
    vals.iter()
        .map(|v| match v {
            Val::V(x) => x.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

fn f(v: &Val) -> f32 {
    match *v {
        Val::V(ref x) => x.first().copied().unwrap_or(0.0),
        Val::F(x) => x,
        Val::I(x) => x as f32,
        Val::B(x) => f32::from(u8::from(x)),
    }
}

fn i(v: &Val) -> i64 {
    match *v {
        Val::V(ref x) => x.first().copied().unwrap_or(0.0) as i64,
        Val::F(x) => x as i64,
        Val::I(x) => x,
        Val::B(x) => i64::from(x),
    }
}

fn b(v: &Val) -> bool {
    match *v {
        Val::V(ref x) => x.first().is_some_and(|l| *l != 0.0),
        Val::F(x) => x != 0.0,
        Val::I(x) => x != 0,
        Val::B(x) => x,
    }
}

impl Machine<'_> {
    fn stmts(&mut self, body: &[Stmt]) -> Result<(), KernelError> {
        for s in body {
            match s {
                Stmt::For {
                    var,
                    extent,
                    kind,
                    body,
                } => {
                    let n = i(&self.eval(extent)?);
                    let thread = usize::from(*kind == Axis::Thread);
                    let grid = usize::from(*kind == Axis::Grid);
                    let block = grid == 1 && self.in_grid == 0;
                    self.in_threads += thread;
                    self.in_grid += grid;
                    for k in 0..n {
                        self.vars.insert(*var, Val::I(k));
                        if block {
                            self.new_block(k)?;
                        } else if thread == 1 && self.in_threads == 1 {
                            // A Thread loop inside another runs whole in each of its threads.
                            self.switch_thread(k);
                        }
                        self.stmts(body)?;
                    }
                    self.in_threads -= thread;
                    self.in_grid -= grid;
                    if thread == 1 && self.in_threads == 0 {
                        self.switch_thread(0);
                    } else if block {
                        // Statements after the grid run on thread 0 of block 0.
                        self.now(|a| *a = Agent::default());
                        self.switch_thread(0);
                    }
                }
                Stmt::Set(v, e) => {
                    let x = self.eval(e)?;
                    self.vars.insert(*v, x);
                }
                Stmt::Store(buf, idx, e) => {
                    let k = i(&self.eval(idx)?);
                    let x = self.eval(e)?;
                    let at = self.bound(*buf, k)?;
                    self.touch(*buf, at, 1, true)?;
                    match &mut self.bufs[*buf] {
                        BufData::I64(v) => v[at] = i(&x),
                        BufData::Bool(v) => v[at] = u8::from(b(&x)),
                        floats => floats.set_float(at, f(&x)),
                    }
                }
                Stmt::VStore(buf, idx, e, w) => {
                    let k = i(&self.eval(idx)?);
                    let x = lanes(&self.eval(e)?, usize::from(*w));
                    self.bound(*buf, k + i64::from(*w) - 1)?;
                    let at = self.bound(*buf, k)?;
                    self.touch(*buf, at, usize::from(*w), true)?;
                    for (l, x) in x.iter().enumerate().take(usize::from(*w)) {
                        self.bufs[*buf].set_float(at + l, *x);
                    }
                }
                Stmt::Check(c, code) => {
                    if !b(&self.eval(c)?) {
                        return Err(KernelError::Check(*code));
                    }
                }
                Stmt::Prefetch(_, block) => {
                    self.eval(block)?;
                }
                Stmt::Mma { a, b, c } => self.mma([a, b, c])?,
                Stmt::WarpFold(fold) => self.warp_fold(fold)?,
                Stmt::LoadMatrix(m) => self.load_matrix(m)?,
                Stmt::CopyAsync(c) => self.copy_async(c)?,
                Stmt::WarpgroupMma(w) => self.warpgroup_mma(w)?,
                Stmt::WarpgroupWait(w) => self.warpgroup_wait(w)?,
                Stmt::AsyncWait(pending) => self.async_wait(*pending)?,
                Stmt::Barrier(_) => {
                    if self.in_threads > 0 {
                        return Err(KernelError::BarrierInThreadLoop(self.kernel.name.clone()));
                    }
                    if let Some(r) = &self.races {
                        r.borrow_mut().barrier();
                    }
                }
            }
        }
        Ok(())
    }

    /// Changes the running thread (GPU semantics only).
    fn now(&self, f: impl FnOnce(&mut Agent)) {
        if let Some(r) = &self.races {
            f(&mut r.borrow_mut().now);
        }
    }

    /// Block `k` starts (GPU semantics only): thread 0 of it runs, with zeroed shared arrays
    /// no earlier block's accesses reach.
    fn new_block(&mut self, k: i64) -> Result<(), KernelError> {
        self.settled()?;
        self.switch_thread(0);
        if let Some(b) = self.banks.as_mut() {
            b.clear();
        }
        let Some(r) = &self.races else {
            return Ok(());
        };
        let mut r = r.borrow_mut();
        r.now = Agent {
            block: k,
            thread: 0,
        };
        r.barrier();
        let first = self.kernel.params.len() + self.kernel.locals.len();
        for (j, l) in self.kernel.shared.iter().enumerate() {
            self.bufs[first + j] = BufData::zeros(l.elem, l.len);
        }
        Ok(())
    }

    /// Records `n` elements of `buf` from `at` read or written by the running thread (none
    /// of them may be the destination of a copy in flight).
    fn touch(&self, buf: usize, at: usize, n: usize, write: bool) -> Result<(), KernelError> {
        self.not_landing(buf, at, n)?;
        self.not_accumulating(buf, at, n)?;
        let Some(r) = &self.races else { return Ok(()) };
        let mut r = r.borrow_mut();
        for index in at..at + n {
            let seen = if write {
                r.write(buf, index)
            } else {
                r.read(buf, index)
            };
            seen.map_err(|race| KernelError::Race {
                kernel: self.kernel.name.clone(),
                race,
            })?;
        }
        Ok(())
    }

    fn bound(&self, buf: usize, k: i64) -> Result<usize, KernelError> {
        let len = self.bufs[buf].len();
        if k < 0 || k as usize >= len {
            return Err(KernelError::OutOfBounds {
                kernel: self.kernel.name.clone(),
                buffer: buf,
                index: k,
                len,
            });
        }
        Ok(k as usize)
    }

    fn eval(&self, e: &Expr) -> Result<Val, KernelError> {
        Ok(match e {
            Expr::Int(v) => Val::I(*v),
            Expr::F32(v) => Val::F(v.value()),
            Expr::Bool(v) => Val::B(*v),
            Expr::Var(v) => self
                .vars
                .get(v)
                .cloned()
                .expect("variables are set before use"),
            Expr::Dim(k) => Val::I(self.dims[*k]),
            Expr::Load(buf, idx) => {
                let at = self.bound(*buf, i(&self.eval(idx)?))?;
                self.touch(*buf, at, 1, false)?;
                match &self.bufs[*buf] {
                    BufData::I64(v) => Val::I(v[at]),
                    BufData::Bool(v) => Val::B(v[at] != 0),
                    floats => Val::F(floats.float(at)),
                }
            }
            Expr::VLoad(buf, idx, w) => {
                let k = i(&self.eval(idx)?);
                if matches!(self.bufs[*buf], BufData::Blocks(..)) && k % i64::from(*w) != 0 {
                    return Err(KernelError::QuantLanes {
                        kernel: self.kernel.name.clone(),
                        index: k,
                        width: *w,
                    });
                }
                self.bound(*buf, k + i64::from(*w) - 1)?;
                let at = self.bound(*buf, k)?;
                self.touch(*buf, at, usize::from(*w), false)?;
                let data = &self.bufs[*buf];
                Val::V((at..at + usize::from(*w)).map(|l| data.float(l)).collect())
            }
            Expr::Splat(a, w) => Val::V(vec![f(&self.eval(a)?); usize::from(*w)]),
            Expr::Block(buf, block, part) => {
                let k = i(&self.eval(block)?);
                let BufData::Blocks(q, bytes) = &self.bufs[*buf] else {
                    return Ok(Val::F(0.0));
                };
                let rows = if q.is_grouped() { GROUP_ROWS as i64 } else { 1 };
                let (group, r) = (k.div_euclid(rows), k.rem_euclid(rows) as usize);
                let width = part.width().map_or(1, usize::from);
                if q.is_grouped() && (r % width != 0 || r + width > GROUP_ROWS) {
                    return Err(KernelError::QuantLanes {
                        kernel: self.kernel.name.clone(),
                        index: k,
                        width: width as u8,
                    });
                }
                let (size, elems) = (q.size(), q.block_elems());
                // Element g·32 (g·512 of a group) is the block's (group's) first: bound-check.
                let first = self.bound(*buf, group.saturating_mul(elems as i64))?;
                let b = &bytes[first / elems * size..][..size];
                block_part(*q, b, r, *part)
            }
            Expr::Lane(a, l) => {
                let v = lanes(&self.eval(a)?, 1);
                match v.get(usize::from(*l)) {
                    Some(x) => Val::F(*x),
                    None => {
                        return Err(KernelError::Lane {
                            kernel: self.kernel.name.clone(),
                            lane: *l,
                            width: v.len(),
                        })
                    }
                }
            }
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (self.eval(a)?, self.eval(b)?, self.eval(c)?);
                // mul_add rounds once, as the FMA instruction does.
                match width(&[&a, &b, &c]) {
                    0 => Val::F(f(&a).mul_add(f(&b), f(&c))),
                    n => {
                        let (a, b, c) = (lanes(&a, n), lanes(&b, n), lanes(&c, n));
                        Val::V((0..n).map(|l| a[l].mul_add(b[l], c[l])).collect())
                    }
                }
            }
            Expr::Cast(t, a) => {
                let x = self.eval(a)?;
                match t {
                    Ty::F32 => Val::F(f(&x)),
                    Ty::F32xN(n) => Val::V(lanes(&x, usize::from(*n))),
                    Ty::I64 => Val::I(i(&x)),
                    Ty::Bool => Val::B(b(&x)),
                }
            }
            Expr::Select(c, x, y) => {
                if b(&self.eval(c)?) {
                    self.eval(x)?
                } else {
                    self.eval(y)?
                }
            }
            Expr::Un(op, a) => {
                let x = self.eval(a)?;
                match (op, x) {
                    (op, Val::V(v)) => {
                        Val::V(v.iter().map(|l| crate::math::unary(*op, *l)).collect())
                    }
                    (Un::Neg, Val::I(v)) => Val::I(v.wrapping_neg()),
                    (Un::Abs, Val::I(v)) => Val::I(v.wrapping_abs()),
                    (Un::Not, v) => Val::B(!b(&v)),
                    (op, v) => Val::F(crate::math::unary(*op, f(&v))),
                }
            }
            Expr::Bin(op, x, y) => binary(*op, self.eval(x)?, self.eval(y)?),
        })
    }
}

/// A comparison of two numbers (false for an operation that is not one).
fn compare<T: PartialOrd>(op: Bin, p: T, q: T) -> bool {
    match op {
        Bin::Eq => p == q,
        Bin::Ne => p != q,
        Bin::Lt => p < q,
        Bin::Le => p <= q,
        Bin::Gt => p > q,
        Bin::Ge => p >= q,
        _ => false,
    }
}

/// A binary function on values of one type (a scalar and a vector: the scalar in every lane).
fn binary(op: Bin, p: Val, q: Val) -> Val {
    if let n @ 1.. = width(&[&p, &q]) {
        let (p, q) = (lanes(&p, n), lanes(&q, n));
        let g: fn(f32, f32) -> f32 = match op {
            Bin::Add => |a, b| a + b,
            Bin::Sub => |a, b| a - b,
            Bin::Mul => |a, b| a * b,
            Bin::Div => |a, b| a / b,
            Bin::Max => crate::math::maxf,
            _ => crate::math::minf,
        };
        return Val::V((0..n).map(|l| g(p[l], q[l])).collect());
    }
    match (p, q) {
        (Val::F(p), Val::F(q)) => match op {
            Bin::Add => Val::F(p + q),
            Bin::Sub => Val::F(p - q),
            Bin::Mul => Val::F(p * q),
            Bin::Div => Val::F(p / q),
            Bin::Rem => Val::F(p % q),
            Bin::DivEuclid => Val::F(p.div_euclid(q)),
            Bin::RemEuclid => Val::F(p.rem_euclid(q)),
            Bin::Pow => Val::F(crate::math::powf(p, q)),
            Bin::Max => Val::F(crate::math::maxf(p, q)),
            Bin::Min => Val::F(crate::math::minf(p, q)),
            // Comparisons; logic on floats does not occur and gives false.
            Bin::Eq | Bin::Ne | Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge | Bin::And | Bin::Or => {
                Val::B(compare(op, p, q))
            }
        },
        (Val::B(p), Val::B(q)) => match op {
            Bin::And => Val::B(p && q),
            Bin::Or => Val::B(p || q),
            Bin::Eq => Val::B(p == q),
            Bin::Ne => Val::B(p != q),
            _ => Val::B(false),
        },
        (p, q) => {
            let (p, q) = (i(&p), i(&q));
            match op {
                Bin::Add => Val::I(p.wrapping_add(q)),
                Bin::Sub => Val::I(p.wrapping_sub(q)),
                Bin::Mul => Val::I(p.wrapping_mul(q)),
                Bin::Div => Val::I(if q == 0 { 0 } else { p.wrapping_div(q) }),
                Bin::Rem => Val::I(if q == 0 { 0 } else { p.wrapping_rem(q) }),
                Bin::DivEuclid => Val::I(crate::math::div_euclid(p, q)),
                Bin::RemEuclid => Val::I(crate::math::rem_euclid(p, q)),
                Bin::Pow => Val::I(p.wrapping_pow(q.clamp(0, 63) as u32)),
                Bin::Max => Val::I(p.max(q)),
                Bin::Min => Val::I(p.min(q)),
                Bin::Eq | Bin::Ne | Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge => {
                    Val::B(compare(op, p, q))
                }
                Bin::And => Val::B(p != 0 && q != 0),
                Bin::Or => Val::B(p != 0 || q != 0),
            }
        }
    }
}

/// Part `part` of a block `b` of elements `q`, or of rows from `r` of a group `b`; the
/// verifier admits row parts only of groups and block parts only of blocks, and anything
/// else reads as 0.
fn block_part(q: Elem, b: &[u8], r: usize, part: BlockPart) -> Val {
    use crate::storage::{
        block_min, block_quant, block_scale, group_min, group_quant, group_scale,
    };
    let run = |from: usize, width: u8, f: &dyn Fn(usize) -> f32| {
        Val::V((from..from + usize::from(width)).map(f).collect())
    };
    match (part, q.is_grouped()) {
        (BlockPart::Scale, false) => Val::F(block_scale(b)),
        (BlockPart::Min, false) => Val::F(block_min(b)),
        (BlockPart::Quants { at, width }, false) if u16::from(at) + u16::from(width) <= 32 => {
            run(usize::from(at), width, &|j| f32::from(block_quant(q, b, j)))
        }
        (BlockPart::Scales { width }, true) => run(r, width, &|r| group_scale(b, r)),
        (BlockPart::Mins { width }, true) => run(r, width, &|r| group_min(b, r)),
        (BlockPart::Column { j, width }, true) if j < 32 => run(r, width, &|r| {
            f32::from(group_quant(q, b, usize::from(j), r))
        }),
        _ => Val::F(0.0),
    }
}
