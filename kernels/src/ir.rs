//! The Kernel IR: one kernel is a loop nest over buffers with explicit index arithmetic.
//!
//! A kernel sees its buffers through `args[i]` and the run-time values of the symbolic dims
//! through `dims[j]`, matching the one C ABI every backend implements:
//! `extern "C" fn(args: *const *mut u8, dims: *const i64)`.

pub use crate::ieee::Ieee32;
pub use crate::warpgroup::{SharedTile, WarpgroupMma, WarpgroupWait};

/// Element types of buffers, as stored in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    /// 32-bit float.
    F32,
    /// IEEE 754 half precision, 2 bytes: loads widen to f32 exactly, stores round the f32 to
    /// the nearest even half (overflow gives ±Inf, NaN stays NaN), bit for bit as the `half`
    /// crate converts.
    F16,
    /// bfloat16 (the upper half of an f32), 2 bytes: loads widen exactly, stores round to
    /// nearest even as the `half` crate does.
    BF16,
    /// 64-bit integer (i32 and i64 tensors).
    I64,
    /// One byte per boolean.
    Bool,
    /// ggml's `Q8_0`, read-only: blocks of 32 elements, each block an f16 scale `d` and 32
    /// `i8`s `q` (34 bytes); element `x = q·d`. See [`crate::storage::block_value`].
    Q8_0,
    /// ggml's `Q4_0`, read-only: blocks of 32, an f16 scale `d` and 16 bytes of nibbles
    /// (element `j < 16` is byte `j`'s low nibble, `j + 16` its high one; 18 bytes);
    /// `x = (q − 8)·d`.
    Q4_0,
    /// ggml's `Q4_1`, read-only: blocks of 32, an f16 scale `d`, an f16 minimum `m` and nibbles
    /// as `Q4_0` (20 bytes); `x = q·d + m`.
    Q4_1,
    /// `Q8_0` blocks in groups of [`GROUP_ROWS`] rows, read only by [`Expr::Block`]'s row
    /// parts: a group is 16 rows' blocks over the same 32 columns, their 16 f16 scales, then
    /// their quantized bytes byte by byte (byte `b` of row `r` at `16·b + r`), so one element of
    /// 16 rows is one run of bytes. Groups follow each other along the row, then down.
    Q8_0x16,
    /// `Q4_0` blocks in groups of [`GROUP_ROWS`] rows, as [`Elem::Q8_0x16`].
    Q4_0x16,
    /// `Q4_1` blocks in groups of [`GROUP_ROWS`] rows, as [`Elem::Q8_0x16`], the 16 f16
    /// minimums after the scales.
    Q4_1x16,
}

/// Rows per group of the grouped block-quantized element types ([`Elem::Q8_0x16`]).
pub const GROUP_ROWS: usize = 16;

/// Elements per block of the block-quantized element types.
pub const QUANT_BLOCK: usize = 32;

/// Types of scalar values inside a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// f32
    F32,
    /// i64 (also every index)
    I64,
    /// bool
    Bool,
    /// A vector of f32 lanes (the count is the width; Cranelift takes 4, LLVM any).
    F32xN(u8),
}

impl Elem {
    /// The scalar type a load of this element gives.
    pub fn ty(self) -> Ty {
        match self {
            Elem::F32 | Elem::F16 | Elem::BF16 => Ty::F32,
            Elem::I64 => Ty::I64,
            Elem::Bool => Ty::Bool,
            _ => Ty::F32,
        }
    }

    /// Bytes per element; for a block-quantized type, bytes per block of [`QUANT_BLOCK`]
    /// elements (see [`Elem::is_quantized`]), or per group of [`GROUP_ROWS`] blocks.
    pub fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F16 | Elem::BF16 => 2,
            Elem::I64 => 8,
            Elem::Bool => 1,
            Elem::Q8_0 => 34,
            Elem::Q4_0 => 18,
            Elem::Q4_1 => 20,
            grouped => grouped.block().size() * GROUP_ROWS,
        }
    }

    /// The type of a grouped type's blocks (itself for the others).
    pub fn block(self) -> Elem {
        match self {
            Elem::Q8_0x16 => Elem::Q8_0,
            Elem::Q4_0x16 => Elem::Q4_0,
            Elem::Q4_1x16 => Elem::Q4_1,
            e => e,
        }
    }

    /// Whether elements are blocks in groups of [`GROUP_ROWS`] rows ([`Elem::Q8_0x16`]):
    /// only [`Expr::Block`]'s row parts read them.
    pub fn is_grouped(self) -> bool {
        self.block() != self
    }

    /// Elements per block, or per group of blocks (1 for the unquantized types).
    pub fn block_elems(self) -> usize {
        match (self.is_grouped(), self.is_quantized()) {
            (true, _) => QUANT_BLOCK * GROUP_ROWS,
            (false, true) => QUANT_BLOCK,
            _ => 1,
        }
    }

    /// Whether elements are stored in blocks of [`QUANT_BLOCK`] with a shared scale. Such a
    /// buffer is only read (`Load` and `VLoad` dequantize: an element reads as the f32 its
    /// block encodes); a `VLoad` of one takes a width dividing 16 at an index that is a
    /// multiple of the width, so that its lanes lie in one block's run of bytes.
    pub fn is_quantized(self) -> bool {
        matches!(self.block(), Elem::Q8_0 | Elem::Q4_0 | Elem::Q4_1)
    }

    /// The bytes `n` elements take (whole blocks or groups for a block-quantized type),
    /// saturating.
    pub fn bytes(self, n: usize) -> usize {
        n.div_ceil(self.block_elems()).saturating_mul(self.size())
    }
}

/// A local variable (loop index, accumulator or let-bound value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// What a loop's axis means for the hardware, after tinygrad's `AxisType`: the schedule
/// layer of the IR. The iterations compute the same values whatever the kind; the kind says
/// which orders and which placements onto threads preserve that (see docs/TARGETS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Iterations in order, each seeing the effects of the ones before.
    Serial,
    /// Independent iterations, spread across blocks of threads (GPU blocks, CPU threads): no
    /// iteration reads what another writes, and no barrier orders them. The outermost Grid
    /// loops are the launch's grid.
    Grid,
    /// Independent iterations run by the cooperating threads of one block; they share the
    /// block's `shared` buffers and meet at barriers placed between Thread loops. CPUs run
    /// them in order on one thread.
    Thread,
    /// A reduction: each iteration combines into accumulators set before the loop and read
    /// only after it, so a target may split it (and re-associate) or run it in order. CPUs
    /// run it in order, which is what the interpreter does.
    Reduce,
    /// A loop with a constant trip count a target may unroll completely (register tiles).
    Unroll,
}

/// The threads a barrier synchronises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every thread of the block (`__syncthreads`).
    Block,
    /// The threads of one warp (`__syncwarp`).
    Warp,
}

/// Unary scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Un {
    /// −x
    Neg,
    /// |x|
    Abs,
    /// eˣ
    Exp,
    /// 2ˣ: what a GPU's special-function unit computes (`ex2.approx`). Lowering writes it where
    /// a factor of log₂ e could be folded into a value computed once (a scan's hoisted `A`).
    Exp2,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// 1/√x
    Rsqrt,
    /// tanh x
    Tanh,
    /// erf x
    Erf,
    /// sin x
    Sin,
    /// cos x
    Cos,
    /// logical not
    Not,
}

/// Binary scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bin {
    /// a + b
    Add,
    /// a − b
    Sub,
    /// a · b
    Mul,
    /// a / b (integer division truncates and by zero gives 0; lowering emits it on integers
    /// only for index arithmetic, whose operands are never negative)
    Div,
    /// a mod b for non-negative integers (index arithmetic)
    Rem,
    /// The Euclidean quotient of integers (the `q` of `a = b·q + r`, `0 ≤ r < |b|`); by zero
    /// gives 0 and `i64::MIN / -1` wraps to `i64::MIN`. Tensor `/` on integers.
    DivEuclid,
    /// The Euclidean remainder of integers (`0 ≤ r < |b|`); by zero gives 0. Tensor `%`.
    RemEuclid,
    /// aᵇ
    Pow,
    /// max(a, b)
    Max,
    /// min(a, b)
    Min,
    /// a == b
    Eq,
    /// a != b
    Ne,
    /// a < b
    Lt,
    /// a <= b
    Le,
    /// a > b
    Gt,
    /// a >= b
    Ge,
    /// logical and
    And,
    /// logical or
    Or,
}

impl Bin {
    /// True when the result is a bool.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Bin::Eq | Bin::Ne | Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge
        )
    }
}

/// A scalar expression.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// An integer constant.
    Int(i64),
    /// A float constant (as bits, so that expressions are `Eq + Hash`).
    F32(Ieee32),
    /// A boolean constant.
    Bool(bool),
    /// A variable.
    Var(Var),
    /// The run-time value of symbolic dim `dims[i]`.
    Dim(usize),
    /// `buffer[index]` (index in elements).
    Load(usize, Box<Expr>),
    /// A unary function.
    Un(Un, Box<Expr>),
    /// A binary function; both sides have one type.
    Bin(Bin, Box<Expr>, Box<Expr>),
    /// `cond ? a : b`
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Conversion to another scalar type.
    Cast(Ty, Box<Expr>),
    /// `width` consecutive elements `buffer[index..index + width]`, widened to f32 lanes.
    VLoad(usize, Box<Expr>, u8),
    /// An f32 copied into `width` lanes.
    Splat(Box<Expr>, u8),
    /// `a · b + c`, lane by lane (fused on CPUs with FMA).
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// One lane (`0..width`) of a vector value.
    Lane(Box<Expr>, u8),
    /// A part of block `block` (a block number, not an element index) of a block-quantized
    /// buffer: its scale, its minimum, or a run of its quantized integers as f32 lanes. An
    /// element is `quants · scale` (`+ min` for `Q4_1`), so a kernel can take a dot product
    /// with a block's integers first and scale it once. Of a grouped buffer
    /// ([`Elem::Q8_0x16`]), block `16·g + r` is row `r` of group `g`, and the part a row part
    /// whose lanes are the group's rows from `r`.
    Block(usize, Box<Expr>, BlockPart),
}

impl Expr {
    /// The expressions this one computes from, in order (none for a constant, a variable or
    /// a dim), for passes that rewrite every sub-expression.
    pub fn operands_mut(&mut self) -> Vec<&mut Expr> {
        match self {
            Expr::Int(_) | Expr::F32(_) | Expr::Bool(_) | Expr::Var(_) | Expr::Dim(_) => vec![],
            Expr::Load(_, a)
            | Expr::VLoad(_, a, _)
            | Expr::Un(_, a)
            | Expr::Cast(_, a)
            | Expr::Splat(a, _)
            | Expr::Lane(a, _)
            | Expr::Block(_, a, _) => vec![a],
            Expr::Bin(_, a, b) => vec![a, b],
            Expr::Select(a, b, c) | Expr::Fma(a, b, c) => vec![a, b, c],
        }
    }
}

/// What [`Expr::Block`] reads of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockPart {
    /// The scale `d` (f32).
    Scale,
    /// The minimum `m` of a `Q4_1` block (f32).
    Min,
    /// The integers of elements `at..at + width` (an `F32xN(width)`): `q` for `Q8_0` and
    /// `Q4_1`, `q − 8` for `Q4_0`. The width divides 16 and `at` is a multiple of it below 32.
    Quants {
        /// The first element, in the block.
        at: u8,
        /// How many.
        width: u8,
    },
    /// Of a grouped buffer: the scales of blocks `block..block + width` (an `F32xN(width)`),
    /// rows of one group. The width divides 16 and `block` is a multiple of it.
    Scales {
        /// How many.
        width: u8,
    },
    /// Of a `Q4_1x16` buffer: the minimums of blocks `block..block + width`, as `Scales`.
    Mins {
        /// How many.
        width: u8,
    },
    /// Of a grouped buffer: the integers of element `j` (`0..32`) of blocks
    /// `block..block + width`, as `Quants` gives them, blocks as `Scales`.
    Column {
        /// The element, in each block.
        j: u8,
        /// How many.
        width: u8,
    },
}

impl BlockPart {
    /// The lanes it reads, `None` for a scalar (a scale or a minimum of a block).
    pub fn width(self) -> Option<u8> {
        match self {
            BlockPart::Scale | BlockPart::Min => None,
            BlockPart::Quants { width, .. }
            | BlockPart::Scales { width }
            | BlockPart::Mins { width }
            | BlockPart::Column { width, .. } => Some(width),
        }
    }
}

/// A statement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stmt {
    /// `for var in 0..extent { body }`
    For {
        /// The index variable.
        var: Var,
        /// The trip count (an I64 expression).
        extent: Expr,
        /// How the iterations map onto the hardware.
        kind: Axis,
        /// The loop body.
        body: Vec<Stmt>,
    },
    /// `var = value` (declares the variable on first assignment).
    Set(Var, Expr),
    /// `buffer[index] = value`
    Store(usize, Expr, Expr),
    /// `buffer[index..index + width] = value` for a vector of `width` lanes.
    VStore(usize, Expr, Expr, u8),
    /// Unless `cond` holds, record error `code` in the status word and skip the rest of the
    /// current loop iteration's effects that depend on it (the value used is made safe).
    Check(Expr, u32),
    /// Waits until every thread of the scope has reached it; shared-buffer writes before it
    /// are visible to reads after it. It sits between the Thread loops of a block, never
    /// inside one (so a target that runs a block's Thread loops in order needs no code).
    Barrier(Scope),
    /// A hint that block `block` (numbered as [`Expr::Block`] numbers them; of a grouped
    /// buffer, the group holding it) of block-quantized param `buf` is read soon: targets
    /// may start bringing its bytes towards the core, and need do nothing. It has no effect
    /// on values, and any number is allowed (past the buffer, it fetches nothing).
    Prefetch(usize, Expr),
    /// A warp-collective tensor-core product, PTX's `mma.sync.aligned.m16n8k16.row.col` with
    /// f32 accumulation: every warp of the block, as one, computes `C ← A·B + C` for a 16×16
    /// `A`, a 16×8 `B` and a 16×8 `C` whose elements are spread over its 32 threads' own
    /// copies of three locals, as the PTX ISA's fragment layouts place them (see
    /// [`crate::fragment`]): `A` and `B` are f16 or bf16 locals (one type), `C` an f32 one. Like a
    /// barrier, it sits between the Thread loops of a block, where every thread reaches it
    /// with its fragments in place; the block's threads are whole warps.
    Mma {
        /// `A`'s 8 elements, in each thread's copy of a local.
        a: Fragment,
        /// `B`'s 4 elements.
        b: Fragment,
        /// `C`'s 4 elements, read and then overwritten with the product.
        c: Fragment,
    },
    /// A fold across lanes: in every warp, each aligned group of `lanes` consecutive threads
    /// (2, 4, 8, 16 or 32) folds its copies of elements `at..at + count` of f32 local `buf`
    /// with `op` (`Add`, `Max` or `Min`), and each thread of the group gets the result. The
    /// fold runs as a butterfly, pairs at distance 1, then 2, … (`shfl.sync.bfly`), which
    /// gives every thread the same bits. It sits between Thread loops, as [`Stmt::Mma`] does.
    WarpFold(Fold),
    /// A warp-collective load of 8 × 8 matrices of 16-bit elements from a shared array into
    /// tensor-core fragments, PTX's `ldmatrix.sync.aligned.m8n8.x{count}[.trans].shared.b16`.
    /// It sits between Thread loops, as [`Stmt::Mma`] does. See [`Matrices`].
    LoadMatrix(Matrices),
    /// An asynchronous copy by the running thread (inside a Thread loop) from a param to a
    /// shared array, PTX's `cp.async` with a source size. See [`AsyncCopy`].
    CopyAsync(AsyncCopy),
    /// Closes the running thread's copies issued since its last `AsyncWait` into a group,
    /// then waits until at most this many of its groups are still in flight
    /// (`cp.async.commit_group; cp.async.wait_group N`). It sits inside a Thread loop; the
    /// other threads of the block see what landed after a barrier that follows.
    AsyncWait(u8),
    /// Hopper's warpgroup tensor-core product from shared memory (`wgmma.mma_async`), see
    /// [`WarpgroupMma`]. It sits between Thread loops, as [`Stmt::Mma`] does, in a block of
    /// whole warpgroups; the shared writes before the barrier that precedes it are what it
    /// reads. It is asynchronous: a [`Stmt::WarpgroupWait`] completes it.
    WarpgroupMma(WarpgroupMma),
    /// Waits until at most `pending` of the warpgroup's products are in flight
    /// (`wgmma.wait_group`), see [`WarpgroupWait`]. It sits where a [`Stmt::WarpgroupMma`]
    /// does.
    WarpgroupWait(WarpgroupWait),
}

/// What a [`Stmt::CopyAsync`] copies: elements `src_at..src_at + width` of param `src`, an
/// input, to elements `dst_at..` of shared array `dst` of the same type, of which only the
/// first `valid` (clamped to `0..=width`) are read and the rest are zeros. `width` elements
/// are 4, 8 or 16 bytes, and both indices are multiples of `width` where anything is read
/// (the hardware's alignment; a param's first element is 16-byte aligned). Until the
/// thread's [`Stmt::AsyncWait`] completes the copy's group, no thread may touch its
/// destination: the elements land at some time in between.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AsyncCopy {
    /// The shared array written.
    pub dst: usize,
    /// Its first element written.
    pub dst_at: Expr,
    /// The param read.
    pub src: usize,
    /// Its first element read.
    pub src_at: Expr,
    /// How many elements.
    pub width: u8,
    /// How many of them are read (an `i64`; the rest are zeros).
    pub valid: Expr,
}

/// What a [`Stmt::LoadMatrix`] loads. In every warp, lanes `8i..8i + 8` each point at one row
/// of matrix `i` (`0..count`): 8 consecutive elements of the shared array, starting at a
/// multiple of 8 (16 bytes, as the hardware asks). Lane `l` then gets two elements of each
/// matrix `i` in elements `at + 2i` and `at + 2i + 1` of its copy of the destination: row
/// `l / 4`, columns `2(l mod 4)` and `+1`; or, transposed, column `l / 4` of rows `2(l mod 4)`
/// and `+1`. Those are the places an `mma.m16n8k16` fragment register wants (see
/// [`crate::fragment`]), so one instruction replaces eight loads per thread.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Matrices {
    /// The destination: a local of the source's 16-bit type, `2·count` elements from `at`.
    pub dst: Fragment,
    /// The shared array read.
    pub src: usize,
    /// Bound to each thread's index in the block while `row` is evaluated for it.
    pub thread: Var,
    /// The element of `src` where the row thread `thread` points at starts.
    pub row: Expr,
    /// How many matrices: 1, 2 or 4.
    pub count: u8,
    /// Whether each matrix arrives transposed.
    pub trans: bool,
}

/// What a [`Stmt::WarpFold`] folds, and across how many lanes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fold {
    /// The fold: `Add`, `Max` or `Min`.
    pub op: Bin,
    /// The f32 local.
    pub buf: usize,
    /// Its first element folded (alike in every thread).
    pub at: Expr,
    /// How many consecutive elements are folded, each on its own.
    pub count: u8,
    /// The threads of a group.
    pub lanes: u8,
}

/// Where a thread's share of a tensor-core operand lies: elements `at..at + n` of its copy of
/// local `buf` (`n` is 8 for `A`, 4 for `B` and `C`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// The local.
    pub buf: usize,
    /// The first element (an `i64` expression alike in every thread, even for `A` and `B`).
    pub at: Expr,
}

/// One buffer argument of a kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    /// A name for dumps.
    pub name: String,
    /// Element type in memory.
    pub elem: Elem,
    /// Whether the kernel writes it.
    pub output: bool,
}

/// A small array private to each thread running the kernel (an accumulator row, a block of
/// scores, a recurrent state). Its size is known when the kernel is compiled.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Local {
    /// A name for dumps.
    pub name: String,
    /// Element type.
    pub elem: Elem,
    /// Number of elements.
    pub len: usize,
}

/// A kernel: buffers in, buffers out, one loop nest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// A unique, stable name.
    pub name: String,
    /// The buffers, in `args` order. The last one is always the status word (one i64).
    pub params: Vec<Param>,
    /// Thread-private arrays, addressed as buffers `params.len()`, `params.len() + 1`, ….
    pub locals: Vec<Local>,
    /// Workgroup-shared arrays (size known at compile time), one per block of cooperating
    /// threads, addressed after the locals. On CPUs a block is one iteration of the Grid
    /// loops run by one OS thread, so they live in its stack frame like locals.
    pub shared: Vec<Local>,
    /// The statements.
    pub body: Vec<Stmt>,
    /// On a GPU, the blocks each multiprocessor should hold at once: code generation caps the
    /// registers per thread to fit them (PTX's `.minnctapersm`), where ptxas alone would
    /// spend more and leave a launch of few blocks in two waves. `None` leaves it to ptxas.
    pub occupancy: Option<u32>,
}

/// The most thread-private memory one kernel may use (256 MiB). Locals live in each thread's
/// stack frame; a model with absurd dims (a head of 10⁵ channels) would otherwise need more
/// stack than any thread has.
pub const MAX_LOCAL_BYTES: usize = 256 << 20;

impl Kernel {
    /// The bytes of stack its locals and shared arrays take on a CPU thread (each at least
    /// 16, as code generators allocate them), saturating.
    pub fn local_bytes(&self) -> usize {
        self.arrays().fold(0usize, |acc, l| {
            acc.saturating_add(l.len.saturating_mul(l.elem.size()).max(16))
        })
    }

    /// Whether a launch of it may fail: it has a check (its status word then not 0).
    pub fn has_checks(&self) -> bool {
        fn any(body: &[Stmt]) -> bool {
            body.iter().any(|s| match s {
                Stmt::Check(..) => true,
                Stmt::For { body, .. } => any(body),
                _ => false,
            })
        }
        any(&self.body)
    }

    /// The locals, then the shared arrays: buffers `params.len()..` in order.
    pub fn arrays(&self) -> impl Iterator<Item = &Local> {
        self.locals.iter().chain(&self.shared)
    }

    /// The element type of buffer `b` (a parameter, a local or a shared array).
    pub fn elem(&self, b: usize) -> Elem {
        match self.params.get(b) {
            Some(p) => p.elem,
            None => self
                .arrays()
                .nth(b - self.params.len())
                .map_or(Elem::F32, |l| l.elem),
        }
    }
}

/// Helpers that keep kernel templates short.
pub mod build {
    use super::*;

    /// `a + b`
    pub fn add(a: Expr, b: Expr) -> Expr {
        Expr::Bin(Bin::Add, Box::new(a), Box::new(b))
    }
    /// `a * b`
    pub fn mul(a: Expr, b: Expr) -> Expr {
        Expr::Bin(Bin::Mul, Box::new(a), Box::new(b))
    }
    /// `a - b`
    pub fn sub(a: Expr, b: Expr) -> Expr {
        Expr::Bin(Bin::Sub, Box::new(a), Box::new(b))
    }
    /// `a op b`
    pub fn bin(op: Bin, a: Expr, b: Expr) -> Expr {
        Expr::Bin(op, Box::new(a), Box::new(b))
    }
    /// `buffer[index]`
    pub fn load(buf: usize, index: Expr) -> Expr {
        Expr::Load(buf, Box::new(index))
    }
    /// A variable's value.
    pub fn var(v: Var) -> Expr {
        Expr::Var(v)
    }
    /// An f32 constant.
    pub fn f32(v: f32) -> Expr {
        Expr::F32(Ieee32::new(v))
    }
    /// An f32 copied into `width` lanes.
    pub fn splat(e: Expr, width: u8) -> Expr {
        Expr::Splat(Box::new(e), width)
    }
    /// eˣ
    pub fn exp(e: Expr) -> Expr {
        Expr::Un(Un::Exp, Box::new(e))
    }
    /// `for var in 0..extent { body }`, in order.
    pub fn serial(var: Var, extent: Expr, body: Vec<Stmt>) -> Stmt {
        Stmt::For {
            var,
            extent,
            kind: Axis::Serial,
            body,
        }
    }
    /// `for var in 0..extent { body }` with axis kind `kind`.
    pub fn axis(kind: Axis, var: Var, extent: Expr, body: Vec<Stmt>) -> Stmt {
        Stmt::For {
            var,
            extent,
            kind,
            body,
        }
    }
    /// Sum of expressions (0 for none), folding integer constants.
    pub fn sum(terms: Vec<Expr>) -> Expr {
        let mut konst = 0i64;
        let mut rest: Vec<Expr> = Vec::new();
        for t in terms {
            match t {
                Expr::Int(k) => konst += k,
                e => rest.push(e),
            }
        }
        let mut acc = rest.into_iter().reduce(add);
        if konst != 0 || acc.is_none() {
            acc = Some(match acc {
                Some(a) => add(a, Expr::Int(konst)),
                None => Expr::Int(konst),
            });
        }
        acc.unwrap_or(Expr::Int(0))
    }
    /// Product of integer expressions (1 for none), dropping factors of 1.
    pub fn product(factors: Vec<Expr>) -> Expr {
        let mut konst = 1i64;
        let mut rest: Vec<Expr> = Vec::new();
        for f in factors {
            match f {
                Expr::Int(k) => konst *= k,
                e => rest.push(e),
            }
        }
        if konst == 0 {
            return Expr::Int(0);
        }
        let acc = rest.into_iter().reduce(mul);
        match (acc, konst) {
            (Some(a), 1) => a,
            (Some(a), k) => mul(a, Expr::Int(k)),
            (None, k) => Expr::Int(k),
        }
    }
}
