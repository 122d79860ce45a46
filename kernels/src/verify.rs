//! The Kernel IR verifier. It checks, for one kernel:
//!
//! 1. **Buffers**: every `Load`, `VLoad`, `Store` and `VStore` names a buffer in range of the
//!    params, locals and shared arrays; a constant index into a local or shared array lies
//!    within its length (for the vector forms, all `width` lanes do).
//! 2. **Writes**: `Store` and `VStore` write only params marked `output`, locals or shared
//!    arrays.
//! 3. **Status word**: the last param is the status word, an `i64` output named `status`, and
//!    no statement stores to it (checks record into it).
//! 4. **Variables**: every variable is set (by `Set` or as a loop index) before it is used, in
//!    program order, and keeps one type.
//! 5. **Types**: indices, loop extents and dims are `i64`; a binary op's operands have one
//!    type; comparisons and `and`/`or`/`not` give and take what they should; a `Select`'s
//!    condition and a `Check`'s are `bool` and its branches one type; a `Store`'s value has the
//!    buffer's element type (f16 and bf16 buffers load and store f32 values); vector ops
//!    (`VLoad`, `VStore`, `Splat`, `Lane`) touch only float buffers and `f32` values, a
//!    `VStore`'s value is an `F32xN` of its width, and a lane is below its vector's width;
//!    `Fma` takes three values of one float type; `Dim(i)` is below the kernel's dim count.
//! 6. **Parallel writes**: inside a `Grid` loop, every store to a param has an index that
//!    depends on the loop's variable (directly or through variables set from it), so that no
//!    two blocks write one element. Locals (private to each thread) and shared arrays (private
//!    to each block) are exempt, and so is a loop of at most one iteration (its extent a
//!    constant expression ≤ 1: a vector loop over a one-element output has extent `1 / 4`).
//! 7. **Barriers**: a `Barrier` sits between the `Thread` loops of a block, never inside one.
//! 8. **Quantized buffers** ([`Elem::is_quantized`]) are params that are only read; a
//!    `VLoad` of one has a width dividing 16. `Block` reads only such params, a minimum only
//!    of `Q4_1`, and runs of integers that lie in one block (widths dividing 16, starting at a
//!    multiple of their width). (That its index is a multiple of the width is
//!    the lowering's promise, which the interpreter checks as it runs.) A grouped buffer
//!    ([`Elem::is_grouped`]) is read only by `Block`'s row parts, and those read only it.
//!    (That their first block is a multiple of their width is again the lowering's promise.)
//! 9. **A warp's collective work**: an `Mma` or a `WarpFold` sits inside a `Grid` loop but
//!    between the `Thread` loops of its block, where whole warps reach it (the block's threads
//!    are a constant multiple of 32). An `Mma`'s `A` and `B` are locals of one 16-bit float
//!    type and its `C` an f32 local; a constant offset leaves the fragment inside its local,
//!    even for `A` and `B` (a register holds a pair). A `WarpFold` folds an f32 local's
//!    elements (inside it when constant) by add, max or min across 2 to 32 lanes, a power of
//!    two. A `LoadMatrix` reads 1, 2 or 4 matrices from a shared array of f16 or bf16 into a
//!    local of the same type, at an even offset that leaves them inside it when constant; its
//!    row is an `i64` of the thread variable it binds.
//!    A `WarpgroupMma` is placed so too, in a block of whole warpgroups (128 threads each,
//!    splitting the rows of its `A` tile); its
//!    `A` and `B` are shared arrays of one 16-bit float type whose core matrices lie a
//!    multiple of 16 bytes apart, within a descriptor's reach (a K-major tile is swizzled,
//!    its atoms and k16 slabs a multiple of 256 bytes apart; an MN-major one is not); its `C` an f32 local that holds
//!    `m · n / 128` elements from a constant offset; whether it accumulates is a `bool`; `m`
//!    is a multiple of 64, `n` of 8 up to 256, `k` of 16; each tile (`A`: the block's
//!    warpgroups × `m` rows) lies inside its array from its start (from 0 when that is not
//!    constant). A `WarpgroupWait` is placed so too; its accumulators are an f32 local
//!    holding `len` elements from a constant offset, the `C` and `m · n / 128` of a product
//!    in the kernel.
//! 10. **Asynchronous copies**: a `CopyAsync` and an `AsyncWait` sit inside a Thread loop of
//!     a block; a copy reads an input param (not quantized) into a shared array of its type,
//!     4, 8 or 16 bytes; a constant destination is a multiple of its width, inside the array.

use std::collections::{HashMap, HashSet};

mod warps;

use crate::ir::{Axis, Bin, BlockPart, Elem, Expr, Kernel, Stmt, Ty, Un, Var};

/// One broken invariant: where (the kernel, and the statement path) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where it is: `kernel k3_add`.
    pub at: String,
    /// What is wrong.
    pub what: String,
}

/// Checks one kernel that reads `dims` symbolic dims; the problems found, in program order.
pub fn verify_kernel(k: &Kernel, dims: usize) -> Vec<Problem> {
    let mut v = Verifier {
        k,
        dims,
        vars: HashMap::new(),
        parallel: Vec::new(),
        threads: 0,
        products: warps::products(&k.body),
        problems: Vec::new(),
    };
    match k.params.last() {
        Some(p) if p.name == "status" && p.elem == Elem::I64 && p.output => {}
        _ => v.report("the last param is not the status word (`out status: i64`)".into()),
    }
    for a in k.arrays().filter(|a| a.elem.is_quantized()) {
        v.report(format!("array `{}` is block-quantized", a.name));
    }
    v.stmts(&k.body);
    v.problems
}

struct Verifier<'a> {
    k: &'a Kernel,
    dims: usize,
    /// The variables set so far, with their types.
    vars: HashMap<Var, Ty>,
    /// For each enclosing parallel loop, the variables that depend on its index (None for a
    /// loop of one iteration).
    parallel: Vec<Option<HashSet<Var>>>,
    /// How many `Thread` loops enclose the current statement.
    threads: usize,
    /// The kernel's warpgroup products, whose accumulators its waits name.
    products: Vec<&'a crate::ir::WarpgroupMma>,
    problems: Vec<Problem>,
}

impl Verifier<'_> {
    fn report(&mut self, what: String) {
        self.problems.push(Problem {
            at: format!("kernel {}", self.k.name),
            what,
        });
    }

    fn buffers(&self) -> usize {
        self.k.params.len() + self.k.locals.len() + self.k.shared.len()
    }

    fn stmts(&mut self, body: &[Stmt]) {
        for s in body {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => {
                self.expect(extent, Ty::I64, "a loop extent");
                self.set(*var, Ty::I64);
                if *kind == Axis::Grid {
                    // A loop of one iteration runs on one thread: its stores cannot race.
                    let single = constant(extent).is_some_and(|n| n <= 1);
                    self.parallel.push((!single).then(|| HashSet::from([*var])));
                }
                self.threads += usize::from(*kind == Axis::Thread);
                self.stmts(body);
                self.threads -= usize::from(*kind == Axis::Thread);
                if *kind == Axis::Grid {
                    self.parallel.pop();
                }
            }
            Stmt::Set(var, e) => {
                if let Some(t) = self.ty(e) {
                    self.set(*var, t);
                }
                for deps in self.parallel.iter_mut().flatten() {
                    if mentions(e, deps) {
                        deps.insert(*var);
                    }
                }
            }
            Stmt::Store(b, index, value) => self.store(*b, index, value, None),
            Stmt::VStore(b, index, value, w) => self.store(*b, index, value, Some(*w)),
            Stmt::Check(cond, _) => self.expect(cond, Ty::Bool, "a check's condition"),
            Stmt::Prefetch(b, block) => {
                self.expect(block, Ty::I64, "a block number");
                let elem = self.k.params.get(*b).map(|p| p.elem);
                if !elem.is_some_and(Elem::is_quantized) {
                    self.report(format!("prefetch of b{b}, not a block-quantized param"));
                }
            }
            Stmt::Mma { a, b, c } => self.mma([a, b, c]),
            Stmt::WarpFold(fold) => self.warp_fold(fold),
            Stmt::LoadMatrix(m) => self.load_matrix(m),
            Stmt::CopyAsync(c) => self.copy_async(c),
            Stmt::WarpgroupMma(w) => self.warpgroup_mma(w),
            Stmt::WarpgroupWait(w) => self.warpgroup_wait(w),
            Stmt::AsyncWait(_) => {
                if self.threads == 0 || self.parallel.is_empty() {
                    self.report("an asynchronous wait outside a Thread loop of a block".into());
                }
            }
            Stmt::Barrier(scope) => {
                if self.threads > 0 {
                    self.report(format!(
                        "a {scope:?} barrier inside a Thread loop: the threads would not all \
                         reach it"
                    ));
                }
            }
        }
    }

    /// The length of local or shared array `b` (0 for a param).
    fn local_len(&self, b: usize) -> usize {
        let j = b.checked_sub(self.k.params.len());
        j.and_then(|j| self.k.arrays().nth(j)).map_or(0, |l| l.len)
    }

    fn set(&mut self, var: Var, t: Ty) {
        match self.vars.insert(var, t) {
            Some(before) if before != t => {
                self.report(format!("v{} is set as {t:?} but was {before:?}", var.0))
            }
            _ => {}
        }
    }

    /// Checks a store (`width` given for a vector store).
    fn store(&mut self, b: usize, index: &Expr, value: &Expr, width: Option<u8>) {
        let what = if width.is_some() { "vstore" } else { "store" };
        self.buffer(b, index, width, what);
        self.expect(index, Ty::I64, "an index");
        let Some(elem) = (b < self.buffers()).then(|| self.k.elem(b)) else {
            self.ty(value);
            return;
        };
        let want = width.map_or(elem.ty(), Ty::F32xN);
        self.expect(value, want, &format!("the value stored to b{b}"));
        if elem.is_quantized() {
            self.report(format!(
                "{what} to b{b}, a block-quantized buffer (read-only)"
            ));
        }
        if let Some(p) = self.k.params.get(b) {
            if !p.output {
                self.report(format!("{what} to b{b}, a param not marked output"));
            } else if b + 1 == self.k.params.len() {
                self.report(format!("{what} to the status word b{b}"));
            }
            if let Some(Some(deps)) = self.parallel.last() {
                if !mentions(index, deps) {
                    self.report(format!(
                        "{what} to b{b}[{}] in a Grid loop, at an index that does not depend on \
                         the loop's variable: threads would write one element",
                        crate::print_expr(index)
                    ));
                }
            }
        }
    }

    /// Checks a read of part `part` of a block of buffer `b`: a block-quantized param, a
    /// minimum only of a `Q4_1` one, a run of integers inside one block; row parts only of a
    /// grouped one, rows inside the group. Its type.
    fn block(&mut self, b: usize, part: BlockPart) -> Option<Ty> {
        let elem = self.k.params.get(b).map(|p| p.elem);
        let Some(elem) = elem.filter(|e| e.is_quantized()) else {
            self.report(format!("block read of b{b}, not a block-quantized param"));
            return None;
        };
        let (fits, width) = match part {
            BlockPart::Scale | BlockPart::Min => (true, None),
            BlockPart::Quants { at, width } => (at < 32 && at % width.max(1) == 0, Some(width)),
            BlockPart::Scales { width } | BlockPart::Mins { width } => (true, Some(width)),
            BlockPart::Column { j, width } => (j < 32, Some(width)),
        };
        let row_part = !matches!(
            part,
            BlockPart::Scale | BlockPart::Min | BlockPart::Quants { .. }
        );
        if row_part != elem.is_grouped() {
            self.report(format!(
                "{part:?} of b{b}, a {elem:?} buffer: row parts read groups of rows (Q8_0x16 \
                 and kin), the others plain blocks"
            ));
        }
        let min = matches!(part, BlockPart::Min | BlockPart::Mins { .. });
        if min && elem.block() != Elem::Q4_1 {
            self.report(format!(
                "minimum of b{b}, a {elem:?} buffer (only Q4_1 has one)"
            ));
        }
        let whole = width.is_none_or(|w| w > 0 && 16 % w == 0);
        if !fits || !whole {
            self.report(format!(
                "{part:?} of b{b}: widths divide 16, runs start at a multiple of theirs inside \
                 the block"
            ));
        }
        Some(width.map_or(Ty::F32, Ty::F32xN))
    }

    /// Checks that buffer `b` exists (and holds floats for vector access of `width` lanes),
    /// and that a constant index into a local or shared array is within its length.
    fn buffer(&mut self, b: usize, index: &Expr, width: Option<u8>, what: &str) {
        if b >= self.buffers() {
            self.report(format!(
                "{what} to b{b}, but there are {} params, {} locals and {} shared arrays",
                self.k.params.len(),
                self.k.locals.len(),
                self.k.shared.len()
            ));
            return;
        }
        if width.is_some() && self.k.elem(b).ty() != Ty::F32 {
            self.report(format!("{what} on b{b}, a {:?} buffer", self.k.elem(b)));
        }
        if let Some(w) = width.filter(|_| self.k.elem(b).is_quantized()) {
            if w == 0 || 16 % w != 0 {
                self.report(format!(
                    "{what} of {w} lanes on b{b}, a block-quantized buffer (widths divide 16)"
                ));
            }
        }
        if self.k.elem(b).is_grouped() {
            self.report(format!(
                "{what} of b{b}, a {:?} buffer: groups of rows are read only by Block's row parts",
                self.k.elem(b)
            ));
        }
        let lanes = width.map_or(1, i64::from);
        let array = b
            .checked_sub(self.k.params.len())
            .and_then(|l| self.k.arrays().nth(l));
        if let (Some(array), Expr::Int(i)) = (array, index) {
            let len = array.len as i64;
            if *i < 0 || i + lanes > len {
                self.report(format!(
                    "{what} at b{b}[{i}], outside array `{}` of {len} elements",
                    array.name
                ));
            }
        }
    }

    fn expect(&mut self, e: &Expr, want: Ty, what: &str) {
        match self.ty(e) {
            Some(t) if t != want => self.report(format!("{what} is {t:?}, not {want:?}")),
            _ => {}
        }
    }

    /// The type of `e`, reporting what is wrong inside it (None once something is).
    fn ty(&mut self, e: &Expr) -> Option<Ty> {
        Some(match e {
            Expr::Int(_) => Ty::I64,
            Expr::F32(_) => Ty::F32,
            Expr::Bool(_) => Ty::Bool,
            Expr::Var(v) => match self.vars.get(v) {
                Some(t) => *t,
                None => {
                    self.report(format!("v{} is used before it is set", v.0));
                    return None;
                }
            },
            Expr::Dim(i) => {
                if *i >= self.dims {
                    self.report(format!("dims[{i}] read, but there are {} dims", self.dims));
                }
                Ty::I64
            }
            Expr::Load(b, index) => {
                self.buffer(*b, index, None, "load");
                self.expect(index, Ty::I64, "an index");
                if *b >= self.buffers() {
                    return None;
                }
                self.k.elem(*b).ty()
            }
            Expr::VLoad(b, index, w) => {
                self.buffer(*b, index, Some(*w), "vload");
                self.expect(index, Ty::I64, "an index");
                if *b >= self.buffers() {
                    return None;
                }
                Ty::F32xN(*w)
            }
            Expr::Block(b, block, part) => {
                self.expect(block, Ty::I64, "a block number");
                self.block(*b, *part)?
            }
            Expr::Un(op, a) => self.unary(*op, a)?,
            Expr::Bin(op, a, b) => self.binary(*op, a, b)?,
            Expr::Select(c, a, b) => {
                self.expect(c, Ty::Bool, "a select's condition");
                let (a, b) = (self.ty(a)?, self.ty(b)?);
                if a != b {
                    self.report(format!("select between {a:?} and {b:?}"));
                }
                a
            }
            Expr::Cast(t, a) => {
                self.ty(a)?;
                *t
            }
            Expr::Splat(a, w) => {
                self.expect(a, Ty::F32, "a splat's operand");
                Ty::F32xN(*w)
            }
            Expr::Fma(a, b, c) => {
                let t = self.ty(a)?;
                let (tb, tc) = (self.ty(b)?, self.ty(c)?);
                if !matches!(t, Ty::F32 | Ty::F32xN(_)) || tb != t || tc != t {
                    self.report(format!("fma of {t:?}, {tb:?} and {tc:?}"));
                }
                t
            }
            Expr::Lane(a, i) => {
                match self.ty(a)? {
                    Ty::F32xN(w) if *i < w => {}
                    Ty::F32xN(w) => self.report(format!("lane {i} of a {w}-lane vector")),
                    t => self.report(format!("a lane's operand is {t:?}, not a vector")),
                }
                Ty::F32
            }
        })
    }

    fn unary(&mut self, op: Un, a: &Expr) -> Option<Ty> {
        let t = self.ty(a)?;
        let ok = match op {
            Un::Not => t == Ty::Bool,
            Un::Neg | Un::Abs => t != Ty::Bool,
            _ => matches!(t, Ty::F32 | Ty::F32xN(_)),
        };
        if !ok {
            self.report(format!("{op:?} of {t:?}"));
        }
        Some(t)
    }

    fn binary(&mut self, op: Bin, a: &Expr, b: &Expr) -> Option<Ty> {
        let (ta, tb) = (self.ty(a)?, self.ty(b)?);
        if ta != tb {
            self.report(format!(
                "{op:?} of {ta:?} and {tb:?}: operands differ in type"
            ));
            return None;
        }
        let ok = match op {
            Bin::And | Bin::Or => ta == Ty::Bool,
            Bin::Eq | Bin::Ne => true,
            _ => ta != Ty::Bool,
        };
        if !ok {
            self.report(format!("{op:?} of {ta:?}"));
        }
        Some(if op.is_comparison() { Ty::Bool } else { ta })
    }
}

/// Whether `e` reads any of `vars`.
fn mentions(e: &Expr, vars: &HashSet<Var>) -> bool {
    match e {
        Expr::Var(v) => vars.contains(v),
        Expr::Int(_) | Expr::F32(_) | Expr::Bool(_) | Expr::Dim(_) => false,
        Expr::Load(_, a)
        | Expr::VLoad(_, a, _)
        | Expr::Un(_, a)
        | Expr::Cast(_, a)
        | Expr::Block(_, a, _) => mentions(a, vars),
        Expr::Splat(a, _) | Expr::Lane(a, _) => mentions(a, vars),
        Expr::Bin(_, a, b) => mentions(a, vars) || mentions(b, vars),
        Expr::Select(a, b, c) | Expr::Fma(a, b, c) => {
            mentions(a, vars) || mentions(b, vars) || mentions(c, vars)
        }
    }
}

/// The value of an integer expression made of constants, if it is one (as the code
/// generators compute it: division and remainder by zero give 0).
fn constant(e: &Expr) -> Option<i64> {
    match e {
        Expr::Int(n) => Some(*n),
        Expr::Bin(op, a, b) => {
            let (a, b) = (constant(a)?, constant(b)?);
            match op {
                Bin::Add => a.checked_add(b),
                Bin::Sub => a.checked_sub(b),
                Bin::Mul => a.checked_mul(b),
                Bin::Div => Some(a.checked_div(b).unwrap_or(0)),
                Bin::Rem => Some(a.checked_rem(b).unwrap_or(0)),
                Bin::Max => Some(a.max(b)),
                Bin::Min => Some(a.min(b)),
                _ => None,
            }
        }
        _ => None,
    }
}
