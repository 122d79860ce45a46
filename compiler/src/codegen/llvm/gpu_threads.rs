//! The thread model of PTX kernels in the LLVM text: special registers for the thread's
//! place, grid- and block-stride loops, barriers (see `nvptx.rs`, which compiles the text).

use std::fmt::Write;

use archc_kernels::ir::{Axis, Scope};

use super::text::{Function, L, V};

impl Function<'_> {
    /// A special register (`tid.x`, `ntid.x`, `ctaid.x`, `nctaid.x`) as an i64.
    fn sreg(&mut self, name: &str) -> V {
        let r = self.call(L::I32, &format!("llvm.nvvm.read.ptx.sreg.{name}"), &[]);
        self.op(L::I64, format!("zext i32 {} to i64", r.s))
    }

    /// This thread's number in the whole grid, `blockIdx.x · blockDim.x + threadIdx.x`.
    pub(super) fn grid_thread(&mut self) -> String {
        let (b, n, t) = (
            self.sreg("ctaid.x"),
            self.sreg("ntid.x"),
            self.sreg("tid.x"),
        );
        let bn = self.op(L::I64, format!("mul i64 {}, {}", b.s, n.s));
        self.op(L::I64, format!("add i64 {}, {}", bn.s, t.s)).s
    }

    /// On a GPU, where a loop of kind `kind` starts and by how much it strides: blocks over a
    /// top-level (`outer`) Grid loop, threads over a Thread loop; None for loops every thread
    /// runs whole.
    pub(super) fn gpu_stride(&mut self, kind: Axis, outer: bool) -> Option<(String, String)> {
        let (first, count) = match kind {
            _ if !self.gpu => return None,
            Axis::Grid if outer => ("ctaid.x", "nctaid.x"),
            Axis::Thread => ("tid.x", "ntid.x"),
            _ => return None,
        };
        Some((self.sreg(first).s, self.sreg(count).s))
    }

    /// A barrier among the threads of `scope`.
    pub(super) fn barrier(&mut self, scope: Scope) {
        let (f, arg) = match scope {
            Scope::Block => ("llvm.nvvm.barrier.cta.sync.aligned.all", "0"),
            Scope::Warp => ("llvm.nvvm.bar.warp.sync", "-1"),
        };
        if !self.intrinsics.contains_key(f) {
            self.intrinsics
                .insert(f.to_string(), format!("declare void @{f}(i32)"));
        }
        let _ = writeln!(self.body, "  call void @{f}(i32 {arg})");
    }
}
