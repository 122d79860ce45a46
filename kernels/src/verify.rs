//! The Kernel IR verifier. It checks, for one kernel:
//!
//! 1. **Buffers**: every `Load`, `VLoad`, `Store` and `VStore` names a buffer in range of the
//!    params and locals; a constant index into a local lies within the local's length (for the
//!    vector forms, all four lanes do).
//! 2. **Writes**: `Store` and `VStore` write only params marked `output` or locals.
//! 3. **Status word**: the last param is the status word, an `i64` output named `status`, and
//!    no statement stores to it (checks record into it).
//! 4. **Variables**: every variable is set (by `Set` or as a loop index) before it is used, in
//!    program order, and keeps one type.
//! 5. **Types**: indices, loop extents and dims are `i64`; a binary op's operands have one
//!    type; comparisons and `and`/`or`/`not` give and take what they should; a `Select`'s
//!    condition and a `Check`'s are `bool` and its branches one type; a `Store`'s value has the
//!    buffer's element type; vector ops (`VLoad`, `VStore`, `Splat`, `Lane`) touch only `f32`
//!    buffers and values, with lanes below [`LANES`]; `Fma` takes three values of one float
//!    type; `Dim(i)` is below the kernel's dim count.
//! 6. **Parallel writes**: inside a `parallel for`, every store to a param has an index that
//!    depends on the parallel loop's variable (directly or through variables set from it), so
//!    that no two threads write one element. Locals are private to each thread and exempt, and
//!    so is a loop of at most one iteration (its extent a constant expression ≤ 1: a vector
//!    loop over a one-element output has extent `1 / 4`).

use std::collections::{HashMap, HashSet};

use crate::ir::{Bin, Elem, Expr, Kernel, LoopKind, Stmt, Ty, Un, Var, LANES};

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
        problems: Vec::new(),
    };
    match k.params.last() {
        Some(p) if p.name == "status" && p.elem == Elem::I64 && p.output => {}
        _ => v.report("the last param is not the status word (`out status: i64`)".into()),
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
        self.k.params.len() + self.k.locals.len()
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
                if *kind == LoopKind::Parallel {
                    // A loop of one iteration runs on one thread: its stores cannot race.
                    let single = constant(extent).is_some_and(|n| n <= 1);
                    self.parallel.push((!single).then(|| HashSet::from([*var])));
                }
                self.stmts(body);
                if *kind == LoopKind::Parallel {
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
            Stmt::Store(b, index, value) => self.store(*b, index, value, false),
            Stmt::VStore(b, index, value) => self.store(*b, index, value, true),
            Stmt::Check(cond, _) => self.expect(cond, Ty::Bool, "a check's condition"),
        }
    }

    fn set(&mut self, var: Var, t: Ty) {
        match self.vars.insert(var, t) {
            Some(before) if before != t => {
                self.report(format!("v{} is set as {t:?} but was {before:?}", var.0))
            }
            _ => {}
        }
    }

    fn store(&mut self, b: usize, index: &Expr, value: &Expr, vector: bool) {
        let what = if vector { "vstore" } else { "store" };
        self.buffer(b, index, vector, what);
        self.expect(index, Ty::I64, "an index");
        let Some(elem) = (b < self.buffers()).then(|| self.k.elem(b)) else {
            self.ty(value);
            return;
        };
        let want = if vector { Ty::F32x4 } else { elem.ty() };
        self.expect(value, want, &format!("the value stored to b{b}"));
        if let Some(p) = self.k.params.get(b) {
            if !p.output {
                self.report(format!("{what} to b{b}, a param not marked output"));
            } else if b + 1 == self.k.params.len() {
                self.report(format!("{what} to the status word b{b}"));
            }
            if let Some(Some(deps)) = self.parallel.last() {
                if !mentions(index, deps) {
                    self.report(format!(
                        "{what} to b{b}[{}] in a parallel loop, at an index that does not depend \
                         on the loop's variable: threads would write one element",
                        crate::print_expr(index)
                    ));
                }
            }
        }
    }

    /// Checks that buffer `b` exists (and is f32 for vector access), and that a constant index
    /// into a local is within its length.
    fn buffer(&mut self, b: usize, index: &Expr, vector: bool, what: &str) {
        if b >= self.buffers() {
            self.report(format!(
                "{what} to b{b}, but there are {} params and {} locals",
                self.k.params.len(),
                self.k.locals.len()
            ));
            return;
        }
        if vector && self.k.elem(b) != Elem::F32 {
            self.report(format!("{what} on b{b}, a {:?} buffer", self.k.elem(b)));
        }
        let lanes = if vector { LANES as i64 } else { 1 };
        if let (Some(l), Expr::Int(i)) = (b.checked_sub(self.k.params.len()), index) {
            let len = self.k.locals[l].len as i64;
            if *i < 0 || i + lanes > len {
                self.report(format!(
                    "{what} at b{b}[{i}], outside local `{}` of {len} elements",
                    self.k.locals[l].name
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
            Expr::Load(b, index) | Expr::VLoad(b, index) => {
                let vector = matches!(e, Expr::VLoad(..));
                let what = if vector { "vload" } else { "load" };
                self.buffer(*b, index, vector, what);
                self.expect(index, Ty::I64, "an index");
                if *b >= self.buffers() {
                    return None;
                }
                if vector {
                    Ty::F32x4
                } else {
                    self.k.elem(*b).ty()
                }
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
            Expr::Splat(a) => {
                self.expect(a, Ty::F32, "a splat's operand");
                Ty::F32x4
            }
            Expr::Fma(a, b, c) => {
                let t = self.ty(a)?;
                let (tb, tc) = (self.ty(b)?, self.ty(c)?);
                if !matches!(t, Ty::F32 | Ty::F32x4) || tb != t || tc != t {
                    self.report(format!("fma of {t:?}, {tb:?} and {tc:?}"));
                }
                t
            }
            Expr::Lane(a, i) => {
                self.expect(a, Ty::F32x4, "a lane's operand");
                if *i as usize >= LANES {
                    self.report(format!("lane {i} of a {LANES}-lane vector"));
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
            _ => matches!(t, Ty::F32 | Ty::F32x4),
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
        Expr::Load(_, a) | Expr::VLoad(_, a) | Expr::Un(_, a) | Expr::Cast(_, a) => {
            mentions(a, vars)
        }
        Expr::Splat(a) | Expr::Lane(a, _) => mentions(a, vars),
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
