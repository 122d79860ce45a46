//! The matmul template, blocked as BLIS blocks it, with the shape taken from the target's
//! [`MatmulBlocking`].
//!
//! The output is cut into tasks of `mc` rows × `nt` columns (`nt` at most `TASK_PANELS`
//! micro-kernel widths, so that even one row block gives the threads several tasks); tasks
//! and batches are the parallel loop. A task walks the reduced axis in slices of `kc`: it first
//! packs the slice of `b` it needs into `nr`-column panels in a thread-private local (each
//! panel `kc × nr` floats, contiguous, so the micro-kernel reads it with unit stride and it
//! stays in L1 while the rows stream past) and its full `mr`-row blocks of `a` into `kc × mr`
//! panels (a step's rows side by side: one running index instead of `mr`, which ran Cranelift
//! out of integer registers), then runs the register micro-kernel ([`super::micro`]) over
//! every `mr`-row × `nr`-column block. Partial sums of the slices go through the output; the
//! epilogue finishes the elements after the last slice.
//!
//! A weight `b` (a buffer the context lists as packable: a weight, or a value of weights
//! alone) is packed once instead, by a prepare step ([`super::pack`]), into the layout the
//! micro-kernel reads: `n / nr` panels of `k × nr` contiguous floats, then the columns past
//! them row-major. The kernel records it in [`Ctx::packed`] and skips its own packing of `b`.
//! Rows left over at a task's edge get 1-row micro-kernels reading `a` in place; columns past
//! the last full panel get 1-vector micro-kernels and then one scalar dot product each.
//!
//! When `b` has no batch axes and `a`'s batch axes are the output's (every `linear`), the
//! batch rows are one long row axis.

use archc_kernels::ir::build::{add, axis, bin, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Ieee32, Local, Stmt, Var};

use super::body::delinearize;
use super::index::{folded, Ctx};
use super::micro::{micro, Block, Operands, Rows};

mod blocks;
mod groups;
mod staging;
mod tasks;
mod tensor_cores;
mod thread_tiles;
mod tile_grid;
mod warpgroups;
use crate::graph::{Dim, TensorType};
pub use blocks::{group_readers, transposed_weight};
use tasks::{task_grid, Tasks};

/// The most micro-kernel panels in one task's column block: bounds the packed local
/// (`kc × TASK_PANELS × nr` floats) and splits wide outputs into several tasks.
const TASK_PANELS: usize = 32;

/// A fused epilogue: computes the final value of output elements from the matmul's and stores
/// it.
pub trait Epilogue {
    /// Finishes one element at coordinates `at`.
    fn scalar(&mut self, cx: &mut Ctx, value: Expr, at: Vec<Expr>) -> Vec<Stmt>;
    /// Finishes `width` consecutive elements of a row (a vector `value` of that width; `lane`
    /// is the first one's column in `at`), or None when the epilogue has no vector form.
    fn vector(
        &mut self,
        cx: &mut Ctx,
        value: (Expr, u8),
        at: Vec<Expr>,
        lane: Var,
    ) -> Option<Vec<Stmt>>;
}

/// Index arithmetic for one matmul.
pub struct Layout<'a> {
    out: &'a TensorType,
    a: &'a TensorType,
    b: &'a TensorType,
    /// Batch rows merged into the row axis.
    flat: bool,
    /// The batch coordinates of the current task.
    batch: Vec<Var>,
    /// The reduced extent.
    pub k: Expr,
    n: Expr,
    /// `b` is packed once ahead, with panels of this many columns.
    packed: Option<i64>,
    /// `b`'s buffer holds `bᵀ` (`[n, k]`, a weight of `x · wᵀ` read in place).
    transposed: bool,
}

impl Operands for Layout<'_> {
    fn a(&self, cx: &Ctx, i: Expr, p: Expr) -> Expr {
        Layout::a(self, cx, i, p)
    }

    fn out(&self, cx: &Ctx, i: Expr, j: Expr) -> Expr {
        Layout::out(self, cx, i, j)
    }

    fn coords(&self, cx: &Ctx, i: Expr, j: Expr) -> Vec<Expr> {
        Layout::coords(self, cx, i, j)
    }
}

impl<'a> Layout<'a> {
    /// The layout of `out = a · b` (batch rows merged into the rows when `flat`; `b` packed
    /// ahead in panels of `packed` columns when given), with the output's batch axes and
    /// rows.
    fn new(
        cx: &mut Ctx,
        [out, a, b]: [&'a TensorType; 3],
        flat: bool,
        packed: Option<i64>,
    ) -> (Layout<'a>, Vec<Dim>, Dim) {
        let r = out.rank();
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
            packed,
            transposed: false,
        };
        (l, batch_shape, rows)
    }

    fn batch_of(&self, t: &TensorType) -> Vec<Expr> {
        let nb = t.rank() - 2;
        self.batch[self.batch.len() - nb.min(self.batch.len())..]
            .iter()
            .map(|v| var(*v))
            .collect()
    }

    /// The index of `a[i, p]`.
    pub fn a(&self, cx: &Ctx, i: Expr, p: Expr) -> Expr {
        if self.flat {
            return add(mul(i, self.k.clone()), p);
        }
        let mut at = self.batch_of(self.a);
        at.extend([i, p]);
        cx.index(&self.a.shape, &at)
    }

    /// The index of `b[p, j]`. In a prepacked `b`, only for columns past the last full panel,
    /// which follow the panels row-major.
    pub fn b(&self, cx: &Ctx, p: Expr, j: Expr) -> Expr {
        if let Some(nr) = self.packed {
            let (full, width) = self.tail(nr);
            let start = mul(full.clone(), self.k.clone());
            return add(add(start, mul(p, width)), sub(j, full));
        }
        if self.transposed {
            return add(mul(j, self.k.clone()), p);
        }
        if self.flat {
            return add(mul(p, self.n.clone()), j);
        }
        let mut at = self.batch_of(self.b);
        at.extend([p, j]);
        cx.index(&self.b.shape, &at)
    }

    /// In a prepacked `b` with `nr`-column panels: the columns in full panels, and the
    /// columns past them.
    fn tail(&self, nr: i64) -> (Expr, Expr) {
        let full = folded(
            Bin::Mul,
            bin(Bin::Div, self.n.clone(), Expr::Int(nr)),
            Expr::Int(nr),
        );
        (full.clone(), sub(self.n.clone(), full))
    }

    /// In a prepacked `b` with `nr`-column panels: where row `p` of the panel holding column
    /// `j` (a multiple of `nr`) starts.
    fn panel(&self, nr: i64, p: Expr, j: Expr) -> Expr {
        let panel = bin(Bin::Div, j, Expr::Int(nr));
        add(
            mul(panel, mul(self.k.clone(), Expr::Int(nr))),
            mul(p, Expr::Int(nr)),
        )
    }

    /// The index of output element `[i, j]`.
    pub fn out(&self, cx: &Ctx, i: Expr, j: Expr) -> Expr {
        if self.flat {
            return add(mul(i, self.n.clone()), j);
        }
        cx.index(&self.out.shape, &self.coords(cx, i, j))
    }

    /// The output element's coordinates (a merged row split back into its batch axes).
    pub fn coords(&self, cx: &Ctx, i: Expr, j: Expr) -> Vec<Expr> {
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

/// The blocking of one matmul kernel, in elements.
struct Shape {
    /// Rows of the main micro-kernel.
    mr: usize,
    /// Vectors across a micro-kernel (its columns are `vectors × lanes`).
    vectors: usize,
    /// Lanes of each vector: the target's width.
    lanes: usize,
    /// The reduced slice.
    kc: i64,
    /// Rows of a task.
    mc: i64,
    /// Columns of a task.
    nt: i64,
}

impl Shape {
    fn of(cx: &Ctx) -> Shape {
        let b = cx.schedule.blocking;
        // `nr` is a whole number of the target's vectors.
        let lanes = cx.schedule.lanes.max(1);
        let vectors = (b.nr / lanes).max(1);
        let nr = vectors * lanes;
        let mr = b.mr.max(1);
        Shape {
            mr,
            vectors,
            lanes,
            kc: b.kc.max(1) as i64,
            mc: ((b.mc / mr).max(1) * mr) as i64,
            nt: ((b.nc / nr).clamp(1, TASK_PANELS) * nr) as i64,
        }
    }

    fn nr(&self) -> i64 {
        (self.vectors * self.lanes) as i64
    }
}

/// The matmul kernel body: `a` and `b` are read from buffers `abuf` and `bbuf`, the output is
/// buffer 0, and its arrays are buffers `packed..`: the locals this returns (`b`'s and `a`'s
/// packed panels, or a tensor-core kernel's fragments), then the shared arrays it returns.
/// `out_elem` is the output buffer's element type: partial sums pass through it, so other
/// types get scalar dot products only.
pub fn matmul(
    cx: &mut Ctx,
    (out, out_elem): (&TensorType, Elem),
    [(a, abuf), (b, bbuf)]: [(&TensorType, usize); 2],
    packed: usize,
    epilogue: Option<&mut dyn Epilogue>,
) -> (Vec<Stmt>, Vec<Local>, Vec<Local>) {
    let r = out.rank();
    let flat = b.rank() == 2 && a.shape[..a.rank() - 1] == out.shape[..r - 1];
    if warpgroups::applies(cx, (a, abuf), (b, bbuf)) {
        return warpgroups::matmul(cx, (out, flat), [(a, abuf), (b, bbuf)], packed, epilogue);
    }
    if tensor_cores::applies(cx, (a, abuf), (b, bbuf)) {
        return tensor_cores::matmul(cx, (out, flat), [(a, abuf), (b, bbuf)], packed, epilogue);
    }
    if thread_tiles::applies(cx, abuf, bbuf) {
        return thread_tiles::matmul(cx, (out, flat), [(a, abuf), (b, bbuf)], packed, epilogue);
    }
    if let Some((_, elem)) = cx.transposed.filter(|t| t.0 == bbuf && flat) {
        let (l, _, rows) = Layout::new(cx, [out, a, b], flat, None);
        let l = Layout {
            transposed: true,
            ..l
        };
        let gemm = |cx: &mut Ctx, epilogue: Option<&mut dyn Epilogue>| {
            blocked(
                cx,
                (out, out_elem),
                [(a, abuf), (b, bbuf)],
                packed,
                (true, epilogue),
            )
        };
        let (body, locals) = blocks::matmul(cx, (&l, &rows), (abuf, bbuf, elem), epilogue, gemm);
        return (body, locals, Vec::new());
    }
    let (body, locals) = blocked(
        cx,
        (out, out_elem),
        [(a, abuf), (b, bbuf)],
        packed,
        (false, epilogue),
    );
    (body, locals, Vec::new())
}

/// The blocked kernel (see the module doc); `transposed`: `b`'s buffer holds `bᵀ`,
/// block-quantized, whose slices each task packs transposed (see `blocks::pack_transposed`).
fn blocked(
    cx: &mut Ctx,
    (out, out_elem): (&TensorType, Elem),
    [(a, abuf), (b, bbuf)]: [(&TensorType, usize); 2],
    packed: usize,
    (transposed, mut epilogue): (bool, Option<&mut dyn Epilogue>),
) -> (Vec<Stmt>, Vec<Local>) {
    let mut s = Shape::of(cx);
    if transposed {
        // Slices of whole quantized blocks.
        let block = archc_kernels::ir::QUANT_BLOCK as i64;
        s.kc = (s.kc / block).max(1) * block;
    }
    let nr = s.nr();
    let r = out.rank();
    let flat = b.rank() == 2 && a.shape[..a.rank() - 1] == out.shape[..r - 1];
    // Partial sums of other types take the scalar path, which reads `b` as it is.
    let prepacked = !transposed && flat && out_elem == Elem::F32 && cx.packable.contains(&bbuf);
    if prepacked {
        cx.packed.push((bbuf, nr));
    }
    let (l, batch_shape, rows) = Layout::new(cx, [out, a, b], flat, prepacked.then_some(nr));
    let l = Layout { transposed, ..l };
    let (task, extent, mut per_task, tasks) =
        task_grid(cx, &s, &l, (&rows, &batch_shape), out_elem);
    per_task.push(slices(
        cx,
        &s,
        &l,
        (abuf, bbuf, packed),
        &tasks,
        &mut epilogue,
    ));
    if !transposed {
        // `blocks` takes the blocked path only for whole panels: no columns lie past them.
        per_task.extend(tail_columns(
            cx,
            &l,
            (abuf, bbuf),
            &tasks,
            (nr, s.lanes as i64),
            &mut epilogue,
        ));
    }
    let body = vec![Stmt::For {
        var: task,
        extent,
        kind: Axis::Grid,
        body: per_task,
    }];
    let locals = vec![
        Local {
            name: "b_panels".into(),
            elem: Elem::F32,
            // Unused when `b` comes packed.
            len: if prepacked { 1 } else { (s.kc * s.nt) as usize },
        },
        Local {
            name: "a_panels".into(),
            elem: Elem::F32,
            len: (s.kc * s.mc) as usize,
        },
    ];
    (body, locals)
}

/// The loop over the reduced slices of one task: pack the slice's panels of `b`, then run the
/// micro-kernels over every panel and row block.
fn slices(
    cx: &mut Ctx,
    s: &Shape,
    l: &Layout,
    (abuf, bbuf, packed): (usize, usize, usize),
    t: &Tasks,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Stmt {
    let nr = s.nr();
    let (pc, k_lo, kc, later, last) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let (count, mut per_slice) = slice_bounds(s, l, [pc, k_lo, kc, later, last]);
    let at = Slice { s, l, t, k_lo, kc };
    if l.transposed {
        per_slice.push(blocks::pack_transposed(cx, &at, (bbuf, packed)));
    } else if l.packed.is_none() {
        per_slice.push(pack_b(cx, &at, (bbuf, packed)));
    }
    // Compute: every panel, its full row blocks, then its leftover rows one at a time.
    let (jq, i, j, panel) = (cx.var(), cx.var(), cx.var(), cx.var());
    let (ib, it) = (cx.var(), cx.var());
    let height = sub(var(t.i.1), var(t.i.0));
    let full = bin(Bin::Div, height.clone(), Expr::Int(s.mr as i64));
    let a_packed = packed + 1;
    let mr = s.mr as i64;
    per_slice.push(pack_a(cx, &at, (abuf, a_packed), full.clone()));
    let a_at = cx.var();
    // A block of the full panels (packed `b`), or one vector wide past them (`b`'s rows read
    // in place, `n` apart, or the prepacked tail's, its width apart).
    let past_step = match l.packed {
        Some(nr) => l.tail(nr).1,
        None => l.n.clone(),
    };
    let block = |rows: usize, a: Rows, wide: bool| Block {
        a,
        b: if wide && l.packed.is_none() {
            packed
        } else {
            bbuf
        },
        b_step: if wide {
            Expr::Int(nr)
        } else {
            past_step.clone()
        },
        out: 0,
        rows,
        vectors: if wide { s.vectors } else { 1 },
        lanes: s.lanes,
        i,
        j,
        panel,
        k_lo,
        kc,
        later: var(later),
        last: var(last),
    };
    let mut main = vec![
        Stmt::Set(i, add(var(t.i.0), mul(var(ib), Expr::Int(mr)))),
        Stmt::Set(a_at, mul(var(ib), Expr::Int(s.kc * mr))),
    ];
    let rows = Rows::Panel {
        buf: a_packed,
        at: a_at,
        stride: Expr::Int(1),
        step: mr,
    };
    main.extend(micro(cx, l, &block(s.mr, rows.clone(), true), epilogue));
    let mut rest = vec![Stmt::Set(
        i,
        add(
            add(var(t.i.0), mul(full.clone(), Expr::Int(s.mr as i64))),
            var(it),
        ),
    )];
    rest.extend(micro(cx, l, &block(1, Rows::Direct(abuf), true), epilogue));
    let leftover = bin(Bin::Rem, height, Expr::Int(s.mr as i64));
    let per_panel = vec![
        Stmt::Set(j, add(var(t.j.0), mul(var(jq), Expr::Int(nr)))),
        Stmt::Set(
            panel,
            match l.packed {
                Some(nr) => l.panel(nr, var(k_lo), var(j)),
                None => mul(var(jq), Expr::Int(s.kc * nr)),
            },
        ),
        serial(ib, full.clone(), main),
        serial(it, leftover.clone(), rest),
    ];
    per_slice.push(serial(jq, var(t.panels), per_panel));
    if l.transposed {
        // `blocks` takes this path only for whole panels: nothing lies past them.
        return serial(pc, count, per_slice);
    }
    // The columns past the full panels, a vector at a time, on the same row blocks.
    let (jv, vi, vt) = (cx.var(), cx.var(), cx.var());
    let mut main = vec![
        Stmt::Set(i, add(var(t.i.0), mul(var(vi), Expr::Int(mr)))),
        Stmt::Set(a_at, mul(var(vi), Expr::Int(s.kc * mr))),
    ];
    main.extend(micro(cx, l, &block(s.mr, rows, false), epilogue));
    let mut rest = vec![Stmt::Set(
        i,
        add(add(var(t.i.0), mul(full.clone(), Expr::Int(mr))), var(vt)),
    )];
    rest.extend(micro(cx, l, &block(1, Rows::Direct(abuf), false), epilogue));
    let first = add(var(t.j.0), mul(var(t.panels), Expr::Int(nr)));
    let per_vector = vec![
        Stmt::Set(j, add(first, mul(var(jv), Expr::Int(s.lanes as i64)))),
        Stmt::Set(panel, l.b(cx, var(k_lo), var(j))),
        serial(vi, full, main),
        serial(vt, leftover, rest),
    ];
    per_slice.push(serial(jv, var(t.vectors), per_vector));
    serial(pc, count, per_slice)
}

/// The count of reduced slices, and the statements that start slice `pc`: its first element
/// `k_lo` and length `kc`, `later` (1 after the first slice) and `last` (1 on the last).
fn slice_bounds(s: &Shape, l: &Layout, [pc, k_lo, kc, later, last]: [Var; 5]) -> (Expr, Vec<Stmt>) {
    // At least one slice, so that an empty reduction still stores its zeros.
    let count = bin(
        Bin::Max,
        bin(
            Bin::Div,
            add(l.k.clone(), Expr::Int(s.kc - 1)),
            Expr::Int(s.kc),
        ),
        Expr::Int(1),
    );
    let starts = vec![
        Stmt::Set(k_lo, mul(var(pc), Expr::Int(s.kc))),
        Stmt::Set(
            kc,
            bin(Bin::Min, Expr::Int(s.kc), sub(l.k.clone(), var(k_lo))),
        ),
        Stmt::Set(later, bin(Bin::Min, var(pc), Expr::Int(1))),
        Stmt::Set(
            last,
            sub(
                Expr::Int(1),
                bin(
                    Bin::Min,
                    sub(sub(count.clone(), Expr::Int(1)), var(pc)),
                    Expr::Int(1),
                ),
            ),
        ),
    ];
    (count, starts)
}

/// One reduced slice of a task: the blocking, the layout, the task, and the slice's first
/// element and length.
#[derive(Clone, Copy)]
struct Slice<'a> {
    s: &'a Shape,
    l: &'a Layout<'a>,
    t: &'a Tasks,
    k_lo: Var,
    kc: Var,
}

/// Packs the slice `k_lo..k_lo + kc` of `b`'s columns for the task's full panels: panel `jp`
/// is `kc × nr` contiguous floats at `jp · kc_max · nr`.
fn pack_b(cx: &mut Ctx, at: &Slice, (bbuf, packed): (usize, usize)) -> Stmt {
    let Slice { s, l, t, k_lo, kc } = *at;
    let nr = s.nr();
    let (jp, kk, src, dst) = (cx.var(), cx.var(), cx.var(), cx.var());
    let col = add(var(t.j.0), mul(var(jp), Expr::Int(nr)));
    let mut copy = vec![
        Stmt::Set(src, l.b(cx, add(var(k_lo), var(kk)), col)),
        Stmt::Set(
            dst,
            mul(add(mul(var(jp), Expr::Int(s.kc)), var(kk)), Expr::Int(nr)),
        ),
    ];
    for q in 0..s.vectors {
        let off = Expr::Int((q * s.lanes) as i64);
        if cx.blocks.contains(&bbuf) {
            // Quantized blocks load as vectors only at multiples of the width.
            copy.extend((0..s.lanes as i64).map(|l| {
                let at = |base| add(add(var(base), off.clone()), Expr::Int(l));
                Stmt::Store(packed, at(dst), Expr::Load(bbuf, Box::new(at(src))))
            }));
            continue;
        }
        copy.push(Stmt::VStore(
            packed,
            add(var(dst), off.clone()),
            Expr::VLoad(bbuf, Box::new(add(var(src), off)), s.lanes as u8),
            s.lanes as u8,
        ));
    }
    serial(jp, var(t.panels), vec![serial(kk, var(kc), copy)])
}

/// Packs the slice `k_lo..k_lo + kc` of the task's `full` row blocks of `a`: block `ib` is
/// `kc × mr` floats with a step's rows side by side, at `ib · kc_max · mr`.
fn pack_a(cx: &mut Ctx, at: &Slice, (abuf, a_packed): (usize, usize), full: Expr) -> Stmt {
    let Slice { s, l, t, k_lo, kc } = *at;
    let mr = s.mr as i64;
    let (pb, pk, pr) = (cx.var(), cx.var(), cx.var());
    let src = l.a(
        cx,
        add(add(var(t.i.0), mul(var(pb), Expr::Int(mr))), var(pr)),
        add(var(k_lo), var(pk)),
    );
    let dst = add(
        mul(add(mul(var(pb), Expr::Int(s.kc)), var(pk)), Expr::Int(mr)),
        var(pr),
    );
    let copy = Stmt::Store(a_packed, dst, Expr::Load(abuf, Box::new(src)));
    serial(
        pb,
        full,
        vec![serial(
            pk,
            var(kc),
            vec![serial(pr, Expr::Int(mr), vec![copy])],
        )],
    )
}

/// Columns of a task past its last full panel: one dot product over all of the reduced axis
/// per element.
fn tail_columns(
    cx: &mut Ctx,
    l: &Layout,
    (abuf, bbuf): (usize, usize),
    t: &Tasks,
    (nr, lanes): (i64, i64),
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Vec<Stmt> {
    let (jt, ti, i, p, acc) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let done = add(
        mul(var(t.panels), Expr::Int(nr)),
        mul(var(t.vectors), Expr::Int(lanes)),
    );
    let col = add(add(var(t.j.0), done.clone()), var(jt));
    let mut dot = vec![
        Stmt::Set(i, add(var(t.i.0), var(ti))),
        Stmt::Set(acc, Expr::F32(Ieee32::new(0.0))),
        axis(
            Axis::Reduce,
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
    dot.extend(finish(cx, l, epilogue, var(acc), var(i), col.clone()));
    let width = sub(sub(var(t.j.1), var(t.j.0)), done);
    vec![serial(
        jt,
        width,
        vec![serial(ti, sub(var(t.i.1), var(t.i.0)), dot)],
    )]
}

/// Stores (or finishes through the epilogue) one output element.
pub fn finish(
    cx: &mut Ctx,
    l: &dyn Operands,
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
