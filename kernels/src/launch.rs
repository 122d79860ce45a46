//! Launch geometry: the grid and the block a kernel runs as, read off its axis kinds, and the
//! vector widths it uses (what a code generator checks before it starts).
//!
//! The grid is the nest of Grid loops that opens the kernel's first top-level Grid loop
//! (outermost first): one block per iteration. The block is the nest of Thread loops that
//! opens that grid body: one cooperating thread per iteration. Later top-level Grid loops of
//! the same kernel (a vector loop's scalar tail, a second phase) run on the same launch, so a
//! target gives them the same grid; where the dims choose between paths (one-loop nests whose
//! extents are `select`ed by a condition), the grid is the larger of their extents. Extents are expressions of the dims (`Expr::Dim`) and
//! constants only: they are known when the kernel is launched.

use std::collections::BTreeSet;

use crate::ir::{Axis, Expr, Kernel, Stmt};

/// A kernel's launch shape, as Kernel IR expressions of the dims.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    /// The extents of the grid's axes, outermost first (empty: one block).
    pub grid: Vec<Expr>,
    /// The extents of a block's thread axes, outermost first (empty: one thread).
    pub block: Vec<Expr>,
}

/// The geometry of `k` (see the module doc).
pub fn geometry(k: &Kernel) -> Geometry {
    let mut grid = Vec::new();
    let mut body: &[Stmt] = &k.body;
    if let Some(first) = body.iter().find(|s| is(s, Axis::Grid)) {
        body = nest(first, Axis::Grid, &mut grid);
        for later in k.body.iter().filter(|s| is(s, Axis::Grid)).skip(1) {
            let mut other = Vec::new();
            nest(later, Axis::Grid, &mut other);
            let chosen = |e: &Expr| matches!(e, Expr::Select(..));
            if let ([g], [o]) = (grid.as_mut_slice(), other.as_slice()) {
                if !chosen(g) && !chosen(o) {
                    continue;
                }
                *g = Expr::Bin(
                    crate::ir::Bin::Max,
                    Box::new(g.clone()),
                    Box::new(o.clone()),
                );
            }
        }
    }
    let mut block = Vec::new();
    if let Some(first) = body.iter().find(|s| is(s, Axis::Thread)) {
        nest(first, Axis::Thread, &mut block);
    }
    Geometry { grid, block }
}

fn is(s: &Stmt, axis: Axis) -> bool {
    matches!(s, Stmt::For { kind, .. } if *kind == axis)
}

/// Follows loops of kind `axis` that open each other's bodies, pushing their extents; returns
/// the innermost one's body.
fn nest<'k>(mut s: &'k Stmt, axis: Axis, extents: &mut Vec<Expr>) -> &'k [Stmt] {
    loop {
        let Stmt::For { extent, body, .. } = s else {
            return &[];
        };
        extents.push(extent.clone());
        match body.first() {
            Some(inner) if is(inner, axis) => s = inner,
            _ => return body,
        }
    }
}

/// Whether `body` holds anything only GPUs run: a warp's collective work (a tensor-core
/// product [`Stmt::Mma`], a fold across lanes [`Stmt::WarpFold`], an `ldmatrix`
/// [`Stmt::LoadMatrix`], a warpgroup's product [`Stmt::WarpgroupMma`] and its wait
/// [`Stmt::WarpgroupWait`]) or asynchronous copies ([`Stmt::CopyAsync`], [`Stmt::AsyncWait`]).
pub fn has_warp_work(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Mma { .. }
        | Stmt::WarpFold(_)
        | Stmt::LoadMatrix(_)
        | Stmt::WarpgroupMma(_)
        | Stmt::WarpgroupWait(_)
        | Stmt::CopyAsync(_)
        | Stmt::AsyncWait(_) => true,
        Stmt::For { body, .. } => has_warp_work(body),
        _ => false,
    })
}

/// Whether `body` holds a warpgroup's tensor-core product ([`Stmt::WarpgroupMma`]).
pub fn has_warpgroup_mma(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::WarpgroupMma(_) => true,
        Stmt::For { body, .. } => has_warpgroup_mma(body),
        _ => false,
    })
}

/// The threads of a block of `k`, when its Thread loops have constant extents.
pub fn block_threads(k: &Kernel) -> Option<usize> {
    geometry(k).block.iter().try_fold(1usize, |n, e| match e {
        Expr::Int(t) if *t > 0 => n.checked_mul(*t as usize),
        _ => None,
    })
}

/// The lane counts of the vector values, loads and stores `k` uses.
pub fn vector_widths(k: &Kernel) -> BTreeSet<u8> {
    let mut out = BTreeSet::new();
    stmts(&k.body, &mut out);
    out
}

fn stmts(body: &[Stmt], out: &mut BTreeSet<u8>) {
    for s in body {
        match s {
            Stmt::For { extent, body, .. } => {
                expr(extent, out);
                stmts(body, out);
            }
            Stmt::Set(_, e) | Stmt::Check(e, _) => expr(e, out),
            Stmt::Store(_, i, e) => {
                expr(i, out);
                expr(e, out);
            }
            Stmt::VStore(_, i, e, w) => {
                out.insert(*w);
                expr(i, out);
                expr(e, out);
            }
            Stmt::Barrier(_) => {}
            Stmt::Prefetch(_, e) => expr(e, out),
            Stmt::Mma { a, b, c } => [a, b, c].iter().for_each(|f| expr(&f.at, out)),
            Stmt::WarpFold(f) => expr(&f.at, out),
            Stmt::LoadMatrix(m) => [&m.dst.at, &m.row].iter().for_each(|e| expr(e, out)),
            Stmt::CopyAsync(c) => [&c.dst_at, &c.src_at, &c.valid]
                .iter()
                .for_each(|e| expr(e, out)),
            Stmt::AsyncWait(_) => {}
            Stmt::WarpgroupMma(w) => [&w.a.at, &w.b.at, &w.c.at, &w.accumulate]
                .iter()
                .for_each(|e| expr(e, out)),
            Stmt::WarpgroupWait(w) => expr(&w.c.at, out),
        }
    }
}

fn expr(e: &Expr, out: &mut BTreeSet<u8>) {
    match e {
        Expr::Int(_) | Expr::F32(_) | Expr::Bool(_) | Expr::Var(_) | Expr::Dim(_) => {}
        Expr::VLoad(_, a, w) | Expr::Splat(a, w) => {
            out.insert(*w);
            expr(a, out);
        }
        Expr::Cast(crate::ir::Ty::F32xN(w), a) => {
            out.insert(*w);
            expr(a, out);
        }
        Expr::Block(_, a, part) => {
            if let crate::ir::BlockPart::Quants { width, .. } = part {
                out.insert(*width);
            }
            expr(a, out);
        }
        Expr::Load(_, a) | Expr::Un(_, a) | Expr::Cast(_, a) | Expr::Lane(a, _) => expr(a, out),
        Expr::Bin(_, a, b) => {
            expr(a, out);
            expr(b, out);
        }
        Expr::Select(a, b, c) | Expr::Fma(a, b, c) => {
            expr(a, out);
            expr(b, out);
            expr(c, out);
        }
    }
}
