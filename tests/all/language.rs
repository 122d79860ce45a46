//! Language semantics end to end: source → graph → reference interpreter.

use crate::common;

use std::collections::HashMap;

use archc_compiler::interp::{bind_dims, interpret, MapWeights};
use archc_runtime::Tensor;
use common::compile;

/// Runs `src` on the given inputs and weights; returns the outputs.
fn run(
    src: &str,
    inputs: &[(&str, Tensor)],
    weights: &[(&str, Tensor)],
) -> HashMap<String, Tensor> {
    let g = compile("t.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let inputs: HashMap<String, Tensor> = inputs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let weights: HashMap<String, Tensor> = weights
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let dims = bind_dims(&g, &inputs, &HashMap::new()).unwrap();
    interpret(&g, &dims, &inputs, &mut MapWeights(&weights))
        .unwrap()
        .into_iter()
        .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_f32()
}

#[test]
fn mean_over_a_symbolic_axis_divides_by_its_run_time_size() {
    let src = "model m {\n  input x: f32[batch, seq]\n  output y = mean(x, 1)\n}\n";
    let out = run(
        src,
        &[("x", Tensor::f32(vec![2, 3], vec![1., 2., 3., 4., 5., 9.]))],
        &[],
    );
    assert_eq!(values(&out["y"]), vec![2.0, 6.0]);
}

#[test]
fn scan_is_the_sequential_recurrence() {
    let src = "model m {\n  input a: f32[seq, 2]\n  input b: f32[seq, 2]\n  output h = scan(a, b, 0)\n}\n";
    let a = vec![0.5, 2.0, 0.5, 2.0, 0.5, 2.0];
    let b = vec![1.0, 1.0, 1.0, 0.0, 1.0, -1.0];
    let out = run(
        src,
        &[
            ("a", Tensor::f32(vec![3, 2], a)),
            ("b", Tensor::f32(vec![3, 2], b)),
        ],
        &[],
    );
    // column 0: 1, 0.5+1, 0.75+1; column 1: 1, 2, 4-1
    assert_eq!(values(&out["h"]), vec![1.0, 1.0, 1.5, 2.0, 1.75, 3.0]);
}

#[test]
fn comprehensions_make_one_weight_per_item() {
    let src = "model m {
  input x: f32[1, 2]
  ys = [linear(x, 1, bias = false) @heads.{i} for i in range(3)]
  output y = concat(ys, 1)
}
";
    let w = |v: f32| Tensor::f32(vec![1, 2], vec![v, v]);
    let out = run(
        src,
        &[("x", Tensor::f32(vec![1, 2], vec![1.0, 1.0]))],
        &[
            ("heads.0.weight", w(1.0)),
            ("heads.1.weight", w(2.0)),
            ("heads.2.weight", w(3.0)),
        ],
    );
    assert_eq!(values(&out["y"]), vec![2.0, 4.0, 6.0]);
}

#[test]
fn a_shared_instance_reuses_its_weights() {
    let src = "model m {
  input x: f32[1, 2]
  block proj(x) {
    return linear(x, 2, bias = false) @p
  }
  shared s = proj @shared
  output a = s(x)
  output b = s(s(x))
}
";
    let g = compile("t.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    assert_eq!(g.params.keys().collect::<Vec<_>>(), vec!["shared.p.weight"]);
    let out = run(
        src,
        &[("x", Tensor::f32(vec![1, 2], vec![1.0, 2.0]))],
        &[(
            "shared.p.weight",
            Tensor::f32(vec![2, 2], vec![0.0, 1.0, 1.0, 0.0]),
        )],
    );
    assert_eq!(values(&out["a"]), vec![2.0, 1.0]);
    assert_eq!(values(&out["b"]), vec![1.0, 2.0]);
}

#[test]
fn compile_time_arithmetic_keeps_integers_exact() {
    let src = "model m {
  config { dim = 64, heads = 4, hd = dim / heads, rank = ceil(dim / 24), neg = abs(-3) }
  input x: f32[hd, rank, neg]
  output y = x
}
";
    let g = compile("t.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    assert_eq!(g.ty(g.inputs["x"]).to_string(), "f32[16, 3, 3]");
}

#[test]
fn a_float_over_a_symbolic_dim_is_a_run_time_scalar() {
    let src = "model m {\n  input x: f32[batch, seq]\n  scale = 3.0 / seq\n  output y = x * scale\n  output z = seq * 0.5 + x\n}\n";
    let out = run(
        src,
        &[("x", Tensor::f32(vec![1, 3], vec![1., 2., 4.]))],
        &[],
    );
    assert_eq!(values(&out["y"]), vec![1.0, 2.0, 4.0]);
    assert_eq!(values(&out["z"]), vec![2.5, 3.5, 5.5]);
}
