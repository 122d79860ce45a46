//! codegen(k) ≡ interp(k) ≡ interp(graph): random programs of elementwise, reduction, layout
//! and matmul ops on random shapes give the same outputs through Cranelift native code, the
//! Kernel IR interpreter (bit for bit) and the Graph IR interpreter (within 1e-5). So do their
//! kernels scheduled for a GPU, run with the interpreter's GPU semantics (no races).

use crate::common;

use std::collections::HashMap;

use archc_compiler::interp::{bind_dims, interpret, MapWeights};
use archc_runtime::random_tensor;
use common::{compile, rel_err};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Matmul(usize),
    Tanh,
    Gelu,
    Square,
    CenterMax,
    NormalizeSum,
    Softmax,
    Transpose,
    AddBias,
    Flip(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1usize..40).prop_map(Step::Matmul),
        Just(Step::Tanh),
        Just(Step::Gelu),
        Just(Step::Square),
        Just(Step::CenterMax),
        Just(Step::NormalizeSum),
        Just(Step::Softmax),
        Just(Step::Transpose),
        Just(Step::AddBias),
        (1usize..3).prop_map(Step::Flip),
    ]
}

/// A model applying `steps` to `x: f32[batch, rows, cols]`; matmul weights are inputs.
fn program(rows: usize, cols: usize, steps: &[Step]) -> String {
    let mut body = String::new();
    let mut inputs = format!("  input x: f32[batch, {rows}, {cols}]\n");
    let (mut r, mut c) = (rows, cols);
    for (i, s) in steps.iter().enumerate() {
        let line = match s {
            Step::Matmul(n) => {
                inputs.push_str(&format!("  input w{i}: f32[{c}, {n}]\n"));
                c = *n;
                format!("h = matmul(h, w{i})")
            }
            Step::Tanh => "h = tanh(h)".into(),
            Step::Gelu => "h = gelu(h)".into(),
            Step::Square => "h = h * h - 0.25".into(),
            Step::CenterMax => "h = h - max(h, -1, keepdim = true)".into(),
            Step::NormalizeSum => "h = h / (sum(abs(h), [1, 2], keepdim = true) + 1.0)".into(),
            Step::Softmax => "h = softmax(h, 1)".into(),
            Step::Transpose => {
                std::mem::swap(&mut r, &mut c);
                "h = transpose(h)".into()
            }
            Step::Flip(axis) => format!("h = flip(h, {axis})"),
            Step::AddBias => {
                inputs.push_str(&format!("  input b{i}: f32[{c}]\n"));
                format!("h = h + b{i}")
            }
        };
        body.push_str(&format!("  {line}\n"));
    }
    format!(
        "model p {{\n{inputs}  h = x\n{body}  output y = h\n  output total = sum(h, [1, 2])\n}}\n"
    )
}

fn run_all(src: &str, batch: usize) {
    let g = compile("p.arch", src).unwrap_or_else(|(_, r)| panic!("{r}\n{src}"));
    let mut inputs = HashMap::new();
    for (name, n) in &g.inputs {
        let shape: Vec<usize> = g
            .ty(*n)
            .shape
            .iter()
            .map(|d| d.as_const().map_or(batch, |v| v as usize))
            .collect();
        inputs.insert(
            name.clone(),
            random_tensor(7, name, g.ty(*n).dtype, &shape, 1.0, 11),
        );
    }
    let dims = bind_dims(&g, &inputs, &HashMap::new()).unwrap();
    let reference = interpret(&g, &dims, &inputs, &mut MapWeights(&HashMap::new())).unwrap();
    let y = reference.get("y").map(|t| t.to_f32());
    let native = common::native_unfused(&g, &inputs, src);
    let gpu = common::gpu_sim(&g, &inputs);
    for (name, n) in native.into_iter().chain(gpu) {
        let want = &reference[&name];
        let err = if let (Some(y), "total") = (&y, name.as_str()) {
            // `total` sums terms that may cancel (h·h − 0.25 after a matmul once summed to
            // 2e-4 of a tiny total): a sum is as exact as the magnitude of its terms, so its
            // error is measured against Σ|y| of its row.
            let per_row = y.len() / want.numel().max(1);
            let (got, want) = (n.to_f32(), want.to_f32());
            (0..want.len())
                .map(|r| {
                    let terms: f64 = y[r * per_row..(r + 1) * per_row]
                        .iter()
                        .map(|v| f64::from(v.abs()))
                        .sum();
                    f64::from((got[r] - want[r]).abs()) / terms.max(1e-30)
                })
                .fold(0.0, f64::max)
        } else {
            rel_err(&n, want)
        };
        assert!(
            err <= 1e-5 || want.to_f32().iter().all(|v| v.abs() < 1e-6),
            "{name}: {err:e}\n{src}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn native_code_matches_both_interpreters(
        batch in 1usize..3,
        rows in 1usize..6,
        cols in 1usize..7,
        steps in prop::collection::vec(step(), 1..6),
    ) {
        run_all(&program(rows, cols, &steps), batch);
    }
}

#[test]
fn gather_scan_pad_concat_and_slices_match() {
    let src = "model m {
  input ids: i32[batch, seq]
  input table: f32[11, 6]
  input a: f32[batch, seq, 6]
  e = gather(table, ids)
  p = pad(e, 1, before = 2, value = 0.5)
  c = concat([slice(p, 1, 1, seq + 1), a], 2)
  decay = 1.0 / (1.0 + exp(-c))
  output h = scan(decay, c, 1)
  output idx = cast(iota(seq), f32) + 0.0
}
";
    run_all(src, 2);
}
