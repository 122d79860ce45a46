//! The kernels of attention's backward (FlashAttention's, see `grad/attention.rs`): the
//! scores are recomputed from rows of q and k and never stored. Constant head widths that
//! are multiples of 4 (every model's) take the tiles of [`super::attention_grad_tiles`] (the
//! softmax statistics those of [`super::attention_tiles`]); other shapes take these row kernels:
//!
//! - **dq**: one query row per parallel iteration; for each visible key `j`, `s = q·kⱼ` and
//!   `dp = dO·vⱼ` are bound to the body's score and `dp` nodes, the body gives the score
//!   gradient `ds`, and `ds·kⱼ` is accumulated in registers.
//! - **dk, dv**: one key row per parallel iteration; for each query `i` that sees it, the same
//!   two dot products, then `ds·qᵢ` and `p·dOᵢ` are accumulated. Its output holds dk and dv
//!   side by side.
//!
//! Which keys a query sees comes from the forward's range masks (a causal mask: keys up to the
//! query; queries from the key on), so masked scores, whose `p` and `ds` are zero, are skipped.

use archc_kernels::ir::build::{add, bin, mul, sub, var};
use archc_kernels::ir::{Axis, Bin, Expr, Ieee32, Stmt, Var};

use super::attention::{dot, plain, row_start};
use super::body::{delinearize, BodyGen};
use super::index::{plus, Ctx};
use super::lanes::{splat, LANES};
use super::Template;
use crate::graph::{AttentionGradInfo, AttentionPart, Dim, KeyRange, Region, TensorType};

/// Rows of up to this many f32x4 vectors are held in registers.
const MAX_ROW_REGISTERS: i64 = 8;

fn f32(v: f32) -> Expr {
    Expr::F32(Ieee32::new(v))
}

/// The kernel for a region of attention's backward whose node has type `out` and operand
/// types `ins`.
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionGradInfo,
    out: &TensorType,
    ins: &[&TensorType],
) -> Template {
    let width = |slot: Option<usize>| slot.and_then(|s| ins[s].shape.last()?.as_const());
    let d = width(Some(a.q)).expect("the gradient pass tiles constant head widths");
    match (a.part, width(a.v)) {
        (AttentionPart::Stats, _) => {
            return super::attention_tiles::softmax_stats(cx, r, a, (out, ins), d);
        }
        (_, Some(dv)) if d % 4 == 0 && dv % 4 == 0 => {
            let w = super::attention_tiles::Widths { d, dv };
            return super::attention_grad_tiles::lower(cx, r, a, (out, ins), &w);
        }
        _ => {}
    }
    let mut rows = Rows::new(cx, out);
    let mut gen = BodyGen::new(&r.body, 1);
    let body = match a.part {
        AttentionPart::KeysValues => keys_values(cx, &mut gen, a, ins, &mut rows),
        _ => queries(cx, &mut gen, a, (out, ins), &mut rows),
    };
    let extent =
        cx.dim(&Dim::product(&out.shape[..out.rank() - 1]).expect("row counts fit in i64"));
    let mut per_row = rows.setup;
    per_row.extend(body);
    Template {
        body: vec![Stmt::For {
            var: rows.row,
            extent,
            kind: Axis::Grid,
            body: per_row,
        }],
        checks: gen.checks,
        locals: Vec::new(),
        shared: Vec::new(),
        scratch: None,
        occupancy: None,
    }
}

/// The parallel loop over the output's rows: its variable, the batch coordinates and the
/// row's position along the sequence (a query's or a key's).
struct Rows {
    row: Var,
    batch: Vec<Expr>,
    pos: Expr,
    setup: Vec<Stmt>,
}

impl Rows {
    fn new(cx: &mut Ctx, out: &TensorType) -> Rows {
        let rank = out.rank();
        let row = cx.var();
        let coords = cx.vars(rank - 1);
        let setup = delinearize(cx, var(row), &out.shape[..rank - 1])
            .into_iter()
            .zip(&coords)
            .map(|(e, v)| Stmt::Set(*v, e))
            .collect();
        Rows {
            row,
            batch: coords[..rank - 2].iter().map(|v| var(*v)).collect(),
            pos: var(coords[rank - 2]),
            setup,
        }
    }

    /// The score's coordinates for query `i` and key `j`.
    fn at(&self, i: Expr, j: Expr) -> Vec<Expr> {
        let mut at = self.batch.clone();
        at.extend([i, j]);
        at
    }
}

/// A row operand read as the loop moves along the sequence: its buffer, the variable holding
/// its current row's start, and the distance between consecutive rows.
struct Stream {
    buf: usize,
    at: Var,
    stride: Expr,
    width: Dim,
}

impl Stream {
    /// Operand slot `slot` (type `t`, held as `order` of its logical axes) from row `pos` on.
    fn new(
        cx: &mut Ctx,
        rows: &mut Rows,
        (slot, t, order): (usize, &TensorType, &[usize]),
        pos: Expr,
    ) -> Stream {
        let at = cx.var();
        let start = row_start(cx, &rows.batch, t, order, pos);
        rows.setup.push(Stmt::Set(at, start));
        let rank = order.len();
        Stream {
            buf: slot + 1,
            at,
            stride: cx.strides(&t.shape)[order[rank - 2]].clone(),
            width: t.shape[order[rank - 1]].clone(),
        }
    }

    /// Moves to the next row.
    fn advance(&self) -> Stmt {
        Stmt::Set(self.at, add(var(self.at), self.stride.clone()))
    }

    /// The current row in f32x4 registers, when it is short enough (set in `rows.setup`).
    fn registers(&self, cx: &mut Ctx, rows: &mut Rows) -> Vec<Var> {
        let n = match self.width.as_const() {
            Some(n) if n % 4 == 0 && n / 4 <= MAX_ROW_REGISTERS => n / 4,
            _ => return Vec::new(),
        };
        (0..n)
            .map(|k| {
                let v = cx.var();
                let at = Box::new(add(var(self.at), Expr::Int(4 * k)));
                rows.setup
                    .push(Stmt::Set(v, Expr::VLoad(self.buf, at, LANES)));
                v
            })
            .collect()
    }

    /// `Σ self[c]·other[c]` over the row into `s`, this row from `regs` when it is there.
    fn dot(&self, cx: &mut Ctx, regs: &[Var], other: &Stream, s: Var) -> Vec<Stmt> {
        dot(
            cx,
            (self.buf, self.at, regs),
            (other.buf, other.at),
            &self.width,
            s,
        )
    }
}

/// A row accumulated in registers: f32x4 vectors when its width is a multiple of 4.
struct Acc {
    vars: Vec<Var>,
    lanes: usize,
}

impl Acc {
    fn new(cx: &mut Ctx, width: &Dim, setup: &mut Vec<Stmt>) -> Acc {
        let w = width
            .as_const()
            .expect("the gradient pass tiles constant head widths") as usize;
        let lanes = if w.is_multiple_of(4) { 4 } else { 1 };
        let vars = cx.vars(w / lanes);
        for v in &vars {
            let zero = if lanes == 4 {
                splat(f32(0.0))
            } else {
                f32(0.0)
            };
            setup.push(Stmt::Set(*v, zero));
        }
        Acc { vars, lanes }
    }

    /// `acc += w · row` for the current row of `s`.
    fn add_scaled(&self, w: Expr, s: &Stream) -> Vec<Stmt> {
        self.vars
            .iter()
            .enumerate()
            .map(|(c, acc)| {
                let at = Box::new(add(var(s.at), Expr::Int((c * self.lanes) as i64)));
                let value = if self.lanes == 4 {
                    Expr::Fma(
                        Box::new(splat(w.clone())),
                        Box::new(Expr::VLoad(s.buf, at, LANES)),
                        Box::new(var(*acc)),
                    )
                } else {
                    add(var(*acc), mul(w.clone(), Expr::Load(s.buf, at)))
                };
                Stmt::Set(*acc, value)
            })
            .collect()
    }

    /// Stores the row at `base` of the (contiguous) output.
    fn store(&self, base: Expr) -> Vec<Stmt> {
        self.vars
            .iter()
            .enumerate()
            .map(|(c, acc)| {
                let at = add(base.clone(), Expr::Int((c * self.lanes) as i64));
                if self.lanes == 4 {
                    Stmt::VStore(0, at, var(*acc), LANES)
                } else {
                    Stmt::Store(0, at, var(*acc))
                }
            })
            .collect()
    }
}

/// The slots and types of q, k (as held), v and dO.
pub(super) fn operands<'t>(
    a: &AttentionGradInfo,
    ins: &[&'t TensorType],
) -> [(usize, &'t TensorType); 4] {
    let v = a.v.expect("the verifier checked the streamed parts read v");
    let o = a
        .dout
        .expect("the verifier checked the streamed parts read dO");
    [(a.q, ins[a.q]), (a.k, ins[a.k]), (v, ins[v]), (o, ins[o])]
}

/// `lo ..< hi` of positions along an axis of `size`, clamped to it and never reversed.
fn clamped(keys: (Option<Expr>, Option<Expr>), size: Expr) -> (Expr, Expr) {
    let lo = keys
        .0
        .map_or(Expr::Int(0), |lo| bin(Bin::Max, Expr::Int(0), lo));
    let hi = keys.1.map_or(size.clone(), |hi| bin(Bin::Min, size, hi));
    let count = bin(Bin::Max, Expr::Int(0), sub(hi, lo.clone()));
    (lo, count)
}

/// The keys query `i` sees: `i + lo ..= i + hi`, as a start and a count.
fn keys_of(keys: &KeyRange, i: &Expr, t: Expr) -> (Expr, Expr) {
    let lo = keys.lo.map(|lo| plus(i.clone(), Expr::Int(lo)));
    let hi = keys.hi.map(|hi| plus(i.clone(), Expr::Int(hi + 1)));
    clamped((lo, hi), t)
}

/// The queries that see key `j`: `j − hi ..= j − lo`, as a start and a count.
fn queries_of(keys: &KeyRange, j: &Expr, s: Expr) -> (Expr, Expr) {
    let lo = keys.hi.map(|hi| plus(j.clone(), Expr::Int(-hi)));
    let hi = keys.lo.map(|lo| plus(j.clone(), Expr::Int(1 - lo)));
    clamped((lo, hi), s)
}

/// The two dot products of one score: `s = q·k` into the body's scores, `dp = dO·v` into its
/// `dp` node. `first` is the row held in registers (q's or k's), `second` dO's or v's.
struct Scores<'s> {
    q: (&'s Stream, &'s [Var]),
    k: (&'s Stream, &'s [Var]),
    dout: (&'s Stream, &'s [Var]),
    v: (&'s Stream, &'s [Var]),
}

impl Scores<'_> {
    fn compute(&self, cx: &mut Ctx, gen: &mut BodyGen<'_>, a: &AttentionGradInfo) -> Vec<Stmt> {
        let (s, dp) = (cx.var(), cx.var());
        // The registers are the outer loop's row: q's or k's, dO's or v's.
        let mut out = if self.q.1.is_empty() {
            self.k.0.dot(cx, self.k.1, self.q.0, s)
        } else {
            self.q.0.dot(cx, self.q.1, self.k.0, s)
        };
        out.extend(if self.dout.1.is_empty() {
            self.v.0.dot(cx, self.v.1, self.dout.0, dp)
        } else {
            self.dout.0.dot(cx, self.dout.1, self.v.0, dp)
        });
        gen.bind(a.scores, var(s));
        if let Some(n) = a.dprobs {
            gen.bind(n, var(dp));
        }
        out
    }
}

/// dq: one query row per iteration (see the module doc).
fn queries(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    a: &AttentionGradInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    rows: &mut Rows,
) -> Vec<Stmt> {
    let [(qs, qt), (ks, kt), (vs, vt), (os, ot)] = operands(a, ins);
    let i = rows.pos.clone();
    let k_shape = logical(kt, &a.k_order);
    let t = cx.dim(&k_shape[k_shape.len() - 2]);
    let (first, count) = keys_of(&a.keys, &i, t);
    let q = Stream::new(cx, rows, (qs, qt, &plain(qt)), i.clone());
    let dout = Stream::new(cx, rows, (os, ot, &plain(ot)), i.clone());
    let k = Stream::new(cx, rows, (ks, kt, &a.k_order), first.clone());
    let v = Stream::new(cx, rows, (vs, vt, &plain(vt)), first.clone());
    let (q_regs, o_regs) = (q.registers(cx, rows), dout.registers(cx, rows));
    let acc = Acc::new(cx, &q.width, &mut rows.setup);
    let (jj, j) = (cx.var(), cx.var());
    let mut step = vec![Stmt::Set(j, add(first, var(jj)))];
    let scores = Scores {
        q: (&q, &q_regs),
        k: (&k, &[]),
        dout: (&dout, &o_regs),
        v: (&v, &[]),
    };
    step.extend(scores.compute(cx, gen, a));
    let ds = a.dscores.expect("the verifier checked the part has ds");
    let w = gen.value(cx, ds, &rows.at(i, var(j)));
    step.extend(gen.take_lets());
    step.extend(acc.add_scaled(w, &k));
    step.extend([k.advance(), v.advance()]);
    let mut body = vec![Stmt::For {
        var: jj,
        extent: count,
        kind: Axis::Serial,
        body: step,
    }];
    let width = out.shape[out.rank() - 1].as_const().unwrap_or(1);
    body.extend(acc.store(mul(var(rows.row), Expr::Int(width))));
    body
}

/// dk and dv: one key row per iteration (see the module doc).
fn keys_values(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    a: &AttentionGradInfo,
    ins: &[&TensorType],
    rows: &mut Rows,
) -> Vec<Stmt> {
    let [(qs, qt), (ks, kt), (vs, vt), (os, ot)] = operands(a, ins);
    let j = rows.pos.clone();
    let s_len = cx.dim(&qt.shape[qt.rank() - 2]);
    let (first, count) = queries_of(&a.keys, &j, s_len);
    let k = Stream::new(cx, rows, (ks, kt, &a.k_order), j.clone());
    let v = Stream::new(cx, rows, (vs, vt, &plain(vt)), j.clone());
    let q = Stream::new(cx, rows, (qs, qt, &plain(qt)), first.clone());
    let dout = Stream::new(cx, rows, (os, ot, &plain(ot)), first.clone());
    let (k_regs, v_regs) = (k.registers(cx, rows), v.registers(cx, rows));
    let dk = Acc::new(cx, &k.width, &mut rows.setup);
    let dv = Acc::new(cx, &v.width, &mut rows.setup);
    let (ii, i) = (cx.var(), cx.var());
    let mut step = vec![Stmt::Set(i, add(first, var(ii)))];
    let scores = Scores {
        q: (&q, &[]),
        k: (&k, &k_regs),
        dout: (&dout, &[]),
        v: (&v, &v_regs),
    };
    step.extend(scores.compute(cx, gen, a));
    let at = rows.at(var(i), j);
    let ds = a.dscores.expect("the verifier checked the part has ds");
    let p = a.probs.expect("the verifier checked the part has p");
    let (wds, wp) = (gen.value(cx, ds, &at), gen.value(cx, p, &at));
    step.extend(gen.take_lets());
    step.extend(dk.add_scaled(wds, &q));
    step.extend(dv.add_scaled(wp, &dout));
    step.extend([q.advance(), dout.advance()]);
    let mut body = vec![Stmt::For {
        var: ii,
        extent: count,
        kind: Axis::Serial,
        body: step,
    }];
    let (d, e) = (const_width(&k.width), const_width(&v.width));
    let base = mul(var(rows.row), Expr::Int(d + e));
    body.extend(dk.store(base.clone()));
    body.extend(dv.store(add(base, Expr::Int(d))));
    body
}

fn const_width(d: &Dim) -> i64 {
    d.as_const()
        .expect("the gradient pass tiles constant head widths")
}

/// `t`'s shape in the logical order `order` of its axes.
fn logical(t: &TensorType, order: &[usize]) -> Vec<Dim> {
    order.iter().map(|&x| t.shape[x].clone()).collect()
}
