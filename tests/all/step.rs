//! The derived recurrent step (`archc_compiler::step`): for every causal example, a prefill
//! of the first positions then steps over the rest give the logits of one pass over the whole
//! sequence, on the reference interpreter.

use std::collections::HashMap;

use archc_compiler::graph::print_graph;
use archc_compiler::graph::Graph;
use archc_compiler::passes::{optimize, PassOptions};
use archc_compiler::step::{derive, print_step, Derived, PartKind, Phase};
use archc_runtime::state::{PartLayout, State, Update};
use archc_runtime::{random_tensor, DType, Tensor, WeightSource};
use proptest::prelude::*;

use crate::common::{compile, example_source, rel_err};

/// The examples that generate; BERT and I-JEPA read ahead.
pub const CAUSAL: [&str; 10] = [
    "gpt2", "llama", "mistral", "qwen2", "qwen3", "mamba", "mamba2", "jamba", "bamba", "zamba2",
];

fn example(name: &str) -> Graph {
    compile(&format!("{name}.arch"), &example_source(name)).unwrap_or_else(|(_, r)| panic!("{r}"))
}

/// The State's layout of a derivation.
pub fn layout(d: &Derived) -> Vec<PartLayout> {
    d.parts
        .iter()
        .map(|p| PartLayout {
            name: p.name.clone(),
            update: match p.kind {
                PartKind::Append { axis } => Update::Append(axis),
                PartKind::Replace { .. } => Update::Replace,
            },
        })
        .collect()
}

/// Positions `range` of every row of `ids`.
fn columns(ids: &Tensor, range: std::ops::Range<usize>) -> Tensor {
    let (rows, t) = (ids.shape[0], ids.shape[1]);
    let all = ids.to_f32();
    let mut out = Vec::new();
    for r in 0..rows {
        out.extend(
            all[r * t + range.start..r * t + range.end]
                .iter()
                .map(|&x| x as i64),
        );
    }
    Tensor::int(ids.dtype, vec![rows, range.len()], out)
}

fn run(g: &Graph, inputs: &HashMap<String, Tensor>, past: usize) -> HashMap<String, Tensor> {
    // A model without caches (Mamba) has `past` in no input's shape.
    let explicit = match past {
        0 => HashMap::new(),
        p => HashMap::from([("past".to_string(), p as i64)]),
    };
    let dims = archc_compiler::interp::bind_dims(g, inputs, &explicit)
        .unwrap_or_else(|e| panic!("{}: {e}", g.name));
    let mut w = WeightSource::Random(5);
    archc_compiler::interp::interpret(g, &dims, inputs, &mut w)
        .unwrap_or_else(|e| panic!("{}: {e}", g.name))
        .into_iter()
        .collect()
}

/// Logits over positions `0..t` by prefill then steps at `cuts`, against one forward pass.
fn check_split(name: &str, batch: usize, t: usize, cuts: &[usize]) -> f64 {
    let g = example(name);
    let input = g.inputs.keys().next().cloned().expect("a token input");
    let prefill = derive(&g, &input, "logits", Phase::Prefill).unwrap_or_else(|e| panic!("{e}"));
    let step = derive(&g, &input, "logits", Phase::Step).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prefill.parts, step.parts, "{name}: one State for both");
    let ids = random_tensor(9, &input, DType::I32, &[batch, t], 1.0, 60);
    let whole = run(&g, &HashMap::from([(input.clone(), ids.clone())]), 0)["logits"].clone();
    let mut state = State::new(layout(&step), t);
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < t));
    bounds.push(t);
    let mut pieces = Vec::new();
    for (i, w) in bounds.windows(2).enumerate() {
        let graph = if i == 0 { &prefill.graph } else { &step.graph };
        let mut inputs: HashMap<String, Tensor> = state
            .inputs()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        inputs.insert(input.clone(), columns(&ids, w[0]..w[1]));
        let mut out = run(graph, &inputs, state.context());
        pieces.push(out.remove("logits").expect("logits"));
        state
            .absorb(&mut out, w[1] - w[0])
            .expect("the State takes the outputs");
    }
    // The pieces' positions, in order, against the whole pass's.
    let vocab = whole.shape[2];
    let mut got = vec![0.0f32; whole.numel()];
    let mut at = 0;
    for p in &pieces {
        let n = p.shape[1];
        let v = p.to_f32();
        for r in 0..batch {
            for i in 0..n {
                let src = &v[(r * n + i) * vocab..(r * n + i + 1) * vocab];
                let dst = (r * t + at + i) * vocab;
                got[dst..dst + vocab].copy_from_slice(src);
            }
        }
        at += n;
    }
    rel_err(&Tensor::f32(whole.shape.clone(), got), &whole)
}

#[test]
fn prefill_then_steps_give_the_whole_pass_on_every_causal_example() {
    for name in CAUSAL {
        let err = check_split(name, 2, 7, &[3, 4]);
        assert!(err <= 1e-5, "{name}: relative error {err:e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    /// prefill(a ++ b) = prefill(a) then step(b), for random split points and examples.
    #[test]
    fn prefill_of_a_then_step_of_b_is_prefill_of_both(
        which in 0..CAUSAL.len(),
        t in 2usize..10,
        cut in 1usize..9,
    ) {
        let cut = cut.min(t - 1);
        let err = check_split(CAUSAL[which], 1, t, &[cut]);
        prop_assert!(err <= 1e-5, "{}: cut {cut} of {t}: {err:e}", CAUSAL[which]);
    }
}

/// The derived step of every causal example, and the step after the passes: attention against
/// the cache and the single-step scan are fused regions like the sequence's.
#[test]
fn example_step_dumps() {
    for name in CAUSAL {
        let g = example(name);
        let input = g.inputs.keys().next().cloned().expect("a token input");
        let step = derive(&g, &input, "logits", Phase::Step).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(format!("{name}.step"), print_step(&step));
        let fused = optimize(&step.graph, &PassOptions::all()).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(format!("{name}.step_fused"), print_graph(&fused));
    }
}

/// The State's bytes after a prefill of `t` positions.
fn state_bytes(name: &str, t: usize) -> usize {
    let g = example(name);
    let input = g.inputs.keys().next().cloned().expect("a token input");
    let prefill = derive(&g, &input, "logits", Phase::Prefill).unwrap_or_else(|e| panic!("{e}"));
    let ids = random_tensor(3, &input, DType::I32, &[1, t], 1.0, 60);
    let mut out = run(&prefill.graph, &HashMap::from([(input, ids)]), 0);
    let mut state = State::new(layout(&prefill), t);
    state
        .absorb(&mut out, t)
        .expect("the State takes the outputs");
    state.bytes().iter().map(|(_, b)| b).sum()
}

#[test]
fn mambas_state_is_constant_and_llamas_grows_with_the_context() {
    // Mamba: a window of 3 inputs and a 128 × 16 carry per layer, for 2 layers.
    let mamba = (state_bytes("mamba", 4), state_bytes("mamba", 12));
    assert_eq!(
        mamba,
        (2 * (3 * 128 + 128 * 16) * 4, 2 * (3 * 128 + 128 * 16) * 4)
    );
    // Llama: a key and a value cache per layer, 2 × 16 + 32 floats per position each.
    let llama = (state_bytes("llama", 4), state_bytes("llama", 12));
    assert_eq!(llama, (2 * 4 * 64 * 4, 2 * 12 * 64 * 4));
}

/// A model whose step cannot be derived (it reads the stream's length as a value) still
/// generates, rerunning the whole context, and says why; `dump --stage step` says why too, and
/// refuses a model that is not causal.
#[test]
fn models_without_a_derived_step_say_why() {
    let d = crate::common::scratch_dir("step-refused");
    let source = "model m {\n  input ids: i32[batch, seq]\n  h = embedding(ids, 16, 8) @embed\n  y = h / h.shape[1]\n  output logits = linear(y, 16, bias = false) @head\n}\n";
    std::fs::write(d.join("m.arch"), source).expect("writable");
    let ids = ("ids", vec![1, 3], vec![3, 1, 4]);
    crate::common::write_safetensors(&d.join("ids.safetensors"), &[], &[ids]);
    let why = ["m.arch:4:11", "the stream's length as a value"];
    crate::common::archc_limited(&["dump", "--stage", "step", "m.arch"], &d).expect(1, &why);
    let args = [
        "generate",
        "m.arch",
        "--inputs",
        "ids.safetensors",
        "--max-new-tokens",
        "3",
    ];
    let run = crate::common::archc_limited(&args, &d);
    run.expect(0, &why);
    assert!(
        run.stdout.contains("reruns the whole context"),
        "{}",
        run.stdout
    );
    let bert = crate::common::repo("examples/bert.arch");
    let bert = bert.to_str().expect("a UTF-8 path");
    crate::common::archc_limited(&["dump", "--stage", "step", bert], &d)
        .expect(1, &["is not causal", "bert.arch:"]);
    std::fs::remove_dir_all(&d).ok();
}

/// The prefill's and the step's plans make their weight buffers alike, so a generation's two
/// executors share every one of them (`lower::same_weights`), with f32 weights and with
/// weights kept in blocks.
#[test]
fn prefill_and_step_share_every_weight_buffer() {
    use archc_compiler::lower::same_weights;
    use archc_compiler::passes::lower_optimized;
    for (name, quantized) in CAUSAL.iter().flat_map(|n| [(n, false), (n, true)]) {
        let g = example(name);
        let input = g.inputs.keys().next().cloned().expect("a token input");
        // Quantized: every matrix with rows of whole blocks kept in Q8_0 blocks (a tied
        // embedding then has two buffers, ggml's blocks and groups of rows).
        let blocks = g
            .params
            .iter()
            .filter(|(_, (n, _))| {
                let shape = &g.ty(*n).shape;
                let k = shape.get(1).and_then(|d| d.as_const());
                quantized && shape.len() == 2 && k.is_some_and(|k| k % 32 == 0)
            })
            .map(|(w, _)| (w.clone(), archc_runtime::quant::BlockFormat::Q8_0))
            .collect();
        let options = PassOptions::all().with_blocks(blocks);
        let lower = |phase| {
            let d = derive(&g, &input, "logits", phase).unwrap_or_else(|e| panic!("{e}"));
            lower_optimized(&d.graph, &options).unwrap_or_else(|e| panic!("{e}"))
        };
        let (prefill, step) = (lower(Phase::Prefill), lower(Phase::Step));
        let pairs = same_weights(&prefill, &step);
        for &(s, p) in &pairs {
            let (a, b) = (&step.plan.buffers[s], &prefill.plan.buffers[p]);
            assert_eq!(a.blocks, b.blocks, "{name}: {} shares {}", a.name, b.name);
        }
        let plan = &step.plan;
        let weights: Vec<usize> = (0..plan.buffers.len())
            .filter(|&b| plan.root(b) == b)
            .filter(|&b| matches!(plan.buffers[b].storage, archc_runtime::Storage::Weight))
            // Loaded, or written by a prepare step (a transpose whose matmuls read the
            // weight's blocks instead has none, and is never allocated).
            .filter(|&b| {
                plan.weights.iter().any(|w| plan.root(w.buffer) == b)
                    || plan.prepare.iter().any(|s| s.args().first() == Some(&b))
            })
            .collect();
        let shared: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        let missing: Vec<&str> = weights
            .iter()
            .filter(|b| !shared.contains(b))
            .map(|&b| plan.buffers[b].name.as_str())
            .collect();
        assert!(missing.is_empty(), "{name}: not shared: {missing:?}");
    }
}
