//! The GPU semantics of the interpreter that concern a block's threads as registers and
//! warps: each thread's own copy of the locals, kept across the block's Thread loops, and
//! tensor-core products, which a warp computes from all its threads' fragments at once.

use super::{binary, f, i, BufData, KernelError, Machine, Val};
use crate::fragment;
use crate::ir::{Fold, Fragment, Matrices};

impl Machine<'_> {
    /// Thread `k` of the block runs from here (GPU semantics only): its locals replace the
    /// running thread's in `bufs` (a thread's first are zeroed).
    pub(super) fn switch_thread(&mut self, k: i64) {
        self.now(|a| a.thread = k);
        let first = self.kernel.params.len();
        let Some(banks) = self.banks.as_mut().filter(|_| k != self.thread) else {
            return;
        };
        let next = banks.remove(&k).unwrap_or_else(|| {
            self.kernel
                .locals
                .iter()
                .map(|l| BufData::zeros(l.elem, l.len))
                .collect()
        });
        let slots = &mut self.bufs[first..first + self.kernel.locals.len()];
        let mine = slots
            .iter_mut()
            .zip(next)
            .map(|(slot, theirs)| std::mem::replace(slot, theirs))
            .collect();
        banks.insert(self.thread, mine);
        self.thread = k;
    }

    /// A tensor-core product ([`Stmt::Mma`]): each warp of the block gathers `A`, `B` and `C`
    /// from its threads' fragments as the PTX ISA lays them out ([`fragment`]), and each
    /// thread's `C` fragment is overwritten with its elements of `A·B + C`. The sums run in
    /// f32 along k in order (the hardware's order is its own: a kernel's results are checked
    /// to a tolerance).
    pub(super) fn mma(&mut self, frags: [&Fragment; 3]) -> Result<(), KernelError> {
        let threads = self.warps(frags.iter().map(|f| f.buf))?;
        let mut at = [0usize; 3];
        for ((f, len), at) in frags.iter().zip([8, 4, 4]).zip(&mut at) {
            let k = i(&self.eval(&f.at)?);
            self.bound(f.buf, k.saturating_add(len - 1))?;
            *at = self.bound(f.buf, k)?;
        }
        for warp in 0..threads / fragment::WARP {
            let lane = |l: usize| (warp * fragment::WARP + l) as i64;
            let (mut a, mut b, mut c) = ([[0f32; 16]; 16], [[0f32; 8]; 16], [[0f32; 8]; 16]);
            for l in 0..fragment::WARP {
                let t = lane(l);
                for e in 0..8 {
                    let (r, k) = fragment::a(l, e);
                    a[r][k] = self.local(t, frags[0].buf, at[0] + e);
                }
                for e in 0..4 {
                    let (k, n) = fragment::b(l, e);
                    b[k][n] = self.local(t, frags[1].buf, at[1] + e);
                    let (r, n) = fragment::c(l, e);
                    c[r][n] = self.local(t, frags[2].buf, at[2] + e);
                }
            }
            for l in 0..fragment::WARP {
                for e in 0..4 {
                    let (r, n) = fragment::c(l, e);
                    let d = (0..16).fold(c[r][n], |acc, k| a[r][k].mul_add(b[k][n], acc));
                    self.set_local(lane(l), frags[2].buf, at[2] + e, d);
                }
            }
        }
        Ok(())
    }

    /// A warp-collective load of 8 × 8 matrices ([`crate::ir::Stmt::LoadMatrix`]): in each
    /// warp, lanes `8i..8i + 8` give the rows of matrix `i` (each evaluates `row` with its
    /// index in the block bound to `thread`, reads 8 elements of the shared array, and must
    /// point at a multiple of 8, as the hardware's 16-byte alignment asks); then every lane
    /// gets its two elements of each matrix.
    pub(super) fn load_matrix(&mut self, m: &Matrices) -> Result<(), KernelError> {
        let threads = self.warps(std::iter::once(m.dst.buf))?;
        let count = usize::from(m.count);
        let k = i(&self.eval(&m.dst.at)?);
        if k % 2 != 0 {
            return Err(KernelError::Warp {
                kernel: self.kernel.name.clone(),
                why: "loads matrices to an odd element (a register holds a pair)",
            });
        }
        self.bound(m.dst.buf, k.saturating_add(2 * count as i64 - 1))?;
        let at = self.bound(m.dst.buf, k)?;
        let before = self.vars.get(&m.thread).cloned();
        for warp in 0..threads / fragment::WARP {
            let lane = |l: usize| (warp * fragment::WARP + l) as i64;
            // rows[i][r][c]: element c of row r of matrix i.
            let mut rows = vec![[[0f32; 8]; 8]; count];
            for (i, matrix) in rows.iter_mut().enumerate() {
                for (r, row) in matrix.iter_mut().enumerate() {
                    *row = self.matrix_row(m, lane(8 * i + r))?;
                }
            }
            for l in 0..fragment::WARP {
                let (g, q) = (l / 4, l % 4);
                for (i, matrix) in rows.iter().enumerate() {
                    for j in 0..2 {
                        let (r, c) = if m.trans {
                            (2 * q + j, g)
                        } else {
                            (g, 2 * q + j)
                        };
                        self.set_local(lane(l), m.dst.buf, at + 2 * i + j, matrix[r][c]);
                    }
                }
            }
        }
        match before {
            Some(v) => self.vars.insert(m.thread, v),
            None => self.vars.remove(&m.thread),
        };
        self.now(|a| a.thread = self.thread);
        Ok(())
    }

    /// The 8 elements of the row thread `t` points at in an ldmatrix, read as thread `t`.
    fn matrix_row(&mut self, m: &Matrices, t: i64) -> Result<[f32; 8], KernelError> {
        self.vars.insert(m.thread, Val::I(t));
        self.now(|a| a.thread = t);
        let k = i(&self.eval(&m.row)?);
        if k.rem_euclid(8) != 0 {
            return Err(KernelError::Warp {
                kernel: self.kernel.name.clone(),
                why: "points an ldmatrix row at an element that is not a multiple of 8 (16 bytes)",
            });
        }
        self.bound(m.src, k.saturating_add(7))?;
        let first = self.bound(m.src, k)?;
        self.touch(m.src, first, 8, false)?;
        let mut row = [0f32; 8];
        for (c, x) in row.iter_mut().enumerate() {
            *x = self.bufs[m.src].float(first + c);
        }
        Ok(row)
    }

    /// The threads of the block where a warp's collective work on locals `bufs` runs, or why
    /// it cannot: without the GPU semantics, inside a Thread loop or outside the grid, in a
    /// block that is not whole warps, on a buffer that is not a local.
    pub(super) fn warps(
        &self,
        mut bufs: impl Iterator<Item = usize>,
    ) -> Result<usize, KernelError> {
        let fail = |why| KernelError::Warp {
            kernel: self.kernel.name.clone(),
            why,
        };
        if self.banks.is_none() {
            return Err(fail("needs the GPU semantics (run_gpu)"));
        }
        if self.in_threads > 0 || self.in_grid == 0 {
            return Err(fail("is inside a thread loop or outside the grid"));
        }
        let threads = crate::launch::block_threads(self.kernel).unwrap_or(0);
        if threads == 0 || !threads.is_multiple_of(fragment::WARP) {
            return Err(fail("is in a block that is not whole warps"));
        }
        let first = self.kernel.params.len();
        let locals = first..first + self.kernel.locals.len();
        if bufs.any(|b| !locals.contains(&b)) {
            return Err(fail("names a buffer that is not a local"));
        }
        Ok(threads)
    }

    /// A fold across lanes ([`crate::ir::Stmt::WarpFold`]): a butterfly over each aligned
    /// group of `lanes` threads, pairs at distance 1, 2, …, so that every thread of the group
    /// gets the same bits.
    pub(super) fn warp_fold(&mut self, fold: &Fold) -> Result<(), KernelError> {
        let (op, buf, count) = (fold.op, fold.buf, usize::from(fold.count));
        let threads = self.warps(std::iter::once(buf))?;
        let lanes = usize::from(fold.lanes);
        if !lanes.is_power_of_two() || !(2..=fragment::WARP).contains(&lanes) {
            return Err(KernelError::Warp {
                kernel: self.kernel.name.clone(),
                why: "folds across no power of two of lanes up to a warp",
            });
        }
        let k = i(&self.eval(&fold.at)?);
        self.bound(buf, k.saturating_add(count as i64) - 1)?;
        let first = self.bound(buf, k)?;
        for group in 0..threads / lanes {
            let lane = |l: usize| (group * lanes + l) as i64;
            for e in first..first + count {
                let mut x: Vec<f32> = (0..lanes).map(|l| self.local(lane(l), buf, e)).collect();
                let mut distance = 1;
                while distance < lanes {
                    x = (0..lanes)
                        .map(|l| f(&binary(op, Val::F(x[l]), Val::F(x[l ^ distance]))))
                        .collect();
                    distance *= 2;
                }
                for (l, v) in x.into_iter().enumerate() {
                    self.set_local(lane(l), buf, e, v);
                }
            }
        }
        Ok(())
    }

    /// Element `at` of thread `t`'s copy of local `buf` (0 where the thread has none yet).
    pub(super) fn local(&self, t: i64, buf: usize, at: usize) -> f32 {
        if t == self.thread {
            return self.bufs[buf].float(at);
        }
        let j = buf - self.kernel.params.len();
        let bank = self.banks.as_ref().and_then(|b| b.get(&t));
        bank.map_or(0.0, |b| b[j].float(at))
    }

    /// Sets element `at` of thread `t`'s copy of local `buf`.
    pub(super) fn set_local(&mut self, t: i64, buf: usize, at: usize, x: f32) {
        if t == self.thread {
            return self.bufs[buf].set_float(at, x);
        }
        let j = buf - self.kernel.params.len();
        let Some(banks) = self.banks.as_mut() else {
            return;
        };
        let bank = banks.entry(t).or_insert_with(|| {
            self.kernel
                .locals
                .iter()
                .map(|l| BufData::zeros(l.elem, l.len))
                .collect()
        });
        bank[j].set_float(at, x);
    }
}

#[cfg(test)]
mod tests {
    use crate::fragment;
    use crate::interp::{run_gpu, BufData};
    use crate::ir::build::{add, axis, load, mul, var};
    use crate::ir::{
        Axis, Bin, Elem, Expr, Fold, Fragment, Kernel, Local, Matrices, Param, Stmt, Var,
    };

    /// Each of 64 threads puts `x[2t]` and `x[2t + 1]` in its local, folds them by `op`
    /// across `lanes` lanes, and writes what it got to `out[2t..]`.
    fn fold(op: Bin, lanes: u8) -> Kernel {
        let (b, t, e) = (Var(0), Var(1), Var(2));
        let at = add(mul(var(t), Expr::Int(2)), var(e));
        // Every thread, each of its two elements.
        let each = |s: Stmt| {
            let pair = axis(Axis::Unroll, e, Expr::Int(2), vec![s]);
            axis(Axis::Thread, t, Expr::Int(64), vec![pair])
        };
        let param = |name: &str, elem, output| Param {
            name: name.into(),
            elem,
            output,
        };
        let folded = Fold {
            op,
            buf: 3,
            at: Expr::Int(0),
            count: 2,
            lanes,
        };
        Kernel {
            name: "fold".into(),
            params: vec![
                param("out", Elem::F32, true),
                param("x", Elem::F32, false),
                param("status", Elem::I64, true),
            ],
            locals: vec![Local {
                name: "v".into(),
                elem: Elem::F32,
                len: 2,
            }],
            shared: Vec::new(),
            body: vec![axis(
                Axis::Grid,
                b,
                Expr::Int(1),
                vec![
                    each(Stmt::Store(3, var(e), load(1, at.clone()))),
                    Stmt::WarpFold(folded),
                    each(Stmt::Store(0, at, load(3, var(e)))),
                ],
            )],
            occupancy: None,
        }
    }

    #[test]
    fn a_fold_gives_each_group_its_butterfly_sum_or_max() {
        let x: Vec<f32> = (0..128)
            .map(|i| ((i * 37) % 11) as f32 * 0.3 - 1.0)
            .collect();
        for (op, lanes) in [(Bin::Add, 4), (Bin::Max, 4), (Bin::Add, 32), (Bin::Min, 2)] {
            let k = fold(op, lanes);
            assert!(crate::verify::verify_kernel(&k, 0).is_empty());
            let mut bufs = vec![
                BufData::zeros(Elem::F32, 128),
                BufData::F32(x.clone()),
                BufData::zeros(Elem::I64, 1),
            ];
            assert_eq!(run_gpu(&k, &mut bufs, &[]), Ok(()));
            let BufData::F32(out) = &bufs[0] else {
                panic!("f32 output")
            };
            let lanes = usize::from(lanes);
            for t in 0..64 {
                for e in 0..2 {
                    let group = t / lanes * lanes;
                    let mut v: Vec<f32> = (0..lanes).map(|l| x[2 * (group + l) + e]).collect();
                    let mut d = 1;
                    while d < lanes {
                        v = (0..lanes)
                            .map(|l| match op {
                                Bin::Add => v[l] + v[l ^ d],
                                Bin::Max => v[l].max(v[l ^ d]),
                                _ => v[l].min(v[l ^ d]),
                            })
                            .collect();
                        d *= 2;
                    }
                    assert_eq!(out[2 * t + e], v[0], "{op:?} {lanes} thread {t}");
                }
            }
        }
        // A fold of an f32 local only, across a power of two of lanes.
        let mut bad = fold(Bin::Add, 3);
        bad.locals[0].elem = Elem::BF16;
        let problems = crate::verify::verify_kernel(&bad, 0);
        assert!(
            problems.iter().any(|p| p.what.contains("power of two")),
            "{problems:?}"
        );
    }

    /// One warp stages a 16 × 16 bf16 `x` (rows of 16 + 8 elements) in shared memory, loads
    /// four matrices of it with ldmatrix (transposed when `trans`), and writes each lane's 8
    /// elements to `out[8l..]`. Lane `l` points at row `8·(m mod 2) + l mod 8`, column
    /// `8·(m / 2)` of matrix `m = l / 8`: the tensor-core `A` operand's four 8 × 8 quarters.
    fn matrices(trans: bool, stride: i64) -> Kernel {
        let [b, t, e, u] = [0, 1, 2, 3].map(Var);
        let int = Expr::Int;
        let bin = |op, x, y| Expr::Bin(op, Box::new(x), Box::new(y));
        let lane = bin(Bin::Rem, var(u), int(32));
        let m = bin(Bin::Div, lane.clone(), int(8));
        let r = add(
            mul(bin(Bin::Rem, m.clone(), int(2)), int(8)),
            bin(Bin::Rem, lane, int(8)),
        );
        let row = add(mul(r, int(stride)), mul(bin(Bin::Div, m, int(2)), int(8)));
        let param = |name: &str, elem, output| Param {
            name: name.into(),
            elem,
            output,
        };
        let half = |name: &str, len| Local {
            name: name.into(),
            elem: Elem::BF16,
            len,
        };
        let each = |n: i64, s: Stmt| {
            let inner = axis(Axis::Unroll, e, int(n), vec![s]);
            axis(Axis::Thread, t, int(32), vec![inner])
        };
        let x = add(mul(var(t), int(8)), var(e));
        let slot = add(
            mul(bin(Bin::Div, x.clone(), int(16)), int(24)),
            bin(Bin::Rem, x.clone(), int(16)),
        );
        Kernel {
            name: "ldmatrix".into(),
            params: vec![
                param("out", Elem::F32, true),
                param("x", Elem::BF16, false),
                param("status", Elem::I64, true),
            ],
            locals: vec![half("a", 8)],
            shared: vec![half("tile", 16 * 24)],
            body: vec![axis(
                Axis::Grid,
                b,
                int(1),
                vec![
                    each(8, Stmt::Store(4, slot, load(1, x.clone()))),
                    Stmt::Barrier(crate::ir::Scope::Block),
                    Stmt::LoadMatrix(Matrices {
                        dst: Fragment { buf: 3, at: int(0) },
                        src: 4,
                        thread: u,
                        row,
                        count: 4,
                        trans,
                    }),
                    each(8, Stmt::Store(0, x, load(3, var(e)))),
                ],
            )],
            occupancy: None,
        }
    }

    #[test]
    fn ldmatrix_places_elements_as_the_fragments_want() {
        // Small integers: exact in bf16.
        let x: Vec<f32> = (0..256).map(|i| ((i * 7) % 61) as f32).collect();
        for trans in [false, true] {
            let k = matrices(trans, 24);
            assert!(crate::verify::verify_kernel(&k, 0).is_empty());
            let mut bufs = vec![
                BufData::zeros(Elem::F32, 256),
                BufData::BF16(
                    x.iter()
                        .map(|&v| half::bf16::from_f32(v).to_bits())
                        .collect(),
                ),
                BufData::zeros(Elem::I64, 1),
            ];
            assert_eq!(run_gpu(&k, &mut bufs, &[]), Ok(()));
            let BufData::F32(out) = &bufs[0] else {
                panic!("f32 output")
            };
            for l in 0..fragment::WARP {
                for i in 0..8 {
                    // Untransposed, the registers are A's fragment; transposed, each 8 × 8
                    // quarter arrives as its transpose.
                    let (r, c) = fragment::a(l, i);
                    let (r, c) = if trans {
                        (r / 8 * 8 + c % 8, c / 8 * 8 + r % 8)
                    } else {
                        (r, c)
                    };
                    assert_eq!(out[8 * l + i], x[16 * r + c], "lane {l} element {i}");
                }
            }
        }
        // A row that does not start on 16 bytes is the hardware's fault.
        let mut bufs = vec![
            BufData::zeros(Elem::F32, 256),
            BufData::zeros(Elem::BF16, 256),
            BufData::zeros(Elem::I64, 1),
        ];
        let odd = run_gpu(&matrices(false, 20), &mut bufs, &[]);
        assert!(
            matches!(odd, Err(crate::interp::KernelError::Warp { why, .. }) if why.contains("16 bytes")),
            "{odd:?}"
        );
    }
}
