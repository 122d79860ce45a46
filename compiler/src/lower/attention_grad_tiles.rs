//! Attention's backward on tiles, FlashAttention-2's loop nests on CPU threads: the products
//! on the register micro-kernel ([`super::product`]) as in the forward's tiles
//! ([`super::attention_tiles`]), the scores recomputed one block at a time in thread-private
//! arrays and never stored.
//!
//! **dq** — a task takes a block of query rows and packs `Qᵀ` and `dOᵀ` once. Per visible key
//! block: `Sᵀ = K·Qᵀ` and `dPᵀ = V·dOᵀ` (key-major, the key rows read in place), the region
//! body turns each pair into the score gradient `ds` in place, then `dQ += dS·K`.
//!
//! **dk, dv** — a task takes a block of key rows and packs `Kᵀ` and `Vᵀ` once. Per block of
//! the queries that see them: `S = Q·Kᵀ` and `dP = dO·Vᵀ` (query-major, query rows in place),
//! the body gives `p` and `ds` in place, then `dV += Pᵀ·dO` and `dK += dSᵀ·Q`. The output row
//! holds dk then dv.

use archc_kernels::ir::build::{add, bin, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Expr, Ieee32, Stmt, Var};

use super::attention::{key_blocks, plain, row_start};
use super::attention_tiles::{pack_rows, row_stride, task, task_rows, Widths};
use super::body::BodyGen;
use super::index::Ctx;
use super::product::{columns, product, Product};
use super::Template;
use crate::graph::{AttentionGradInfo, AttentionPart, Dim, KeyRange, Region, TensorType};

/// The locals of a task, from buffer `first` on: the two packed panels (`Qᵀ`, `dOᵀ` or `Kᵀ`,
/// `Vᵀ`), the two score blocks, and one or two accumulators.
struct Locals {
    panels: [usize; 2],
    blocks: [usize; 2],
    acc: [usize; 2],
}

impl Locals {
    fn from(first: usize) -> Locals {
        Locals {
            panels: [first, first + 1],
            blocks: [first + 2, first + 3],
            acc: [first + 4, first + 5],
        }
    }
}

/// The tile sizes: rows per task (a multiple of `nr`), the micro-kernel's columns and lanes,
/// the rows of the streamed blocks.
struct Tile {
    rows: i64,
    nr: i64,
    lanes: usize,
    block: i64,
}

impl Tile {
    /// The tile of tasks over `len` rows (queries for dq, keys for dk-dv).
    fn of(cx: &Ctx, len: &Dim) -> Tile {
        let s = cx.schedule;
        let lanes = s.lanes.clamp(4, 16);
        let nr = ((s.blocking.nr / lanes).max(1) * lanes) as i64;
        Tile {
            rows: task_rows(cx, len, nr),
            nr,
            lanes,
            block: (s.attention_block as i64).max(1),
        }
    }

    /// `out (+)= a·b` where `b` is a task's packed panels of width `kc`: the score blocks.
    fn scores(
        &self,
        cx: &mut Ctx,
        a: (usize, Expr, Expr),
        b: usize,
        out: usize,
        rows: Expr,
        kc: i64,
    ) -> Vec<Stmt> {
        product(
            cx,
            &Product {
                a: (a.0, a.1, a.2, 1),
                b: (b, Expr::Int(0), Expr::Int(kc * self.nr), Expr::Int(self.nr)),
                out: (out, self.rows),
                rows,
                panels: Expr::Int(self.rows / self.nr),
                kc: Expr::Int(kc),
                accumulate: false,
                shape: (
                    cx.schedule.blocking.mr.max(1),
                    (self.nr as usize) / self.lanes,
                    self.lanes,
                ),
            },
        )
    }
}

/// `acc += blockᵀ·rows` (or `block·rows` read key-major, the same layout): `block` holds
/// `count × rows` values at `[i·tile.rows + r]`; `rows` are `count` rows of width `width` of an
/// operand read in place from `row0`, `stride` apart.
fn accumulate(
    cx: &mut Ctx,
    (block, acc): (usize, usize),
    (buf, row0, stride): (usize, Expr, Expr),
    (count, n): (Expr, Expr),
    (width, tile_rows): (i64, i64),
) -> Vec<Stmt> {
    let (mr, across, lanes) = columns(cx.schedule, width);
    let panel = (across * lanes) as i64;
    product(
        cx,
        &Product {
            a: (block, Expr::Int(0), Expr::Int(1), tile_rows),
            b: (buf, row0, Expr::Int(panel), stride),
            out: (acc, width),
            rows: n,
            panels: Expr::Int(width / panel),
            kc: count,
            accumulate: true,
            shape: (mr, across, lanes),
        },
    )
}

/// Zeros `len` floats of local `buf`.
fn zero(cx: &mut Ctx, buf: usize, len: i64) -> Stmt {
    let x = cx.var();
    serial(
        x,
        Expr::Int(len),
        vec![Stmt::Store(buf, var(x), Expr::F32(Ieee32::new(0.0)))],
    )
}

/// Copies `n` rows of `width` from local `acc` to the output, row `r` at `row(r)·pitch + at`.
fn store_rows(
    cx: &mut Ctx,
    acc: usize,
    (n, width): (Var, i64),
    (row, pitch, at): (&dyn Fn(Expr) -> Expr, i64, i64),
) -> Stmt {
    let (r, x) = (cx.var(), cx.var());
    let dst = add(
        add(mul(row(var(r)), Expr::Int(pitch)), Expr::Int(at)),
        var(x),
    );
    let src = add(mul(var(r), Expr::Int(width)), var(x));
    serial(
        r,
        var(n),
        vec![serial(
            x,
            Expr::Int(width),
            vec![Stmt::Store(0, dst, Expr::Load(acc, Box::new(src)))],
        )],
    )
}

/// The kernel of a dq or dk-dv region with constant widths `w` (d and dv multiples of 4).
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionGradInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    w: &Widths,
) -> Template {
    let mut gen = BodyGen::new(&r.body, 1);
    let loc = Locals::from(ins.len() + 2);
    let rank = out.rank();
    let tile = Tile::of(cx, &out.shape[rank - 2]);
    let (body, tasks) = match a.part {
        AttentionPart::KeysValues => keys_values(cx, &mut gen, a, (out, ins), (&loc, &tile, w)),
        _ => queries(cx, &mut gen, a, (out, ins), (&loc, &tile, w)),
    };
    let batch_rows = cx.dim(&Dim::product(&out.shape[..rank - 2]).expect("row counts fit in i64"));
    // Both tasks pack rows of width d, then of width dv; dq has one accumulator.
    let acc1 = match a.part {
        AttentionPart::KeysValues => tile.rows * w.dv,
        _ => 1,
    };
    Template {
        body: vec![Stmt::For {
            var: body.0,
            extent: mul(batch_rows, tasks),
            kind: Axis::Grid,
            body: body.1,
        }],
        checks: gen.checks,
        locals: super::f32_locals(&[
            ("panels0", w.d * tile.rows),
            ("panels1", w.dv * tile.rows),
            ("block0", tile.block * tile.rows),
            ("block1", tile.block * tile.rows),
            ("acc0", tile.rows * w.d),
            ("acc1", acc1),
        ]),
        shared: Vec::new(),
    }
}

/// The slots and types of q, k, v and dO.
fn operands<'t>(a: &AttentionGradInfo, ins: &[&'t TensorType]) -> [(usize, &'t TensorType); 4] {
    super::attention_grad::operands(a, ins)
}

/// The task loop of dq (see the module doc): its variable and body, and the tasks per batch row.
fn queries(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    a: &AttentionGradInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    (loc, tile, w): (&Locals, &Tile, &Widths),
) -> ((Var, Vec<Stmt>), Expr) {
    let [(qs, qt), (ks, kt), (vs, vt), (os, ot)] = operands(a, ins);
    let rank = out.rank();
    let k_rank = a.k_order.len();
    let t = cx.dim(&kt.shape[a.k_order[k_rank - 2]]);
    let s_len = cx.dim(&out.shape[rank - 2]);
    let (mut per_task, tv) = task(cx, out, s_len.clone(), tile.rows);
    let (bt, i0, qn) = (tv.bt, tv.i0, tv.qn);
    let batch: Vec<Expr> = tv.coords.iter().map(|v| var(*v)).collect();
    let (q_stride, o_stride) = (
        row_stride(cx, qt, qt.rank() - 2),
        row_stride(cx, ot, ot.rank() - 2),
    );
    let (k_stride, v_stride) = (
        row_stride(cx, kt, a.k_order[k_rank - 2]),
        row_stride(cx, vt, vt.rank() - 2),
    );
    let q_row0 = row_start(cx, &batch, qt, &plain(qt), var(i0));
    let o_row0 = row_start(cx, &batch, ot, &plain(ot), var(i0));
    per_task.extend(pack_rows(
        cx,
        loc.panels[0],
        (qs + 1, q_row0, q_stride),
        (qn, tile.rows, tile.nr),
        w.d,
    ));
    per_task.extend(pack_rows(
        cx,
        loc.panels[1],
        (os + 1, o_row0, o_stride),
        (qn, tile.rows, tile.nr),
        w.dv,
    ));
    per_task.push(zero(cx, loc.acc[0], tile.rows * w.d));
    let last = sub(add(var(i0), var(qn)), Expr::Int(1));
    let (from, blocks) = key_blocks(
        cx,
        &a.keys,
        (var(i0), last),
        t.clone(),
        tile.block,
        &mut per_task,
    );
    let (jb, j0, count) = (cx.var(), cx.var(), cx.var());
    let block_at = from.map_or(var(jb), |f| add(var(f), var(jb)));
    let mut per_block = vec![
        Stmt::Set(j0, mul(block_at, Expr::Int(tile.block))),
        Stmt::Set(count, bin(Bin::Min, Expr::Int(tile.block), sub(t, var(j0)))),
    ];
    let k_row0 = row_start(cx, &batch, kt, &a.k_order, var(j0));
    let v_row0 = row_start(cx, &batch, vt, &plain(vt), var(j0));
    let [sb, db] = loc.blocks;
    per_block.extend(tile.scores(
        cx,
        (ks + 1, k_row0.clone(), k_stride.clone()),
        loc.panels[0],
        sb,
        var(count),
        w.d,
    ));
    per_block.extend(tile.scores(
        cx,
        (vs + 1, v_row0, v_stride),
        loc.panels[1],
        db,
        var(count),
        w.dv,
    ));
    // The score gradient of each (key, query) in place of its score.
    let (jj, q, x) = (cx.var(), cx.var(), cx.var());
    let el = add(mul(var(jj), Expr::Int(tile.rows)), var(q));
    bind_scores(gen, a, [(sb, el.clone()), (db, el.clone())]);
    let mut pos = batch.clone();
    pos.extend([add(var(i0), var(q)), add(var(j0), var(jj))]);
    let ds = gen.value(cx, a.dscores.expect("the verifier checked ds"), &pos);
    let mut one = gen.take_lets();
    one.extend([Stmt::Set(x, ds), Stmt::Store(sb, el, var(x))]);
    per_block.push(serial(jj, var(count), vec![serial(q, var(qn), one)]));
    per_block.extend(accumulate(
        cx,
        (sb, loc.acc[0]),
        (ks + 1, k_row0, k_stride),
        (var(count), var(qn)),
        (w.d, tile.rows),
    ));
    per_task.push(serial(jb, blocks, per_block));
    let row = |r: Expr| add(mul(var(bt), s_len.clone()), add(var(i0), r));
    per_task.push(store_rows(cx, loc.acc[0], (qn, w.d), (&row, w.d, 0)));
    ((tv.task, per_task), tv.qblocks)
}

/// Binds the body's score and `dp` nodes to the two score blocks' elements.
fn bind_scores(
    gen: &mut BodyGen<'_>,
    a: &AttentionGradInfo,
    [(sb, s), (db, d)]: [(usize, Expr); 2],
) {
    gen.bind(a.scores, Expr::Load(sb, Box::new(s)));
    if let Some(dp) = a.dprobs {
        gen.bind(dp, Expr::Load(db, Box::new(d)));
    }
}

/// The queries that see keys `first ..= last`: the blocks of [`key_blocks`] with the range
/// reversed (`lo ≤ j − i ≤ hi` is `−hi ≤ i − j ≤ −lo`), never a negative count.
fn query_blocks(
    cx: &mut Ctx,
    keys: &KeyRange,
    rows: (Expr, Expr),
    s: Expr,
    block: i64,
    setup: &mut Vec<Stmt>,
) -> (Option<Var>, Expr) {
    let reversed = KeyRange {
        lo: keys.hi.map(|h| -h),
        hi: keys.lo.map(|l| -l),
    };
    let (from, count) = key_blocks(cx, &reversed, rows, s, block, setup);
    (from, bin(Bin::Max, Expr::Int(0), count))
}

/// The task loop of dk and dv (see the module doc).
fn keys_values(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    a: &AttentionGradInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    (loc, tile, w): (&Locals, &Tile, &Widths),
) -> ((Var, Vec<Stmt>), Expr) {
    let [(qs, qt), (ks, kt), (vs, vt), (os, ot)] = operands(a, ins);
    let rank = out.rank();
    let k_rank = a.k_order.len();
    let t = cx.dim(&out.shape[rank - 2]);
    let s_len = cx.dim(&qt.shape[qt.rank() - 2]);
    let (mut per_task, tv) = task(cx, out, t.clone(), tile.rows);
    let (bt, j0, kn) = (tv.bt, tv.i0, tv.qn);
    let batch: Vec<Expr> = tv.coords.iter().map(|v| var(*v)).collect();
    let (q_stride, o_stride) = (
        row_stride(cx, qt, qt.rank() - 2),
        row_stride(cx, ot, ot.rank() - 2),
    );
    let (k_stride, v_stride) = (
        row_stride(cx, kt, a.k_order[k_rank - 2]),
        row_stride(cx, vt, vt.rank() - 2),
    );
    let k_row0 = row_start(cx, &batch, kt, &a.k_order, var(j0));
    let v_row0 = row_start(cx, &batch, vt, &plain(vt), var(j0));
    per_task.extend(pack_rows(
        cx,
        loc.panels[0],
        (ks + 1, k_row0, k_stride),
        (kn, tile.rows, tile.nr),
        w.d,
    ));
    per_task.extend(pack_rows(
        cx,
        loc.panels[1],
        (vs + 1, v_row0, v_stride),
        (kn, tile.rows, tile.nr),
        w.dv,
    ));
    per_task.push(zero(cx, loc.acc[0], tile.rows * w.d));
    per_task.push(zero(cx, loc.acc[1], tile.rows * w.dv));
    let last = sub(add(var(j0), var(kn)), Expr::Int(1));
    let (from, blocks) = query_blocks(
        cx,
        &a.keys,
        (var(j0), last),
        s_len.clone(),
        tile.block,
        &mut per_task,
    );
    let (ib, i0, count) = (cx.var(), cx.var(), cx.var());
    let block_at = from.map_or(var(ib), |f| add(var(f), var(ib)));
    let mut per_block = vec![
        Stmt::Set(i0, mul(block_at, Expr::Int(tile.block))),
        Stmt::Set(
            count,
            bin(Bin::Min, Expr::Int(tile.block), sub(s_len, var(i0))),
        ),
    ];
    let q_row0 = row_start(cx, &batch, qt, &plain(qt), var(i0));
    let o_row0 = row_start(cx, &batch, ot, &plain(ot), var(i0));
    let [sb, db] = loc.blocks;
    per_block.extend(tile.scores(
        cx,
        (qs + 1, q_row0.clone(), q_stride.clone()),
        loc.panels[0],
        sb,
        var(count),
        w.d,
    ));
    per_block.extend(tile.scores(
        cx,
        (os + 1, o_row0.clone(), o_stride.clone()),
        loc.panels[1],
        db,
        var(count),
        w.dv,
    ));
    // p in place of each score, ds in place of each dp.
    let (ii, c, pv, dsv) = (cx.var(), cx.var(), cx.var(), cx.var());
    let el = add(mul(var(ii), Expr::Int(tile.rows)), var(c));
    bind_scores(gen, a, [(sb, el.clone()), (db, el.clone())]);
    let mut pos = batch.clone();
    pos.extend([add(var(i0), var(ii)), add(var(j0), var(c))]);
    let p = gen.value(cx, a.probs.expect("the verifier checked p"), &pos);
    let ds = gen.value(cx, a.dscores.expect("the verifier checked ds"), &pos);
    let mut one = gen.take_lets();
    one.extend([
        Stmt::Set(pv, p),
        Stmt::Set(dsv, ds),
        Stmt::Store(sb, el.clone(), var(pv)),
        Stmt::Store(db, el, var(dsv)),
    ]);
    per_block.push(serial(ii, var(count), vec![serial(c, var(kn), one)]));
    per_block.extend(accumulate(
        cx,
        (sb, loc.acc[1]),
        (os + 1, o_row0, o_stride),
        (var(count), var(kn)),
        (w.dv, tile.rows),
    ));
    per_block.extend(accumulate(
        cx,
        (db, loc.acc[0]),
        (qs + 1, q_row0, q_stride),
        (var(count), var(kn)),
        (w.d, tile.rows),
    ));
    per_task.push(serial(ib, blocks, per_block));
    let row = |r: Expr| add(mul(var(bt), t.clone()), add(var(j0), r));
    let pitch = w.d + w.dv;
    per_task.push(store_rows(cx, loc.acc[0], (kn, w.d), (&row, pitch, 0)));
    per_task.push(store_rows(cx, loc.acc[1], (kn, w.dv), (&row, pitch, w.d)));
    ((tv.task, per_task), tv.qblocks)
}
