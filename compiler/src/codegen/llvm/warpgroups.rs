//! Hopper's warpgroup product in PTX kernels: [`Stmt::WarpgroupMma`] and
//! [`Stmt::WarpgroupWait`] as inline PTX, since no LLVM version has an intrinsic for
//! `wgmma.mma_async` (Triton and CUTLASS emit it so too).
//!
//! A product is one `asm` statement: `wgmma.fence` (the accumulators may have been written
//! by ordinary instructions), one `wgmma.mma_async` per k step and band of 64 rows with both
//! operands given by shared-memory descriptors, then `wgmma.commit_group`, so that all of
//! them are in flight together. A wait is another: `wgmma.wait_group N`. In both the
//! accumulators are outputs tied to the inputs that carry their old values (Triton's form),
//! so LLVM sees each statement redefine them: it keeps them in the same registers from the
//! product through the wait, never copies or reads them in between (which would make ptxas
//! wait for the product there, serialising the pipeline), and reads them only after the
//! wait that completes the product. Both clobber memory (no load or store moves across
//! them) and are convergent (every thread of the warpgroup runs them together, so no
//! transformation may make them conditional). Each thread builds the descriptors from its
//! shared address of the tile's start (for `A`, of its warpgroup's rows; the bits LLVM cannot know are the address's; the
//! offsets and the layout are constants,
//! [`archc_kernels::warpgroup::SharedTile::descriptor_bits`]).
//!
//! The operands were written through the generic proxy (stores and `cp.async`), and
//! `wgmma` reads them through the async proxy, so a kernel with a warpgroup product puts
//! `fence.proxy.async.shared::cta` before each of its barriers (`gpu_threads.rs`): each
//! thread's writes before the barrier are then visible to the products after it.
//!
//! [`Stmt::WarpgroupMma`]: archc_kernels::ir::Stmt::WarpgroupMma
//! [`Stmt::WarpgroupWait`]: archc_kernels::ir::Stmt::WarpgroupWait

use std::fmt::Write;

use archc_kernels::ir::{Elem, Fragment, SharedTile, WarpgroupMma, WarpgroupWait};
use archc_kernels::warpgroup::{K_STEP, ROWS, WARPGROUP};

use super::text::{Function, L, V};

impl Function<'_> {
    /// `C ← A·B + C` issued by the thread's warpgroup (see the module doc).
    pub(super) fn warpgroup_mma(&mut self, w: &WarpgroupMma) {
        let (n, bands) = (usize::from(w.n), usize::from(w.m) / ROWS);
        let registers = bands * n / 2;
        let steps = usize::from(w.k) / K_STEP;
        let kind = match self.kernel.elem(w.a.buf) {
            Elem::F16 => "f16",
            _ => "bf16",
        };
        let mut operands = Vec::new();
        let a_at = self.warpgroup_rows(w);
        let b_at = self.expr(&w.b.at);
        // Per k step: each band's descriptor of A (its rows 64 further on), then B's.
        for s in 0..steps {
            for band in 0..bands {
                let rows = w.a.offset(ROWS * band, 0);
                let d = self.descriptor(&w.a, (&a_at, s, rows));
                operands.push(format!("i64 {}", d.s));
            }
            let d = self.descriptor(&w.b, (&b_at, s, 0));
            operands.push(format!("i64 {}", d.s));
        }
        // The instruction's scale-d: 0 ignores the accumulators' old values.
        let accumulate = self.expr(&w.accumulate);
        let scale = self.op(L::I32, format!("zext i1 {} to i32", accumulate.s));
        operands.push(format!("i32 {}", scale.s));
        let transposed = |t: &SharedTile| u8::from(!t.k_major);
        let mut asm = String::from("{\\0A.reg .pred p;\\0A");
        let _ = write!(
            asm,
            "setp.ne.b32 p, ${}, 0;\\0Awgmma.fence.sync.aligned;\\0A",
            2 * registers + steps * (bands + 1)
        );
        for s in 0..steps {
            let first = 2 * registers + s * (bands + 1);
            for band in 0..bands {
                let accumulators: Vec<String> = (band * n / 2..(band + 1) * n / 2)
                    .map(|e| format!("${e}"))
                    .collect();
                let _ = write!(
                    asm,
                    "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{kind}.{kind} {{{}}}, ${}, ${}, p, 1, 1, {}, {};\\0A",
                    accumulators.join(", "),
                    first + band,
                    first + bands,
                    transposed(&w.a),
                    transposed(&w.b)
                );
            }
        }
        asm.push_str("wgmma.commit_group.sync.aligned;\\0A}");
        let mut constraints = vec!["l".to_string(); steps * (bands + 1)];
        constraints.push("r".into());
        self.tied_accumulators(&w.c, registers, &asm, (&constraints, &operands));
    }

    /// The thread's warpgroup waits until at most `pending` products are in flight.
    pub(super) fn warpgroup_wait(&mut self, w: &WarpgroupWait) {
        let asm = format!("wgmma.wait_group.sync.aligned {};", w.pending);
        self.tied_accumulators(&w.c, usize::from(w.len), &asm, (&[], &[]));
    }

    /// A call of `asm` whose first outputs are `count` accumulators from `c`, tied to inputs
    /// of their values before it, followed by `operands` under `constraints`; it clobbers
    /// memory, is convergent, and its outputs are stored back over the accumulators.
    fn tied_accumulators(
        &mut self,
        c: &Fragment,
        count: usize,
        asm: &str,
        (constraints, operands): (&[String], &[String]),
    ) {
        let mut inputs = Vec::new();
        let mut sums = Vec::new();
        for e in 0..count {
            let p = self.element(c, e as i64);
            let x = self.op(L::F32, format!("load float, ptr {p}, align 4"));
            inputs.push(format!("float {}", x.s));
            sums.push(p);
        }
        inputs.extend(operands.iter().cloned());
        let mut all = vec!["=f".to_string(); count];
        all.extend((0..count).map(|e| e.to_string()));
        all.extend(constraints.iter().cloned());
        // The tiles it reads are memory other code writes: nothing moves across it.
        all.push("~{memory}".into());
        let result = format!("{{{}}}", vec!["float"; count].join(", "));
        let d = self.op(
            L::F32,
            format!(
                "call {result} asm sideeffect \"{asm}\", \"{}\"({}) convergent",
                all.join(","),
                inputs.join(", ")
            ),
        );
        for (e, p) in sums.iter().enumerate() {
            let x = self.op(L::F32, format!("extractvalue {result} {}, {e}", d.s));
            let _ = writeln!(self.body, "  store float {}, ptr {p}, align 4", x.s);
        }
    }

    /// Where the thread's warpgroup's rows of `w`'s `A` start: `A`'s tile's start, and in a
    /// block of several warpgroups, `g·m` rows on for warpgroup `g` (the rows' offset is a
    /// multiple of the atoms' or core matrices' stride, `m` being a multiple of 64).
    fn warpgroup_rows(&mut self, w: &WarpgroupMma) -> V {
        let at = self.expr(&w.a.at);
        // The verifier refuses a warpgroup product in a block whose threads are not known
        // whole warpgroups, and `gpu::map` leaves one Thread loop per block: the warpgroup is
        // `tid.x / 128`.
        let threads = archc_kernels::launch::block_threads(self.kernel).unwrap_or(WARPGROUP);
        if threads <= WARPGROUP {
            return at;
        }
        let t = self.sreg("tid.x");
        let group = self.op(L::I64, format!("lshr i64 {}, {}", t.s, WARPGROUP.ilog2()));
        let rows = w.a.offset(usize::from(w.m), 0);
        let skip = self.op(L::I64, format!("mul i64 {}, {rows}", group.s));
        self.op(L::I64, format!("add i64 {}, {}", at.s, skip.s))
    }

    /// The descriptor of k step `step` of `tile` from element `offset` after `at` (an i64):
    /// its start ([`SharedTile::step`] elements further per step) as a 16-byte unit of the
    /// shared window in bits 0–13, with the tile's constant bits.
    fn descriptor(&mut self, tile: &SharedTile, (at, step, offset): (&V, usize, usize)) -> V {
        let skip = step * tile.step as usize + offset;
        let first = self.op(L::I64, format!("add i64 {}, {skip}", at.s));
        let shared = self.pointer(tile.buf, &first.s, 3);
        let address = self.op(L::I64, format!("ptrtoint ptr addrspace(3) {shared} to i64"));
        let start = self.op(L::I64, format!("and i64 {}, 262143", address.s));
        let start = self.op(L::I64, format!("lshr i64 {}, 4", start.s));
        self.op(
            L::I64,
            format!("or i64 {}, {}", start.s, tile.descriptor_bits()),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use archc_kernels::ir::build::axis;
    use archc_kernels::ir::{
        Axis, Elem, Expr, Fragment, Kernel, Local, Param, SharedTile, Stmt, Var, WarpgroupMma,
        WarpgroupWait,
    };

    /// A block of `threads` issuing one m64n128k16 product, `A`'s tile 64 rows per warpgroup
    /// (atoms 128 elements apart), and waiting for it.
    fn kernel(threads: i64) -> Kernel {
        let arrays = |list: &[(&str, Elem, usize)]| -> Vec<Local> {
            let local = |&(name, elem, len): &(&str, Elem, usize)| Local {
                name: name.into(),
                elem,
                len,
            };
            list.iter().map(local).collect()
        };
        let outputs = ["out", "status"].map(|name| Param {
            name: name.into(),
            elem: if name == "out" { Elem::F32 } else { Elem::I64 },
            output: true,
        });
        let c = Fragment {
            buf: 2,
            at: Expr::Int(0),
        };
        let block = vec![
            axis(Axis::Thread, Var(1), Expr::Int(threads), Vec::new()),
            Stmt::WarpgroupMma(WarpgroupMma {
                a: SharedTile::swizzled(3, Expr::Int(0), 128, 16 * 128),
                b: SharedTile::mn_major(4, Expr::Int(0), (1024, 64), 2048),
                c: c.clone(),
                accumulate: Expr::Bool(false),
                m: 64,
                n: 128,
                k: 16,
            }),
            Stmt::WarpgroupWait(WarpgroupWait {
                c,
                len: 64,
                pending: 0,
            }),
        ];
        Kernel {
            name: "wgmma".into(),
            params: outputs.to_vec(),
            locals: arrays(&[("c", Elem::F32, 64)]),
            shared: arrays(&[("a_tile", Elem::BF16, 2048), ("b_tile", Elem::BF16, 2048)]),
            body: vec![axis(Axis::Grid, Var(0), Expr::Int(1), block)],
            occupancy: None,
        }
    }

    /// The value `tid.x >> 7` (the thread's warpgroup) is assigned to in `text`, if any.
    fn warpgroup_index(text: &str) -> Option<String> {
        text.lines()
            .find_map(|l| {
                l.split_once(" = lshr i64 ")
                    .filter(|(_, r)| r.ends_with(", 7"))
            })
            .map(|(name, _)| name.trim().to_string())
    }

    #[test]
    fn a_second_warpgroup_reads_the_rows_of_a_after_the_first() {
        // Warpgroup g starts 64 rows on: 8 atoms of 128 elements.
        let text =
            |threads| super::super::text::functions(&[kernel(threads)], 0, true, BTreeMap::new());
        let two = text(256);
        let Some(group) = warpgroup_index(&two) else {
            panic!("no warpgroup index in\n{two}")
        };
        assert!(two.contains(&format!("mul i64 {group}, 1024")), "{two}");
        let one = text(128);
        assert_eq!(
            warpgroup_index(&one),
            None,
            "one warpgroup reads A from its start"
        );
    }
}
