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
//!
//! An array that only feeds exponentials of products (Mamba's `exp(Δ·A)`) is filled with
//! `A·log₂ e` instead, and those exponentials become `exp2`: a GPU computes eˣ as `2^(x·log₂ e)`
//! (`ex2.approx`), so this takes a multiply per state element out of every step, as mamba-ssm
//! folds log₂ e into `A` once per kernel.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use archc_kernels::ir::build::{f32, mul};
use archc_kernels::ir::{Bin, Elem, Expr, Local, Stmt, Un, Var};

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
    /// The local buffers filled with their load times log₂ e.
    scaled: HashSet<usize>,
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
            scaled: HashSet::new(),
        }
    }

    /// Replaces, in `stmts`, every load that reads one address per state element with a read
    /// of its array, and folds log₂ e into the arrays that only feed exponentials.
    pub fn rewrite(&mut self, stmts: &mut [Stmt]) {
        each_expr(stmts, &mut |e| self.expr(e));
        let arrays: HashSet<usize> = (0..self.loads.len())
            .map(|i| self.first_local + i)
            .collect();
        let mut uses = HashMap::new();
        each_expr(stmts, &mut |e| count_uses(e, &arrays, &mut uses));
        self.scaled = uses
            .into_iter()
            .filter(|(_, (all, in_exp))| all == in_exp)
            .map(|(array, _)| array)
            .collect();
        each_expr(stmts, &mut |e| to_exp2(e, &self.scaled));
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
                let array = self.first_local + i;
                let mut value = Expr::Load(*buf, Box::new(idx.clone()));
                if self.scaled.contains(&array) {
                    value = mul(value, f32(std::f32::consts::LOG2_E));
                }
                Stmt::Store(array, self.slot.clone(), value)
            })
            .collect()
    }
}

/// Whether `e` reads a buffer.
fn reads_memory(e: &Expr) -> bool {
    any_part(e, &|x| {
        matches!(x, Expr::Load(..) | Expr::VLoad(..) | Expr::Block(..))
    })
}

/// Whether `e` reads one of `arrays`.
fn reads_any(e: &Expr, arrays: &HashSet<usize>) -> bool {
    any_part(
        e,
        &|x| matches!(x, Expr::Load(buf, _) if arrays.contains(buf)),
    )
}

/// Whether `e` or one of its sub-expressions satisfies `is`.
fn any_part(e: &Expr, is: &impl Fn(&Expr) -> bool) -> bool {
    fn any(e: &mut Expr, is: &impl Fn(&Expr) -> bool) -> bool {
        is(e) || e.operands_mut().into_iter().any(|o| any(o, is))
    }
    any(&mut e.clone(), is)
}

/// Calls `f` on every expression the statements compute, outermost first, through loops.
fn each_expr(stmts: &mut [Stmt], f: &mut impl FnMut(&mut Expr)) {
    for s in stmts {
        match s {
            Stmt::For { extent, body, .. } => {
                f(extent);
                each_expr(body, f);
            }
            Stmt::Set(_, e) | Stmt::Check(e, _) | Stmt::Prefetch(_, e) => f(e),
            Stmt::Store(_, i, v) | Stmt::VStore(_, i, v, _) => {
                f(i);
                f(v);
            }
            // Templates' collective statements do not occur in a scan's steps.
            Stmt::Barrier(_)
            | Stmt::Mma { .. }
            | Stmt::WarpFold(_)
            | Stmt::LoadMatrix(_)
            | Stmt::CopyAsync(_)
            | Stmt::AsyncWait(_)
            | Stmt::WarpgroupMma(_)
            | Stmt::WarpgroupWait(_) => {}
        }
    }
}

/// The array of `arrays` whose element is one factor of the product `e`, the other factor
/// reading none of them: `exp(e)` is then `exp2` of the same product once that array is
/// scaled by log₂ e.
fn exp_factor(e: &Expr, arrays: &HashSet<usize>) -> Option<usize> {
    let Expr::Bin(Bin::Mul, a, b) = e else {
        return None;
    };
    let hoisted = |x: &Expr| match x {
        Expr::Load(buf, _) if arrays.contains(buf) => Some(*buf),
        _ => None,
    };
    match (hoisted(a), hoisted(b)) {
        (Some(array), None) if !reads_any(b, arrays) => Some(array),
        (None, Some(array)) if !reads_any(a, arrays) => Some(array),
        _ => None,
    }
}

/// Counts, per array of `arrays`, its reads in `e`: all of them, and those that are a factor
/// of an exponential's product ([`exp_factor`]).
fn count_uses(e: &mut Expr, arrays: &HashSet<usize>, uses: &mut HashMap<usize, (usize, usize)>) {
    if let Expr::Un(Un::Exp, product) = e {
        if let Some(array) = exp_factor(product, arrays) {
            let (all, in_exp) = uses.entry(array).or_default();
            *all += 1;
            *in_exp += 1;
            return;
        }
    }
    if let Expr::Load(buf, _) = e {
        if arrays.contains(buf) {
            uses.entry(*buf).or_default().0 += 1;
        }
    }
    for operand in e.operands_mut() {
        count_uses(operand, arrays, uses);
    }
}

/// Rewrites `exp(a·x)` as `exp2(a·x)` where `x` reads an array of `scaled`.
fn to_exp2(e: &mut Expr, scaled: &HashSet<usize>) {
    if let Expr::Un(op @ Un::Exp, product) = e {
        if exp_factor(product, scaled).is_some() {
            *op = Un::Exp2;
            return;
        }
    }
    for operand in e.operands_mut() {
        to_exp2(operand, scaled);
    }
}

#[cfg(test)]
mod tests {
    use archc_kernels::ir::build::{add, exp, load, var};
    use archc_kernels::print_expr as expr;

    use super::super::fragments::int;
    use super::*;

    /// A step reading `A[c, k]` (input 1, 16 state elements) and `Δ[t]` (input 2); `extra`
    /// also uses `A` outside the exponential. Variables: c 0, k 1, t 2, Δ 3, results 4 and 5.
    fn step(extra: bool) -> Vec<Stmt> {
        let a = || load(1, add(mul(var(Var(0)), int(16)), var(Var(1))));
        let mut body = vec![
            Stmt::Set(Var(3), load(2, var(Var(2)))),
            Stmt::Set(Var(4), exp(mul(var(Var(3)), a()))),
        ];
        if extra {
            body.push(Stmt::Set(Var(5), mul(a(), f32(2.0))));
        }
        body
    }

    /// The step's statements and the fills after [`Hoist::rewrite`], as text.
    fn hoisted(extra: bool) -> (Vec<String>, Vec<String>) {
        let fixed = HashSet::from([Var(0)]);
        let state = [Var(1)];
        let slot = var(Var(1));
        let mut hoist = Hoist::new(1..3, (&fixed, &state, &slot), 7);
        let mut stmts = step(extra);
        hoist.rewrite(&mut stmts);
        let text = |s: &Stmt| match s {
            Stmt::Set(v, e) => format!("v{} = {}", v.0, expr(e)),
            Stmt::Store(b, i, e) => format!("b{b}[{}] = {}", expr(i), expr(e)),
            _ => String::new(),
        };
        let fills = hoist.fills();
        (
            stmts.iter().map(text).collect(),
            fills.iter().map(text).collect(),
        )
    }

    #[test]
    fn an_array_that_only_feeds_exponentials_holds_its_load_times_log2e() {
        let (stmts, fills) = hoisted(false);
        assert_eq!(stmts, ["v3 = b2[v2]", "v4 = exp2((v3 * b7[v1]))"]);
        assert_eq!(fills, ["b7[v1] = (b1[((v0 * 16) + v1)] * 1.442695f)"]);
    }

    #[test]
    fn an_array_read_elsewhere_too_keeps_its_load_and_the_exponential() {
        let (stmts, fills) = hoisted(true);
        assert_eq!(
            stmts,
            [
                "v3 = b2[v2]",
                "v4 = exp((v3 * b7[v1]))",
                "v5 = (b7[v1] * 2.0f)"
            ]
        );
        assert_eq!(fills, ["b7[v1] = b1[((v0 * 16) + v1)]"]);
    }
}
