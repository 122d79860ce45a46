//! Asynchronous copies in PTX kernels: [`Stmt::CopyAsync`] as LLVM's `cp.async` intrinsics
//! with a source size (`cp.async.cg.shared.global.16.s` for 16 bytes, `.ca` for 4 and 8:
//! the bytes past the source size are zeros) and [`Stmt::AsyncWait`] as
//! `cp.async.commit_group` then `cp.async.wait_group`.
//!
//! A copy that reads nothing (its count is 0 or less: a chunk past an operand's edge) points
//! at the param's first element, which exists and is aligned, instead of wherever its index
//! would fall.
//!
//! [`Stmt::CopyAsync`]: archc_kernels::ir::Stmt::CopyAsync
//! [`Stmt::AsyncWait`]: archc_kernels::ir::Stmt::AsyncWait

use std::fmt::Write;

use archc_kernels::ir::AsyncCopy;

use super::text::{elem_type, Function, L};

impl Function<'_> {
    /// One asynchronous copy (see the module doc).
    pub(super) fn copy_async(&mut self, c: &AsyncCopy) {
        let size = self.kernel.elem(c.src).size();
        let width = i64::from(c.width);
        let name = match size as i64 * width {
            16 => "llvm.nvvm.cp.async.cg.shared.global.16.s",
            8 => "llvm.nvvm.cp.async.ca.shared.global.8.s",
            _ => "llvm.nvvm.cp.async.ca.shared.global.4.s",
        };
        self.declare(name, "void @{}(ptr addrspace(3), ptr addrspace(1), i32)");
        let valid = self.expr(&c.valid);
        let some = self.op(L::I1, format!("icmp sgt i64 {}, 0", valid.s));
        let over = self.op(L::I1, format!("icmp sgt i64 {}, {width}", valid.s));
        let capped = self.op(
            L::I64,
            format!("select i1 {}, i64 {width}, i64 {}", over.s, valid.s),
        );
        let count = self.op(
            L::I64,
            format!("select i1 {}, i64 {}, i64 0", some.s, capped.s),
        );
        let bytes = self.op(L::I64, format!("mul i64 {}, {size}", count.s));
        let bytes = self.op(L::I32, format!("trunc i64 {} to i32", bytes.s));
        let at = self.expr(&c.src_at);
        let at = self.op(L::I64, format!("select i1 {}, i64 {}, i64 0", some.s, at.s));
        let src = self.pointer(c.src, &at.s, 1);
        let dst_at = self.expr(&c.dst_at);
        let dst = self.pointer(c.dst, &dst_at.s, 3);
        let _ = writeln!(
            self.body,
            "  call void @{name}(ptr addrspace(3) {dst}, ptr addrspace(1) {src}, i32 {})",
            bytes.s
        );
    }

    /// Closes the thread's copies into a group and waits until at most `pending` groups
    /// are in flight.
    pub(super) fn async_wait(&mut self, pending: u8) {
        let (commit, wait) = (
            "llvm.nvvm.cp.async.commit.group",
            "llvm.nvvm.cp.async.wait.group",
        );
        self.declare(commit, "void @{}()");
        self.declare(wait, "void @{}(i32 immarg)");
        let _ = writeln!(
            self.body,
            "  call void @{commit}()\n  call void @{wait}(i32 {pending})"
        );
    }

    /// Declares intrinsic `name` once, by `signature` with `{}` for its name.
    pub(super) fn declare(&mut self, name: &str, signature: &str) {
        if !self.intrinsics.contains_key(name) {
            let text = format!("declare {}", signature.replace("{}", name));
            self.intrinsics.insert(name.into(), text);
        }
    }

    /// The address of element `at` (an i64 value) of buffer `buf`, in address space `space`.
    pub(super) fn pointer(&mut self, buf: usize, at: &str, space: u8) -> String {
        let t = elem_type(self.kernel.elem(buf));
        let base = self.bases[buf].clone();
        let p = self.op(L::I64, format!("getelementptr {t}, ptr {base}, i64 {at}"));
        let q = self.op(
            L::I64,
            format!("addrspacecast ptr {} to ptr addrspace({space})", p.s),
        );
        q.s
    }
}
