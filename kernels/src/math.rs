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

/// eˣ
pub extern "C" fn expf(x: f32) -> f32 {
    x.exp()
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
        Un::Exp => expf(x),
        Un::Log => logf(x),
        Un::Sqrt => x.sqrt(),
        Un::Rsqrt => 1.0 / x.sqrt(),
        Un::Tanh => tanhf(x),
        Un::Erf => erff(x),
        Un::Sin => sinf(x),
        Un::Cos => cosf(x),
        Un::Not => f32::from(u8::from(x == 0.0)),
    }
}

/// The functions generated code calls by symbol name, with their addresses.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("archc_expf", expf as *const u8),
        ("archc_logf", logf as *const u8),
        ("archc_tanhf", tanhf as *const u8),
        ("archc_erff", erff as *const u8),
        ("archc_sinf", sinf as *const u8),
        ("archc_cosf", cosf as *const u8),
        ("archc_powf", powf as *const u8),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

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
