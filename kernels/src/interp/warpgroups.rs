//! The interpreter's warpgroup tensor-core product ([`Stmt::WarpgroupMma`]) under the GPU
//! semantics: each warpgroup of the block reads its rows of `A` and all of `B` from shared
//! memory as their descriptors lay them out and its threads' accumulators as `wgmma` places
//! them ([`crate::warpgroup`]), and the product lands in those accumulators.
//!
//! A product is asynchronous, as on a GPU: it is queued at its issue and computed when a
//! [`Stmt::WarpgroupWait`] completes it, reading its tiles then, the latest time the hardware
//! may. So a pipeline that overwrites a stage while its product is in flight computes with
//! the new contents, or races, or touches a copy that has not landed, instead of passing by
//! luck; and a thread touching the accumulators of a product in flight is an error, as is a
//! product still in flight when its block ends.
//!
//! [`Stmt::WarpgroupMma`]: crate::ir::Stmt::WarpgroupMma
//! [`Stmt::WarpgroupWait`]: crate::ir::Stmt::WarpgroupWait

use std::collections::VecDeque;

use super::{i, KernelError, Machine};
use crate::races::TENSOR_CORES;
use crate::warpgroup::{
    accumulator, SharedTile, WarpgroupMma, WarpgroupWait, ATOM, CORE, WARPGROUP,
};

/// One product issued and not yet complete, its tiles' starts as they were at its issue.
struct Issued {
    w: WarpgroupMma,
    /// Whether it adds to the accumulators.
    accumulate: bool,
    a_at: i64,
    b_at: i64,
    /// The accumulators' first element.
    first: usize,
    /// The block's threads.
    threads: usize,
}

/// The block's warpgroup products in flight, oldest first.
#[derive(Default)]
pub(super) struct Products(VecDeque<Issued>);

impl Machine<'_> {
    /// Issues `C ← A_g·B + C` in every warpgroup `g` (see [`WarpgroupMma`]): the tiles are
    /// read now for the race checker (the hardware may read them at once) and again when a
    /// wait completes the product, whose sums then land in the accumulators.
    pub(super) fn warpgroup_mma(&mut self, w: &WarpgroupMma) -> Result<(), KernelError> {
        let threads = self.warps(std::iter::once(w.c.buf))?;
        if !threads.is_multiple_of(WARPGROUP) {
            return Err(self.warpgroup_error("is in a block that is not whole warpgroups"));
        }
        let (m, n, k) = (usize::from(w.m), usize::from(w.n), usize::from(w.k));
        let first = i(&self.eval(&w.c.at)?);
        self.bound(
            w.c.buf,
            first.saturating_add((m * n / WARPGROUP) as i64 - 1),
        )?;
        let first = self.bound(w.c.buf, first)?;
        let (a_at, b_at) = (i(&self.eval(&w.a.at)?), i(&self.eval(&w.b.at)?));
        let accumulate = i(&self.eval(&w.accumulate)?) != 0;
        self.tile(&w.a, a_at, (m * threads / WARPGROUP, k))?;
        self.tile(&w.b, b_at, (n, k))?;
        self.products.0.push_back(Issued {
            w: w.clone(),
            accumulate,
            a_at,
            b_at,
            first,
            threads,
        });
        Ok(())
    }

    /// The warpgroups' wait (see [`WarpgroupWait`]): their oldest products complete until at
    /// most `pending` are in flight.
    pub(super) fn warpgroup_wait(&mut self, wait: &WarpgroupWait) -> Result<(), KernelError> {
        self.warps(std::iter::once(wait.c.buf))?;
        while self.products.0.len() > usize::from(wait.pending) {
            if let Some(p) = self.products.0.pop_front() {
                self.complete(&p)?;
            }
        }
        Ok(())
    }

    /// Product `p`'s sums, in f32 along k in order (the hardware's order is its own: results
    /// are checked to a tolerance), added to its accumulators: warpgroup `g`'s from rows
    /// `g·m..` of `A`'s tile.
    fn complete(&mut self, p: &Issued) -> Result<(), KernelError> {
        let (m, n, k) = (usize::from(p.w.m), usize::from(p.w.n), usize::from(p.w.k));
        let groups = p.threads / WARPGROUP;
        let a = self.tile(&p.w.a, p.a_at, (m * groups, k))?;
        let b = self.tile(&p.w.b, p.b_at, (n, k))?;
        let count = m * n / WARPGROUP;
        for group in 0..groups {
            for t in 0..WARPGROUP {
                let thread = (group * WARPGROUP + t) as i64;
                for e in 0..count {
                    let (r, c) = accumulator(t, e, n);
                    let r = group * m + r;
                    let acc = match p.accumulate {
                        true => self.local(thread, p.w.c.buf, p.first + e),
                        false => 0.0,
                    };
                    let d = (0..k).fold(acc, |acc, q| a[r][q].mul_add(b[c][q], acc));
                    self.set_local(thread, p.w.c.buf, p.first + e, d);
                }
            }
        }
        Ok(())
    }

    /// Fails if a product in flight will write one of elements `at..at + n` of `buf`.
    pub(super) fn not_accumulating(
        &self,
        buf: usize,
        at: usize,
        n: usize,
    ) -> Result<(), KernelError> {
        let hit = self.products.0.iter().any(|p| {
            let len = usize::from(p.w.m) * usize::from(p.w.n) / WARPGROUP;
            p.w.c.buf == buf && at < p.first + len && p.first < at + n
        });
        match hit {
            true => Err(self
                .warpgroup_error("leaves its accumulators in flight where the code touches them")),
            false => Ok(()),
        }
    }

    /// Fails if a product is still in flight as the block ends.
    pub(super) fn products_settled(&mut self) -> Result<(), KernelError> {
        match self.products.0.is_empty() {
            true => Ok(()),
            false => Err(self.warpgroup_error("is still in flight as its block ends")),
        }
    }

    /// The `rows × k` elements of a shared operand tile from element `at`, `[row][k]`, read
    /// by the block's tensor cores ([`TENSOR_CORES`]), no thread: so a write to one by any
    /// thread unordered with the product (no barrier between) races.
    fn tile(
        &mut self,
        tile: &SharedTile,
        at: i64,
        (rows, k): (usize, usize),
    ) -> Result<Vec<Vec<f32>>, KernelError> {
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
    use crate::warpgroup::{accumulator, SharedTile, WarpgroupMma, WarpgroupWait, WARPGROUP};

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

    /// One block of `groups` warpgroups, splitting `A`'s rows: copies the staged tiles
    /// (already in their shared layout) into shared memory, multiplies (`b_as`: how the
    /// product reads `B`), and writes each thread's accumulators to `out[t·count + e]`.
    /// Without `barrier`, the product reads the tiles while other threads' writes are
    /// unordered with it.
    fn kernel(b_as: SharedTile, barrier: bool, groups: usize) -> Kernel {
        let [blk, t, e] = [0, 1, 2].map(Var);
        let int = Expr::Int;
        let block_threads = groups * WARPGROUP;
        let copy = |src: usize, dst: usize, len: usize| {
            let at = add(mul(var(e), int(block_threads as i64)), var(t));
            let per = (len / block_threads) as i64;
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
        let threads = |body| axis(Axis::Thread, t, int(block_threads as i64), body);
        let count = (ROWS * N / block_threads) as i64;
        let out_at = add(mul(var(t), int(count)), var(e));
        let mut block = vec![threads(vec![copy(1, 5, ROWS * K), copy(2, 6, K * N)])];
        if barrier {
            block.push(Stmt::Barrier(Scope::Block));
        }
        block.push(Stmt::WarpgroupMma(WarpgroupMma {
            a: tiles().0,
            b: b_as,
            c: Fragment { buf: 4, at: int(0) },
            accumulate: Expr::Bool(true),
            m: (ROWS / groups) as u16,
            n: N as u16,
            k: K as u16,
        }));
        block.push(Stmt::WarpgroupWait(WarpgroupWait {
            c: Fragment { buf: 4, at: int(0) },
            len: count as u16,
            pending: 0,
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
            locals: vec![array("c", Elem::F32, count as usize)],
            shared: vec![
                array("a_tile", Elem::BF16, ROWS * K),
                array("b_tile", Elem::BF16, K * N),
            ],
            body: vec![axis(Axis::Grid, blk, int(1), block)],
            occupancy: None,
        }
    }

    /// The staged inputs, and each thread's accumulators of the exact product in a block of
    /// `groups` warpgroups.
    fn case(groups: usize) -> (Vec<BufData>, Vec<f32>) {
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
        let (m, count) = (ROWS / groups, ROWS * N / (groups * WARPGROUP));
        let mut want = vec![0f32; ROWS * N];
        for t in 0..groups * WARPGROUP {
            for e in 0..count {
                let (r, c) = accumulator(t % WARPGROUP, e, N);
                let r = t / WARPGROUP * m + r;
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
    fn warpgroups_multiply_tiles_laid_out_as_their_descriptors_say() {
        // One warpgroup multiplies all of `A`'s rows; two split them.
        for groups in [1, 2] {
            let k = kernel(tiles().1, true, groups);
            let problems = crate::verify::verify_kernel(&k, 0);
            assert!(problems.is_empty(), "{problems:?}");
            let (mut bufs, want) = case(groups);
            assert_eq!(run_gpu(&k, &mut bufs, &[]), Ok(()));
            assert_eq!(bufs[0], BufData::F32(want), "{groups} warpgroups");
        }
    }

    #[test]
    fn a_tile_read_in_the_wrong_layout_gives_a_wrong_product() {
        // Its core matrices' strides along k and along n swapped.
        let mut b = tiles().1;
        (b.lead, b.stride) = (b.stride, b.lead);
        let (mut bufs, want) = case(1);
        assert_eq!(run_gpu(&kernel(b, true, 1), &mut bufs, &[]), Ok(()));
        assert_ne!(bufs[0], BufData::F32(want));
    }

    #[test]
    fn a_product_unordered_with_the_tiles_writes_races() {
        let (mut bufs, _) = case(1);
        let err = run_gpu(&kernel(tiles().1, false, 1), &mut bufs, &[]);
        assert!(matches!(err, Err(KernelError::Race { .. })), "{err:?}");
    }

    /// The block's statements of [`kernel`].
    fn block(k: &mut Kernel) -> &mut Vec<Stmt> {
        match &mut k.body[0] {
            Stmt::For { body, .. } => body,
            _ => unreachable!("the kernel is one Grid loop"),
        }
    }

    #[test]
    fn accumulators_read_before_the_wait_are_an_error() {
        let mut k = kernel(tiles().1, true, 1);
        block(&mut k).retain(|s| !matches!(s, Stmt::WarpgroupWait(_)));
        let (mut bufs, _) = case(1);
        let err = run_gpu(&k, &mut bufs, &[]);
        let Err(KernelError::Warp { why, .. }) = err else {
            panic!("{err:?}")
        };
        assert!(why.contains("in flight"), "{why}");
    }

    #[test]
    fn a_tile_written_while_its_product_is_in_flight_races() {
        // After the issue and a barrier, but before the wait, the threads zero `A`'s tile:
        // the product may read it as late as its wait, so this races with it (a pipeline
        // that reuses a stage one slice too early).
        let mut k = kernel(tiles().1, true, 1);
        let (t, e) = (Var(1), Var(2));
        let per = Expr::Int((ROWS * K / WARPGROUP) as i64);
        let at = add(mul(var(e), Expr::Int(WARPGROUP as i64)), var(t));
        let zero = axis(
            Axis::Serial,
            e,
            per,
            vec![Stmt::Store(5, at, Expr::F32(0.0.into()))],
        );
        let body = block(&mut k);
        let issue = body.iter().position(|s| matches!(s, Stmt::WarpgroupMma(_)));
        let after = issue.map_or(0, |p| p + 1);
        body.insert(after, Stmt::Barrier(Scope::Block));
        body.insert(
            after + 1,
            axis(Axis::Thread, t, Expr::Int(WARPGROUP as i64), vec![zero]),
        );
        let (mut bufs, _) = case(1);
        let err = run_gpu(&k, &mut bufs, &[]);
        assert!(matches!(err, Err(KernelError::Race { .. })), "{err:?}");
    }

    #[test]
    fn the_verifier_wants_whole_warpgroups_and_reachable_core_matrices() {
        let mut b = tiles().1;
        b.lead = 60;
        let mut k = kernel(b, true, 1);
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

    #[test]
    fn the_verifier_wants_tiles_inside_their_arrays_and_waits_on_a_products_accumulators() {
        // Two warpgroups read all of A's rows: an array a core matrix short is overrun.
        let mut k = kernel(tiles().1, true, 2);
        k.shared[0].len -= 8;
        for s in block(&mut k).iter_mut() {
            if let Stmt::WarpgroupWait(w) = s {
                w.len -= 4;
            }
        }
        let problems: Vec<String> = crate::verify::verify_kernel(&k, 0)
            .into_iter()
            .map(|p| p.what)
            .collect();
        let reach = format!("reaches element {}, past its {}", ROWS * K, ROWS * K - 8);
        assert!(problems.iter().any(|p| p.contains(&reach)), "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("not those of a product")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
