//! The interpreter's warpgroup tensor-core product ([`Stmt::WarpgroupMma`]) under the GPU
//! semantics: each warpgroup of the block reads `A` and `B` from shared memory as their
//! descriptors lay them out and its threads' accumulators as `wgmma` places them
//! ([`crate::warpgroup`]), and the product lands in those accumulators.
//!
//! [`Stmt::WarpgroupMma`]: crate::ir::Stmt::WarpgroupMma

use super::{i, KernelError, Machine};
use crate::races::TENSOR_CORES;
use crate::warpgroup::{accumulator, SharedTile, WarpgroupMma, ATOM, CORE, WARPGROUP};

impl Machine<'_> {
    /// `C ← A·B + C` in every warpgroup (see [`WarpgroupMma`]). The sums run in f32 along k
    /// in order (the hardware's order is its own: results are checked to a tolerance). Every
    /// element read counts as the block's tensor cores' ([`TENSOR_CORES`]), no thread's, so a
    /// write to it by any thread unordered with the product (no barrier between) races.
    pub(super) fn warpgroup_mma(&mut self, w: &WarpgroupMma) -> Result<(), KernelError> {
        let threads = self.warps(std::iter::once(w.c.buf))?;
        if !threads.is_multiple_of(WARPGROUP) {
            return Err(self.warpgroup_error("is in a block that is not whole warpgroups"));
        }
        let (m, n, k) = (usize::from(w.m), usize::from(w.n), usize::from(w.k));
        let count = m * n / WARPGROUP;
        let first = i(&self.eval(&w.c.at)?);
        self.bound(w.c.buf, first.saturating_add(count as i64 - 1))?;
        let first = self.bound(w.c.buf, first)?;
        let a = self.tile(&w.a, m, k)?;
        let b = self.tile(&w.b, n, k)?;
        for group in 0..threads / WARPGROUP {
            for t in 0..WARPGROUP {
                let thread = (group * WARPGROUP + t) as i64;
                for e in 0..count {
                    let (r, c) = accumulator(t, e, n);
                    let acc = self.local(thread, w.c.buf, first + e);
                    let d = (0..k).fold(acc, |acc, p| a[r][p].mul_add(b[c][p], acc));
                    self.set_local(thread, w.c.buf, first + e, d);
                }
            }
        }
        Ok(())
    }

    /// The `rows × k` elements of a shared operand tile, `[row][k]`.
    fn tile(
        &mut self,
        tile: &SharedTile,
        rows: usize,
        k: usize,
    ) -> Result<Vec<Vec<f32>>, KernelError> {
        let at = i(&self.eval(&tile.at)?);
        if at.rem_euclid(CORE as i64) != 0 {
            return Err(self.warpgroup_error("reads a tile that does not start on 16 bytes"));
        }
        if tile.swizzle && at.rem_euclid(ATOM as i64) != 0 {
            return Err(
                self.warpgroup_error("reads a swizzled tile that does not start on 256 bytes")
            );
        }
        let mut out = vec![vec![0f32; k]; rows];
        // The reads are the tensor cores', no thread's.
        self.now(|a| a.thread = TENSOR_CORES);
        let mut read = || -> Result<(), KernelError> {
            for (r, row) in out.iter_mut().enumerate() {
                for (p, x) in row.iter_mut().enumerate() {
                    let index = at.saturating_add(tile.offset(r, p) as i64);
                    let index = self.bound(tile.buf, index)?;
                    self.touch(tile.buf, index, 1, false)?;
                    *x = self.bufs[tile.buf].float(index);
                }
            }
            Ok(())
        };
        let done = read();
        self.now(|a| a.thread = self.thread);
        done.map(|()| out)
    }

    fn warpgroup_error(&self, why: &'static str) -> KernelError {
        KernelError::Warp {
            kernel: self.kernel.name.clone(),
            why,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::interp::{run_gpu, BufData, KernelError};
    use crate::ir::build::{add, axis, load, mul, var};
    use crate::ir::{Axis, Elem, Expr, Fragment, Kernel, Local, Param, Scope, Stmt, Var};
    use crate::warpgroup::{accumulator, SharedTile, WarpgroupMma, WARPGROUP};

    /// Two bands of 64 rows, columns no power of two.
    const ROWS: usize = 128;
    const N: usize = 24;
    const K: usize = 32;

    /// `A` (128 × K) k-major with the 32-byte swizzle, k16 slabs one after the other; `B`
    /// (K × N) mn-major with no swizzle, core matrices 64 elements apart along k and `8K`
    /// along n.
    fn tiles() -> (SharedTile, SharedTile) {
        let a = SharedTile::swizzled(5, Expr::Int(0), 128, 16 * ROWS as u32);
        let b = SharedTile::mn_major(6, Expr::Int(0), (64, 8 * K as u32), 128);
        (a, b)
    }

    /// One block of a warpgroup: copies the staged tiles (already in their shared layout)
    /// into shared memory, multiplies (`b_as`: how the product reads `B`), and writes each
    /// thread's accumulators to `out[t·N/2 + e]`. Without `barrier`, the product reads the
    /// tiles while other threads' writes are unordered with it.
    fn kernel(b_as: SharedTile, barrier: bool) -> Kernel {
        let [blk, t, e] = [0, 1, 2].map(Var);
        let int = Expr::Int;
        let copy = |src: usize, dst: usize, len: usize| {
            let at = add(mul(var(e), int(WARPGROUP as i64)), var(t));
            let per = (len / WARPGROUP) as i64;
            axis(
                Axis::Serial,
                e,
                int(per),
                vec![Stmt::Store(dst, at.clone(), load(src, at))],
            )
        };
        let param = |name: &str, elem, output| Param {
            name: name.into(),
            elem,
            output,
        };
        let array = |name: &str, elem, len| Local {
            name: name.into(),
            elem,
            len,
        };
        let threads = |body| axis(Axis::Thread, t, int(WARPGROUP as i64), body);
        let count = (ROWS * N / WARPGROUP) as i64;
        let out_at = add(mul(var(t), int(count)), var(e));
        let mut block = vec![threads(vec![copy(1, 5, ROWS * K), copy(2, 6, K * N)])];
        if barrier {
            block.push(Stmt::Barrier(Scope::Block));
        }
        block.push(Stmt::WarpgroupMma(WarpgroupMma {
            a: tiles().0,
            b: b_as,
            c: Fragment { buf: 4, at: int(0) },
            m: ROWS as u16,
            n: N as u16,
            k: K as u16,
        }));
        let store = Stmt::Store(0, out_at, load(4, var(e)));
        block.push(threads(vec![axis(
            Axis::Unroll,
            e,
            int(count),
            vec![store],
        )]));
        Kernel {
            name: "wgmma".into(),
            params: vec![
                param("out", Elem::F32, true),
                param("a", Elem::BF16, false),
                param("b", Elem::BF16, false),
                param("status", Elem::I64, true),
            ],
            locals: vec![array("c", Elem::F32, ROWS * N / WARPGROUP)],
            shared: vec![
                array("a_tile", Elem::BF16, ROWS * K),
                array("b_tile", Elem::BF16, K * N),
            ],
            body: vec![axis(Axis::Grid, blk, int(1), block)],
            occupancy: None,
        }
    }

    /// The staged inputs, and each thread's accumulators of the exact product.
    fn case() -> (Vec<BufData>, Vec<f32>) {
        let value = |i: usize, s: usize| ((i * s) % 23) as f32 / 8.0 - 1.25;
        let (a_tile, b_tile) = tiles();
        let (mut a, mut b) = (vec![0f32; ROWS * K], vec![0f32; K * N]);
        for r in 0..ROWS {
            for p in 0..K {
                a[a_tile.offset(r, p)] = value(r * K + p, 7);
            }
        }
        for p in 0..K {
            for c in 0..N {
                // (Not p·N + c: with N = 24 ≡ 1 mod 23, each 8 × 8 block would be symmetric.)
                b[b_tile.offset(c, p)] = value(p * 37 + c, 5);
            }
        }
        let count = ROWS * N / WARPGROUP;
        let mut want = vec![0f32; WARPGROUP * count];
        for t in 0..WARPGROUP {
            for e in 0..count {
                let (r, c) = accumulator(t, e, N);
                want[t * count + e] = (0..K).fold(0.0, |acc, p| {
                    a[a_tile.offset(r, p)].mul_add(b[b_tile.offset(c, p)], acc)
                });
            }
        }
        let bf16 =
            |v: &[f32]| BufData::BF16(v.iter().map(|&x| crate::storage::f32_to_bf16(x)).collect());
        let out = BufData::F32(vec![0.0; ROWS * N]);
        (vec![out, bf16(&a), bf16(&b), BufData::I64(vec![0])], want)
    }

    #[test]
    fn a_warpgroup_multiplies_tiles_laid_out_as_their_descriptors_say() {
        let k = kernel(tiles().1, true);
        let problems = crate::verify::verify_kernel(&k, 0);
        assert!(problems.is_empty(), "{problems:?}");
        let (mut bufs, want) = case();
        assert_eq!(run_gpu(&k, &mut bufs, &[]), Ok(()));
        assert_eq!(bufs[0], BufData::F32(want));
    }

    #[test]
    fn a_tile_read_in_the_wrong_layout_gives_a_wrong_product() {
        // Its core matrices' strides along k and along n swapped.
        let mut b = tiles().1;
        (b.lead, b.stride) = (b.stride, b.lead);
        let (mut bufs, want) = case();
        assert_eq!(run_gpu(&kernel(b, true), &mut bufs, &[]), Ok(()));
        assert_ne!(bufs[0], BufData::F32(want));
    }

    #[test]
    fn a_product_unordered_with_the_tiles_writes_races() {
        let (mut bufs, _) = case();
        let err = run_gpu(&kernel(tiles().1, false), &mut bufs, &[]);
        assert!(matches!(err, Err(KernelError::Race { .. })), "{err:?}");
    }

    #[test]
    fn the_verifier_wants_whole_warpgroups_and_reachable_core_matrices() {
        let mut b = tiles().1;
        b.lead = 60;
        let mut k = kernel(b, true);
        if let Stmt::For { body, .. } = &mut k.body[0] {
            for s in body.iter_mut() {
                if let Stmt::For { extent, .. } = s {
                    *extent = Expr::Int(64);
                }
            }
        }
        let problems: Vec<String> = crate::verify::verify_kernel(&k, 0)
            .into_iter()
            .map(|p| p.what)
            .collect();
        assert!(
            problems.iter().any(|p| p.contains("whole warpgroups")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("16 bytes apart")),
            "{problems:?}"
        );
    }
}
