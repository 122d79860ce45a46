//! Training: the optimisers, clipping and the EMA update against torch's recorded steps
//! (scripts/make_optim_fixture.py), and `archc train` through the binary.

use std::collections::HashMap;

use crate::common::repo;
use archc_runtime::optim::{clip_grad_norm, ema_update, OptimState, Optimizer};
use archc_runtime::TensorFile;

fn fixture() -> HashMap<String, Vec<f32>> {
    let f = TensorFile::open(&repo("tests/fixtures/optim.safetensors")).unwrap();
    f.names()
        .into_iter()
        .map(|n| {
            let t = f.read_any(&n).unwrap();
            (n, t.to_f32())
        })
        .collect()
}

/// max |got − want| ÷ max |want|.
fn rel(got: &[f32], want: &[f32]) -> f64 {
    let diff = got.iter().zip(want).map(|(a, b)| f64::from((a - b).abs()));
    let scale = want.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max);
    diff.fold(0.0, f64::max) / scale
}

/// Three steps of an optimiser from the fixture's weight and gradients, each within 1e-6 of
/// torch's.
fn three_steps(optimizer: Optimizer, (lr, decay): (f64, f64), prefix: &str) {
    let f = fixture();
    let mut params = HashMap::from([("p".to_string(), f["p0"].clone())]);
    let mut state = OptimState::default();
    for i in 1..=3 {
        let grads = HashMap::from([("p".to_string(), f[&format!("g{i}")].clone())]);
        state.update(optimizer, (lr, decay), &mut params, &grads);
        let err = rel(&params["p"], &f[&format!("{prefix}_{i}")]);
        assert!(err <= 1e-6, "{prefix} step {i}: rel err {err:.2e}");
    }
}

#[test]
fn adamw_matches_torch() {
    let adamw = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    three_steps(adamw, (1e-2, 0.1), "adamw");
}

#[test]
fn sgd_with_momentum_matches_torch() {
    three_steps(Optimizer::Sgd { momentum: 0.9 }, (0.05, 0.01), "sgd");
}

#[test]
fn ema_and_clipping_match_torch() {
    let f = fixture();
    // The EMA target after one AdamW step of its online weight.
    let mut params = HashMap::from([("p".to_string(), f["p0"].clone())]);
    let grads = HashMap::from([("p".to_string(), f["g1"].clone())]);
    let adamw = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    OptimState::default().update(adamw, (1e-2, 0.1), &mut params, &grads);
    let mut target = f["t0"].clone();
    ema_update(&mut target, &params["p"], 0.996);
    let err = rel(&target, &f["ema_1"]);
    assert!(err <= 1e-6, "ema: rel err {err:.2e}");
    let mut grads = HashMap::from([
        ("a".to_string(), f["g1"].clone()),
        ("b".to_string(), f["g2"].clone()),
    ]);
    clip_grad_norm(&mut grads, 0.5);
    for (name, want) in [("a", "clip_a"), ("b", "clip_b")] {
        let err = rel(&grads[name], &f[want]);
        assert!(err <= 1e-6, "clip {name}: rel err {err:.2e}");
    }
}
