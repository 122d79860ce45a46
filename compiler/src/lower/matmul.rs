//! The matmul template: register-blocked f32x4 FMA micro-kernels inside cache tiles.
//!
//! The output is cut into tiles of `TILE_M` rows × `TILE_N` columns; tiles (and batches) are
//! the parallel loop, so a batch of one still uses every core. Inside a tile, a micro-kernel
//! keeps a block of `ROWS` × 8 outputs in eight vector registers: per step of the reduction it
//! loads two vectors of `b` and broadcasts one element of `a` per row, for 8 FMAs (more rows
//! would run out of the 16 vector registers and spill). A tile's
//! `b` columns (k × 64 floats) stay in cache while its rows stream past. Rows and columns left
//! over at the tile's edge get 1-row micro-kernels and a scalar loop.
//!
//! When `b` has no batch axes and `a`'s batch axes are the output's (every `linear`), the
//! batch rows are one long row axis.

use archc_kernels::ir::build::{add, bin, mul, serial, sub, var};
use archc_kernels::ir::{Bin, Expr, Ieee32, LoopKind, Stmt, Var, LANES};

use super::body::delinearize;
use super::index::Ctx;
use crate::graph::{Dim, TensorType};

/// Rows of the main micro-kernel.
const ROWS: usize = 4;
/// Columns of a micro-kernel: two f32x4 vectors.
const COLS: i64 = 2 * LANES as i64;
/// Rows of a tile (a multiple of `ROWS`).
const TILE_M: i64 = 32;
/// Columns of a tile (a multiple of `COLS`).
const TILE_N: i64 = 64;

/// A fused epilogue: computes the final value of output elements from the matmul's and stores
/// it.
pub trait Epilogue {
    /// Finishes one element at coordinates `at`.
    fn scalar(&mut self, cx: &mut Ctx, value: Expr, at: Vec<Expr>) -> Vec<Stmt>;
    /// Finishes four consecutive elements of a row (f32x4 `value`; `lane` is the first one's
    /// column in `at`), or None when the epilogue has no vector form.
    fn vector(&mut self, cx: &mut Ctx, value: Expr, at: Vec<Expr>, lane: Var) -> Option<Vec<Stmt>>;
}

/// Index arithmetic for one matmul.
struct Layout<'a> {
    out: &'a TensorType,
    a: &'a TensorType,
    b: &'a TensorType,
    /// Batch rows merged into the row axis.
    flat: bool,
    /// The batch coordinates of the current task.
    batch: Vec<Var>,
    k: Expr,
    n: Expr,
}

impl Layout<'_> {
    fn batch_of(&self, t: &TensorType) -> Vec<Expr> {
        let nb = t.rank() - 2;
        self.batch[self.batch.len() - nb.min(self.batch.len())..]
            .iter()
            .map(|v| var(*v))
            .collect()
    }

    fn a(&self, cx: &Ctx, i: Expr, p: Expr) -> Expr {
        if self.flat {
            return add(mul(i, self.k.clone()), p);
        }
        let mut at = self.batch_of(self.a);
        at.extend([i, p]);
        cx.index(&self.a.shape, &at)
    }

    fn b(&self, cx: &Ctx, p: Expr, j: Expr) -> Expr {
        if self.flat {
            return add(mul(p, self.n.clone()), j);
        }
        let mut at = self.batch_of(self.b);
        at.extend([p, j]);
        cx.index(&self.b.shape, &at)
    }

    fn out(&self, cx: &Ctx, i: Expr, j: Expr) -> Expr {
        if self.flat {
            return add(mul(i, self.n.clone()), j);
        }
        cx.index(&self.out.shape, &self.coords(cx, i, j))
    }

    /// The output element's coordinates (a merged row split back into its batch axes).
    fn coords(&self, cx: &Ctx, i: Expr, j: Expr) -> Vec<Expr> {
        let r = self.out.rank();
        let mut at: Vec<Expr> = if self.flat {
            delinearize(cx, i, &self.out.shape[..r - 1])
        } else {
            self.batch.iter().map(|v| var(*v)).chain([i]).collect()
        };
        at.push(j);
        at
    }
}

/// The matmul kernel body: `a` and `b` are read from buffers `abuf` and `bbuf`, the output is
/// buffer 0.
pub fn matmul(
    cx: &mut Ctx,
    out: &TensorType,
    [(a, abuf), (b, bbuf)]: [(&TensorType, usize); 2],
    mut epilogue: Option<&mut dyn Epilogue>,
) -> Vec<Stmt> {
    let r = out.rank();
    let flat = b.rank() == 2 && a.shape[..a.rank() - 1] == out.shape[..r - 1];
    let (batch_shape, rows): (Vec<Dim>, Dim) = if flat {
        let rows = Dim::product(&out.shape[..r - 1]).unwrap_or_default();
        (Vec::new(), rows)
    } else {
        (out.shape[..r - 2].to_vec(), out.shape[r - 2].clone())
    };
    let l = Layout {
        out,
        a,
        b,
        flat,
        batch: cx.vars(batch_shape.len()),
        k: cx.dim(&a.shape[a.rank() - 1]),
        n: cx.dim(&out.shape[r - 1]),
    };
    let m = cx.dim(&rows);
    let div_up = |x: Expr, d: i64| bin(Bin::Div, add(x, Expr::Int(d - 1)), Expr::Int(d));
    let (task, i_lo, i_hi, j_lo, j_hi) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let (ic, jc, bi) = (cx.var(), cx.var(), cx.var());
    let tiles_n = div_up(l.n.clone(), TILE_N);
    let tiles_m = div_up(m.clone(), TILE_M);
    let mut per_task = vec![
        Stmt::Set(jc, bin(Bin::Rem, var(task), tiles_n.clone())),
        Stmt::Set(
            ic,
            bin(
                Bin::Rem,
                bin(Bin::Div, var(task), tiles_n.clone()),
                tiles_m.clone(),
            ),
        ),
        Stmt::Set(
            bi,
            bin(Bin::Div, var(task), mul(tiles_n.clone(), tiles_m.clone())),
        ),
    ];
    for (v, e) in l.batch.iter().zip(delinearize(cx, var(bi), &batch_shape)) {
        per_task.push(Stmt::Set(*v, e));
    }
    per_task.extend([
        Stmt::Set(i_lo, mul(var(ic), Expr::Int(TILE_M))),
        Stmt::Set(
            i_hi,
            bin(Bin::Min, add(var(i_lo), Expr::Int(TILE_M)), m.clone()),
        ),
        Stmt::Set(j_lo, mul(var(jc), Expr::Int(TILE_N))),
        Stmt::Set(
            j_hi,
            bin(Bin::Min, add(var(j_lo), Expr::Int(TILE_N)), l.n.clone()),
        ),
    ]);
    // Full 8-column blocks: ROWS-row micro-kernels, then 1-row ones for the rest.
    let (jb, ib, it, j, i) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let blocks = bin(Bin::Div, sub(var(j_hi), var(j_lo)), Expr::Int(COLS));
    let full = bin(Bin::Div, sub(var(i_hi), var(i_lo)), Expr::Int(ROWS as i64));
    let mut per_block = vec![Stmt::Set(j, add(var(j_lo), mul(var(jb), Expr::Int(COLS))))];
    let mut main = vec![Stmt::Set(
        i,
        add(var(i_lo), mul(var(ib), Expr::Int(ROWS as i64))),
    )];
    main.extend(micro(cx, &l, (abuf, bbuf), (i, j), ROWS, &mut epilogue));
    per_block.push(serial(ib, full.clone(), main));
    let mut rest = vec![Stmt::Set(
        i,
        add(add(var(i_lo), mul(full, Expr::Int(ROWS as i64))), var(it)),
    )];
    rest.extend(micro(cx, &l, (abuf, bbuf), (i, j), 1, &mut epilogue));
    let leftover = sub(
        sub(var(i_hi), var(i_lo)),
        mul(
            bin(Bin::Div, sub(var(i_hi), var(i_lo)), Expr::Int(ROWS as i64)),
            Expr::Int(ROWS as i64),
        ),
    );
    per_block.push(serial(it, leftover, rest));
    per_task.push(serial(jb, blocks.clone(), per_block));
    // Columns past the last full block: one dot product each.
    let (jt, p, acc) = (cx.var(), cx.var(), cx.var());
    let col = add(add(var(j_lo), mul(blocks, Expr::Int(COLS))), var(jt));
    let mut dot = vec![
        Stmt::Set(acc, Expr::F32(Ieee32::new(0.0))),
        serial(
            p,
            l.k.clone(),
            vec![Stmt::Set(
                acc,
                add(
                    var(acc),
                    mul(
                        Expr::Load(abuf, Box::new(l.a(cx, var(i), var(p)))),
                        Expr::Load(bbuf, Box::new(l.b(cx, var(p), col.clone()))),
                    ),
                ),
            )],
        ),
    ];
    dot.extend(finish(cx, &l, &mut epilogue, var(acc), var(i), col.clone()));
    let tail_cols = sub(
        sub(var(j_hi), var(j_lo)),
        mul(
            bin(Bin::Div, sub(var(j_hi), var(j_lo)), Expr::Int(COLS)),
            Expr::Int(COLS),
        ),
    );
    let (ti, ii) = (cx.var(), i);
    let mut by_row = vec![Stmt::Set(ii, add(var(i_lo), var(ti)))];
    by_row.extend(dot);
    per_task.push(serial(
        jt,
        tail_cols,
        vec![serial(ti, sub(var(i_hi), var(i_lo)), by_row)],
    ));
    let batches = cx.dim(&Dim::product(&batch_shape).unwrap_or_default());
    vec![Stmt::For {
        var: task,
        extent: mul(batches, mul(tiles_m, tiles_n)),
        kind: LoopKind::Parallel,
        body: per_task,
    }]
}

/// Stores (or finishes through the epilogue) one output element.
fn finish(
    cx: &mut Ctx,
    l: &Layout,
    epilogue: &mut Option<&mut dyn Epilogue>,
    value: Expr,
    i: Expr,
    j: Expr,
) -> Vec<Stmt> {
    match epilogue {
        Some(epi) => {
            let at = l.coords(cx, i, j);
            epi.scalar(cx, value, at)
        }
        None => vec![Stmt::Store(0, l.out(cx, i, j), value)],
    }
}

/// A `rows` × 8 block at row `i`, column `j`: the reduction into vector registers, the stores,
/// and with an epilogue, each element finished in place (it is in L1).
fn micro(
    cx: &mut Ctx,
    l: &Layout,
    (abuf, bbuf): (usize, usize),
    (i, j): (Var, Var),
    rows: usize,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Vec<Stmt> {
    let p = cx.var();
    let (b0, b1) = (cx.var(), cx.var());
    let accs: Vec<[Var; 2]> = (0..rows).map(|_| [cx.var(), cx.var()]).collect();
    let row = |r: usize| add(var(i), Expr::Int(r as i64));
    // Running indices of this step's elements: element p of each row of `a`, row p of `b`.
    // They advance by one step per iteration (Cranelift would otherwise recompute each from
    // the row number, every iteration).
    let rows_at: Vec<Var> = (0..rows).map(|_| cx.var()).collect();
    let (b_at, b_step) = (cx.var(), cx.var());
    let mut out: Vec<Stmt> = rows_at
        .iter()
        .enumerate()
        .map(|(r, v)| Stmt::Set(*v, l.a(cx, row(r), Expr::Int(0))))
        .collect();
    out.push(Stmt::Set(b_at, l.b(cx, Expr::Int(0), var(j))));
    out.push(Stmt::Set(
        b_step,
        sub(l.b(cx, Expr::Int(1), var(j)), var(b_at)),
    ));
    let mut step = vec![
        Stmt::Set(b0, Expr::VLoad(bbuf, Box::new(var(b_at)))),
        Stmt::Set(
            b1,
            Expr::VLoad(bbuf, Box::new(add(var(b_at), Expr::Int(LANES as i64)))),
        ),
    ];
    for (r, acc) in accs.iter().enumerate() {
        let av = cx.var();
        step.push(Stmt::Set(
            av,
            Expr::Splat(Box::new(Expr::Load(abuf, Box::new(var(rows_at[r]))))),
        ));
        for (q, b) in [b0, b1].iter().enumerate() {
            step.push(Stmt::Set(
                acc[q],
                Expr::Fma(Box::new(var(av)), Box::new(var(*b)), Box::new(var(acc[q]))),
            ));
        }
    }
    for v in &rows_at {
        step.push(Stmt::Set(*v, add(var(*v), Expr::Int(1))));
    }
    step.push(Stmt::Set(b_at, add(var(b_at), var(b_step))));
    out.extend(
        accs.iter()
            .flatten()
            .map(|v| Stmt::Set(*v, Expr::Splat(Box::new(Expr::F32(Ieee32::new(0.0)))))),
    );
    // Two steps per iteration (fewer loop-carried register moves), then an odd last step.
    let half = bin(Bin::Div, l.k.clone(), Expr::Int(2));
    let twice: Vec<Stmt> = step.iter().chain(&step).cloned().collect();
    out.push(serial(p, half, twice));
    let odd = cx.var();
    out.push(serial(odd, bin(Bin::Rem, l.k.clone(), Expr::Int(2)), step));
    // With an epilogue: finished in registers, four at a time, when it has a vector form.
    if let Some(epi) = epilogue.as_deref_mut() {
        let saved = out.len();
        let mut vectors = true;
        for (r, acc) in accs.iter().enumerate() {
            for (q, v) in acc.iter().enumerate() {
                let col = cx.var();
                out.push(Stmt::Set(col, add(var(j), Expr::Int((q * LANES) as i64))));
                let at = l.coords(cx, row(r), var(col));
                match epi.vector(cx, var(*v), at, col) {
                    Some(s) => out.extend(s),
                    None => vectors = false,
                }
            }
        }
        if vectors {
            return out;
        }
        out.truncate(saved);
    }
    for (r, acc) in accs.iter().enumerate() {
        for (q, v) in acc.iter().enumerate() {
            let col = add(var(j), Expr::Int((q * LANES) as i64));
            out.push(Stmt::VStore(0, l.out(cx, row(r), col), var(*v)));
        }
    }
    // Otherwise each element is finished in place (it is in L1).
    if epilogue.is_some() {
        for r in 0..rows {
            let c = cx.var();
            let col = add(var(j), var(c));
            let stored = Expr::Load(0, Box::new(l.out(cx, row(r), col.clone())));
            let body = finish(cx, l, epilogue, stored, row(r), col);
            out.push(serial(c, Expr::Int(COLS), body));
        }
    }
    out
}
