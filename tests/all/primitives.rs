//! The built-ins of issue 9 (`flip`, `argmax`/`argmin`, integer `/` and `%`, `conv2d`,
//! `fft`/`ifft`): the Graph IR interpreter against values worked out by hand (or by a direct
//! formula in the test), and native code, with no passes and with all of them, against the
//! interpreter.

use crate::common;

use std::collections::HashMap;

use archc_compiler::interp::{bind_dims, interpret, MapWeights};
use archc_compiler::passes::PassOptions;
use archc_runtime::{DType, Data, Tensor};
use common::{compile, rel_err};

type Outputs = HashMap<String, Tensor>;

fn inputs(items: &[(&str, Tensor)]) -> Outputs {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The Graph IR interpreter's outputs, after checking that native code agrees with it: with
/// no passes (and bit for bit with the Kernel IR interpreter) and with every pass.
fn run(src: &str, items: &[(&str, Tensor)]) -> Outputs {
    let g = compile("t.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let ins = inputs(items);
    let dims = bind_dims(&g, &ins, &HashMap::new()).unwrap();
    let want: Outputs = interpret(&g, &dims, &ins, &mut MapWeights(&HashMap::new()))
        .unwrap()
        .into_iter()
        .collect();
    for (name, n) in common::native_unfused(&g, &ins, src) {
        agree(&name, &n, &want[&name], "no passes");
    }
    for (name, n) in common::native_random(&g, &PassOptions::all(), &ins) {
        agree(&name, &n, &want[&name], "all passes");
    }
    want
}

/// Integers exactly, floats within 1e-5 relative.
fn agree(name: &str, got: &Tensor, want: &Tensor, how: &str) {
    match (&got.data, &want.data) {
        (Data::F32(_), Data::F32(_)) => {
            let err = rel_err(got, want);
            assert!(err <= 1e-5, "{name} ({how}): rel err {err:e}");
        }
        _ => assert_eq!(got, want, "{name} ({how})"),
    }
}

fn ints(t: &Tensor) -> Vec<i64> {
    match &t.data {
        Data::I64(v) => v.clone(),
        other => panic!("not integers: {other:?}"),
    }
}

#[test]
fn flip_reverses_one_axis_and_fuses() {
    let src = "model m {
  input x: f32[2, 3]
  input s: f32[batch, seq]
  output a = flip(x, 1)
  output b = flip(x, 0) * 2.0
  output c = flip(s, -1) + s
  input v: f32[2, 3, 9]
  output d = flip(v, 1) * 2.0 + 1.0
}
";
    let x = Tensor::f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
    let s = Tensor::f32(vec![2, 4], vec![1., 2., 3., 4., 10., 20., 30., 40.]);
    // d's flipped axis is not the last, so its fused loop runs four lanes at a time.
    let v: Vec<f32> = (0..54).map(|i| i as f32).collect();
    let want_d: Vec<f32> = (0..54)
        .map(|i| {
            let (b, r, c) = (i / 27, (i / 9) % 3, i % 9);
            v[b * 27 + (2 - r) * 9 + c] * 2.0 + 1.0
        })
        .collect();
    let v = Tensor::f32(vec![2, 3, 9], v);
    let out = run(src, &[("x", x), ("s", s), ("v", v)]);
    assert_eq!(out["d"].to_f32(), want_d);
    assert_eq!(out["a"].to_f32(), vec![3., 2., 1., 6., 5., 4.]);
    assert_eq!(out["b"].to_f32(), vec![8., 10., 12., 2., 4., 6.]);
    assert_eq!(out["c"].to_f32(), vec![5., 5., 5., 5., 50., 50., 50., 50.]);
}

#[test]
fn argmax_and_argmin_take_the_first_extreme_and_nan_wins() {
    let src = "model m {
  input x: f32[3, 4]
  input k: i32[2, 3]
  output amax = argmax(x, 1)
  output amin = argmin(x, -1)
  output cols = argmax(x, 0, keepdim = true)
  output kmax = argmax(k, 1)
  output kmin = argmin(k, 1)
}
";
    let nan = f32::NAN;
    let x = Tensor::f32(
        vec![3, 4],
        vec![1., 5., 5., -2., 0., nan, 3., nan, -1., -1., -7., -7.],
    );
    let k = Tensor::int(
        DType::I32,
        vec![2, 3],
        vec![i64::from(i32::MIN), 7, i64::from(i32::MIN), 2, 9, 9],
    );
    let out = run(src, &[("x", x), ("k", k)]);
    // Row 1 holds NaNs: their first position, for both. Ties: the first.
    assert_eq!(ints(&out["amax"]), vec![1, 1, 0]);
    assert_eq!(ints(&out["amin"]), vec![3, 1, 2]);
    // Column 1 holds a NaN (row 1); columns 0, 2, 3 take their first largest.
    assert_eq!(ints(&out["cols"]), vec![0, 1, 0, 1]);
    assert_eq!(out["cols"].shape, vec![1, 4]);
    assert_eq!(out["amax"].dtype, DType::I64);
    assert_eq!(ints(&out["kmax"]), vec![1, 1]);
    assert_eq!(ints(&out["kmin"]), vec![0, 0]);
}

#[test]
fn integer_division_is_euclidean_and_never_traps() {
    let src = "model m {
  input a: i64[8]
  input b: i64[8]
  output q = a / b
  output r = a % b
  output r3 = a % 3
}
";
    let a = vec![7, -7, 7, -7, 5, i64::MIN, i64::MIN, 0];
    let b = vec![3, 3, -3, -3, 0, -1, 2, -5];
    let out = run(
        src,
        &[
            ("a", Tensor::int(DType::I64, vec![8], a.clone())),
            ("b", Tensor::int(DType::I64, vec![8], b)),
        ],
    );
    // NumPy's floor division agrees for positive divisors; for negative ones Euclid keeps
    // the remainder non-negative. By zero: 0. i64::MIN / -1 wraps to i64::MIN.
    assert_eq!(
        ints(&out["q"]),
        vec![2, -3, -2, 3, 0, i64::MIN, i64::MIN / 2, 0]
    );
    assert_eq!(ints(&out["r"]), vec![1, 2, 1, 2, 0, 0, 0, 0]);
    assert_eq!(ints(&out["r3"]), vec![1, 2, 1, 2, 2, 1, 1, 0]);
}

#[test]
fn integer_division_on_i32_tensors_matches_the_compile_time_rule() {
    let src = "model m {
  input a: i32[4]
  output q = a / 2
  output r = a % 2
  output folded = full([1], -7, dtype = i32) % 3
}
";
    let a = Tensor::int(DType::I32, vec![4], vec![-3, -2, 3, 4]);
    let out = run(src, &[("a", a)]);
    assert_eq!(ints(&out["q"]), vec![-2, -1, 1, 2]);
    assert_eq!(ints(&out["r"]), vec![1, 0, 1, 0]);
    // -7 % 3 is 2 at compile time (section 4); the tensor form agrees.
    assert_eq!(ints(&out["folded"]), vec![2]);
}

#[test]
fn conv2d_matches_hand_computed_windows() {
    let src = "model m {
  input x: f32[1, 1, 3, 3]
  input w: f32[1, 1, 2, 2]
  output plain = conv2d(x, w)
  output strided = conv2d(x, w, stride = 2, padding = 1)
}
";
    let x = Tensor::f32(vec![1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
    let w = Tensor::f32(vec![1, 1, 2, 2], vec![1., 0., 0., -1.]);
    let out = run(src, &[("x", x), ("w", w)]);
    // x[i, j] − x[i+1, j+1] is −4 everywhere; padded by one with stride 2 the windows start
    // at padded (0,0), (0,2), (2,0), (2,2): 0−1, 0−3, 0−7, 5−9.
    assert_eq!(out["plain"].to_f32(), vec![-4.; 4]);
    assert_eq!(out["strided"].to_f32(), vec![-1., -3., -7., -4.]);
    assert_eq!(out["strided"].shape, vec![1, 1, 2, 2]);
}

/// PyTorch's `F.conv2d` as the definition's loops, in f64.
struct Conv {
    x: [usize; 4],
    w: [usize; 4],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

impl Conv {
    fn out(&self, a: usize) -> usize {
        (self.x[a + 2] + 2 * self.padding[a] - self.dilation[a] * (self.w[a + 2] - 1) - 1)
            / self.stride[a]
            + 1
    }

    fn reference(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        let ([n, c, h, wd], [o, cg, kh, kw]) = (self.x, self.w);
        let (oh, ow) = (self.out(0), self.out(1));
        let og = o / self.groups;
        let mut y = Vec::new();
        for b in 0..n {
            for oc in 0..o {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = 0.0f64;
                        for ci in 0..cg {
                            let ch = (oc / og) * cg + ci;
                            for p in 0..kh {
                                for q in 0..kw {
                                    let r = (i * self.stride[0] + p * self.dilation[0]) as i64
                                        - self.padding[0] as i64;
                                    let s = (j * self.stride[1] + q * self.dilation[1]) as i64
                                        - self.padding[1] as i64;
                                    if r < 0 || s < 0 || r >= h as i64 || s >= wd as i64 {
                                        continue;
                                    }
                                    let xv = x[((b * c + ch) * h + r as usize) * wd + s as usize];
                                    let wv = w[((oc * cg + ci) * kh + p) * kw + q];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y.push(acc as f32);
                    }
                }
            }
        }
        y
    }
}

fn conv(
    x: [usize; 4],
    w: [usize; 4],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> Conv {
    Conv {
        x,
        w,
        stride,
        padding,
        dilation,
        groups,
    }
}

fn wave(n: usize, phase: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32) * 0.37 + phase).sin()).collect()
}

#[test]
fn conv2d_with_stride_padding_dilation_and_groups_matches_the_definition() {
    // input, weight, stride, padding, dilation, groups
    let cases = [
        conv([2, 4, 7, 6], [6, 2, 3, 3], [2, 2], [1, 1], [1, 1], 2),
        conv([1, 3, 9, 8], [4, 3, 3, 2], [1, 2], [2, 0], [2, 3], 1),
        conv([1, 4, 5, 5], [4, 1, 2, 2], [1, 1], [0, 1], [1, 1], 4),
        conv([2, 3, 8, 8], [5, 3, 4, 4], [4, 4], [0, 0], [1, 1], 1),
    ];
    for c in &cases {
        let dims = |d: &[usize]| {
            d.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let src = format!(
            "model m {{
  input x: f32[{}]
  input w: f32[{}]
  output y = conv2d(x, w, stride = [{}], padding = [{}], dilation = [{}], groups = {})
}}
",
            dims(&c.x),
            dims(&c.w),
            dims(&c.stride),
            dims(&c.padding),
            dims(&c.dilation),
            c.groups
        );
        let xs = wave(c.x.iter().product(), 0.1);
        let ws = wave(c.w.iter().product(), 1.3);
        let out = run(
            &src,
            &[
                ("x", Tensor::f32(c.x.to_vec(), xs.clone())),
                ("w", Tensor::f32(c.w.to_vec(), ws.clone())),
            ],
        );
        let shape = vec![c.x[0], c.w[0], c.out(0), c.out(1)];
        let want = Tensor::f32(shape, c.reference(&xs, &ws));
        let err = rel_err(&out["y"], &want);
        assert!(err <= 1e-5, "{src}: rel err {err:e}");
    }
}

/// The direct DFT along the last axis of `[rows, n]`, in f64: `sign` −1 forward, +1 inverse
/// (scaled by 1/n).
fn dft(re: &[f32], im: &[f32], n: usize, sign: f64) -> (Vec<f32>, Vec<f32>) {
    let (mut yr, mut yi) = (Vec::new(), Vec::new());
    for row in 0..re.len() / n {
        for k in 0..n {
            let (mut sr, mut si) = (0.0f64, 0.0f64);
            for j in 0..n {
                let a = sign * 2.0 * std::f64::consts::PI * ((j * k) % n) as f64 / n as f64;
                let (xr, xi) = (f64::from(re[row * n + j]), f64::from(im[row * n + j]));
                sr += xr * a.cos() - xi * a.sin();
                si += xr * a.sin() + xi * a.cos();
            }
            let scale = if sign > 0.0 { 1.0 / n as f64 } else { 1.0 };
            yr.push((sr * scale) as f32);
            yi.push((si * scale) as f32);
        }
    }
    (yr, yi)
}

#[test]
fn fft_and_ifft_match_the_direct_dft() {
    // Powers of two, small odd factors (dense DFT) and odd factors above 64 (Bluestein).
    for n in [1, 2, 5, 6, 8, 12, 64, 65, 67, 134, 97 * 4] {
        let src = format!(
            "model m {{
  input xr: f32[3, {n}]
  input xi: f32[3, {n}]
  yr, yi = fft(xr, xi, -1)
  output fr = yr
  output fi = yi
  zr, zi = ifft(xr, xi, 1)
  output ir = zr
  output ii = zi
}}
"
        );
        let (xr, xi) = (wave(3 * n, 0.2), wave(3 * n, 2.0));
        let out = run(
            &src,
            &[
                ("xr", Tensor::f32(vec![3, n], xr.clone())),
                ("xi", Tensor::f32(vec![3, n], xi.clone())),
            ],
        );
        for (sign, names) in [(-1.0, ["fr", "fi"]), (1.0, ["ir", "ii"])] {
            let (wr, wi) = dft(&xr, &xi, n, sign);
            for (name, want) in names.iter().zip([wr, wi]) {
                let err = rel_err(&out[*name], &Tensor::f32(vec![3, n], want));
                assert!(err <= 1e-4, "n = {n}, {name}: rel err {err:e}");
            }
        }
    }
}

#[test]
fn fft_along_a_leading_axis_round_trips() {
    let src = "model m {
  input xr: f32[batch, 16, 3]
  input xi: f32[batch, 16, 3]
  yr, yi = fft(xr, xi, 1)
  zr, zi = ifft(yr, yi, 1)
  output back = zr
  output back_i = zi
  output spectrum = sum(yr * yr + yi * yi, [1, 2]) / 16.0
  output signal = sum(xr * xr + xi * xi, [1, 2])
}
";
    let (xr, xi) = (wave(96, 0.5), wave(96, 1.5));
    let out = run(
        src,
        &[
            ("xr", Tensor::f32(vec![2, 16, 3], xr.clone())),
            ("xi", Tensor::f32(vec![2, 16, 3], xi.clone())),
        ],
    );
    assert!(rel_err(&out["back"], &Tensor::f32(vec![2, 16, 3], xr)) <= 1e-5);
    assert!(rel_err(&out["back_i"], &Tensor::f32(vec![2, 16, 3], xi)) <= 1e-5);
    // Parseval: Σ|X|² / n = Σ|x|².
    assert!(rel_err(&out["spectrum"], &out["signal"]) <= 1e-5);
}

#[test]
fn conv2d_over_symbolic_spatial_dims_with_stride_one() {
    let src = "model m {
  input x: f32[batch, 2, h, w]
  input k: f32[3, 2, 3, 3]
  output y = conv2d(x, k, padding = 1, dilation = [1, 2])
}
";
    let c = conv([2, 2, 5, 6], [3, 2, 3, 3], [1, 1], [1, 1], [1, 2], 1);
    let (xs, ks) = (wave(120, 0.3), wave(54, 0.9));
    let out = run(
        src,
        &[
            ("x", Tensor::f32(c.x.to_vec(), xs.clone())),
            ("k", Tensor::f32(c.w.to_vec(), ks.clone())),
        ],
    );
    let want = Tensor::f32(vec![2, 3, c.out(0), c.out(1)], c.reference(&xs, &ks));
    assert_eq!(want.shape, vec![2, 3, 5, 4]);
    assert!(rel_err(&out["y"], &want) <= 1e-5);
}
