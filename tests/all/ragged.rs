//! Prompts of different lengths decoded as one batch (`archc_runtime::ragged`): on every
//! causal example, on the reference interpreter, each row's tokens are the ones it gets
//! decoded alone, and its logits are within 1e-4 of them.

use std::collections::HashMap;

use archc_compiler::interp::{bind_dims, interpret};
use archc_compiler::step::{derive, Phase};
use archc_runtime::generation::{decode, Decoding, Generated, Pass, Stateful};
use archc_runtime::ragged::decode_ragged;
use archc_runtime::sampling::Sampling;
use archc_runtime::state::State;
use archc_runtime::{DType, Tensor, WeightSource};

use crate::common::{compile, example_source};
use crate::step::{layout, CAUSAL};

/// Greedy, 8 tokens, logits kept; no end-of-sequence token, so every row gets them all.
fn decoding() -> Decoding {
    Decoding {
        max_new: 8,
        min_new: 0,
        sampling: Sampling::default(),
        seed: 0,
        eos: Vec::new(),
        pad: None,
        keep_logits: true,
    }
}

#[test]
fn ragged_prompts_decode_as_one_batch_as_each_alone() {
    let prompts: Vec<Vec<i64>> = [3usize, 7, 5]
        .iter()
        .enumerate()
        .map(|(r, &n)| (0..n).map(|i| ((r * 13 + i * 7) % 50) as i64).collect())
        .collect();
    for name in CAUSAL {
        let g = compile(&format!("{name}.arch"), &example_source(name))
            .unwrap_or_else(|(_, r)| panic!("{r}"));
        let input = g.inputs.keys().next().cloned().expect("a token input");
        let prefill =
            derive(&g, &input, "logits", Phase::Prefill).unwrap_or_else(|e| panic!("{e}"));
        let step = derive(&g, &input, "logits", Phase::Step).unwrap_or_else(|e| panic!("{e}"));
        let batch = g.ty(g.inputs[&input]).shape.first().cloned();
        assert!(
            step.parts.iter().all(|p| p.shape.first() == batch.as_ref()),
            "{name}: every State part has the batch first, so States stack"
        );
        let mut run =
            |pass: Pass, inputs: &HashMap<String, Tensor>, dims: &HashMap<String, i64>| {
                let graph = match pass {
                    Pass::Prefill => &prefill.graph,
                    Pass::Step => &step.graph,
                };
                let dims = bind_dims(graph, inputs, dims).map_err(|e| e.to_string())?;
                let mut w = WeightSource::Random(5);
                let out = interpret(graph, &dims, inputs, &mut w).map_err(|e| e.to_string())?;
                Ok(out.into_iter().collect())
            };
        let state = State::new(layout(&step), 32);
        let mut model = Stateful::new(&mut run, state, &input, "logits", DType::I64);
        let d = decoding();
        let (batched, together) =
            decode_ragged(&mut model, &prompts, &d).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(together, prompts.len(), "{name}: every row joins the batch");
        for (r, prompt) in prompts.iter().enumerate() {
            let mut forward = |c: &[Vec<i64>]| model.forward(c);
            let alone = decode(&mut forward, vec![prompt.clone()], &d, &mut |_| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(batched.ids[r], alone.ids[0], "{name}: row {r}'s tokens");
            let worst = worst_logit(&batched, r, &alone);
            assert!(
                worst <= 1e-4,
                "{name}: row {r}'s logits off by {worst} (relative)"
            );
        }
    }
}

/// The largest difference between row `r`'s logits in `batched` and the one row's in
/// `alone`, relative to the largest of the latter.
fn worst_logit(batched: &Generated, r: usize, alone: &Generated) -> f32 {
    let (mut worst, mut scale) = (0f32, 0f32);
    for (b, a) in batched.logits.iter().zip(&alone.logits) {
        for (x, y) in b[r].iter().zip(&a[0]) {
            worst = worst.max((x - y).abs());
            scale = scale.max(y.abs());
        }
    }
    worst / scale.max(f32::MIN_POSITIVE)
}
