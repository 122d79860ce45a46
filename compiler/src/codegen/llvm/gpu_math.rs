//! The scalar functions CPU kernels call in the runtime (`archc_kernels::math::LIBCALLS`:
//! ln, tanh, sin, cos, pow), written in LLVM IR for a GPU, where no runtime is linked. Each
//! computes in f64 and rounds once to f32, so it is within one ulp of Rust's f64 function
//! rounded to f32 (the CPU's f32 functions, glibc's, are within two):
//!
//! - ln: `x = m·2ᵏ` with `m` in [√½, √2), `ln m = 2·atanh s`, `s = (m − 1)/(m + 1)`, by its
//!   odd series to `s¹³`.
//! - eˣ (for tanh and pow): `x = k·ln 2 + r`, the Taylor series of `eʳ` to `r¹²`, and `2ᵏ`
//!   from exponent bits in two halves, so that results near overflow and underflow are right.
//! - tanh: `1 − 2/(e²ˣ + 1)`, with `x` itself below 2⁻¹² (where `x³/3` is under half an ulp).
//! - sin, cos: `x − k·π/2` with a two-part π/2, then the Taylor series of sin or cos of the
//!   remainder by quadrant. Exact reduction is not attempted above |x| ≈ 2²⁰·π, where the
//!   results lose bits (a rotary position of a million is still fine).
//! - pow: `e^(y·ln|x|)`, the sign and the special cases of C's `pow` (`y = 0` and `x = 1`
//!   give 1, a negative `x` needs an integer `y`, odd ones keep the sign).
//!
//! None of it uses a target intrinsic, so the same text compiles for the CPU, where the tests
//! compare it with Rust's functions.

/// The functions' definitions with `linkage` (`internal` in a GPU module).
pub fn definitions(linkage: &str) -> String {
    BODY.replace("LINKAGE", linkage)
}

/// The intrinsics the definitions call: (name, declaration).
pub const INTRINSICS: &[(&str, &str)] = &[
    (
        "llvm.fma.f64",
        "declare double @llvm.fma.f64(double, double, double)",
    ),
    (
        "llvm.maximum.f64",
        "declare double @llvm.maximum.f64(double, double)",
    ),
    (
        "llvm.minimum.f64",
        "declare double @llvm.minimum.f64(double, double)",
    ),
    (
        "llvm.roundeven.f64",
        "declare double @llvm.roundeven.f64(double)",
    ),
    ("llvm.fabs.f64", "declare double @llvm.fabs.f64(double)"),
    ("llvm.floor.f64", "declare double @llvm.floor.f64(double)"),
    ("llvm.fabs.f32", "declare float @llvm.fabs.f32(float)"),
    ("llvm.trunc.f32", "declare float @llvm.trunc.f32(float)"),
    (
        "llvm.copysign.f32",
        "declare float @llvm.copysign.f32(float, float)",
    ),
];

/// Hex spellings of f64 constants (LLVM reads floats in hex exactly).
const BODY: &str = r#"
define internal double @archc_log64(double %x) {
  %bits = bitcast double %x to i64
  %e = lshr i64 %bits, 52
  %mbits = and i64 %bits, 4503599627370495
  %mone = or i64 %mbits, 4607182418800017408
  %m = bitcast i64 %mone to double
  %e1 = sub i64 %e, 1023
  %k = sitofp i64 %e1 to double
  %big = fcmp ogt double %m, 0x3FF6A09E667F3BCD
  %mh = fmul double %m, 0.5
  %m2 = select i1 %big, double %mh, double %m
  %k1 = fadd double %k, 1.0
  %k2 = select i1 %big, double %k1, double %k
  %num = fsub double %m2, 1.0
  %den = fadd double %m2, 1.0
  %s = fdiv double %num, %den
  %z = fmul double %s, %s
  %p0 = call double @llvm.fma.f64(double %z, double 0x3FB3B13B13B13B14, double 0x3FB745D1745D1746)
  %p1 = call double @llvm.fma.f64(double %p0, double %z, double 0x3FBC71C71C71C71C)
  %p2 = call double @llvm.fma.f64(double %p1, double %z, double 0x3FC2492492492492)
  %p3 = call double @llvm.fma.f64(double %p2, double %z, double 0x3FC999999999999A)
  %p4 = call double @llvm.fma.f64(double %p3, double %z, double 0x3FD5555555555555)
  %p5 = call double @llvm.fma.f64(double %p4, double %z, double 1.0)
  %s2 = fmul double %s, 2.0
  %lnm = fmul double %s2, %p5
  %r = call double @llvm.fma.f64(double %k2, double 0x3FE62E42FEFA39EF, double %lnm)
  %zero = fcmp oeq double %x, 0.0
  %inf = fcmp oeq double %x, 0x7FF0000000000000
  %neg = fcmp olt double %x, 0.0
  %nan = fcmp uno double %x, %x
  %r1 = select i1 %zero, double 0xFFF0000000000000, double %r
  %r2 = select i1 %inf, double %x, double %r1
  %r3 = select i1 %neg, double 0x7FF8000000000000, double %r2
  %r4 = select i1 %nan, double %x, double %r3
  ret double %r4
}

define internal double @archc_exp64(double %x) {
  %lo = call double @llvm.maximum.f64(double %x, double -1.0e3)
  %c = call double @llvm.minimum.f64(double %lo, double 1.0e3)
  %kx = fmul double %c, 0x3FF71547652B82FE
  %k = call double @llvm.roundeven.f64(double %kx)
  %r0 = call double @llvm.fma.f64(double %k, double 0xBFE62E42FEFA39EF, double %c)
  %r = call double @llvm.fma.f64(double %k, double 0xBC7ABC9E3B39803F, double %r0)
  %q0 = call double @llvm.fma.f64(double %r, double 0x3E21EED8EFF8D898, double 0x3E5AE64567F544E4)
  %q1 = call double @llvm.fma.f64(double %q0, double %r, double 0x3E927E4FB7789F5C)
  %q2 = call double @llvm.fma.f64(double %q1, double %r, double 0x3EC71DE3A556C734)
  %q3 = call double @llvm.fma.f64(double %q2, double %r, double 0x3EFA01A01A01A01A)
  %q4 = call double @llvm.fma.f64(double %q3, double %r, double 0x3F2A01A01A01A01A)
  %q5 = call double @llvm.fma.f64(double %q4, double %r, double 0x3F56C16C16C16C17)
  %q6 = call double @llvm.fma.f64(double %q5, double %r, double 0x3F81111111111111)
  %q7 = call double @llvm.fma.f64(double %q6, double %r, double 0x3FA5555555555555)
  %q8 = call double @llvm.fma.f64(double %q7, double %r, double 0x3FC5555555555555)
  %q9 = call double @llvm.fma.f64(double %q8, double %r, double 0.5)
  %q10 = call double @llvm.fma.f64(double %q9, double %r, double 1.0)
  %q11 = call double @llvm.fma.f64(double %q10, double %r, double 1.0)
  %ki = fptosi double %k to i64
  %half = ashr i64 %ki, 1
  %rest = sub i64 %ki, %half
  %hb = add i64 %half, 1023
  %hs = shl i64 %hb, 52
  %h = bitcast i64 %hs to double
  %rb = add i64 %rest, 1023
  %rs = shl i64 %rb, 52
  %rr = bitcast i64 %rs to double
  %y0 = fmul double %q11, %h
  %y = fmul double %y0, %rr
  %nan = fcmp uno double %x, %x
  %out = select i1 %nan, double %x, double %y
  ret double %out
}

define LINKAGE float @archc_logf(float %x) {
  %d = fpext float %x to double
  %l = call double @archc_log64(double %d)
  %r = fptrunc double %l to float
  ret float %r
}

define LINKAGE float @archc_tanhf(float %x) {
  %d = fpext float %x to double
  %a = call double @llvm.fabs.f64(double %d)
  %a2 = fmul double %a, 2.0
  %c = call double @llvm.minimum.f64(double %a2, double 64.0)
  %e = call double @archc_exp64(double %c)
  %e1 = fadd double %e, 1.0
  %q = fdiv double 2.0, %e1
  %t = fsub double 1.0, %q
  %tf = fptrunc double %t to float
  %s = call float @llvm.copysign.f32(float %tf, float %x)
  %ax = call float @llvm.fabs.f32(float %x)
  %tiny = fcmp olt float %ax, 0x3F30000000000000
  %nan = fcmp uno float %x, %x
  %small = or i1 %tiny, %nan
  %r = select i1 %small, float %x, float %s
  ret float %r
}

define internal float @archc_sin_quadrant(float %x, i64 %shift) {
  %ax = call float @llvm.fabs.f32(float %x)
  %fin = fcmp olt float %ax, 0x7FF0000000000000
  %xs = select i1 %fin, float %x, float 0.0
  %d = fpext float %xs to double
  %kx = fmul double %d, 0x3FE45F306DC9C883
  %k = call double @llvm.roundeven.f64(double %kx)
  %r0 = call double @llvm.fma.f64(double %k, double 0xBFF921FB54442D18, double %d)
  %r = call double @llvm.fma.f64(double %k, double 0xBC91A62633145C07, double %r0)
  %z = fmul double %r, %r
  %s0 = call double @llvm.fma.f64(double %z, double 0x3DE6124613A86D09, double 0xBE5AE64567F544E4)
  %s1 = call double @llvm.fma.f64(double %s0, double %z, double 0x3EC71DE3A556C734)
  %s2 = call double @llvm.fma.f64(double %s1, double %z, double 0xBF2A01A01A01A01A)
  %s3 = call double @llvm.fma.f64(double %s2, double %z, double 0x3F81111111111111)
  %s4 = call double @llvm.fma.f64(double %s3, double %z, double 0xBFC5555555555555)
  %s5 = fmul double %s4, %z
  %sin = call double @llvm.fma.f64(double %s5, double %r, double %r)
  %c0 = call double @llvm.fma.f64(double %z, double 0xBDA93974A8C07C9D, double 0x3E21EED8EFF8D898)
  %c1 = call double @llvm.fma.f64(double %c0, double %z, double 0xBE927E4FB7789F5C)
  %c2 = call double @llvm.fma.f64(double %c1, double %z, double 0x3EFA01A01A01A01A)
  %c3 = call double @llvm.fma.f64(double %c2, double %z, double 0xBF56C16C16C16C17)
  %c4 = call double @llvm.fma.f64(double %c3, double %z, double 0x3FA5555555555555)
  %c5 = call double @llvm.fma.f64(double %c4, double %z, double -0.5)
  %cos = call double @llvm.fma.f64(double %c5, double %z, double 1.0)
  %k4 = fmul double %k, 0.25
  %kf = call double @llvm.floor.f64(double %k4)
  %kf4 = fmul double %kf, 4.0
  %km = fsub double %k, %kf4
  %ki = fptosi double %km to i64
  %qs = add i64 %ki, %shift
  %q = and i64 %qs, 3
  %odd = trunc i64 %q to i1
  %v = select i1 %odd, double %cos, double %sin
  %q2 = and i64 %q, 2
  %flip = icmp ne i64 %q2, 0
  %nv = fneg double %v
  %w = select i1 %flip, double %nv, double %v
  %wf = fptrunc double %w to float
  %nan = fsub float %x, %x
  %out = select i1 %fin, float %wf, float %nan
  %zero = fcmp oeq float %x, 0.0
  %sz = icmp eq i64 %shift, 0
  %keep = and i1 %zero, %sz
  %signed = select i1 %keep, float %x, float %out
  ret float %signed
}

define LINKAGE float @archc_sinf(float %x) {
  %r = call float @archc_sin_quadrant(float %x, i64 0)
  ret float %r
}

define LINKAGE float @archc_cosf(float %x) {
  %r = call float @archc_sin_quadrant(float %x, i64 1)
  ret float %r
}

define LINKAGE float @archc_powf(float %x, float %y) {
  %ax = call float @llvm.fabs.f32(float %x)
  %axd = fpext float %ax to double
  %yd = fpext float %y to double
  %l = call double @archc_log64(double %axd)
  %t = fmul double %yd, %l
  %m = call double @archc_exp64(double %t)
  %mf = fptrunc double %m to float
  %yt = call float @llvm.trunc.f32(float %y)
  %yint = fcmp oeq float %yt, %y
  %yh = fmul float %y, 0.5
  %yht = call float @llvm.trunc.f32(float %yh)
  %yeven = fcmp oeq float %yht, %yh
  %yodd0 = xor i1 %yeven, true
  %yodd = and i1 %yint, %yodd0
  %xneg = fcmp olt float %x, 0.0
  %xsign = bitcast float %x to i32
  %xsneg = icmp slt i32 %xsign, 0
  %neg = and i1 %xsneg, %yodd
  %nm = fneg float %mf
  %signed = select i1 %neg, float %nm, float %mf
  %yfrac = xor i1 %yint, true
  %xfin = fcmp olt float %ax, 0x7FF0000000000000
  %bad1 = and i1 %xneg, %yfrac
  %bad0 = and i1 %bad1, %xfin
  %r1 = select i1 %bad0, float 0x7FF8000000000000, float %signed
  %one0 = fcmp oeq float %y, 0.0
  %one1 = fcmp oeq float %x, 1.0
  %axone = fcmp oeq float %ax, 1.0
  %ay = call float @llvm.fabs.f32(float %y)
  %yinf = fcmp oeq float %ay, 0x7FF0000000000000
  %one2 = and i1 %axone, %yinf
  %one01 = or i1 %one0, %one1
  %one = or i1 %one01, %one2
  %r2 = select i1 %one, float 1.0, float %r1
  ret float %r2
}

"#;

#[cfg(test)]
mod tests {
    use super::super::{attributes, object, orc};
    use archc_kernels::target::Target;

    type Unary = extern "C" fn(f32) -> f32;
    type Binary = extern "C" fn(f32, f32) -> f32;

    /// The definitions compiled for this CPU, and the JIT holding them.
    fn compiled() -> (orc::Jit, Vec<usize>) {
        let cpu = attributes(&Target::host(), true);
        let declarations: Vec<&str> = super::INTRINSICS.iter().map(|d| d.1).collect();
        let text = super::definitions("") + &declarations.join("\n");
        let code = object(&text, &cpu).expect("the functions compile");
        let jit = orc::Jit::new().expect("a JIT");
        jit.add(orc::Object::new(code)).expect("they link");
        let names = [
            "archc_logf",
            "archc_tanhf",
            "archc_sinf",
            "archc_cosf",
            "archc_powf",
        ];
        let addresses = names.iter().map(|n| jit.lookup(n).expect(n)).collect();
        (jit, addresses)
    }

    /// Units in the last place between two floats (0 for equal, also for two NaNs; zeros of
    /// opposite signs differ).
    fn ulps(a: f32, b: f32) -> u32 {
        if a.is_nan() && b.is_nan() || a.to_bits() == b.to_bits() {
            return 0;
        }
        if a.is_nan() || b.is_nan() || a.is_sign_negative() != b.is_sign_negative() {
            return u32::MAX;
        }
        a.to_bits().abs_diff(b.to_bits())
    }

    /// Inputs spread over every binade, with the special values.
    fn inputs() -> Vec<f32> {
        let mut xs = vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.0,
            -1.0,
        ];
        let mut bits: u32 = 1;
        while bits < 0x7F80_0000 {
            let x = f32::from_bits(bits);
            xs.extend([x, -x]);
            bits += 0x0001_3579;
        }
        xs
    }

    #[test]
    fn gpu_math_is_within_an_ulp_of_the_f64_functions() {
        let (_jit, a) = compiled();
        // SAFETY: each address is a function of this JIT defined with the C signature named
        // (`definitions`), and the JIT lives to the end of the test.
        let unary: Vec<Unary> = a[..4]
            .iter()
            .map(|&f| unsafe { std::mem::transmute::<usize, Unary>(f) })
            .collect();
        // SAFETY: as above.
        let pow = unsafe { std::mem::transmute::<usize, Binary>(a[4]) };
        // The f64 functions rounded once: glibc's f32 tanh is 2 ulps off at times.
        let reference: [fn(f32) -> f32; 4] = [
            |x| f64::from(x).ln() as f32,
            |x| f64::from(x).tanh() as f32,
            |x| f64::from(x).sin() as f32,
            |x| f64::from(x).cos() as f32,
        ];
        let names = ["ln", "tanh", "sin", "cos"];
        for ((f, want), name) in unary.iter().zip(reference).zip(names) {
            for x in inputs() {
                // Reduction with a two-part π/2 holds to about 2²⁰·π.
                if name.len() == 3 && x.abs() > 3e6 {
                    continue;
                }
                let (got, want) = (f(x), want(x));
                assert!(
                    ulps(got, want) <= 1,
                    "{name}({x:e}) = {got:e}, want {want:e}"
                );
            }
        }
        let mut xs = inputs().into_iter().step_by(7).collect::<Vec<f32>>();
        xs.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -1.0,
            1.0,
            -2.0,
        ]);
        let ys = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.0,
            3.0,
            -3.0,
            0.5,
            -2.5,
            7.25,
            1e-3,
            40.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for x in xs {
            for y in ys {
                let (got, want) = (pow(x, y), f64::from(x).powf(f64::from(y)) as f32);
                assert!(
                    ulps(got, want) <= 1,
                    "pow({x:e}, {y:e}) = {got:e}, want {want:e}"
                );
            }
        }
    }
}
