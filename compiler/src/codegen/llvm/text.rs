//! Kernel IR → LLVM IR text, one function per kernel, with the ABI every backend shares:
//! `void @kernel(ptr %args, ptr %dims)`, `dims` holding the symbols' values, then the thread
//! index and count. The text is what `archc dump --stage llvm` prints and what LLVM parses.
//!
//! Variables live in stack slots (`alloca`) that LLVM's mem2reg turns into SSA values, so the
//! emitter needs no phi bookkeeping. Float constants are written as the hex of their f64
//! widening, which LLVM reads back exactly. The math matches Cranelift's and the kernel
//! interpreter's operation for operation (exp and erf inline, NaN-propagating max and min,
//! saturating float→int conversion), so the three agree bit for bit where the interpreter
//! is exact. PTX kernels differ where a GPU's speed needs it: `exp` is `ex2.approx`, and
//! `a·b + c` may be one fused multiply-add (see `ops::float_arith`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use archc_kernels::ir::{Axis, Elem, Expr, Kernel, Stmt, Ty, Var};

use super::ops::{binary, unary};

/// An LLVM value type as the emitter tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum L {
    /// float
    F32,
    /// i64
    I64,
    /// i32 (the exponent arithmetic of the inline exp)
    I32,
    /// i1, a bool in a register
    I1,
    /// A vector of that many floats.
    VF(u32),
    /// A vector of that many i32.
    VI32(u32),
    /// A vector of that many i1 (a lane-wise comparison).
    VI1(u32),
}

impl L {
    /// The LLVM spelling.
    pub(super) fn name(self) -> String {
        match self {
            L::F32 => "float".into(),
            L::I64 => "i64".into(),
            L::I32 => "i32".into(),
            L::I1 => "i1".into(),
            L::VF(n) => format!("<{n} x float>"),
            L::VI32(n) => format!("<{n} x i32>"),
            L::VI1(n) => format!("<{n} x i1>"),
        }
    }

    /// The mangling suffix of overloaded intrinsics (`f32`, `v4f32`).
    pub(super) fn suffix(self) -> String {
        match self {
            L::F32 => "f32".into(),
            L::I64 => "i64".into(),
            L::I32 => "i32".into(),
            L::I1 => "i1".into(),
            L::VF(n) => format!("v{n}f32"),
            L::VI32(n) => format!("v{n}i32"),
            L::VI1(n) => format!("v{n}i1"),
        }
    }

    /// Lanes of a vector type, `None` for scalars.
    pub(super) fn lanes(self) -> Option<u32> {
        match self {
            L::VF(n) | L::VI32(n) | L::VI1(n) => Some(n),
            _ => None,
        }
    }

    /// The Kernel IR type this carries (vector comparisons are bools, as in the Kernel IR).
    fn ty(self) -> Ty {
        match self {
            L::F32 => Ty::F32,
            L::I64 | L::I32 => Ty::I64,
            L::I1 | L::VI1(_) => Ty::Bool,
            L::VF(n) | L::VI32(n) => Ty::F32xN(n as u8),
        }
    }
}

/// The LLVM type of a Kernel IR type.
pub(super) fn of(t: Ty) -> L {
    match t {
        Ty::F32 => L::F32,
        Ty::I64 => L::I64,
        Ty::Bool => L::I1,
        Ty::F32xN(n) => L::VF(u32::from(n)),
    }
}

/// A value: its operand text (`%t12`, a constant) and type.
#[derive(Clone, Debug)]
pub(super) struct V {
    /// The operand as LLVM text.
    pub(super) s: String,
    /// Its type.
    pub(super) t: L,
}

/// An f32 constant as LLVM text: the hex of its (exact) f64 widening.
pub(super) fn float_literal(x: f32) -> String {
    format!("0x{:016X}", f64::from(x).to_bits())
}

/// The scalar math functions kernels call, from the one libcall table.
fn declarations(out: &mut String) {
    for (name, arity, _) in archc_kernels::math::LIBCALLS {
        let params = vec!["float"; *arity].join(", ");
        let _ = writeln!(out, "declare float @{name}({params}) nounwind readnone");
    }
}

/// CPU and features the functions are compiled for.
pub struct CpuAttributes {
    /// `target-cpu`, e.g. `znver4` or `x86-64`.
    pub cpu: String,
    /// `target-features`, e.g. `+avx2,+fma`.
    pub features: String,
}

/// The module text for `kernels`, whose plan has `symbols` dims.
pub fn module(kernels: &[Kernel], symbols: usize, cpu: &CpuAttributes) -> String {
    let mut out = String::from("; archc kernels\n");
    declarations(&mut out);
    out.push_str(&functions(kernels, symbols, false, BTreeMap::new()));
    // No stack probes: LLVM 22's inline-asm probes of a frame of hundreds of KB (a matmul's
    // panels) made x86 code that left the output unwritten (a reduction over `batch·seq`,
    // tests/all/matmul_blocked.rs). Nothing needs them: every thread a kernel runs on has a
    // stack sized for the kernel's arrays (`Kernel::local_bytes`, bounded by `check_for_cpu`;
    // the runtime's `CpuKernels`), so no frame reaches past its thread's stack.
    let _ = write!(
        out,
        "\nattributes #0 = {{ nounwind mustprogress \"target-cpu\"=\"{}\" \"target-features\"=\"{}\" }}\n",
        cpu.cpu, cpu.features
    );
    out
}

/// The intrinsics' declarations (those in `intrinsics` and those the kernels call, each
/// once), then one function per kernel (`gpu`: PTX kernels).
pub(super) fn functions(
    kernels: &[Kernel],
    symbols: usize,
    gpu: bool,
    mut intrinsics: BTreeMap<String, String>,
) -> String {
    let mut functions = String::new();
    for k in kernels {
        functions.push('\n');
        functions.push_str(&Function::emit(k, symbols, &mut intrinsics, gpu));
    }
    let mut out = String::new();
    for d in intrinsics.values() {
        let _ = writeln!(out, "{d}");
    }
    out.push_str(&functions);
    out
}

/// The emitter of one function.
pub(super) struct Function<'k> {
    pub(super) kernel: &'k Kernel,
    /// `alloca`s, placed in the entry block.
    entry: String,
    /// Instructions after the entry block's set-up.
    pub(super) body: String,
    next: usize,
    pub(super) bases: Vec<String>,
    dims: Vec<String>,
    /// This thread's number (on a GPU, in the whole grid) and how many threads there are.
    pub(super) thread: String,
    threads: String,
    vars: HashMap<Var, (String, L)>,
    /// Whether this is a PTX kernel (see `nvptx.rs`).
    pub(super) gpu: bool,
    /// Whether the kernel has warpgroup products (`warpgroups.rs`).
    pub(super) warpgroups: bool,
    /// Module-level definitions the function needs (a PTX kernel's shared arrays).
    globals: String,
    /// Where a PTX kernel's statement runs (see `gpu_threads.rs`).
    pub(super) place: super::gpu_threads::Place,
    /// The intrinsics called, by name, with their declarations.
    pub(super) intrinsics: &'k mut BTreeMap<String, String>,
}

impl<'k> Function<'k> {
    /// The LLVM function for `kernel`.
    fn emit(
        kernel: &'k Kernel,
        symbols: usize,
        intrinsics: &'k mut BTreeMap<String, String>,
        gpu: bool,
    ) -> String {
        let mut f = Function {
            kernel,
            entry: String::new(),
            body: String::new(),
            next: 0,
            bases: Vec::new(),
            dims: Vec::new(),
            thread: String::new(),
            threads: String::new(),
            vars: HashMap::new(),
            intrinsics,
            gpu,
            warpgroups: archc_kernels::launch::has_warpgroup_mma(&kernel.body),
            globals: String::new(),
            place: Default::default(),
        };
        f.prologue(symbols);
        f.statements();
        // PTX_Kernel (71) makes an `.entry` that the driver launches.
        let (cc, bounds) = match gpu {
            true => ("ptx_kernel ", super::gpu_threads::launch_bounds(kernel)),
            false => ("", String::new()),
        };
        format!(
            "{}define {cc}void @\"{}\"(ptr noalias nocapture readonly %args, ptr noalias nocapture readonly %dims){bounds} #0 {{\nentry:\n{}{}  ret void\n}}\n",
            f.globals, kernel.name, f.entry, f.body
        )
    }

    /// A fresh SSA name.
    pub(super) fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%t{}", self.next)
    }

    /// A fresh block label (without `%`).
    pub(super) fn label(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}{}", self.next)
    }

    /// Emits `%x = <text>` and returns `%x` typed `t`.
    pub(super) fn op(&mut self, t: L, text: String) -> V {
        let s = self.fresh();
        let _ = writeln!(self.body, "  {s} = {text}");
        V { s, t }
    }

    fn prologue(&mut self, symbols: usize) {
        let mut e = String::new();
        for i in 0..self.kernel.params.len() {
            let _ = writeln!(e, "  %pa{i} = getelementptr ptr, ptr %args, i64 {i}");
            let _ = writeln!(e, "  %b{i} = load ptr, ptr %pa{i}, align 8");
            self.bases.push(format!("%b{i}"));
        }
        // A block's shared arrays: one per block, in shared memory (address space 3), placed
        // as `SharedLayout` says; above 48 KiB in the launch's dynamic shared memory, one
        // external array the driver places on 1024 bytes.
        let layout = archc_kernels::shared::SharedLayout::of(self.kernel);
        let dynamic = format!("@\"{}_dynamic_shared\"", self.kernel.name);
        if self.gpu && layout.dynamic() {
            let _ = writeln!(
                self.globals,
                "{dynamic} = external addrspace(3) global [0 x i8], align 1024"
            );
        }
        for (j, l) in self.kernel.arrays().enumerate() {
            let b = self.kernel.params.len() + j;
            let n = l.len.max(1);
            let t = elem_type(l.elem);
            let shared = j.checked_sub(self.kernel.locals.len());
            if let (true, Some(s)) = (self.gpu, shared) {
                let at = layout.offsets.get(s).copied().unwrap_or(0);
                let g = match layout.dynamic() {
                    true => {
                        let g = format!("%s{b}");
                        let _ = writeln!(
                            e,
                            "  {g} = getelementptr i8, ptr addrspace(3) {dynamic}, i64 {at}"
                        );
                        g
                    }
                    false => {
                        let g = format!("@\"{}.shared{j}\"", self.kernel.name);
                        let _ = writeln!(
                            self.globals,
                            "{g} = internal addrspace(3) global [{n} x {t}] undef, align {}",
                            layout.align
                        );
                        g
                    }
                };
                let _ = writeln!(e, "  %b{b} = addrspacecast ptr addrspace(3) {g} to ptr");
            } else {
                let _ = writeln!(e, "  %b{b} = alloca [{n} x {t}], align 64");
            }
            self.bases.push(format!("%b{b}"));
        }
        // On a CPU the executor appends the thread's number and the thread count to the
        // dims; a GPU thread reads its own from special registers.
        let loaded = if self.gpu { symbols } else { symbols + 2 };
        for k in 0..loaded {
            let _ = writeln!(e, "  %pd{k} = getelementptr i64, ptr %dims, i64 {k}");
            let _ = writeln!(e, "  %d{k} = load i64, ptr %pd{k}, align 8");
        }
        self.dims = (0..symbols).map(|k| format!("%d{k}")).collect();
        self.entry = e;
        if self.gpu {
            self.thread = self.grid_thread();
        } else {
            self.thread = format!("%d{symbols}");
            self.threads = format!("%d{}", symbols + 1);
        }
    }

    fn statements(&mut self) {
        let body = &self.kernel.body;
        for s in body {
            if let Stmt::For {
                kind: Axis::Grid, ..
            } = s
            {
                self.stmt(s, true);
                continue;
            }
            // Only thread 0 runs statements outside the parallel loops.
            let (run, next) = (self.label("first"), self.label("after"));
            let t = self.thread.clone();
            let c = self.op(L::I1, format!("icmp eq i64 {t}, 0"));
            let _ = writeln!(
                self.body,
                "  br i1 {}, label %{run}, label %{next}\n{run}:",
                c.s
            );
            self.stmt(s, false);
            let _ = writeln!(self.body, "  br label %{next}\n{next}:");
        }
    }

    /// The stack slot of variable `v`, made on first use with type `t`.
    pub(super) fn slot(&mut self, v: Var, t: L) -> String {
        if let Some((p, _)) = self.vars.get(&v) {
            return p.clone();
        }
        let p = format!("%v{}", v.0);
        let _ = writeln!(self.entry, "  {p} = alloca {}, align 64", t.name());
        self.vars.insert(v, (p.clone(), t));
        p
    }

    pub(super) fn stmt(&mut self, s: &Stmt, split: bool) {
        if self.needs_thread0(s) {
            return self.on_thread0(s);
        }
        match s {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => self.for_loop(*var, extent, (*kind, split), body),
            Stmt::Set(v, e) => {
                let x = self.expr(e);
                let p = self.slot(*v, x.t);
                let _ = writeln!(self.body, "  store {} {}, ptr {p}", x.t.name(), x.s);
            }
            Stmt::Store(buf, idx, e) | Stmt::VStore(buf, idx, e, _) => {
                let x = self.expr(e);
                let p = self.address(*buf, idx);
                self.store(*buf, &x, &p);
            }
            Stmt::Barrier(scope) if self.gpu => self.barrier(*scope),
            // A block's Thread loops run in order on this thread: nothing to wait for.
            Stmt::Barrier(_) => {}
            // A hint only; the GPU's caches are left to themselves.
            Stmt::Prefetch(..) if self.gpu => {}
            Stmt::Prefetch(buf, block) => self.prefetch(*buf, block),
            Stmt::Mma { a, b, c } if self.gpu => self.mma(a, b, c),
            Stmt::WarpFold(fold) if self.gpu => self.warp_fold(fold),
            Stmt::LoadMatrix(m) if self.gpu => self.load_matrix(m),
            Stmt::CopyAsync(c) if self.gpu => self.copy_async(c),
            Stmt::AsyncWait(pending) if self.gpu => self.async_wait(*pending),
            Stmt::WarpgroupMma(w) if self.gpu => self.warpgroup_mma(w),
            Stmt::WarpgroupWait(w) if self.gpu => self.warpgroup_wait(w),
            // Only GPU code has warps and asynchronous copies: `check_for_cpu` refused the
            // kernel before.
            Stmt::Mma { .. }
            | Stmt::WarpFold(_)
            | Stmt::LoadMatrix(_)
            | Stmt::WarpgroupMma(_)
            | Stmt::WarpgroupWait(_)
            | Stmt::CopyAsync(_)
            | Stmt::AsyncWait(_) => {}
            Stmt::Check(cond, code) => {
                let c = self.expr(cond);
                let (fail, cont) = (self.label("fail"), self.label("ok"));
                let status = self.bases[self.kernel.params.len() - 1].clone();
                let _ = writeln!(
                    self.body,
                    "  br i1 {}, label %{cont}, label %{fail}\n{fail}:\n  store i64 {code}, ptr {status}, align 8\n  br label %{cont}\n{cont}:",
                    c.s
                );
            }
        }
    }

    /// A loop of kind `kind` (`outer`: not inside another loop).
    fn for_loop(&mut self, var: Var, extent: &Expr, (kind, outer): (Axis, bool), body: &[Stmt]) {
        if let (true, Axis::Unroll, &Expr::Int(n @ 0..=super::gpu_threads::UNROLLED)) =
            (self.gpu, kind, extent)
        {
            return self.unrolled(var, n, body);
        }
        let n = self.expr(extent);
        let split = outer && kind == Axis::Grid;
        let mut step = "1".to_string();
        let (lo, hi) = if let Some((first, stride)) = self.gpu_stride(kind, outer) {
            // Blocks stride over a Grid loop, threads over a Thread loop.
            step = stride;
            (first, n.s)
        } else if split {
            // This thread's share: [n·t/T, n·(t+1)/T).
            let (t, tt) = (self.thread.clone(), self.threads.clone());
            let nt = self.op(L::I64, format!("mul i64 {}, {t}", n.s));
            let lo = self.op(L::I64, format!("sdiv i64 {}, {tt}", nt.s));
            let t1 = self.op(L::I64, format!("add i64 {t}, 1"));
            let nt1 = self.op(L::I64, format!("mul i64 {}, {}", n.s, t1.s));
            let hi = self.op(L::I64, format!("sdiv i64 {}, {tt}", nt1.s));
            (lo.s, hi.s)
        } else {
            ("0".to_string(), n.s)
        };
        let p = self.slot(var, L::I64);
        let (header, inner, exit) = (self.label("head"), self.label("body"), self.label("exit"));
        let _ = writeln!(
            self.body,
            "  store i64 {lo}, ptr {p}\n  br label %{header}\n{header}:"
        );
        let i = self.op(L::I64, format!("load i64, ptr {p}"));
        let go = self.op(L::I1, format!("icmp slt i64 {}, {hi}", i.s));
        let _ = writeln!(
            self.body,
            "  br i1 {}, label %{inner}, label %{exit}\n{inner}:",
            go.s
        );
        self.enter(kind, split);
        for s in body {
            self.stmt(s, false);
        }
        self.leave(kind, split);
        let i = self.op(L::I64, format!("load i64, ptr {p}"));
        let next = self.op(L::I64, format!("add nsw i64 {}, {step}", i.s));
        let _ = writeln!(
            self.body,
            "  store i64 {}, ptr {p}\n  br label %{header}\n{exit}:",
            next.s
        );
    }

    /// The address of `buf[idx]`.
    fn address(&mut self, buf: usize, idx: &Expr) -> String {
        let i = self.expr(idx);
        let t = elem_type(self.kernel.elem(buf));
        let base = self.bases[buf].clone();
        self.op(
            L::I64,
            format!("getelementptr {t}, ptr {base}, i64 {}", i.s),
        )
        .s
    }

    fn store(&mut self, buf: usize, x: &V, p: &str) {
        let elem = self.kernel.elem(buf);
        let text = match (elem, x.t) {
            (Elem::Bool, _) => {
                let w = self.op(L::I32, format!("zext i1 {} to i8", x.s));
                format!("store i8 {}, ptr {p}, align 1", w.s)
            }
            // 2-byte floats: fptrunc rounds to nearest even.
            (Elem::F16 | Elem::BF16, t) => {
                let narrow = narrow_type(elem, t);
                let w = self.op(t, format!("fptrunc {} {} to {narrow}", t.name(), x.s));
                format!("store {narrow} {}, ptr {p}, align 2", w.s)
            }
            (_, t) => format!("store {} {}, ptr {p}, align {}", t.name(), x.s, elem.size()),
        };
        let _ = writeln!(self.body, "  {text}");
    }

    fn load(&mut self, buf: usize, idx: &Expr, width: Option<u8>) -> V {
        let elem = self.kernel.elem(buf);
        if elem.is_quantized() {
            return self.load_quantized(buf, idx, width);
        }
        let p = self.address(buf, idx);
        let align = elem.size();
        let t = width.map_or(of(elem.ty()), |w| of(Ty::F32xN(w)));
        if matches!(elem, Elem::F16 | Elem::BF16) {
            // 2-byte floats widen exactly.
            let narrow = narrow_type(elem, t);
            let h = self.op(t, format!("load {narrow}, ptr {p}, align 2"));
            return self.op(t, format!("fpext {narrow} {} to {}", h.s, t.name()));
        }
        if width.is_some() {
            return self.op(t, format!("load {}, ptr {p}, align {align}", t.name()));
        }
        match elem {
            Elem::Bool => {
                let b = self.op(L::I32, format!("load i8, ptr {p}, align 1"));
                self.op(L::I1, format!("icmp ne i8 {}, 0", b.s))
            }
            e => {
                let t = of(e.ty());
                self.op(t, format!("load {}, ptr {p}, align {align}", t.name()))
            }
        }
    }

    /// `x` copied into every lane of a vector of type `t`.
    pub(super) fn splat(&mut self, x: &V, t: L) -> V {
        let n = t.lanes().unwrap_or(1);
        let one = self.op(
            t,
            format!(
                "insertelement {} poison, {} {}, i64 0",
                t.name(),
                x.t.name(),
                x.s
            ),
        );
        self.op(
            t,
            format!(
                "shufflevector {} {}, {} poison, <{n} x i32> zeroinitializer",
                t.name(),
                one.s,
                t.name()
            ),
        )
    }

    /// A call of an intrinsic or libcall returning `t`.
    pub(super) fn call(&mut self, t: L, f: &str, args: &[&V]) -> V {
        let a: Vec<String> = args
            .iter()
            .map(|v| format!("{} {}", v.t.name(), v.s))
            .collect();
        if f.starts_with("llvm.") && !self.intrinsics.contains_key(f) {
            let params: Vec<String> = args.iter().map(|v| v.t.name()).collect();
            let d = format!("declare {} @{f}({})", t.name(), params.join(", "));
            self.intrinsics.insert(f.to_string(), d);
        }
        self.op(t, format!("call {} @{f}({})", t.name(), a.join(", ")))
    }

    pub(super) fn expr(&mut self, e: &Expr) -> V {
        match e {
            Expr::Int(v) => V {
                s: v.to_string(),
                t: L::I64,
            },
            Expr::F32(v) => V {
                s: float_literal(v.value()),
                t: L::F32,
            },
            Expr::Bool(v) => V {
                s: v.to_string(),
                t: L::I1,
            },
            Expr::Var(v) => {
                let (p, t) = self.vars[v].clone();
                self.op(t, format!("load {}, ptr {p}", t.name()))
            }
            Expr::Dim(k) => V {
                s: self.dims[*k].clone(),
                t: L::I64,
            },
            Expr::Load(buf, idx) => self.load(*buf, idx, None),
            Expr::VLoad(buf, idx, w) => self.load(*buf, idx, Some(*w)),
            Expr::Block(buf, block, part) => self.block_part(*buf, block, *part),
            Expr::Splat(a, w) => {
                let x = self.expr(a);
                self.splat(&x, of(Ty::F32xN(*w)))
            }
            Expr::Lane(a, l) => {
                let x = self.expr(a);
                self.op(
                    L::F32,
                    format!("extractelement {} {}, i64 {l}", x.t.name(), x.s),
                )
            }
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (self.expr(a), self.expr(b), self.expr(c));
                let f = format!("llvm.fma.{}", c.t.suffix());
                self.call(c.t, &f, &[&a, &b, &c])
            }
            Expr::Select(c, a, b) => {
                let (c, a, b) = (self.expr(c), self.expr(a), self.expr(b));
                self.op(
                    a.t,
                    format!(
                        "select {} {}, {} {}, {} {}",
                        c.t.name(),
                        c.s,
                        a.t.name(),
                        a.s,
                        b.t.name(),
                        b.s
                    ),
                )
            }
            Expr::Cast(to, a) => {
                let x = self.expr(a);
                self.cast(x, *to)
            }
            Expr::Un(op, a) => {
                let x = self.expr(a);
                unary(self, *op, x)
            }
            Expr::Bin(op, a, b) => {
                let (x, y) = (self.expr(a), self.expr(b));
                binary(self, *op, x, y)
            }
        }
    }

    fn cast(&mut self, x: V, to: Ty) -> V {
        if x.t.ty() == to {
            return x;
        }
        let s = x.s.clone();
        match (x.t, to) {
            (L::I64, Ty::F32) => self.op(L::F32, format!("sitofp i64 {s} to float")),
            (L::F32, Ty::I64) => self.call(L::I64, "llvm.fptosi.sat.i64.f32", &[&x]),
            (L::F32, Ty::Bool) => self.op(L::I1, format!("fcmp une float {s}, 0.0")),
            (L::I64, Ty::Bool) => self.op(L::I1, format!("icmp ne i64 {s}, 0")),
            (L::I1, Ty::I64) => self.op(L::I64, format!("zext i1 {s} to i64")),
            (L::I1, _) => self.op(L::F32, format!("uitofp i1 {s} to float")),
            _ => x,
        }
    }
}

/// The LLVM type of a buffer element in memory.
pub(super) fn elem_type(e: Elem) -> &'static str {
    match e {
        Elem::F32 => "float",
        Elem::F16 => "half",
        Elem::BF16 => "bfloat",
        Elem::I64 => "i64",
        Elem::Bool => "i8",
        // Addressed by block, as bytes (see `quant.rs`).
        Elem::Q8_0 | Elem::Q4_0 | Elem::Q4_1 => "i8",
        Elem::Q8_0x16 | Elem::Q4_0x16 | Elem::Q4_1x16 => "i8",
    }
}

/// The LLVM type of a 2-byte float element, or a vector of them as wide as `t`.
fn narrow_type(e: Elem, t: L) -> String {
    match t.lanes() {
        Some(n) => format!("<{n} x {}>", elem_type(e)),
        None => elem_type(e).to_string(),
    }
}
