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
use archc_kernels::ir::{Bin, Expr, Ieee32, Stmt, Var};

use super::attention::{key_blocks, plain, row_start};
use super::attention_tasks::{over_tasks, pack_rows, row_stride, task, task_rows, Task};
use super::attention_tiles::Widths;
use super::body::BodyGen;
use super::index::Ctx;
use super::product::{columns, product, Product};
use super::Template;
use crate::graph::{
    AttentionGradInfo, AttentionPart, Dim, KeyRange, NodeIndex, Region, TensorType,
};

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
    let (per_task, tv) = match a.part {
        AttentionPart::KeysValues => keys_values(cx, &mut gen, a, (out, ins), (&loc, &tile, w)),
        _ => queries(cx, &mut gen, a, (out, ins), (&loc, &tile, w)),
    };
    // Both tasks pack rows of width d, then of width dv; dq has one accumulator.
    let acc1 = match a.part {
        AttentionPart::KeysValues => tile.rows * w.dv,
        _ => 1,
    };
    Template {
        body: over_tasks(cx, out, &tv, per_task),
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
        scratch: None,
        occupancy: None,
    }
}

/// An operand read by rows in place: its buffer, its type and the order of its logical axes.
struct Operand<'t> {
    buf: usize,
    ty: &'t TensorType,
    order: Vec<usize>,
}

impl Operand<'_> {
    /// Its buffer, the start of row `pos` at the batch coordinates `batch`, its row stride.
    fn rows(&self, cx: &Ctx, batch: &[Expr], pos: Expr) -> (usize, Expr, Expr) {
        let axis = self.order[self.order.len() - 2];
        let start = row_start(cx, batch, self.ty, &self.order, pos);
        (self.buf, start, row_stride(cx, self.ty, axis))
    }

    /// How many rows it has.
    fn len(&self, cx: &Ctx) -> Expr {
        cx.dim(&self.ty.shape[self.order[self.order.len() - 2]])
    }
}

/// q, k, v and dO.
fn operands<'t>(a: &AttentionGradInfo, ins: &[&'t TensorType]) -> [Operand<'t>; 4] {
    let [(qs, qt), (ks, kt), (vs, vt), (os, ot)] = super::attention_grad::operands(a, ins);
    let plain = |slot: usize, ty: &'t TensorType| Operand {
        buf: slot + 1,
        ty,
        order: plain(ty),
    };
    let k = Operand {
        buf: ks + 1,
        ty: kt,
        order: a.k_order.clone(),
    };
    [plain(qs, qt), k, plain(vs, vt), plain(os, ot)]
}

/// A task's start: its batch coordinates, then its rows `pos ..` of `first` (width d) and
/// `second` (width dv) packed transposed, and its first accumulator (width d) zeroed.
fn start_task(
    cx: &mut Ctx,
    tv: &Task,
    [first, second]: [&Operand; 2],
    (loc, tile, w): (&Locals, &Tile, &Widths),
) -> (Vec<Expr>, Vec<Stmt>) {
    let batch: Vec<Expr> = tv.coords.iter().map(|v| var(*v)).collect();
    let mut out = Vec::new();
    for (op, panels, width) in [(first, loc.panels[0], w.d), (second, loc.panels[1], w.dv)] {
        let rows = op.rows(cx, &batch, var(tv.i0));
        out.extend(pack_rows(
            cx,
            panels,
            rows,
            (tv.qn, tile.rows, tile.nr),
            width,
        ));
    }
    out.push(zero(cx, loc.acc[0], tile.rows * w.d));
    (batch, out)
}

/// The loop over the streamed blocks (`blocks` of them from block `from`, each `tile.block`
/// rows of `len`): its variable, each block's first row and row count, and the statements that
/// set them at the top of each iteration.
fn block_start(
    cx: &mut Ctx,
    from: Option<Var>,
    block: i64,
    len: Expr,
) -> (Var, Var, Var, Vec<Stmt>) {
    let (b, first, count) = (cx.var(), cx.var(), cx.var());
    let at = from.map_or(var(b), |f| add(var(f), var(b)));
    let start = vec![
        Stmt::Set(first, mul(at, Expr::Int(block))),
        Stmt::Set(count, bin(Bin::Min, Expr::Int(block), sub(len, var(first)))),
    ];
    (b, first, count, start)
}

/// Both score blocks of a streamed block: `count` rows of `a` times the task's first panels
/// (width d) into `block0`, `count` rows of `b` times its second panels (width dv) into
/// `block1`.
fn score_blocks(
    cx: &mut Ctx,
    [a, b]: [(usize, Expr, Expr); 2],
    count: Var,
    (loc, tile, w): (&Locals, &Tile, &Widths),
) -> Vec<Stmt> {
    let mut out = tile.scores(cx, a, loc.panels[0], loc.blocks[0], var(count), w.d);
    out.extend(tile.scores(cx, b, loc.panels[1], loc.blocks[1], var(count), w.dv));
    out
}

/// A dq task's statements (see the module doc), and its variables.
fn queries(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    a: &AttentionGradInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    sizes: (&Locals, &Tile, &Widths),
) -> (Vec<Stmt>, Task) {
    let (loc, tile, w) = sizes;
    let [q, k, v, dout] = operands(a, ins);
    let s_len = cx.dim(&out.shape[out.rank() - 2]);
    let (mut per_task, tv) = task(cx, out, s_len.clone(), tile.rows);
    let (i0, qn) = (tv.i0, tv.qn);
    let (batch, start) = start_task(cx, &tv, [&q, &dout], sizes);
    per_task.extend(start);
    let last = sub(add(var(i0), var(qn)), Expr::Int(1));
    let t = k.len(cx);
    let (from, blocks) = key_blocks(
        cx,
        &a.keys,
        (var(i0), last),
        t.clone(),
        tile.block,
        &mut per_task,
    );
    let (jb, j0, count, mut per_block) = block_start(cx, from, tile.block, t);
    let k_rows = k.rows(cx, &batch, var(j0));
    let v_rows = v.rows(cx, &batch, var(j0));
    per_block.extend(score_blocks(cx, [k_rows.clone(), v_rows], count, sizes));
    // The score gradient of each (key, query) in place of its score.
    let ds = a.dscores.expect("the verifier checked ds");
    let at: &Coords = &move |jj, q| [add(var(i0), q), add(var(j0), jj)];
    let pairs = ((count, qn), at);
    per_block.push(in_place(
        cx,
        gen,
        a,
        (tile.rows, loc.blocks),
        pairs,
        &[(ds, 0)],
        &batch,
    ));
    per_block.extend(accumulate(
        cx,
        (loc.blocks[0], loc.acc[0]),
        k_rows,
        (var(count), var(qn)),
        (w.d, tile.rows),
    ));
    per_task.push(serial(jb, blocks, per_block));
    let row = |r: Expr| add(mul(var(tv.bt), s_len.clone()), add(var(i0), r));
    per_task.push(store_rows(cx, loc.acc[0], (qn, w.d), (&row, w.d, 0)));
    (per_task, tv)
}

/// A dk-dv task's statements (see the module doc), and its variables.
fn keys_values(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    a: &AttentionGradInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    sizes: (&Locals, &Tile, &Widths),
) -> (Vec<Stmt>, Task) {
    let (loc, tile, w) = sizes;
    let [q, k, v, dout] = operands(a, ins);
    let t = cx.dim(&out.shape[out.rank() - 2]);
    let (mut per_task, tv) = task(cx, out, t.clone(), tile.rows);
    let (j0, kn) = (tv.i0, tv.qn);
    let (batch, start) = start_task(cx, &tv, [&k, &v], sizes);
    per_task.extend(start);
    per_task.push(zero(cx, loc.acc[1], tile.rows * w.dv));
    let last = sub(add(var(j0), var(kn)), Expr::Int(1));
    let s_len = q.len(cx);
    let (from, blocks) = query_blocks(
        cx,
        &a.keys,
        (var(j0), last),
        s_len.clone(),
        tile.block,
        &mut per_task,
    );
    let (ib, i0, count, mut per_block) = block_start(cx, from, tile.block, s_len);
    let q_rows = q.rows(cx, &batch, var(i0));
    let o_rows = dout.rows(cx, &batch, var(i0));
    per_block.extend(score_blocks(
        cx,
        [q_rows.clone(), o_rows.clone()],
        count,
        sizes,
    ));
    // p in place of each score, ds in place of each dp.
    let p = a.probs.expect("the verifier checked p");
    let ds = a.dscores.expect("the verifier checked ds");
    let at: &Coords = &move |ii, c| [add(var(i0), ii), add(var(j0), c)];
    let pairs = ((count, kn), at);
    per_block.push(in_place(
        cx,
        gen,
        a,
        (tile.rows, loc.blocks),
        pairs,
        &[(p, 0), (ds, 1)],
        &batch,
    ));
    let rows = (var(count), var(kn));
    per_block.extend(accumulate(
        cx,
        (loc.blocks[0], loc.acc[1]),
        o_rows,
        rows.clone(),
        (w.dv, tile.rows),
    ));
    per_block.extend(accumulate(
        cx,
        (loc.blocks[1], loc.acc[0]),
        q_rows,
        rows,
        (w.d, tile.rows),
    ));
    per_task.push(serial(ib, blocks, per_block));
    let row = |r: Expr| add(mul(var(tv.bt), t.clone()), add(var(j0), r));
    let pitch = w.d + w.dv;
    per_task.push(store_rows(cx, loc.acc[0], (kn, w.d), (&row, pitch, 0)));
    per_task.push(store_rows(cx, loc.acc[1], (kn, w.dv), (&row, pitch, w.d)));
    (per_task, tv)
}

/// The coordinates of a block's pair `(outer, inner)`: the query's and the key's.
type Coords = dyn Fn(Expr, Expr) -> [Expr; 2];

/// The elementwise step of a block: for each of its `outer × inner` pairs (element
/// `outer · rows + inner` of the two score blocks, `[s, dp]`), the body's score and `dp` nodes
/// bound to the blocks' elements, each of `nodes` evaluated at the pair's coordinates
/// (`batch`, then `at(outer, inner)`: the query's and the key's) and stored in place into its
/// block (0 or 1), after all are read.
fn in_place(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    a: &AttentionGradInfo,
    (rows, [sb, db]): (i64, [usize; 2]),
    ((outer, inner), at): ((Var, Var), &Coords),
    nodes: &[(NodeIndex, usize)],
    batch: &[Expr],
) -> Stmt {
    let (o, i) = (cx.var(), cx.var());
    let el = add(mul(var(o), Expr::Int(rows)), var(i));
    gen.bind(a.scores, Expr::Load(sb, Box::new(el.clone())));
    if let Some(dp) = a.dprobs {
        gen.bind(dp, Expr::Load(db, Box::new(el.clone())));
    }
    let mut pos = batch.to_vec();
    pos.extend(at(var(o), var(i)));
    let values: Vec<(Var, Expr, usize)> = nodes
        .iter()
        .map(|(n, block)| (cx.var(), gen.value(cx, *n, &pos), [sb, db][*block]))
        .collect();
    let mut one = gen.take_lets();
    one.extend(values.iter().map(|(v, e, _)| Stmt::Set(*v, e.clone())));
    one.extend(
        values
            .iter()
            .map(|(v, _, buf)| Stmt::Store(*buf, el.clone(), var(*v))),
    );
    serial(o, var(outer), vec![serial(i, var(inner), one)])
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
