//! Kernel IR → Cranelift IR → native code, for JIT execution and for object files.
//!
//! Every kernel has the one ABI `extern "C" fn(args: *const *mut u8, dims: *const i64)`.
//! `dims` holds the symbols' values, then the thread index and thread count: the outermost
//! Grid loops split their iterations by them, and statements outside any Grid loop run on
//! thread 0 only. Thread, Reduce, Unroll and Serial loops run in order on one thread, so a
//! barrier (which sits between a block's Thread loops) needs no code, and shared arrays live
//! in the stack frame like locals (a CPU block is one Grid iteration on one OS thread).
//! Vectors are Cranelift's f32x4: a kernel with another width is refused
//! ([`CodegenError::VectorWidth`]); the Cranelift target says four lanes, so the lowering
//! never asks for more. f16 and bf16 elements are converted with integer bit manipulation
//! (see `half_float`), bit for bit as the `half` crate does.

use std::collections::HashMap;

use archc_kernels::ir::{Axis, Bin, BlockPart, Expr, Kernel, Stmt, Ty, Un, Var};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module, ModuleError};

mod access;

/// Why code generation failed (a compiler bug or an unsupported host).
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// Cranelift rejected a function or the module.
    #[error("cranelift: {0}")]
    Module(#[from] Box<ModuleError>),
    /// This archc was built without the code generator.
    #[error(
        "this archc was built without the `{0}` backend; install LLVM 22 (apt-get install llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev libffi-dev) and build with `cargo build --release --features llvm`"
    )]
    NotBuilt(&'static str),
    /// LLVM rejected the module or the host.
    #[error("llvm: {0}")]
    Llvm(String),
    /// This archc has no GPU code generator (the cargo feature `cuda`).
    #[error(
        "this archc was built without NVIDIA GPU support; install LLVM 22 (apt-get install llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev libffi-dev) and build with `cargo build --release --features cuda`"
    )]
    NoCuda,
    /// ptxas could not be run, or refused the PTX.
    #[error("ptxas: {0}")]
    Ptxas(String),
    /// The host CPU is not supported by Cranelift.
    #[error("this CPU is not supported by Cranelift: {0}")]
    Host(String),
    /// A kernel's thread-private arrays are larger than a thread's stack can hold.
    #[error(
        "kernel `{kernel}` needs {bytes} bytes of thread-private memory, more than the {limit} a thread may use; are the model's dims right?"
    )]
    TooMuchLocal {
        /// The kernel.
        kernel: String,
        /// What its locals take.
        bytes: usize,
        /// `archc_kernels::ir::MAX_LOCAL_BYTES`.
        limit: usize,
    },
    /// A GPU kernel's shared arrays are larger than a block of its architecture may have.
    #[error("kernel `{kernel}` needs {bytes} bytes of shared memory per block, more than the {limit} a block may have")]
    TooMuchShared {
        /// The kernel.
        kernel: String,
        /// What its shared arrays take.
        bytes: usize,
        /// The target's `shared_bytes`.
        limit: usize,
    },
    /// A kernel uses vectors of a width other than Cranelift's four lanes.
    #[error("kernel `{kernel}` uses {lanes}-lane vectors; Cranelift generates only 4-lane ones")]
    VectorWidth {
        /// The kernel.
        kernel: String,
        /// The width it asked for.
        lanes: u8,
    },
    /// A kernel holds a warp's collective work (tensor-core products, folds across lanes),
    /// which only GPU code has.
    #[error("kernel `{0}` holds warp-collective work (mma, lane folds), which only GPU code has")]
    WarpWork(String),
    /// The plan's buffers do not describe its kernels' parameters.
    #[error("the plan does not describe its kernels: {0}")]
    Signatures(String),
    /// The threads that run the kernels could not be started.
    #[error("cannot start the kernel threads: {0}")]
    Threads(#[from] archc_runtime::CpuError),
}

/// Cranelift's type for a kernel type (vectors are f32x4: `define_kernels` refuses others).
fn cl(t: Ty) -> types::Type {
    match t {
        Ty::F32 => types::F32,
        Ty::I64 => types::I64,
        Ty::Bool => types::I8,
        Ty::F32xN(_) => types::F32X4,
    }
}

/// The lanes of Cranelift's vectors.
const LANES: u8 = 4;

/// Declares and defines every kernel in `module`; returns their function ids in order.
/// When `clif` is given, the Cranelift IR text of each function is appended to it.
pub fn define_kernels<M: Module>(
    module: &mut M,
    kernels: &[Kernel],
    symbols: usize,
    mut clif: Option<&mut String>,
) -> Result<Vec<FuncId>, CodegenError> {
    let config = module.target_config();
    let ptr = config.pointer_type();
    let mut math = HashMap::new();
    for (name, arity, _) in archc_kernels::math::LIBCALLS {
        let mut sig = module.make_signature();
        for _ in 0..*arity {
            sig.params.push(AbiParam::new(types::F32));
        }
        sig.returns.push(AbiParam::new(types::F32));
        let id = module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(Box::new)?;
        math.insert(*name, id);
    }
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    let mut ids = Vec::new();
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    for k in kernels {
        super::check_for_cpu(k)?;
        if let Some(&lanes) = archc_kernels::launch::vector_widths(k)
            .iter()
            .find(|w| **w != LANES)
        {
            return Err(CodegenError::VectorWidth {
                kernel: k.name.clone(),
                lanes,
            });
        }
        let id = module
            .declare_function(&k.name, Linkage::Export, &sig)
            .map_err(Box::new)?;
        ctx.func.signature = sig.clone();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            // In table order, so that the text form is deterministic.
            let funcs = archc_kernels::math::LIBCALLS
                .iter()
                .map(|(n, _, _)| (*n, module.declare_func_in_func(math[n], b.func)))
                .collect();
            let mut g = Gen::new(&mut b, k, symbols, funcs);
            g.kernel();
            b.finalize(config);
        }
        if let Some(out) = clif.as_deref_mut() {
            out.push_str(&format!("; kernel {}\n{}\n", k.name, ctx.func.display()));
        }
        module.define_function(id, &mut ctx).map_err(Box::new)?;
        module.clear_context(&mut ctx);
        ids.push(id);
    }
    Ok(ids)
}

struct Gen<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    kernel: &'a Kernel,
    math: HashMap<&'static str, cranelift_codegen::ir::FuncRef>,
    bases: Vec<Value>,
    vars: HashMap<Var, (Variable, Ty)>,
    thread: Value,
    threads: Value,
    flags: MemFlagsData,
    dim_values: Vec<Value>,
}

impl<'a, 'b> Gen<'a, 'b> {
    fn new(
        b: &'a mut FunctionBuilder<'b>,
        kernel: &'a Kernel,
        symbols: usize,
        math: HashMap<&'static str, cranelift_codegen::ir::FuncRef>,
    ) -> Gen<'a, 'b> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let args = b.block_params(entry)[0];
        let dims = b.block_params(entry)[1];
        let flags = MemFlagsData::trusted();
        let mut bases: Vec<Value> = (0..kernel.params.len())
            .map(|i| b.ins().load(types::I64, flags, args, (8 * i) as i32))
            .collect();
        // Locals and shared arrays live in the stack frame: one copy per thread. `define_kernels`
        // bounds their total, so each size fits the u32 a stack slot takes.
        for l in kernel.arrays() {
            let bytes = (l.len * l.elem.size()).max(16) as u32;
            let slot = b.create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
                cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
                bytes,
                4,
            ));
            bases.push(b.ins().stack_addr(types::I64, slot, 0));
        }
        // Every dim is loaded once at entry, so loops see it as an invariant value.
        let dim_values = (0..symbols)
            .map(|k| b.ins().load(types::I64, flags, dims, (8 * k) as i32))
            .collect();
        let thread = b.ins().load(types::I64, flags, dims, (8 * symbols) as i32);
        let threads = b
            .ins()
            .load(types::I64, flags, dims, (8 * (symbols + 1)) as i32);
        Gen {
            b,
            kernel,
            math,
            bases,
            vars: HashMap::new(),
            thread,
            threads,
            flags,
            dim_values,
        }
    }

    fn kernel(&mut self) {
        let body = &self.kernel.body;
        for s in body {
            match s {
                Stmt::For {
                    kind: Axis::Grid, ..
                } => self.stmt(s, true),
                s => {
                    // Only thread 0 runs statements outside the parallel loops.
                    let run = self.b.create_block();
                    let next = self.b.create_block();
                    let first = self.b.ins().icmp_imm_s(IntCC::Equal, self.thread, 0);
                    self.b.ins().brif(first, run, &[], next, &[]);
                    self.b.seal_block(run);
                    self.b.switch_to_block(run);
                    self.stmt(s, false);
                    self.b.ins().jump(next, &[]);
                    self.b.seal_block(next);
                    self.b.switch_to_block(next);
                }
            }
        }
        self.b.ins().return_(&[]);
    }

    fn ins(&mut self) -> cranelift_frontend::FuncInstBuilder<'_, 'b> {
        self.b.ins()
    }

    fn var(&mut self, v: Var, t: Ty) -> Variable {
        if let Some((var, _)) = self.vars.get(&v) {
            return *var;
        }
        let var = self.b.declare_var(cl(t));
        self.vars.insert(v, (var, t));
        var
    }

    fn stmt(&mut self, s: &Stmt, split: bool) {
        match s {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => {
                let (n, _) = self.expr(extent);
                let (lo, hi) = if split && *kind == Axis::Grid {
                    // This thread's share: [n·t/T, n·(t+1)/T).
                    let nt = self.b.ins().imul(n, self.thread);
                    let lo = self.b.ins().sdiv(nt, self.threads);
                    let t1 = self.b.ins().iadd_imm_s(self.thread, 1);
                    let nt1 = self.b.ins().imul(n, t1);
                    (lo, self.b.ins().sdiv(nt1, self.threads))
                } else {
                    (self.b.ins().iconst(types::I64, 0), n)
                };
                let v = self.var(*var, Ty::I64);
                self.b.def_var(v, lo);
                let header = self.b.create_block();
                let inner = self.b.create_block();
                let exit = self.b.create_block();
                self.b.ins().jump(header, &[]);
                self.b.switch_to_block(header);
                let i = self.b.use_var(v);
                let go = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
                self.b.ins().brif(go, inner, &[], exit, &[]);
                self.b.seal_block(inner);
                self.b.switch_to_block(inner);
                for s in body {
                    self.stmt(s, false);
                }
                let i = self.b.use_var(v);
                let next = self.b.ins().iadd_imm_s(i, 1);
                self.b.def_var(v, next);
                self.b.ins().jump(header, &[]);
                self.b.seal_block(header);
                self.b.seal_block(exit);
                self.b.switch_to_block(exit);
            }
            Stmt::Set(v, e) => {
                let (x, t) = self.expr(e);
                let var = self.var(*v, t);
                self.b.def_var(var, x);
            }
            Stmt::Store(buf, idx, e) => {
                let (x, _) = self.expr(e);
                let addr = self.address(*buf, idx);
                self.store_elem(*buf, x, addr, 0);
            }
            Stmt::VStore(buf, idx, e, _) => {
                let (x, _) = self.expr(e);
                let addr = self.address(*buf, idx);
                self.store_vector(*buf, x, addr);
            }
            Stmt::Barrier(_) => {
                // A block's Thread loops run in order on this thread: nothing to wait for.
            }
            // Cranelift has no prefetch instruction; the hint needs none.
            Stmt::Prefetch(..) => {}
            // Only GPU code has tensor cores and asynchronous copies: `check_for_cpu` refused
            // the kernel before.
            Stmt::Mma { .. }
            | Stmt::WarpFold(_)
            | Stmt::LoadMatrix(_)
            | Stmt::WarpgroupMma(_)
            | Stmt::WarpgroupWait(_)
            | Stmt::CopyAsync(_)
            | Stmt::AsyncWait(_) => {}
            Stmt::Check(cond, code) => {
                let (c, _) = self.expr(cond);
                let fail = self.b.create_block();
                let cont = self.b.create_block();
                self.b.ins().brif(c, cont, &[], fail, &[]);
                self.b.seal_block(fail);
                self.b.switch_to_block(fail);
                let status = self.bases[self.kernel.params.len() - 1];
                let k = self.b.ins().iconst(types::I64, i64::from(*code));
                self.b.ins().store(self.flags, k, status, 0);
                self.b.ins().jump(cont, &[]);
                self.b.seal_block(cont);
                self.b.switch_to_block(cont);
            }
        }
    }

    fn address(&mut self, buf: usize, idx: &Expr) -> Value {
        let (i, _) = self.expr(idx);
        let size = self.kernel.elem(buf).size() as i64;
        let off = self.b.ins().imul_imm_s(i, size);
        self.b.ins().iadd(self.bases[buf], off)
    }

    /// An f32 constant of the type of `like` (splat into all lanes for a vector).
    fn fconst(&mut self, v: f32, like: Value) -> Value {
        let c = self.ins().f32const(v);
        if self.b.func.dfg.value_type(like).is_vector() {
            self.ins().splat(types::F32X4, c)
        } else {
            c
        }
    }

    /// eˣ inline: the operations of `archc_kernels::math::exp_inline`, in its order, on a scalar
    /// or on each lane of a vector.
    fn exp_inline(&mut self, x: Value) -> Value {
        use archc_kernels::math::exp_poly::*;
        let lo = self.fconst(LO, x);
        let hi = self.fconst(HI, x);
        let x = self.ins().fmax(x, lo);
        let x = self.ins().fmin(x, hi);
        let log2e = self.fconst(LOG2E, x);
        let t = self.ins().fmul(x, log2e);
        let k = self.ins().nearest(t);
        let c_hi = self.fconst(-LN2_HI, x);
        let r = self.ins().fma(k, c_hi, x);
        let c_lo = self.fconst(-LN2_LO, x);
        let r = self.ins().fma(k, c_lo, r);
        self.exp_reduced(k, r)
    }

    /// 2ˣ inline: `archc_kernels::math::exp2_inline`'s operations in its order.
    fn exp2_inline(&mut self, x: Value) -> Value {
        use archc_kernels::math::exp_poly::*;
        let lo = self.fconst(LO2, x);
        let hi = self.fconst(HI2, x);
        let x = self.ins().fmax(x, lo);
        let x = self.ins().fmin(x, hi);
        let k = self.ins().nearest(x);
        let f = self.ins().fsub(x, k);
        let ln2 = self.fconst(LN2, x);
        let r = self.ins().fmul(f, ln2);
        self.exp_reduced(k, r)
    }

    /// 2ᵏ·eʳ: `archc_kernels::math::exp_reduced`'s operations in its order.
    fn exp_reduced(&mut self, k: Value, r: Value) -> Value {
        use archc_kernels::math::exp_poly::*;
        let vector = self.b.func.dfg.value_type(r).is_vector();
        let mut p = self.fconst(C[0], r);
        for c in &C[1..] {
            let c = self.fconst(*c, r);
            p = self.ins().fma(p, r, c);
        }
        // 2ᵏ as 2^⌊k/2⌋ · 2^(k−⌊k/2⌋) from exponent bits. The conversion saturates: k is NaN
        // when the input is, and a trapping conversion would kill the process (SIGILL)
        // instead of letting NaN propagate.
        let (int, float) = if vector {
            (types::I32X4, types::F32X4)
        } else {
            (types::I32, types::F32)
        };
        let ki = self.ins().fcvt_to_sint_sat(int, k);
        let half = self.ins().sshr_imm_s(ki, 1);
        let rest = self.ins().isub(ki, half);
        let mut y = p;
        for e in [half, rest] {
            let bias = self.ins().iconst(types::I32, 127);
            let bias = if vector {
                self.ins().splat(types::I32X4, bias)
            } else {
                bias
            };
            let biased = self.ins().iadd(e, bias);
            let bits = self.ins().ishl_imm_s(biased, 23);
            let little =
                MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
            let scale = self.ins().bitcast(float, little, bits);
            y = self.ins().fmul(y, scale);
        }
        y
    }

    /// erf x inline: the operations of `archc_kernels::math::erf_inline`, in its order.
    fn erf_inline(&mut self, x: Value) -> Value {
        use archc_kernels::math::erf_poly::*;
        let a = self.ins().fabs(x);
        let p = self.fconst(P, x);
        let one = self.fconst(1.0, x);
        let den = self.ins().fma(p, a, one);
        let t = self.ins().fdiv(one, den);
        let mut q = self.fconst(A[0], x);
        for c in &A[1..] {
            let c = self.fconst(*c, x);
            q = self.ins().fma(q, t, c);
        }
        let poly = self.ins().fmul(q, t);
        let aa = self.ins().fmul(a, a);
        let neg = self.ins().fneg(aa);
        let e = self.exp_inline(neg);
        let pe = self.ins().fmul(poly, e);
        let y = self.ins().fsub(one, pe);
        // copysign(y, x): y is not negative, so or-ing in x's sign bit is enough.
        let sign = self.fconst(-0.0, x);
        let s = self.ins().band(x, sign);
        let large = self.ins().bor(y, s);
        // Near zero, the Taylor series x·T(x²).
        let x2 = self.ins().fmul(x, x);
        let mut q = self.fconst(T[0], x);
        for c in &T[1..] {
            let c = self.fconst(*c, x);
            q = self.ins().fma(q, x2, c);
        }
        let small = self.ins().fmul(x, q);
        let bound = self.fconst(SMALL, x);
        let near_zero = self.ins().fcmp(FloatCC::LessThan, a, bound);
        if self.b.func.dfg.value_type(x).is_vector() {
            let little =
                MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
            let mask = self.ins().bitcast(types::F32X4, little, near_zero);
            self.ins().bitselect(mask, small, large)
        } else {
            self.ins().select(near_zero, small, large)
        }
    }

    /// A scalar function of the runtime's, called on each lane of a vector.
    fn call_lanes(&mut self, name: &str, x: Value) -> Value {
        if !self.b.func.dfg.value_type(x).is_vector() {
            return self.call(name, &[x]);
        }
        let mut v = x;
        for l in 0..4u8 {
            let e = self.ins().extractlane(x, l);
            let r = self.call(name, &[e]);
            v = self.ins().insertlane(v, r, l);
        }
        v
    }

    /// Vector accesses start at any element, so they claim no alignment.
    fn unaligned() -> MemFlagsData {
        MemFlagsData::new().with_notrap()
    }

    fn call(&mut self, name: &str, args: &[Value]) -> Value {
        let f = self.math[name];
        let call = self.b.ins().call(f, args);
        self.b.inst_results(call)[0]
    }

    fn expr(&mut self, e: &Expr) -> (Value, Ty) {
        match e {
            Expr::Int(v) => (self.ins().iconst(types::I64, *v), Ty::I64),
            Expr::F32(v) => (self.ins().f32const(v.value()), Ty::F32),
            Expr::Bool(v) => (self.ins().iconst(types::I8, i64::from(*v)), Ty::Bool),
            Expr::Var(v) => {
                let (var, t) = self.vars[v];
                (self.b.use_var(var), t)
            }
            Expr::Dim(k) => (self.dim_values[*k], Ty::I64),
            Expr::Load(buf, idx) if self.kernel.elem(*buf).is_quantized() => {
                let (i, _) = self.expr(idx);
                (self.load_quantized(*buf, i), Ty::F32)
            }
            Expr::VLoad(buf, idx, w) if self.kernel.elem(*buf).is_quantized() => {
                let (i, _) = self.expr(idx);
                (self.load_quantized_vector(*buf, i), Ty::F32xN(*w))
            }
            Expr::Load(buf, idx) => {
                let elem = self.kernel.elem(*buf);
                let addr = self.address(*buf, idx);
                (self.load_elem(*buf, addr, 0), elem.ty())
            }
            Expr::VLoad(buf, idx, w) => {
                let addr = self.address(*buf, idx);
                (self.load_vector(*buf, addr), Ty::F32xN(*w))
            }
            Expr::Splat(a, w) => {
                let (x, _) = self.expr(a);
                (self.ins().splat(types::F32X4, x), Ty::F32xN(*w))
            }
            Expr::Block(buf, block, part) => {
                let (b, _) = self.expr(block);
                let t = match part {
                    BlockPart::Scale | BlockPart::Min => Ty::F32,
                    BlockPart::Quants { width, .. }
                    | BlockPart::Scales { width, .. }
                    | BlockPart::Mins { width, .. }
                    | BlockPart::Column { width, .. } => Ty::F32xN(*width),
                };
                (self.block_part(*buf, b, *part), t)
            }
            Expr::Lane(a, l) => {
                let (x, _) = self.expr(a);
                (self.ins().extractlane(x, *l), Ty::F32)
            }
            Expr::Fma(a, b, c) => {
                let (a, _) = self.expr(a);
                let (b, _) = self.expr(b);
                let (c, t) = self.expr(c);
                (self.ins().fma(a, b, c), t)
            }
            Expr::Select(c, a, b) => {
                let (c, _) = self.expr(c);
                let (a, t) = self.expr(a);
                let (b, _) = self.expr(b);
                (self.ins().select(c, a, b), t)
            }
            Expr::Cast(to, a) => {
                let (x, from) = self.expr(a);
                let v = match (from, *to) {
                    (f, t) if f == t => x,
                    (Ty::I64, Ty::F32) => self.ins().fcvt_from_sint(types::F32, x),
                    (Ty::F32, Ty::I64) => self.ins().fcvt_to_sint_sat(types::I64, x),
                    (Ty::F32, Ty::Bool) => {
                        let z = self.ins().f32const(0.0);
                        self.ins().fcmp(FloatCC::NotEqual, x, z)
                    }
                    (Ty::I64, Ty::Bool) => self.ins().icmp_imm_s(IntCC::NotEqual, x, 0),
                    (Ty::Bool, Ty::I64) => self.ins().uextend(types::I64, x),
                    (Ty::Bool, _) => {
                        let w = self.ins().uextend(types::I64, x);
                        self.ins().fcvt_from_sint(types::F32, w)
                    }
                    _ => x,
                };
                (v, *to)
            }
            Expr::Un(op, a) => {
                let (x, t) = self.expr(a);
                let v = match (t, op) {
                    (Ty::Bool, _) => self.ins().bxor_imm_s(x, 1),
                    (Ty::I64, Un::Neg) => self.ins().ineg(x),
                    (Ty::I64, _) => self.ins().iabs(x),
                    (_, Un::Neg) => self.ins().fneg(x),
                    (_, Un::Abs) => self.ins().fabs(x),
                    (_, Un::Sqrt) => self.ins().sqrt(x),
                    (_, Un::Rsqrt) => {
                        let s = self.ins().sqrt(x);
                        let one = self.fconst(1.0, x);
                        self.ins().fdiv(one, s)
                    }
                    (_, Un::Exp) => self.exp_inline(x),
                    (_, Un::Exp2) => self.exp2_inline(x),
                    (_, Un::Log) => self.call_lanes("archc_logf", x),
                    (_, Un::Tanh) => self.call_lanes("archc_tanhf", x),
                    (_, Un::Erf) => self.erf_inline(x),
                    (_, Un::Sin) => self.call_lanes("archc_sinf", x),
                    (_, Un::Cos) => self.call_lanes("archc_cosf", x),
                    (_, Un::Not) => {
                        let z = self.ins().f32const(0.0);
                        let is_zero = self.ins().fcmp(FloatCC::Equal, x, z);
                        let w = self.ins().uextend(types::I64, is_zero);
                        self.ins().fcvt_from_sint(types::F32, w)
                    }
                };
                (v, t)
            }
            Expr::Bin(op, a, b) => {
                let (x, t) = self.expr(a);
                let (y, _) = self.expr(b);
                self.binary(*op, x, y, t)
            }
        }
    }

    fn binary(&mut self, op: Bin, x: Value, y: Value, t: Ty) -> (Value, Ty) {
        let result_ty = if op.is_comparison() { Ty::Bool } else { t };
        let v = match t {
            Ty::F32 | Ty::F32xN(_) => match op {
                Bin::Add => self.ins().fadd(x, y),
                Bin::Sub => self.ins().fsub(x, y),
                Bin::Mul => self.ins().fmul(x, y),
                Bin::Div => self.ins().fdiv(x, y),
                Bin::Max => self.ins().fmax(x, y),
                Bin::Min => self.ins().fmin(x, y),
                Bin::Pow => self.call("archc_powf", &[x, y]),
                Bin::Eq => self.ins().fcmp(FloatCC::Equal, x, y),
                Bin::Ne => self.ins().fcmp(FloatCC::NotEqual, x, y),
                Bin::Lt => self.ins().fcmp(FloatCC::LessThan, x, y),
                Bin::Le => self.ins().fcmp(FloatCC::LessThanOrEqual, x, y),
                Bin::Gt => self.ins().fcmp(FloatCC::GreaterThan, x, y),
                Bin::Ge => self.ins().fcmp(FloatCC::GreaterThanOrEqual, x, y),
                // Float remainder, Euclidean division and logic do not occur in lowered graphs.
                Bin::Rem | Bin::DivEuclid | Bin::RemEuclid | Bin::And | Bin::Or => {
                    self.ins().f32const(0.0)
                }
            },
            Ty::Bool => match op {
                Bin::And => self.ins().band(x, y),
                Bin::Or => self.ins().bor(x, y),
                Bin::Eq => self.ins().icmp(IntCC::Equal, x, y),
                _ => self.ins().icmp(IntCC::NotEqual, x, y),
            },
            Ty::I64 => match op {
                Bin::Add => self.ins().iadd(x, y),
                Bin::Sub => self.ins().isub(x, y),
                Bin::Mul => self.ins().imul(x, y),
                Bin::Div | Bin::Rem | Bin::DivEuclid | Bin::RemEuclid => {
                    super::int_div::emit(self.b, op, x, y)
                }
                Bin::Max => self.ins().smax(x, y),
                Bin::Min => self.ins().smin(x, y),
                Bin::Pow => {
                    let xf = self.ins().fcvt_from_sint(types::F32, x);
                    let yf = self.ins().fcvt_from_sint(types::F32, y);
                    let p = self.call("archc_powf", &[xf, yf]);
                    self.ins().fcvt_to_sint_sat(types::I64, p)
                }
                Bin::Eq => self.ins().icmp(IntCC::Equal, x, y),
                Bin::Ne => self.ins().icmp(IntCC::NotEqual, x, y),
                Bin::Lt => self.ins().icmp(IntCC::SignedLessThan, x, y),
                Bin::Le => self.ins().icmp(IntCC::SignedLessThanOrEqual, x, y),
                Bin::Gt => self.ins().icmp(IntCC::SignedGreaterThan, x, y),
                Bin::Ge => self.ins().icmp(IntCC::SignedGreaterThanOrEqual, x, y),
                Bin::And => self.ins().band(x, y),
                Bin::Or => self.ins().bor(x, y),
            },
        };
        (v, result_ty)
    }
}
