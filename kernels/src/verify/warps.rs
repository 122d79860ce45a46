//! The verifier's checks of a warp's collective work and of asynchronous copies (invariants
//! 9 and 10 of [`super`]): where they sit, and the shapes, types and places of their operands.

use super::{constant, Verifier};
use crate::fragment;
use crate::ir::{
    AsyncCopy, Bin, Elem, Fold, Fragment, Matrices, SharedTile, Stmt, Ty, WarpgroupMma,
    WarpgroupWait,
};
use crate::warpgroup;

impl Verifier<'_> {
    /// Checks a tensor-core product's place and fragments (`A`, `B`, `C`).
    pub(super) fn mma(&mut self, frags: [&Fragment; 3]) {
        self.warp_place("an mma");
        let locals = self.k.params.len()..self.k.params.len() + self.k.locals.len();
        let halves = [Elem::F16, Elem::BF16];
        let a_elem = locals
            .contains(&frags[0].buf)
            .then(|| self.k.elem(frags[0].buf));
        for (f, (name, len)) in frags.iter().zip([("A", 8), ("B", 4), ("C", 4)]) {
            self.expect(&f.at, Ty::I64, "a fragment's offset");
            let elem = locals.contains(&f.buf).then(|| self.k.elem(f.buf));
            let fits = match name {
                "C" => elem == Some(Elem::F32),
                _ => elem.is_some_and(|e| halves.contains(&e)) && elem == a_elem,
            };
            if !fits {
                self.report(format!(
                    "mma {name} in b{}: A and B are locals of one of f16 and bf16, C an f32 local",
                    f.buf
                ));
                continue;
            }
            let size = self.local_len(f.buf);
            if let Some(at) = constant(&f.at) {
                let odd = name != "C" && at % 2 != 0;
                if at < 0 || at as usize + len > size || odd {
                    self.report(format!(
                        "mma {name} at b{}[{at}..+{len}], outside its {size} elements or odd",
                        f.buf
                    ));
                }
            }
        }
    }

    /// Checks a fold across lanes: an f32 local, by add, max or min, across 2 to 32 lanes.
    pub(super) fn warp_fold(&mut self, fold: &Fold) {
        let (buf, count, lanes) = (fold.buf, fold.count, fold.lanes);
        self.warp_place("a warp fold");
        self.expect(&fold.at, Ty::I64, "a fold's offset");
        let locals = self.k.params.len()..self.k.params.len() + self.k.locals.len();
        let local = locals.contains(&buf) && self.k.elem(buf) == Elem::F32;
        let folds = matches!(fold.op, Bin::Add | Bin::Max | Bin::Min);
        let group = lanes.is_power_of_two() && (2..=32).contains(&lanes);
        if !local || !folds || !group || count == 0 {
            self.report(format!(
                "fold {:?} of b{buf} across {lanes} lanes: an f32 local, add, max or min, 2 \
                 to 32 lanes (a power of two), at least one element",
                fold.op
            ));
        }
        let len = self.local_len(buf);
        if let Some(at) = constant(&fold.at) {
            if at < 0 || at as usize + usize::from(count) > len {
                self.report(format!("fold of b{buf}[{at}..+{count}], outside its {len}"));
            }
        }
    }

    pub(super) fn load_matrix(&mut self, m: &Matrices) {
        self.warp_place("an ldmatrix");
        self.set(m.thread, Ty::I64);
        self.expect(&m.row, Ty::I64, "an ldmatrix row");
        self.expect(&m.dst.at, Ty::I64, "an ldmatrix destination");
        let first_shared = self.k.params.len() + self.k.locals.len();
        let locals = self.k.params.len()..first_shared;
        let halves = [Elem::F16, Elem::BF16];
        let src = (m.src >= first_shared && m.src < self.buffers()).then(|| self.k.elem(m.src));
        let dst = locals.contains(&m.dst.buf).then(|| self.k.elem(m.dst.buf));
        if !src.is_some_and(|e| halves.contains(&e)) || dst != src || ![1, 2, 4].contains(&m.count)
        {
            self.report(format!(
                "ldmatrix.x{} b{} <- b{}: 1, 2 or 4 matrices from a shared array of f16 or bf16 \
                 to a local of its type",
                m.count, m.dst.buf, m.src
            ));
            return;
        }
        let len = 2 * usize::from(m.count);
        let size = self.local_len(m.dst.buf);
        if let Some(at) = constant(&m.dst.at) {
            if at < 0 || at % 2 != 0 || at as usize + len > size {
                self.report(format!(
                    "ldmatrix to b{}[{at}..+{len}], outside its {size} elements or odd",
                    m.dst.buf
                ));
            }
        }
    }

    /// Checks a warpgroup product: placed as a warp's work, in whole warpgroups; `A` and `B`
    /// in shared arrays of one 16-bit float type, in a layout archc uses, core matrices 16
    /// bytes apart within the descriptor's reach; `C` an f32 local holding `m · n / 128`
    /// elements; `m`, `n` and `k` shapes the instruction has.
    pub(super) fn warpgroup_mma(&mut self, w: &WarpgroupMma) {
        self.warp_place("a warpgroup mma");
        let threads = crate::launch::block_threads(self.k);
        if !threads.is_some_and(|n| n.is_multiple_of(warpgroup::WARPGROUP)) {
            self.report("a warpgroup mma in a block that is not whole warpgroups".into());
        }
        let first_shared = self.k.params.len() + self.k.locals.len();
        let halves = [Elem::F16, Elem::BF16];
        let elem = |b: usize| (b >= first_shared && b < self.buffers()).then(|| self.k.elem(b));
        let (a, b) = (elem(w.a.buf), elem(w.b.buf));
        let reach = |t: &SharedTile| {
            let fits =
                |x: u32| x.is_multiple_of(8) && u64::from(x) * 2 < warpgroup::MAX_OFFSET_BYTES;
            let atoms = |x: u32| (x as usize).is_multiple_of(warpgroup::ATOM);
            // K-major with no swizzle is the layout whose descriptor the sources disagree on.
            let layout = match (t.k_major, t.swizzle) {
                (true, true) => atoms(t.stride) && atoms(t.step),
                (false, false) => true,
                _ => false,
            };
            fits(t.lead) && fits(t.stride) && t.step.is_multiple_of(8) && layout
        };
        if !a.is_some_and(|e| halves.contains(&e)) || a != b || !reach(&w.a) || !reach(&w.b) {
            self.report(format!(
                "wgmma b{} · b{}: shared arrays of one of f16 and bf16, k-major tiles swizzled \
                 (atoms 256 bytes apart) and mn-major ones not, core matrices a multiple of 16 \
                 bytes apart, under 256 KiB",
                w.a.buf, w.b.buf
            ));
        }
        let (m, n, k) = (usize::from(w.m), usize::from(w.n), usize::from(w.k));
        let bands = m > 0 && m.is_multiple_of(warpgroup::ROWS);
        let columns = n > 0 && n.is_multiple_of(8) && n <= warpgroup::MAX_N;
        if !bands || !columns || k == 0 || !k.is_multiple_of(warpgroup::K_STEP) {
            self.report(format!(
                "wgmma m{m}n{n}k{k}: m a multiple of 64, n of 8 up to 256, k of 16"
            ));
        }
        for e in [&w.a.at, &w.b.at] {
            self.expect(e, Ty::I64, "a wgmma offset");
        }
        self.expect(&w.accumulate, Ty::Bool, "whether a wgmma accumulates");
        self.accumulators(&w.c, m * n / warpgroup::WARPGROUP, "wgmma");
        let groups = threads.map_or(1, |t| (t / warpgroup::WARPGROUP).max(1));
        if a.is_some() && b.is_some() {
            self.tile_inside(&w.a, groups * m, k);
            self.tile_inside(&w.b, n, k);
        }
    }

    /// Checks that tile `t` of `rows` rows (or columns) and `k` reduced lies inside its shared
    /// array: from a constant start when it is one, else from 0 (a larger start is the
    /// simulator's to catch).
    fn tile_inside(&mut self, t: &SharedTile, rows: usize, k: usize) {
        let from = constant(&t.at).map_or(0, |a| usize::try_from(a).unwrap_or(usize::MAX));
        let end = from.saturating_add(t.reach(rows, k));
        let len = self.local_len(t.buf);
        if end > len {
            self.report(format!(
                "wgmma tile in b{} reaches element {end}, past its {len}",
                t.buf
            ));
        }
    }

    /// Checks a warpgroup wait: placed as a warp's work, in whole warpgroups, on accumulators
    /// as a product's.
    pub(super) fn warpgroup_wait(&mut self, w: &WarpgroupWait) {
        self.warp_place("a warpgroup wait");
        self.accumulators(&w.c, usize::from(w.len), "wgmma.wait");
        let count = |p: &WarpgroupMma| usize::from(p.m) * usize::from(p.n) / warpgroup::WARPGROUP;
        if !self
            .products
            .iter()
            .any(|p| p.c == w.c && count(p) == usize::from(w.len))
        {
            self.report(format!(
                "wgmma.wait on b{}'s {} accumulators: not those of a product in the kernel",
                w.c.buf, w.len
            ));
        }
    }

    /// Checks `count` accumulators of a warpgroup product from `c`: an f32 local, inside it.
    fn accumulators(&mut self, c: &Fragment, count: usize, what: &str) {
        self.expect(&c.at, Ty::I64, "a wgmma offset");
        let locals = self.k.params.len()..self.k.params.len() + self.k.locals.len();
        if !locals.contains(&c.buf) || self.k.elem(c.buf) != Elem::F32 {
            self.report(format!("{what} C in b{}: an f32 local", c.buf));
        } else if let Some(at) = constant(&c.at) {
            let size = self.local_len(c.buf);
            if at < 0 || at as usize + count > size {
                self.report(format!(
                    "{what} C at b{}[{at}..+{count}], outside its {size} elements",
                    c.buf
                ));
            }
        }
    }

    pub(super) fn copy_async(&mut self, c: &AsyncCopy) {
        for (e, what) in [
            (&c.dst_at, "destination"),
            (&c.src_at, "source"),
            (&c.valid, "count"),
        ] {
            self.expect(e, Ty::I64, &format!("an asynchronous copy's {what}"));
        }
        if self.threads == 0 || self.parallel.is_empty() {
            self.report("an asynchronous copy outside a Thread loop of a block".into());
        }
        let first_shared = self.k.params.len() + self.k.locals.len();
        let input = self
            .k
            .params
            .get(c.src)
            .filter(|p| !p.output && c.src + 1 < self.k.params.len());
        let shared = (first_shared..self.buffers()).contains(&c.dst);
        let bytes = input.map(|p| p.elem.size() * usize::from(c.width));
        if !shared
            || input.is_none_or(|p| p.elem != self.k.elem(c.dst) || p.elem.is_quantized())
            || !matches!(bytes, Some(4 | 8 | 16))
        {
            self.report(format!(
                "cp.async b{} <- b{} of {} elements: an input param to a shared array of its \
                 type, 4, 8 or 16 bytes",
                c.dst, c.src, c.width
            ));
            return;
        }
        let len = self.local_len(c.dst);
        if let Some(at) = constant(&c.dst_at) {
            let w = usize::from(c.width);
            if at < 0 || !(at as usize).is_multiple_of(w) || at as usize + w > len {
                self.report(format!(
                    "cp.async to b{}[{at}..+{w}], outside its {len} elements or misaligned",
                    c.dst
                ));
            }
        }
    }

    /// Checks that `what`, a warp's collective work, is where whole warps reach it: inside a
    /// Grid loop, between Thread loops, in a block of whole warps.
    fn warp_place(&mut self, what: &str) {
        if self.threads > 0 || self.parallel.is_empty() {
            self.report(format!(
                "{what} outside a Grid loop or inside a Thread loop: whole warps must reach it"
            ));
        }
        let warps = crate::launch::block_threads(self.k);
        if !warps.is_some_and(|n| n.is_multiple_of(fragment::WARP)) {
            self.report(format!("{what} in a kernel whose block is not whole warps"));
        }
    }
}

/// The warpgroup products in `body`, in program order.
pub(super) fn products(body: &[Stmt]) -> Vec<&WarpgroupMma> {
    body.iter()
        .flat_map(|s| match s {
            Stmt::WarpgroupMma(w) => vec![w],
            Stmt::For { body, .. } => products(body),
            _ => Vec::new(),
        })
        .collect()
}
