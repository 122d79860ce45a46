//! The thread model of PTX kernels in the LLVM text: special registers for the thread's
//! place, grid- and block-stride loops, barriers (see `nvptx.rs`, which compiles the text).

use std::fmt::Write;

use archc_kernels::ir::{Axis, Expr, Kernel, Scope, Stmt, Var};

use super::text::{Function, L, V};

/// The most iterations of an Unroll loop a PTX kernel writes out whole.
pub(super) const UNROLLED: i64 = 64;

/// Where a statement of a PTX kernel runs: inside how many top-level Grid loops (a block's
/// iteration) and Thread loops.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Place {
    grid: usize,
    threads: usize,
    /// Emitting a statement under a thread-0 guard already.
    guarded: bool,
}

impl Function<'_> {
    /// A special register (`tid.x`, `ntid.x`, `ctaid.x`, `nctaid.x`) as an i64.
    pub(super) fn sreg(&mut self, name: &str) -> V {
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
            // A Thread loop inside another runs whole in each thread of the outer one.
            Axis::Thread if self.place.threads == 0 => ("tid.x", "ntid.x"),
            _ => return None,
        };
        Some((self.sreg(first).s, self.sreg(count).s))
    }

    /// The body of a loop of kind `kind` starts (`split`: a top-level Grid loop).
    pub(super) fn enter(&mut self, kind: Axis, split: bool) {
        self.place.grid += usize::from(split);
        self.place.threads += usize::from(kind == Axis::Thread);
    }

    /// The body of a loop of kind `kind` ends.
    pub(super) fn leave(&mut self, kind: Axis, split: bool) {
        self.place.grid -= usize::from(split);
        self.place.threads -= usize::from(kind == Axis::Thread);
        if self.gpu && split && !self.kernel.shared.is_empty() {
            // The block goes on to another grid iteration: its threads must be done with the
            // shared arrays before any writes them again.
            self.barrier(Scope::Block);
        }
    }

    /// Whether `s` is an effect in a block but outside its Thread loops, which every thread
    /// of the block reaches: the Kernel IR means it once per block, so thread 0 does it.
    pub(super) fn needs_thread0(&self, s: &Stmt) -> bool {
        let effect = matches!(s, Stmt::Store(..) | Stmt::VStore(..) | Stmt::Check(..));
        effect && self.gpu && self.place.grid > 0 && self.place.threads == 0 && !self.place.guarded
    }

    /// Emits `s` for thread 0 of the block alone.
    pub(super) fn on_thread0(&mut self, s: &Stmt) {
        let t = self.sreg("tid.x");
        let first = self.op(L::I1, format!("icmp eq i64 {}, 0", t.s));
        let (run, next) = (self.label("thread0_"), self.label("after"));
        let _ = writeln!(
            self.body,
            "  br i1 {}, label %{run}, label %{next}\n{run}:",
            first.s
        );
        self.place.guarded = true;
        self.stmt(s, false);
        self.place.guarded = false;
        let _ = writeln!(self.body, "  br label %{next}\n{next}:");
    }

    /// A barrier among the threads of `scope`. In a kernel with warpgroup products, a
    /// block's barrier first fences the thread's shared writes for the async proxy, through
    /// which the products read (`warpgroups.rs`).
    pub(super) fn barrier(&mut self, scope: Scope) {
        if scope == Scope::Block && self.warpgroups {
            let fence = "llvm.nvvm.fence.proxy.async.shared_cta";
            self.declare(fence, "void @{}()");
            let _ = writeln!(self.body, "  call void @{fence}()");
        }
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

    /// An Unroll loop of `n` iterations written out whole: each iteration's index is a
    /// constant, so a PTX kernel's register tiles (tensor-core fragments and accumulators)
    /// are indexed by constants and live in registers, not in local memory.
    pub(super) fn unrolled(&mut self, var: Var, n: i64, body: &[Stmt]) {
        let p = self.slot(var, L::I64);
        for k in 0..n {
            let _ = writeln!(self.body, "  store i64 {k}, ptr {p}");
            self.enter(Axis::Unroll, false);
            for s in body {
                self.stmt(s, false);
            }
            self.leave(Axis::Unroll, false);
        }
    }
}

/// A PTX kernel's launch bounds as NVPTX's function attributes (each with a leading space):
/// for a kernel that asks for an occupancy (`Kernel::occupancy`), its block's threads
/// (`.maxntid`, when constant) and the blocks a multiprocessor should hold (`.minnctapersm`),
/// from which ptxas caps the registers per thread.
pub(super) fn launch_bounds(kernel: &Kernel) -> String {
    let Some(blocks) = kernel.occupancy else {
        return String::new();
    };
    let extents = archc_kernels::launch::geometry(kernel).block;
    let threads = extents.iter().try_fold(1i64, |n, e| match e {
        Expr::Int(t) => n.checked_mul(*t),
        _ => None,
    });
    let mut out = String::new();
    if let Some(t) = threads {
        let _ = write!(out, " \"nvvm.maxntid\"=\"{t}\"");
    }
    let _ = write!(out, " \"nvvm.minctasm\"=\"{blocks}\"");
    out
}
