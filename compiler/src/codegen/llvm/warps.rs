//! A warp's collective work in PTX kernels: [`Stmt::Mma`] as LLVM's `mma.sync` intrinsic
//! (`mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32`) and [`Stmt::WarpFold`]
//! as a butterfly of `shfl.sync.bfly`, [`Stmt::LoadMatrix`] as `ldmatrix`.
//!
//! Every thread of the block reaches these statements (they sit between Thread loops), so
//! every thread issues the warp-collective instructions with its own registers, as they ask.
//! A fragment is read from the thread's local array: pairs of 16-bit elements as one 32-bit
//! register (`i32` for bf16, `<2 x half>` for f16, as the intrinsics take them), and the
//! accumulators as floats, written back after. The Unroll loops around them are written out
//! whole (`gpu_threads.rs`), so the offsets are constants and the arrays become registers.
//!
//! [`Stmt::Mma`]: archc_kernels::ir::Stmt::Mma
//! [`Stmt::WarpFold`]: archc_kernels::ir::Stmt::WarpFold
//! [`Stmt::LoadMatrix`]: archc_kernels::ir::Stmt::LoadMatrix

use std::fmt::Write;

use archc_kernels::ir::{Elem, Fold, Fragment, Matrices};

use super::text::{Function, L, V};

impl Function<'_> {
    /// `C ← A·B + C` on the thread's fragments (see the module doc).
    pub(super) fn mma(&mut self, a: &Fragment, b: &Fragment, c: &Fragment) {
        let (name, word) = match self.kernel.elem(a.buf) {
            Elem::F16 => ("llvm.nvvm.mma.m16n8k16.row.col.f32.f32", "<2 x half>"),
            _ => ("llvm.nvvm.mma.m16n8k16.row.col.bf16", "i32"),
        };
        let result = "{float, float, float, float}";
        if !self.intrinsics.contains_key(name) {
            let words = [word; 6].join(", ");
            self.intrinsics.insert(
                name.into(),
                format!("declare {result} @{name}({words}, float, float, float, float)"),
            );
        }
        let mut args = Vec::new();
        for (f, words) in [(a, 4), (b, 2)] {
            for j in 0..words {
                let p = self.element(f, 2 * j);
                let w = self.op(L::I32, format!("load {word}, ptr {p}, align 4"));
                args.push(format!("{word} {}", w.s));
            }
        }
        let mut sums = Vec::new();
        for i in 0..4 {
            let p = self.element(c, i);
            let x = self.op(L::F32, format!("load float, ptr {p}, align 4"));
            args.push(format!("float {}", x.s));
            sums.push(p);
        }
        let d = self.op(
            L::F32,
            format!("call {result} @{name}({})", args.join(", ")),
        );
        for (i, p) in sums.iter().enumerate() {
            let x = self.op(L::F32, format!("extractvalue {result} {}, {i}", d.s));
            let _ = writeln!(self.body, "  store float {}, ptr {p}, align 4", x.s);
        }
    }

    /// Elements `at..at + count` of f32 local `buf` folded by `op` across each aligned group
    /// of `lanes` threads: `x = op(x, shfl.sync.bfly(x, d))` for `d` = 1, 2, … below `lanes`.
    pub(super) fn warp_fold(&mut self, fold: &Fold) {
        let name = "llvm.nvvm.shfl.sync.bfly.f32";
        if !self.intrinsics.contains_key(name) {
            self.intrinsics.insert(
                name.into(),
                format!("declare float @{name}(i32, float, i32, i32)"),
            );
        }
        let f = Fragment {
            buf: fold.buf,
            at: fold.at.clone(),
        };
        for e in 0..i64::from(fold.count) {
            let p = self.element(&f, e);
            let mut x = self.op(L::F32, format!("load float, ptr {p}, align 4"));
            let mut distance = 1;
            while distance < fold.lanes {
                let y = self.op(
                    L::F32,
                    format!(
                        "call float @{name}(i32 -1, float {}, i32 {distance}, i32 31)",
                        x.s
                    ),
                );
                x = super::ops::binary(self, fold.op, x, y);
                distance *= 2;
            }
            let _ = writeln!(self.body, "  store float {}, ptr {p}, align 4", x.s);
        }
    }

    /// 8 × 8 matrices from a shared array into the thread's fragment registers with
    /// `ldmatrix` (see [`Matrices`]): the thread's index in the block is bound to `m.thread`,
    /// the row it points at computed from it, and each 32-bit result (a pair of 16-bit
    /// elements) stored to the destination local.
    pub(super) fn load_matrix(&mut self, m: &Matrices) {
        let trans = if m.trans { ".trans" } else { "" };
        // Overloaded on the pointer type: `.p3` for shared memory.
        let name = format!(
            "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x{}{trans}.b16.p3",
            m.count
        );
        let result = match m.count {
            1 => "i32".to_string(),
            n => format!("{{{}}}", vec!["i32"; usize::from(n)].join(", ")),
        };
        if !self.intrinsics.contains_key(&name) {
            let declare = format!("declare {result} @{name}(ptr addrspace(3))");
            self.intrinsics.insert(name.clone(), declare);
        }
        let t = self.sreg("tid.x");
        let slot = self.slot(m.thread, L::I64);
        let _ = writeln!(self.body, "  store i64 {}, ptr {slot}", t.s);
        let k = self.expr(&m.row);
        let half = match self.kernel.elem(m.src) {
            Elem::F16 => "half",
            _ => "bfloat",
        };
        let base = self.bases[m.src].clone();
        let p = self.op(
            L::I64,
            format!("getelementptr {half}, ptr {base}, i64 {}", k.s),
        );
        let shared = self.op(
            L::I64,
            format!("addrspacecast ptr {} to ptr addrspace(3)", p.s),
        );
        let d = self.op(
            L::I32,
            format!("call {result} @{name}(ptr addrspace(3) {})", shared.s),
        );
        for i in 0..i64::from(m.count) {
            let word = if m.count == 1 {
                d.s.clone()
            } else {
                self.op(L::I32, format!("extractvalue {result} {}, {i}", d.s))
                    .s
            };
            let q = self.element(&m.dst, 2 * i);
            let _ = writeln!(self.body, "  store i32 {word}, ptr {q}, align 4");
        }
    }

    /// The address of element `at + i` of a fragment's local.
    pub(super) fn element(&mut self, f: &Fragment, i: i64) -> String {
        let at = self.expr(&f.at);
        let t = match self.kernel.elem(f.buf) {
            Elem::F16 => "half",
            Elem::BF16 => "bfloat",
            _ => "float",
        };
        let base = self.bases[f.buf].clone();
        let k = self.op(L::I64, format!("add i64 {}, {i}", at.s));
        let p: V = self.op(
            L::I64,
            format!("getelementptr {t}, ptr {base}, i64 {}", k.s),
        );
        p.s
    }
}
