//! Packing a weight for the matmul once, as a prepare step: `b` (`k × n`, row-major) becomes
//! `n / nr` panels of `k × nr` contiguous floats (the layout the register micro-kernel reads
//! with unit stride, see [`super::matmul`]), followed by the `n mod nr` columns past them,
//! row-major. The result has `b`'s size, so the original can be released once it is packed.

use std::collections::HashSet;

use archc_kernels::ir::build::{add, axis, bin, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Expr, Stmt};
use archc_runtime::{root, Buffer, Storage};

use super::index::{folded, Ctx};
use super::Template;
use crate::graph::{Graph, Op, TensorType};

/// The kernel packing `b` (buffer 1, rank 2) into buffer 0 with `nr`-column panels.
pub fn lower(cx: &mut Ctx, b: &TensorType, nr: i64) -> Template {
    let (k, n) = (cx.dim(&b.shape[0]), cx.dim(&b.shape[1]));
    let full = folded(
        Bin::Mul,
        bin(Bin::Div, n.clone(), Expr::Int(nr)),
        Expr::Int(nr),
    );
    let width = sub(n.clone(), full.clone());
    let (p, jp, c, t) = (cx.var(), cx.var(), cx.var(), cx.var());
    let row = mul(var(p), n);
    // Panel `jp`'s row `p` is `nr` floats at `(jp·k + p)·nr`.
    let panels = serial(
        jp,
        bin(Bin::Div, full.clone(), Expr::Int(nr)),
        vec![serial(
            c,
            Expr::Int(nr),
            vec![Stmt::Store(
                0,
                add(
                    mul(add(mul(var(jp), k.clone()), var(p)), Expr::Int(nr)),
                    var(c),
                ),
                Expr::Load(
                    1,
                    Box::new(add(row.clone(), add(mul(var(jp), Expr::Int(nr)), var(c)))),
                ),
            )],
        )],
    );
    // Then the columns past the panels, row `p` at `full·k + p·width`.
    let tail = serial(
        t,
        width.clone(),
        vec![Stmt::Store(
            0,
            add(
                add(mul(full.clone(), k.clone()), mul(var(p), width)),
                var(t),
            ),
            Expr::Load(1, Box::new(add(row, add(full, var(t))))),
        )],
    );
    Template::new(vec![axis(Axis::Grid, p, k, vec![panels, tail])], vec![])
}

/// What a frame packs ahead for its matmuls.
#[derive(Default)]
pub struct Packing {
    /// In a layer kind's body: the slots every call passes a weight in (a matmul may read
    /// them packed; the calls pass them so).
    pub weight_slots: HashSet<usize>,
    /// At the top level: per kind, the slots its matmuls read packed, with the panels' width.
    pub kinds: Vec<Vec<(usize, i64)>>,
}

impl Packing {
    /// For the body of each of `g`'s kinds, its weight slots: slot `1 + i` when every call
    /// of the kind passes a weight, or a value of weights alone, as operand `i`.
    pub fn kinds_of(g: &Graph) -> Vec<Packing> {
        let weight_only = g.weight_only();
        let mut slots: Vec<Option<HashSet<usize>>> = vec![None; g.kinds.len()];
        for v in g.dag.node_indices() {
            let Op::Call(kind) = g.dag[v].op else {
                continue;
            };
            let here: HashSet<usize> = g
                .operands(v)
                .iter()
                .enumerate()
                .filter(|(_, o)| weight_only[o.index()] && g.ty(**o).dtype.is_float())
                .map(|(i, _)| 1 + i)
                .collect();
            let all = &mut slots[kind];
            *all = Some(match all.take() {
                None => here,
                Some(before) => before.intersection(&here).copied().collect(),
            });
        }
        slots
            .into_iter()
            .map(|s| Packing {
                weight_slots: s.unwrap_or_default(),
                kinds: Vec::new(),
            })
            .collect()
    }
}

/// The parameters (`1 + i` for operand `i`) of a kernel on `operands` (frame buffers) that
/// hold weights of floats, which its matmul may read packed.
pub fn packable(buffers: &[Buffer], operands: &[usize], packing: &Packing) -> Vec<usize> {
    operands
        .iter()
        .enumerate()
        .filter(|(_, &b)| {
            let r = &buffers[root(buffers, b)];
            r.dtype.is_float()
                && match r.storage {
                    Storage::Weight => true,
                    Storage::Slot(s) => packing.weight_slots.contains(&s),
                    _ => false,
                }
        })
        .map(|(i, _)| 1 + i)
        .collect()
}
