//! `fft(re, im, axis)` and `ifft(re, im, axis)`: the discrete Fourier transform along one
//! axis of a complex tensor held as two float tensors, returned as the list `[re, im]`
//! (`yr, yi = fft(xr, xi, -1)`). `ifft` scales by `1/n`, as NumPy and PyTorch do.
//!
//! It is spelled with primitive ops. A length `n = m·2^s` with `m` odd starts with dense DFTs
//! of length `m` (one matmul by an `m × m` matrix; nothing for a power of two) on the
//! sub-sequences `x[b + j·2^s]`, then `s` radix-2 stages, each a slice of the data into two
//! halves, a twiddle product and a concat: `O(n·(m + log n))` work. Past an odd factor of
//! [`DENSE_ODD_FACTOR`] Bluestein's chirp-z transform takes over: three radix-2 transforms of
//! a power of two `≥ 2n − 1`, `O(n log n)` for every length.

use std::f64::consts::PI;

use archc_runtime::DType;
use petgraph::graph::NodeIndex;

use crate::graph::{BinaryOp, Dim, Ieee64, Op, TensorType, UnaryOp};
use crate::syntax::{Diagnostic, Span};

use super::args::CallArgs;
use super::expr::axis;
use super::value::Value;
use super::Elab;

/// The largest odd factor of a length done as a dense DFT; above it, Bluestein's algorithm
/// (whose three power-of-two transforms cost more than a small matmul).
const DENSE_ODD_FACTOR: i64 = 64;

/// The longest axis transformed (so that the Bluestein length `≥ 2n − 1` stays far from
/// overflow and the graph stays small).
const MAX_LENGTH: i64 = 1 << 30;

/// A complex tensor: real and imaginary parts of one type.
#[derive(Clone, Copy)]
struct Complex {
    re: NodeIndex,
    im: NodeIndex,
}

impl Elab<'_> {
    pub(super) fn fft(&mut self, name: &str, ca: CallArgs) -> Result<Value, Diagnostic> {
        let mut b = ca.bind(&["re", "im", "axis"])?;
        let span = b.span();
        let (re, rs) = b.req("re")?;
        let re = self.expect_tensor(&re, rs, &format!("the real part given to `{name}`"))?;
        let (im, is) = b.req("im")?;
        let im = self.expect_tensor(&im, is, &format!("the imaginary part given to `{name}`"))?;
        let ty = self.graph.ty(re).clone();
        if ty.dtype != DType::F32 || self.graph.ty(im) != &ty {
            return Err(Diagnostic::new(
                "E0203",
                is,
                format!(
                    "`{name}` needs real and imaginary parts of one f32 type (cast f16 and bf16 first), found {ty} and {}",
                    self.graph.ty(im)
                ),
            )
            .label("dtype or shape mismatch"));
        }
        let k = self.req_int(&mut b, name, "axis")?;
        let a = axis(k.0, ty.rank(), k.1)?;
        let n = match ty.shape[a].as_const() {
            Some(n) if (1..=MAX_LENGTH).contains(&n) => n,
            _ => {
                return Err(Diagnostic::new(
                    "E0205",
                    k.1,
                    format!(
                        "`{name}` needs a constant axis length of at most 2^30, found {}",
                        ty.shape[a]
                    ),
                )
                .label("out of range"))
            }
        };
        let odd = n >> n.trailing_zeros();
        let sign = if name == "fft" { -1.0 } else { 1.0 };
        let rank = ty.rank();
        // The transformed axis goes last and comes back at the end.
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != a).collect();
        perm.push(a);
        let mut back = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            back[p] = i;
        }
        let mut z = Complex { re, im };
        if a + 1 != rank {
            z = self.map2(z, |e, x| e.op(Op::Permute(perm.clone()), &[x], span))?;
        }
        let lead: Vec<Dim> = perm[..rank - 1]
            .iter()
            .map(|&p| ty.shape[p].clone())
            .collect();
        let mut y = if odd > DENSE_ODD_FACTOR {
            self.bluestein(z, &lead, n, sign, span)?
        } else {
            self.fft_last(z, &lead, n, odd, sign, span)?
        };
        if sign > 0.0 {
            let scale = self.scalar(1.0 / n as f64, ty.dtype, span)?;
            y = self.map2(y, |e, x| e.bin(BinaryOp::Mul, x, scale, span))?;
        }
        if a + 1 != rank {
            y = self.map2(y, |e, x| e.op(Op::Permute(back.clone()), &[x], span))?;
        }
        Ok(Value::List(vec![Value::Tensor(y.re), Value::Tensor(y.im)]))
    }

    /// The transform of `z` (shape `lead ++ [n]`) along its last axis.
    fn fft_last(
        &mut self,
        z: Complex,
        lead: &[Dim],
        n: i64,
        odd: i64,
        sign: f64,
        span: Span,
    ) -> Result<Complex, Diagnostic> {
        let with = |tail: &[i64]| -> Vec<Dim> {
            let mut s = lead.to_vec();
            s.extend(tail.iter().map(|&t| Dim::constant(t)));
            s
        };
        let r = lead.len();
        // Row b of [n/odd, odd] holds the sub-sequence x[b + j·n/odd], j < odd.
        let mut f = self.map2(z, |e, x| e.reshaped(x, with(&[odd, n / odd]), span))?;
        let mut swap: Vec<usize> = (0..r).collect();
        swap.extend([r + 1, r]);
        f = self.map2(f, |e, x| e.op(Op::Permute(swap.clone()), &[x], span))?;
        if odd > 1 {
            let m = self.dft_matrix(odd, sign, span)?;
            f = self.complex_mul(f, m, span, |e, a, b| e.op(Op::MatMul, &[a, b], span))?;
        }
        let mut len = odd;
        while len < n {
            let rows = n / len;
            let halves = self.map2(f, |e, x| e.reshaped(x, with(&[2, rows / 2, len]), span))?;
            let mut half = |lo: i64| {
                self.map2(halves, |e, x| {
                    let op = Op::Slice {
                        axis: r,
                        start: Dim::constant(lo),
                        end: Dim::constant(lo + 1),
                    };
                    let s = e.op(op, &[x], span)?;
                    e.reshaped(s, with(&[rows / 2, len]), span)
                })
            };
            let (even, odd_half) = (half(0)?, half(1)?);
            let w = self.twiddles(len, sign, span)?;
            let t = self.complex_mul(odd_half, w, span, |e, a, b| {
                e.bin(BinaryOp::Mul, a, b, span)
            })?;
            let top = self.zip2(even, t, BinaryOp::Add, span)?;
            let bottom = self.zip2(even, t, BinaryOp::Sub, span)?;
            let cat = |e: &mut Elab, a: NodeIndex, b: NodeIndex| {
                e.op(Op::Concat { axis: r + 1 }, &[a, b], span)
            };
            f = Complex {
                re: cat(self, top.re, bottom.re)?,
                im: cat(self, top.im, bottom.im)?,
            };
            len *= 2;
        }
        self.map2(f, |e, x| e.reshaped(x, with(&[n]), span))
    }

    /// The `m × m` matrix `exp(sign·2πi·jk/m)`; `jk mod m` is taken in integers first, so
    /// the angles stay below 2π and the f32 sine and cosine stay exact to rounding.
    fn dft_matrix(&mut self, m: i64, sign: f64, span: Span) -> Result<Complex, Diagnostic> {
        let md = Dim::constant(m);
        let i = self.iota_of(md.clone(), DType::I64, span)?;
        let col = self.reshaped(i, vec![md.clone(), Dim::constant(1)], span)?;
        let row = self.reshaped(i, vec![Dim::constant(1), md], span)?;
        let jk = self.bin(BinaryOp::Mul, col, row, span)?;
        let mm = self.scalar(m as f64, DType::I64, span)?;
        let jk = self.bin(BinaryOp::Rem, jk, mm, span)?;
        self.unit_circle(jk, sign * 2.0 * PI / m as f64, span)
    }

    /// Bluestein's chirp-z transform of `z` (shape `lead ++ [n]`) along its last axis. With
    /// the chirp `c[j] = exp(sign·πi·j²/n)`, `jk = (j² + k² − (k − j)²)/2` makes the DFT
    /// `X[k] = c[k]·Σⱼ (x[j]·c[j])·c̄[k − j]`: a circular convolution of length `m`, the power of
    /// two `≥ 2n − 1`, done as the inverse transform of a product of two transforms.
    fn bluestein(
        &mut self,
        z: Complex,
        lead: &[Dim],
        n: i64,
        sign: f64,
        span: Span,
    ) -> Result<Complex, Diagnostic> {
        // n > 64 here (only odd factors above DENSE_ODD_FACTOR come), so 2n − 1 ≥ 129 is odd
        // and not a power of two: m > 2n − 1 and the gap of zeros below is not empty.
        let m = ((2 * n - 1) as u64).next_power_of_two() as i64;
        let r = lead.len();
        let mul = |e: &mut Elab, a: NodeIndex, b: NodeIndex| e.bin(BinaryOp::Mul, a, b, span);
        // j² mod 2n keeps the chirp's angles below 2π, exact in f32 up to rounding.
        let j = self.iota_of(Dim::constant(n), DType::I64, span)?;
        let j2 = self.bin(BinaryOp::Mul, j, j, span)?;
        let two_n = self.scalar((2 * n) as f64, DType::I64, span)?;
        let j2 = self.bin(BinaryOp::Rem, j2, two_n, span)?;
        let c = self.unit_circle(j2, sign * PI / n as f64, span)?;
        let a = self.complex_mul(z, c, span, mul)?;
        let pad = Op::Pad {
            axis: r,
            before: 0,
            after: m - n,
            value: Ieee64::new(0.0),
        };
        let a = self.map2(a, |e, x| e.op(pad.clone(), &[x], span))?;
        // The filter c̄[|t|] laid out circularly: c̄[0..n], zeros, then c̄[n−1], …, c̄[1].
        let conj = Complex {
            re: c.re,
            im: self.op(Op::Unary(UnaryOp::Neg), &[c.im], span)?,
        };
        let gap = Dim::constant(m - 2 * n + 1);
        let b = self.map2(conj, |e, x| {
            let rest = Op::Slice {
                axis: 0,
                start: Dim::constant(1),
                end: Dim::constant(n),
            };
            let rest = e.op(rest, &[x], span)?;
            let rest = e.op(Op::Flip { axis: 0 }, &[rest], span)?;
            let zeros = TensorType::new(DType::F32, vec![gap.clone()]);
            let zeros = e.node(Op::Const(Ieee64::new(0.0)), Some(zeros), &[], span)?;
            e.op(Op::Concat { axis: 0 }, &[x, zeros, rest], span)
        })?;
        let fa = self.fft_last(a, lead, m, 1, -1.0, span)?;
        let fb = self.fft_last(b, &[], m, 1, -1.0, span)?;
        let product = self.complex_mul(fa, fb, span, mul)?;
        let conv = self.fft_last(product, lead, m, 1, 1.0, span)?;
        let head = Op::Slice {
            axis: r,
            start: Dim::constant(0),
            end: Dim::constant(n),
        };
        let conv = self.map2(conv, |e, x| e.op(head.clone(), &[x], span))?;
        let scale = self.scalar(1.0 / m as f64, DType::F32, span)?;
        let conv = self.map2(conv, |e, x| e.bin(BinaryOp::Mul, x, scale, span))?;
        self.complex_mul(conv, c, span, mul)
    }

    /// The twiddles `exp(sign·πi·k/len)`, `k < len`, of one radix-2 stage.
    fn twiddles(&mut self, len: i64, sign: f64, span: Span) -> Result<Complex, Diagnostic> {
        let k = self.iota_of(Dim::constant(len), DType::I64, span)?;
        self.unit_circle(k, sign * PI / len as f64, span)
    }

    /// `cos(step·k) + i·sin(step·k)` for the integer tensor `k`, as f32.
    fn unit_circle(&mut self, k: NodeIndex, step: f64, span: Span) -> Result<Complex, Diagnostic> {
        let k = self.cast_to(k, DType::F32, span)?;
        let s = self.scalar(step, DType::F32, span)?;
        let angle = self.bin(BinaryOp::Mul, k, s, span)?;
        Ok(Complex {
            re: self.op(Op::Unary(UnaryOp::Cos), &[angle], span)?,
            im: self.op(Op::Unary(UnaryOp::Sin), &[angle], span)?,
        })
    }

    /// The complex product of `a` and `b` under `mul` (elementwise or matmul).
    fn complex_mul(
        &mut self,
        a: Complex,
        b: Complex,
        span: Span,
        mul: impl Fn(&mut Elab, NodeIndex, NodeIndex) -> Result<NodeIndex, Diagnostic>,
    ) -> Result<Complex, Diagnostic> {
        let (rr, ii) = (mul(self, a.re, b.re)?, mul(self, a.im, b.im)?);
        let (ri, ir) = (mul(self, a.re, b.im)?, mul(self, a.im, b.re)?);
        Ok(Complex {
            re: self.bin(BinaryOp::Sub, rr, ii, span)?,
            im: self.bin(BinaryOp::Add, ri, ir, span)?,
        })
    }

    /// `a op b` on both parts.
    fn zip2(
        &mut self,
        a: Complex,
        b: Complex,
        op: BinaryOp,
        span: Span,
    ) -> Result<Complex, Diagnostic> {
        Ok(Complex {
            re: self.bin(op, a.re, b.re, span)?,
            im: self.bin(op, a.im, b.im, span)?,
        })
    }

    /// `f` on both parts.
    fn map2(
        &mut self,
        z: Complex,
        mut f: impl FnMut(&mut Elab, NodeIndex) -> Result<NodeIndex, Diagnostic>,
    ) -> Result<Complex, Diagnostic> {
        Ok(Complex {
            re: f(self, z.re)?,
            im: f(self, z.im)?,
        })
    }
}
