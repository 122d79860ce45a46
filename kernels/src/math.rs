//! Scalar math shared by the kernel interpreter and generated code. Backends call these same
//! functions (they have the C ABI), so transcendental results agree bit for bit.

use crate::ir::Un;

/// The error function, exact to f32 rounding: a Maclaurin series below 2.5 and a continued
/// fraction for the tail, both in f64.
pub extern "C" fn erff(x: f32) -> f32 {
    let x = f64::from(x);
    let t = x.abs();
    let y = if t < 2.5 {
        let mut sum = 0.0f64;
        let mut term = t;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -t * t / n;
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (f64::from(k) / 2.0) / (t + f);
        }
        1.0 - (-t * t).exp() / (t + f) / std::f64::consts::PI.sqrt()
    };
    (if x < 0.0 { -y } else { y }) as f32
}

/// Integer tensor `/`: the Euclidean quotient, so that `a = b·(a / b) + a % b` with
/// `0 ≤ a % b < |b|`. Division by zero gives 0 and `i64::MIN / -1` wraps, as generated code
/// does (a native divide would trap on both).
pub fn div_euclid(a: i64, b: i64) -> i64 {
    if b == 0 {
        0
    } else {
        a.wrapping_div_euclid(b)
    }
}

/// Integer tensor `%`: the Euclidean remainder, in `0..|b|`; by zero gives 0.
pub fn rem_euclid(a: i64, b: i64) -> i64 {
    if b == 0 {
        0
    } else {
        a.wrapping_rem_euclid(b)
    }
}

/// Coefficients of the inline exp: x = k·ln2 + r with |r| ≤ ln2/2, eʳ by a degree-6
/// polynomial, 2ᵏ as the product of two powers of two made from exponent bits (2^⌊k/2⌋ and
/// 2^(k−⌊k/2⌋), each a normal float for every k the clamp allows), so that results near
/// overflow and in the subnormal range come out right and ±∞ give ∞ and 0. Generated code
/// computes exactly these operations in this order, so the two agree bit for bit.
pub mod exp_poly {
    /// Inputs are clamped to this range: below it eˣ is 0 in f32 (k = −150).
    pub const LO: f32 = -104.0;
    /// Upper clamp: above ln(f32::MAX) ≈ 88.72 the result overflows to +∞ (k = 128).
    pub const HI: f32 = 88.8;
    /// log₂ e
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// 2ˣ's lower clamp, `LO`·log₂ e: below it 2ˣ is 0 in f32.
    pub const LO2: f32 = -150.0;
    /// 2ˣ's upper clamp: 2¹²⁸ overflows to +∞.
    pub const HI2: f32 = 128.0;
    /// ln 2, to scale 2ˣ's reduced argument (`x − k`, exact and at most ½) into eʳ's.
    pub const LN2: f32 = std::f32::consts::LN_2;
    /// ln 2, high part (exact in f32).
    pub const LN2_HI: f32 = 0.693_145_75;
    /// ln 2, low part.
    pub const LN2_LO: f32 = 1.428_606_8e-6;
    /// 1/k! for k = 6, 5, 4, 3, 2, 1, 0: Horner order.
    pub const C: [f32; 7] = [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
}

/// eˣ, the way generated code computes it inline (relative error about 2·10⁻⁷; inputs below
/// −87 give e⁻⁸⁷ rather than a denormal).
pub fn exp_inline(x: f32) -> f32 {
    use exp_poly::*;
    // NaN passes the clamp and propagates through the polynomial.
    let x = x.clamp(LO, HI);
    let k = (x * LOG2E).round_ties_even();
    let r = k.mul_add(-LN2_HI, x);
    let r = k.mul_add(-LN2_LO, r);
    exp_reduced(k, r)
}

/// 2ˣ inline: x = k + f with k an integer and |f| ≤ ½ (f exact), then 2ᵏ·e^(f·ln 2) as in
/// [`exp_inline`], whose error it shares.
pub fn exp2_inline(x: f32) -> f32 {
    use exp_poly::*;
    let x = x.clamp(LO2, HI2);
    let k = x.round_ties_even();
    exp_reduced(k, (x - k) * LN2)
}

/// 2ᵏ·eʳ for an integral k and |r| ≤ ln2/2: eʳ by the polynomial, 2ᵏ from exponent bits.
fn exp_reduced(k: f32, r: f32) -> f32 {
    use exp_poly::*;
    let p = C[1..].iter().fold(C[0], |p, &c| p.mul_add(r, c));
    // `as` saturates, and k is 0 for NaN, so this never traps; Cranelift's conversion saturates
    // the same way.
    let k = k as i32;
    let half = k >> 1;
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    p * pow2(half) * pow2(k - half)
}

/// Coefficients of the inline erf. For |x| ≥ [`erf_poly::SMALL`], Abramowitz & Stegun 7.1.26
/// (absolute error ≤ 1.5·10⁻⁷): erf |x| = 1 − t·P(t)·e^(−x²) with t = 1/(1 + p|x|). Below it
/// that absolute error is a large relative one (GELU of small activations was off by 1e-4), so
/// the Taylor series x·T(x²) takes over, with relative error under 10⁻⁶.
pub mod erf_poly {
    /// Where the Taylor series hands over to A&S 7.1.26.
    pub const SMALL: f32 = 0.5;
    /// 2/√π · (−1/1320, 1/216, −1/42, 1/10, −1/3, 1): the Taylor coefficients in x², Horner
    /// order; the first term left out is below 2·10⁻⁸ at the hand-over.
    pub const T: [f32; 6] = [
        -0.000_854_832_7,
        0.005_223_977_6,
        -0.026_866_171,
        0.112_837_92,
        -0.376_126_38,
        std::f32::consts::FRAC_2_SQRT_PI,
    ];
    /// p
    pub const P: f32 = 0.327_591_1;
    /// a₅ … a₁, Horner order.
    pub const A: [f32; 5] = [
        1.061_405_4,
        -1.453_152_1,
        1.421_413_8,
        -0.284_496_72,
        0.254_829_6,
    ];
}

/// erf x, the way generated code computes it inline.
pub fn erf_inline(x: f32) -> f32 {
    use erf_poly::*;
    let a = x.abs();
    let t = 1.0 / P.mul_add(a, 1.0);
    let poly = A[1..].iter().fold(A[0], |q, &c| q.mul_add(t, c)) * t;
    let y = 1.0 - poly * exp_inline(-(a * a));
    // y is not negative: or-ing in x's sign bit is copysign, as generated code does it.
    let large = f32::from_bits(y.to_bits() | (x.to_bits() & 0x8000_0000));
    let x2 = x * x;
    let small = x * T[1..].iter().fold(T[0], |q, &c| q.mul_add(x2, c));
    if a < SMALL {
        small
    } else {
        large
    }
}

/// ln x
pub extern "C" fn logf(x: f32) -> f32 {
    x.ln()
}
/// tanh x
pub extern "C" fn tanhf(x: f32) -> f32 {
    x.tanh()
}
/// sin x
pub extern "C" fn sinf(x: f32) -> f32 {
    x.sin()
}
/// cos x
pub extern "C" fn cosf(x: f32) -> f32 {
    x.cos()
}
/// xʸ
pub extern "C" fn powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}
/// max, ignoring a NaN operand as `f32::max` does.
pub fn maxf(x: f32, y: f32) -> f32 {
    x.max(y)
}
/// min, ignoring a NaN operand as `f32::min` does.
pub fn minf(x: f32, y: f32) -> f32 {
    x.min(y)
}

/// A float unary function by its Kernel IR name.
pub fn unary(op: Un, x: f32) -> f32 {
    match op {
        Un::Neg => -x,
        Un::Abs => x.abs(),
        Un::Exp => exp_inline(x),
        Un::Exp2 => exp2_inline(x),
        Un::Log => logf(x),
        Un::Sqrt => x.sqrt(),
        Un::Rsqrt => 1.0 / x.sqrt(),
        Un::Tanh => tanhf(x),
        Un::Erf => erf_inline(x),
        Un::Sin => sinf(x),
        Un::Cos => cosf(x),
        Un::Not => f32::from(u8::from(x == 0.0)),
    }
}

/// A scalar function generated code calls instead of inlining it.
#[derive(Clone, Copy, Debug)]
pub enum Libcall {
    /// `f32 → f32`
    Unary(extern "C" fn(f32) -> f32),
    /// `(f32, f32) → f32`
    Binary(extern "C" fn(f32, f32) -> f32),
}

/// The one table of functions generated code calls: (symbol, arity, function). Code
/// generators declare these symbols, JITs bind them to the functions, and built binaries get
/// them from `export_libcalls!` below, which lists the same functions.
pub const LIBCALLS: &[(&str, usize, Libcall)] = &[
    ("archc_logf", 1, Libcall::Unary(logf)),
    ("archc_tanhf", 1, Libcall::Unary(tanhf)),
    ("archc_sinf", 1, Libcall::Unary(sinf)),
    ("archc_cosf", 1, Libcall::Unary(cosf)),
    ("archc_powf", 2, Libcall::Binary(powf)),
];

impl Libcall {
    /// The function's address, for a JIT's symbol table.
    pub fn address(self) -> *const u8 {
        match self {
            Libcall::Unary(f) => f as *const u8,
            Libcall::Binary(f) => f as *const u8,
        }
    }
}

/// The functions generated code calls by symbol name, with their addresses.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    LIBCALLS.iter().map(|(n, _, f)| (*n, f.address())).collect()
}

/// Defines the `#[no_mangle]` symbols of `LIBCALLS` in a binary that links object files made
/// by a code generator (the runner library of `archc build`).
#[macro_export]
macro_rules! export_libcalls {
    () => {
        $crate::export_libcalls!(archc_logf = logf, archc_tanhf = tanhf, archc_sinf = sinf, archc_cosf = cosf);
        /// `archc_kernels::math::powf` under its libcall name.
        #[no_mangle]
        pub extern "C" fn archc_powf(x: f32, y: f32) -> f32 {
            $crate::math::powf(x, y)
        }
    };
    ($($name:ident = $f:ident),*) => {
        $(
            /// An `archc_kernels::math` function under its libcall name.
            #[no_mangle]
            pub extern "C" fn $name(x: f32) -> f32 {
                $crate::math::$f(x)
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_exp_and_erf_are_accurate() {
        for i in -2000..2000 {
            let x = i as f32 * 0.04;
            let (e, want) = (exp_inline(x), f64::from(x).exp());
            if x > -87.0 {
                assert!(
                    ((f64::from(e) - want) / want).abs() < 4e-7,
                    "exp({x}) = {e}, want {want}"
                );
            }
            assert!((erf_inline(x) - erff(x)).abs() < 2e-7, "erf({x})");
        }
    }

    #[test]
    fn inline_erf_is_accurate_relative_to_small_values_and_exp_at_the_ends() {
        // Below the hand-over the Taylor series keeps the error relative, not absolute.
        for i in 1..=500 {
            let x = i as f32 * 1e-3;
            let (got, want) = (erf_inline(x), erff(x));
            assert!(
                ((got - want) / want).abs() < 2e-6,
                "erf({x}) = {got}, want {want}"
            );
            assert_eq!(erf_inline(-x), -got);
        }
        assert_eq!(exp_inline(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_inline(f32::NEG_INFINITY), 0.0);
        assert!(exp_inline(f32::NAN).is_nan() && erf_inline(f32::NAN).is_nan());
        let near = exp_inline(88.5);
        assert!(((f64::from(near) - 88.5f64.exp()) / 88.5f64.exp()).abs() < 1e-6);
    }

    #[test]
    fn inline_exp2_is_accurate_and_exact_at_integers() {
        for i in -3000..3000 {
            let x = i as f32 * 0.0417;
            let (got, want) = (exp2_inline(x), f64::from(x).exp2());
            if x > -125.0 {
                assert!(
                    ((f64::from(got) - want) / want).abs() < 4e-7,
                    "2^{x} = {got}, want {want}"
                );
            }
        }
        for k in -149..128 {
            assert_eq!(exp2_inline(k as f32), (k as f32).exp2(), "2^{k}");
        }
        assert_eq!(exp2_inline(128.5), f32::INFINITY);
        assert_eq!(exp2_inline(f32::NEG_INFINITY), 0.0);
        assert!(exp2_inline(f32::NAN).is_nan());
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (3.0, 0.999_977_9),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erff(x) - want).abs() < 1e-6, "erf({x}) = {}", erff(x));
        }
    }
}
