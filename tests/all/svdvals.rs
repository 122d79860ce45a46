//! `svdvals`: singular values, the primitive behind the effective rank of embeddings (the
//! I-JEPA example's collapse metric). The interpreter's f64 oracle against values known in
//! closed form; the kernels (Cranelift, LLVM, the GPU schedule in the simulator) against the
//! oracle. The kernels diagonalise the Gram matrix in f32, so a value is exact to about
//! 3e-4 × the largest (√ε): the well-conditioned case is held to 1e-5, a nearly rank-one one
//! to 3e-4, and the effective rank computed from them to 1e-2 relative. A matrix with fewer
//! rows than columns is diagonalised through `XXᵀ`, so its values past the rows are exactly
//! zero on every target, and one row's effective rank is 1.

use std::collections::HashMap;

use archc_compiler::interp::{bind_dims, interpret, MapWeights};
use archc_compiler::passes::PassOptions;
use archc_runtime::Tensor;

use crate::common::{self, compile, rel_err, Within};

const MODEL: &str = "model svd {
  input x: f32[batch, rows, 8]
  output s = svdvals(x)
  p = s / sum(s, -1, keepdim = true)
  output effective_rank = exp(-sum(p * log(p + 1e-12), -1))
}
";

fn oracle(x: &Tensor) -> HashMap<String, Tensor> {
    let g = compile("svd.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    let ins = HashMap::from([("x".to_string(), x.clone())]);
    let dims = bind_dims(&g, &ins, &HashMap::new()).unwrap();
    interpret(&g, &dims, &ins, &mut MapWeights(&HashMap::new()))
        .unwrap()
        .into_iter()
        .collect()
}

/// A deterministic pseudo-random value in [−1, 1).
fn noise(i: usize) -> f32 {
    ((i as f32 * 12.9898).sin() * 43758.547).fract()
}

#[test]
fn the_oracle_gives_closed_form_values() {
    // Matrix 0: rows scaled unit vectors, singular values 5, 4, …, 0 by column scale. Matrix 1:
    // u·vᵀ with |u|·|v| its one value.
    let mut v = vec![0f32; 2 * 10 * 8];
    for (j, s) in [5.0f32, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.0]
        .iter()
        .enumerate()
    {
        v[j * 8 + j] = *s;
    }
    let (u, w): (Vec<f32>, Vec<f32>) =
        ((0..10).map(noise).collect(), (20..28).map(noise).collect());
    for r in 0..10 {
        for c in 0..8 {
            v[80 + r * 8 + c] = u[r] * w[c];
        }
    }
    let out = oracle(&Tensor::f32(vec![2, 10, 8], v));
    let s = out["s"].to_f32();
    let want = [5.0f32, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.0];
    assert!(
        s[..8].iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{s:?}"
    );
    let norm = |x: &[f32]| x.iter().map(|a| a * a).sum::<f32>().sqrt();
    assert!((s[8] - norm(&u) * norm(&w)).abs() < 1e-5, "{s:?}");
    assert!(s[9..].iter().all(|x| x.abs() < 1e-5), "{s:?}");
    // A rank-one matrix has effective rank 1.
    assert!((out["effective_rank"].to_f32()[1] - 1.0).abs() < 1e-4);
}

#[test]
fn kernels_match_the_oracle() {
    let full = Tensor::f32(vec![3, 40, 8], (0..960).map(noise).collect());
    // Nearly rank one: u·vᵀ plus 1e-3 noise.
    let near: Vec<f32> = (0..960)
        .map(|i| noise(i / 8 + 2000) * noise(i % 8 + 3000) + 1e-3 * noise(i + 5000))
        .collect();
    let near = Tensor::f32(vec![3, 40, 8], near);
    let g = compile("svd.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    for (x, tol) in [(full, 1e-5), (near, 3e-4)] {
        let want = oracle(&x);
        let ins = HashMap::from([("x".to_string(), x)]);
        let mut runs =
            common::native_random_within(&g, &PassOptions::all(), &ins, Within::EachTensor(1e-5));
        runs.extend(common::gpu_sim(&g, &ins));
        for (name, got) in runs {
            let err = rel_err(&got, &want[&name]);
            let bound = if name == "s" { tol } else { 1e-2 };
            assert!(err <= bound, "{name}: rel err {err:e} (bound {bound:e})");
        }
    }
}

/// Fewer rows than columns (a batch smaller than the embedding's width): the values past the
/// rows are exactly zero on every target, the others as close as in the square case, and a
/// single row's effective rank is 1 to f32 precision (through `XᵀX` it was 1.01: √ε noise in
/// seven zero values).
#[test]
fn wide_matrices_have_exact_zeros_past_their_rows() {
    let g = compile("svd.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    for rows in [1, 5] {
        let x = Tensor::f32(vec![3, rows, 8], (0..3 * rows * 8).map(noise).collect());
        let want = oracle(&x);
        let ins = HashMap::from([("x".to_string(), x)]);
        let mut runs =
            common::native_random_within(&g, &PassOptions::all(), &ins, Within::EachTensor(1e-5));
        runs.extend(common::gpu_sim(&g, &ins));
        runs.push(("s".into(), want["s"].clone()));
        for (name, got) in runs {
            let err = rel_err(&got, &want[&name]);
            assert!(err <= 1e-5, "{rows} rows, {name}: rel err {err:e}");
            let v = got.to_f32();
            if name == "s" {
                let past = v.chunks(8).flat_map(|m| &m[rows..]);
                assert!(past.clone().all(|&s| s == 0.0), "{rows} rows: {v:?}");
            } else if rows == 1 {
                assert!(v.iter().all(|r| (r - 1.0).abs() < 1e-6), "{v:?}");
            }
        }
    }
}

/// `svdvals` has no gradient rule: differentiating through it is an error that says to read
/// it behind `stop_grad`, and behind `stop_grad` the gradient graph is made.
#[test]
fn svdvals_is_read_behind_stop_grad() {
    let through = "model m {
  input x: f32[batch, 4]
  y = linear(x, 3) @proj
  output loss = sum(y * y, [0, 1])
  output rank_metric = sum(svdvals(WRAP(y)), [0])
}
";
    let g = compile("m.arch", &through.replace("WRAP", "")).unwrap_or_else(|(_, r)| panic!("{r}"));
    let err = archc_compiler::grad::gradient(&g, &PassOptions::all())
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("stop_grad")),
        "{err:?}"
    );
    let g = compile("m.arch", &through.replace("WRAP", "stop_grad"))
        .unwrap_or_else(|(_, r)| panic!("{r}"));
    assert!(archc_compiler::grad::gradient(&g, &PassOptions::all()).is_ok());
    assert!(archc_compiler::grad::loss_gradient(&g, "loss", &PassOptions::all()).is_ok());
}
