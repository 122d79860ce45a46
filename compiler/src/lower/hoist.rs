//! Loads that read one address at every step of a loop, hoisted out of it.
//!
//! A scan's step reads some inputs at the channel's and the state element's coordinates only
//! (Mamba's `A[channel, k]`): the same values at every step, a load per state element per
//! step. LLVM does not hoist them itself: the step runs under a guard (`t < len`), and it
//! stores outputs through pointers that may alias the inputs as far as LLVM knows. Here each
//! such load becomes a read of a thread-local array, filled once before the loop in unrolled
//! state loops, so that the array lives in registers. On a GPU whose lanes are neighbouring
//! channels, those loads are strided (a channel's state elements lie together), so each one
//! touched as many cache lines as the warp has lanes.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use archc_kernels::ir::{Elem, Expr, Local, Stmt, Var};

use super::body::vars_of;

/// The loads [`Hoist::rewrite`] took out of a loop, and what fills their arrays.
pub(super) struct Hoist<'a> {
    /// The buffers whose loads may move: inputs, which the kernel never writes.
    inputs: Range<usize>,
    /// Variables that keep their value through the loop (the channel's coordinates).
    fixed: &'a HashSet<Var>,
    /// The state element's variables (of the unrolled state loops inside each step)…
    state: &'a [Var],
    /// … and its index in a thread's arrays of the state.
    slot: &'a Expr,
    /// The first local buffer the arrays take.
    first_local: usize,
    /// Each hoisted load's array, by the load.
    arrays: HashMap<(usize, Expr), usize>,
    /// The hoisted loads in the order of their arrays.
    loads: Vec<(usize, Expr)>,
}

impl<'a> Hoist<'a> {
    /// A hoist of loads from `inputs` whose index reads only `fixed` and `state` variables
    /// (one state element at `slot`), into local arrays from buffer `first_local` on.
    pub fn new(
        inputs: Range<usize>,
        (fixed, state, slot): (&'a HashSet<Var>, &'a [Var], &'a Expr),
        first_local: usize,
    ) -> Hoist<'a> {
        Hoist {
            inputs,
            fixed,
            state,
            slot,
            first_local,
            arrays: HashMap::new(),
            loads: Vec::new(),
        }
    }

    /// Replaces, in `stmts`, every load that reads one address per state element with a read
    /// of its array.
    pub fn rewrite(&mut self, stmts: &mut [Stmt]) {
        for s in stmts {
            match s {
                Stmt::For { extent, body, .. } => {
                    self.expr(extent);
                    self.rewrite(body);
                }
                Stmt::Set(_, e) | Stmt::Check(e, _) | Stmt::Prefetch(_, e) => self.expr(e),
                Stmt::Store(_, i, v) | Stmt::VStore(_, i, v, _) => {
                    self.expr(i);
                    self.expr(v);
                }
                // Templates' collective statements do not occur in a scan's steps.
                Stmt::Barrier(_)
                | Stmt::Mma { .. }
                | Stmt::WarpFold(_)
                | Stmt::LoadMatrix(_)
                | Stmt::CopyAsync(_)
                | Stmt::AsyncWait(_)
                | Stmt::WarpgroupMma(_) => {}
            }
        }
    }

    fn expr(&mut self, e: &mut Expr) {
        if let Expr::Load(buf, idx) = e {
            if self.moves(*buf, idx) {
                let key = (*buf, (**idx).clone());
                let next = self.first_local + self.loads.len();
                let array = *self.arrays.entry(key.clone()).or_insert(next);
                if array == next {
                    self.loads.push(key);
                }
                *e = Expr::Load(array, Box::new(self.slot.clone()));
                return;
            }
        }
        for operand in e.operands_mut() {
            self.expr(operand);
        }
    }

    /// Whether a load of `buf` at `idx` moves: an input, at an index that reads no memory
    /// and only fixed and state variables, at least one of each. A load without state
    /// variables is the channel's, which the body generator computes once already; one
    /// without fixed variables reads the same element in every lane of a warp (a norm's
    /// weight over the state), one broadcast line, which is not worth the registers.
    fn moves(&self, buf: usize, idx: &Expr) -> bool {
        let mut vars = Vec::new();
        vars_of(idx, &mut vars);
        self.inputs.contains(&buf)
            && !reads_memory(idx)
            && vars.iter().any(|v| self.state.contains(v))
            && vars.iter().any(|v| self.fixed.contains(v))
            && vars
                .iter()
                .all(|v| self.fixed.contains(v) || self.state.contains(v))
    }

    /// The local arrays of the hoisted loads, `len` elements each.
    pub fn locals(&self, len: usize) -> Vec<Local> {
        (0..self.loads.len())
            .map(|i| Local {
                name: format!("hoisted{i}"),
                elem: Elem::F32,
                len,
            })
            .collect()
    }

    /// What fills the arrays, for one state element (at the slot, inside the state loops the
    /// caller wraps it in).
    pub fn fills(&self) -> Vec<Stmt> {
        self.loads
            .iter()
            .enumerate()
            .map(|(i, (buf, idx))| {
                let load = Expr::Load(*buf, Box::new(idx.clone()));
                Stmt::Store(self.first_local + i, self.slot.clone(), load)
            })
            .collect()
    }
}

/// Whether `e` reads a buffer.
fn reads_memory(e: &Expr) -> bool {
    fn any(e: &mut Expr) -> bool {
        matches!(e, Expr::Load(..) | Expr::VLoad(..) | Expr::Block(..))
            || e.operands_mut().into_iter().any(any)
    }
    any(&mut e.clone())
}
