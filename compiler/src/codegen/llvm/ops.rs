//! The Kernel IR's scalar and lane-wise operations as LLVM instructions, each the same
//! operation Cranelift emits (see `codegen::cranelift`), so the backends agree bit for bit.

use archc_kernels::ir::{Bin, Un};

use super::text::{float_literal, Function, L, V};

/// An f32 constant of the type of `like` (splat into all lanes of a vector).
fn fconst(f: &mut Function, v: f32, like: L) -> V {
    let c = V {
        s: float_literal(v),
        t: L::F32,
    };
    match like.lanes() {
        Some(n) => f.splat(&c, L::VF(n)),
        None => c,
    }
}

/// `a · b + c` with LLVM's fused multiply-add.
fn fma(f: &mut Function, a: &V, b: &V, c: &V) -> V {
    f.call(c.t, &format!("llvm.fma.{}", c.t.suffix()), &[a, b, c])
}

fn arith(f: &mut Function, op: &str, a: &V, b: &V) -> V {
    f.op(a.t, format!("{op} {} {}, {}", a.t.name(), a.s, b.s))
}

/// A float add, subtract or multiply of the kernel's own math. On a GPU it carries LLVM's
/// `contract` flag, so `a·b + c` becomes one `fma.rn.f32` (nvcc's default, `-fmad=true`): one
/// instruction where there were two, rounded once, so no less accurate. A scan's step
/// `h ↦ a·h + b` and every dot product's accumulation are such pairs. Without the flag NVPTX
/// writes `mul.rn`/`add.rn`, which forbid ptxas to fuse them. The CPU backends keep the
/// interpreter's two roundings, so they agree with it bit for bit.
fn float_arith(f: &mut Function, op: &str, a: &V, b: &V) -> V {
    let flag = if f.gpu { " contract" } else { "" };
    f.op(a.t, format!("{op}{flag} {} {}, {}", a.t.name(), a.s, b.s))
}

/// eˣ inline: `archc_kernels::math::exp_inline`'s operations in its order.
fn exp_inline(f: &mut Function, x: V) -> V {
    use archc_kernels::math::exp_poly::*;
    let t = x.t;
    let x = clamp(f, &x, LO, HI);
    let log2e = fconst(f, LOG2E, t);
    let k = arith(f, "fmul", &x, &log2e);
    let k = f.call(t, &format!("llvm.roundeven.{}", t.suffix()), &[&k]);
    let c_hi = fconst(f, -LN2_HI, t);
    let r = fma(f, &k, &c_hi, &x);
    let c_lo = fconst(f, -LN2_LO, t);
    let r = fma(f, &k, &c_lo, &r);
    exp_reduced(f, &k, &r)
}

/// The clamp of [`exp_inline`] and [`exp2_inline`]: NaN-propagating, as Cranelift's fmax and
/// fmin are.
fn clamp(f: &mut Function, x: &V, lo: f32, hi: f32) -> V {
    let t = x.t;
    let (lo, hi) = (fconst(f, lo, t), fconst(f, hi, t));
    let x = f.call(t, &format!("llvm.maximum.{}", t.suffix()), &[x, &lo]);
    f.call(t, &format!("llvm.minimum.{}", t.suffix()), &[&x, &hi])
}

/// 2ˣ inline: `archc_kernels::math::exp2_inline`'s operations in its order.
fn exp2_inline(f: &mut Function, x: V) -> V {
    use archc_kernels::math::exp_poly::*;
    let t = x.t;
    let x = clamp(f, &x, LO2, HI2);
    let k = f.call(t, &format!("llvm.roundeven.{}", t.suffix()), &[&x]);
    let frac = arith(f, "fsub", &x, &k);
    let ln2 = fconst(f, LN2, t);
    let r = arith(f, "fmul", &frac, &ln2);
    exp_reduced(f, &k, &r)
}

/// 2ᵏ·eʳ: `archc_kernels::math::exp_reduced`'s operations in its order.
fn exp_reduced(f: &mut Function, k: &V, r: &V) -> V {
    use archc_kernels::math::exp_poly::*;
    let (t, k, r) = (r.t, k.clone(), r.clone());
    let mut p = fconst(f, C[0], t);
    for c in &C[1..] {
        let c = fconst(f, *c, t);
        p = fma(f, &p, &r, &c);
    }
    // 2ᵏ as 2^⌊k/2⌋ · 2^(k−⌊k/2⌋) from exponent bits. The conversion gives 0 for NaN, as
    // Cranelift's saturating one does; k is otherwise within ±200 after the clamp, so a plain
    // `fptosi` of k with NaN replaced by 0 is exact. (`llvm.fptosi.sat` on vectors is
    // scalarised on x86: one compare and branch-free fix-up per lane, the most expensive part
    // of a 16-lane exp.)
    let (it, ct) = match t.lanes() {
        Some(n) => (L::VI32(n), L::VI1(n)),
        None => (L::I32, L::I1),
    };
    let ordered = f.op(ct, format!("fcmp ord {} {}, {}", t.name(), k.s, k.s));
    let zero = fconst(f, 0.0, t);
    let k = f.op(
        t,
        format!(
            "select {} {}, {} {}, {} {}",
            ct.name(),
            ordered.s,
            t.name(),
            k.s,
            t.name(),
            zero.s
        ),
    );
    let ki = f.op(it, format!("fptosi {} {} to {}", t.name(), k.s, it.name()));
    let splat_int = |f: &mut Function, v: i32| {
        let c = V {
            s: v.to_string(),
            t: L::I32,
        };
        match it.lanes() {
            Some(n) => f.splat(&c, L::VI32(n)),
            None => c,
        }
    };
    let one = splat_int(f, 1);
    let half = arith(f, "ashr", &ki, &one);
    let rest = arith(f, "sub", &ki, &half);
    let mut y = p;
    for e in [half, rest] {
        let bias = splat_int(f, 127);
        let biased = arith(f, "add", &e, &bias);
        let shift = splat_int(f, 23);
        let bits = arith(f, "shl", &biased, &shift);
        let scale = f.op(
            t,
            format!("bitcast {} {} to {}", it.name(), bits.s, t.name()),
        );
        y = arith(f, "fmul", &y, &scale);
    }
    y
}

/// eˣ on a GPU: `ex2.approx.ftz.f32` of `x·log₂e`, one multiply and one instruction of the
/// special-function unit (CUDA's `__expf`), where the polynomial takes a dozen instructions of
/// the units the rest of a kernel needs. Attention computes an exponential per score, and at
/// tensor cores' rate the polynomial would bound it. Its relative error is the product's
/// rounding, about |x|·2⁻²⁴ (a few ulp near 0, some 100 at |x| = 80), plus ex2.approx's 2⁻²²;
/// 0 for what would be subnormal.
fn exp_gpu(f: &mut Function, x: V) -> V {
    let t = x.t;
    let log2e = fconst(f, std::f32::consts::LOG2_E, t);
    let y = arith(f, "fmul", &x, &log2e);
    call_lanes(f, "llvm.nvvm.ex2.approx.ftz.f32", &[y])
}

/// erf x inline: `archc_kernels::math::erf_inline`'s operations in its order.
fn erf_inline(f: &mut Function, x: V) -> V {
    use archc_kernels::math::erf_poly::*;
    let t = x.t;
    let a = f.call(t, &format!("llvm.fabs.{}", t.suffix()), &[&x]);
    let p = fconst(f, P, t);
    let one = fconst(f, 1.0, t);
    let den = fma(f, &p, &a, &one);
    let tt = arith(f, "fdiv", &one, &den);
    let mut q = fconst(f, A[0], t);
    for c in &A[1..] {
        let c = fconst(f, *c, t);
        q = fma(f, &q, &tt, &c);
    }
    let poly = arith(f, "fmul", &q, &tt);
    let aa = arith(f, "fmul", &a, &a);
    let neg = f.op(t, format!("fneg {} {}", t.name(), aa.s));
    let e = exp_inline(f, neg);
    let pe = arith(f, "fmul", &poly, &e);
    let y = arith(f, "fsub", &one, &pe);
    // copysign(y, x): y is not negative, so or-ing in x's sign bit is enough.
    let large = f.call(t, &format!("llvm.copysign.{}", t.suffix()), &[&y, &x]);
    let x2 = arith(f, "fmul", &x, &x);
    let mut q = fconst(f, T[0], t);
    for c in &T[1..] {
        let c = fconst(f, *c, t);
        q = fma(f, &q, &x2, &c);
    }
    let small = arith(f, "fmul", &x, &q);
    let bound = fconst(f, SMALL, t);
    let ct = match t.lanes() {
        Some(n) => L::VI1(n),
        None => L::I1,
    };
    let near = f.op(ct, format!("fcmp olt {} {}, {}", t.name(), a.s, bound.s));
    f.op(
        t,
        format!(
            "select {} {}, {} {}, {} {}",
            ct.name(),
            near.s,
            t.name(),
            small.s,
            t.name(),
            large.s
        ),
    )
}

/// A libcall of the runtime's, on each lane of a vector.
fn call_lanes(f: &mut Function, name: &str, args: &[V]) -> V {
    let t = args[0].t;
    let Some(n) = t.lanes() else {
        let refs: Vec<&V> = args.iter().collect();
        return f.call(L::F32, name, &refs);
    };
    let mut v = V {
        s: "poison".into(),
        t,
    };
    for l in 0..n {
        let lanes: Vec<V> = args
            .iter()
            .map(|a| {
                f.op(
                    L::F32,
                    format!("extractelement {} {}, i64 {l}", t.name(), a.s),
                )
            })
            .collect();
        let refs: Vec<&V> = lanes.iter().collect();
        let r = f.call(L::F32, name, &refs);
        v = f.op(
            t,
            format!("insertelement {} {}, float {}, i64 {l}", t.name(), v.s, r.s),
        );
    }
    v
}

/// A unary operation.
pub(super) fn unary(f: &mut Function, op: Un, x: V) -> V {
    let t = x.t;
    let s = x.s.clone();
    let intrinsic = |name: &str| format!("llvm.{name}.{}", t.suffix());
    match (t, op) {
        (L::I1, _) => f.op(L::I1, format!("xor i1 {s}, true")),
        (L::I64, Un::Neg) => f.op(L::I64, format!("sub i64 0, {s}")),
        (L::I64, _) => {
            // Not poison at the minimum: it wraps, as Cranelift's iabs does.
            let wrap = V {
                s: "false".into(),
                t: L::I1,
            };
            f.call(L::I64, "llvm.abs.i64", &[&x, &wrap])
        }
        (_, Un::Neg) => f.op(t, format!("fneg {} {s}", t.name())),
        (_, Un::Abs) => f.call(t, &intrinsic("fabs"), &[&x]),
        (_, Un::Sqrt) => f.call(t, &intrinsic("sqrt"), &[&x]),
        (_, Un::Rsqrt) => {
            let r = f.call(t, &intrinsic("sqrt"), &[&x]);
            let one = fconst(f, 1.0, t);
            arith(f, "fdiv", &one, &r)
        }
        (_, Un::Exp) if f.gpu => exp_gpu(f, x),
        (_, Un::Exp) => exp_inline(f, x),
        (_, Un::Exp2) if f.gpu => call_lanes(f, "llvm.nvvm.ex2.approx.ftz.f32", &[x]),
        (_, Un::Exp2) => exp2_inline(f, x),
        (_, Un::Erf) => erf_inline(f, x),
        (_, Un::Log) => call_lanes(f, "archc_logf", &[x]),
        (_, Un::Tanh) => call_lanes(f, "archc_tanhf", &[x]),
        (_, Un::Sin) => call_lanes(f, "archc_sinf", &[x]),
        (_, Un::Cos) => call_lanes(f, "archc_cosf", &[x]),
        (_, Un::Not) => {
            let z = f.op(L::I1, format!("fcmp oeq float {s}, 0.0"));
            f.op(L::F32, format!("uitofp i1 {} to float", z.s))
        }
    }
}

/// The comparison predicate of `op` for floats (`fcmp`) or signed integers (`icmp`).
fn predicate(op: Bin, float: bool) -> &'static str {
    match (op, float) {
        (Bin::Eq, true) => "oeq",
        (Bin::Ne, true) => "une",
        (Bin::Lt, true) => "olt",
        (Bin::Le, true) => "ole",
        (Bin::Gt, true) => "ogt",
        (Bin::Ge, true) => "oge",
        (Bin::Eq, false) => "eq",
        (Bin::Lt, false) => "slt",
        (Bin::Le, false) => "sle",
        (Bin::Gt, false) => "sgt",
        (Bin::Ge, false) => "sge",
        _ => "ne",
    }
}

/// A binary operation; both operands have one type.
pub(super) fn binary(f: &mut Function, op: Bin, x: V, y: V) -> V {
    let t = x.t;
    match t {
        L::F32 | L::VF(_) => float_binary(f, op, x, y),
        L::I1 => match op {
            Bin::And => arith(f, "and", &x, &y),
            Bin::Or => arith(f, "or", &x, &y),
            _ => {
                let p = if op == Bin::Eq { "eq" } else { "ne" };
                f.op(L::I1, format!("icmp {p} i1 {}, {}", x.s, y.s))
            }
        },
        _ => int_binary(f, op, x, y),
    }
}

fn float_binary(f: &mut Function, op: Bin, x: V, y: V) -> V {
    let t = x.t;
    let named = |n: &str| format!("llvm.{n}.{}", t.suffix());
    match op {
        Bin::Add => float_arith(f, "fadd", &x, &y),
        Bin::Sub => float_arith(f, "fsub", &x, &y),
        Bin::Mul => float_arith(f, "fmul", &x, &y),
        Bin::Div => arith(f, "fdiv", &x, &y),
        Bin::Max => f.call(t, &named("maximum"), &[&x, &y]),
        Bin::Min => f.call(t, &named("minimum"), &[&x, &y]),
        Bin::Pow => call_lanes(f, "archc_powf", &[x, y]),
        Bin::Eq | Bin::Ne | Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge => {
            let ct = match t.lanes() {
                Some(n) => L::VI1(n),
                None => L::I1,
            };
            let p = predicate(op, true);
            f.op(ct, format!("fcmp {p} {} {}, {}", t.name(), x.s, y.s))
        }
        // Float remainder, Euclidean division and logic do not occur in lowered graphs.
        Bin::Rem | Bin::DivEuclid | Bin::RemEuclid | Bin::And | Bin::Or => V {
            s: "zeroinitializer".into(),
            t,
        },
    }
}

fn int_binary(f: &mut Function, op: Bin, x: V, y: V) -> V {
    match op {
        Bin::Add => arith(f, "add", &x, &y),
        Bin::Sub => arith(f, "sub", &x, &y),
        Bin::Mul => arith(f, "mul", &x, &y),
        Bin::And => arith(f, "and", &x, &y),
        Bin::Or => arith(f, "or", &x, &y),
        Bin::Max => f.call(L::I64, "llvm.smax.i64", &[&x, &y]),
        Bin::Min => f.call(L::I64, "llvm.smin.i64", &[&x, &y]),
        Bin::Div | Bin::Rem | Bin::DivEuclid | Bin::RemEuclid => int_div(f, op, x, y),
        Bin::Pow => {
            let xf = f.op(L::F32, format!("sitofp i64 {} to float", x.s));
            let yf = f.op(L::F32, format!("sitofp i64 {} to float", y.s));
            let p = f.call(L::F32, "archc_powf", &[&xf, &yf]);
            f.call(L::I64, "llvm.fptosi.sat.i64.f32", &[&p])
        }
        _ => {
            let p = predicate(op, false);
            f.op(L::I1, format!("icmp {p} i64 {}, {}", x.s, y.s))
        }
    }
}

/// Integer division that never traps, with `codegen::int_div`'s semantics: a zero divisor
/// gives 0; `DivEuclid` and `RemEuclid` are Euclidean and wrap at `i64::MIN / -1`.
fn int_div(f: &mut Function, op: Bin, x: V, y: V) -> V {
    let zero = f.op(L::I1, format!("icmp eq i64 {}, 0", y.s));
    let sel = |f: &mut Function, c: &V, a: &str, b: &str| {
        f.op(L::I64, format!("select i1 {}, i64 {a}, i64 {b}", c.s))
    };
    let value = if matches!(op, Bin::Div | Bin::Rem) {
        let safe = sel(f, &zero, "1", &y.s);
        let i = if op == Bin::Div { "sdiv" } else { "srem" };
        f.op(L::I64, format!("{i} i64 {}, {}", x.s, safe.s))
    } else {
        let m1 = f.op(L::I1, format!("icmp eq i64 {}, -1", y.s));
        let bad = f.op(L::I1, format!("or i1 {}, {}", zero.s, m1.s));
        let s = sel(f, &bad, "1", &y.s);
        let q = f.op(L::I64, format!("sdiv i64 {}, {}", x.s, s.s));
        let r = f.op(L::I64, format!("srem i64 {}, {}", x.s, s.s));
        let negative = f.op(L::I1, format!("icmp slt i64 {}, 0", r.s));
        let positive = f.op(L::I1, format!("icmp sgt i64 {}, 0", s.s));
        if op == Bin::DivEuclid {
            let step = sel(f, &positive, "-1", "1");
            let step = sel(f, &negative, &step.s, "0");
            let q = f.op(L::I64, format!("add i64 {}, {}", q.s, step.s));
            let neg_x = f.op(L::I64, format!("sub i64 0, {}", x.s));
            sel(f, &m1, &neg_x.s, &q.s)
        } else {
            let neg_s = f.op(L::I64, format!("sub i64 0, {}", s.s));
            let abs_s = sel(f, &positive, &s.s, &neg_s.s);
            let step = sel(f, &negative, &abs_s.s, "0");
            f.op(L::I64, format!("add i64 {}, {}", r.s, step.s))
        }
    };
    sel(f, &zero, "0", &value.s)
}
