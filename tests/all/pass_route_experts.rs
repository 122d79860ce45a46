//! `route_experts`: a mixture of experts written densely (the prelude's `moe`) becomes a
//! `fused.moe` region whose experts run only on the tokens routed to them. The snapshot is a
//! small top-2-of-4 mixture; the proptests check that the sparse path gives the dense
//! reference's outputs: bit for bit in the Graph IR interpreter, within 1e-5 in native code and
//! in the Kernel IR interpreter, for top 1 and top 2 of 4 experts on random weights and tokens;
//! and the interpreter's sparse path on the Jamba fixture matches transformers.

use std::collections::HashMap;

use crate::common;

use archc_compiler::codegen::kernel_interp::KernelInterp;
use archc_compiler::graph::print_graph;
use archc_compiler::passes::{canonicalize, lower_optimized, route_experts, PassOptions};
use archc_runtime::{random_tensor, DType, Executor, Tensor, WeightSource};
use common::{before_after, check_pass, compile, interpret_random, programs::programs};
use proptest::prelude::*;

/// A mixture of `experts` SwiGLU experts over `x: [batch, seq, 8]`, top `k`.
fn mixture(experts: usize, k: usize, normalize: bool) -> String {
    format!(
        "model mixture {{
  input x: f32[batch, seq, 8]
  output y = moe(x, {experts}, {k}, 16, normalize = {normalize}) @mlp
}}
"
    )
}

#[test]
fn route_experts_before_after() {
    let src = mixture(4, 2, false);
    let g = compile("moe.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let before = canonicalize::run(&g);
    let after = route_experts::run(&before);
    let text = print_graph(&after);
    assert!(text.contains("fused.moe[x=in0, w=in"), "{text}");
    assert_eq!(text.matches("expert 3 on its rows").count(), 1, "{text}");
    // The experts' matmuls are inside the region only.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with('%') && l.contains("experts.") && l.contains("matmul")),
        "{text}"
    );
    insta::assert_snapshot!(before_after(&src, &before, &after));
}

#[test]
fn one_expert_is_left_dense() {
    let g = compile("moe.arch", &mixture(1, 1, false)).unwrap_or_else(|(_, r)| panic!("{r}"));
    let before = canonicalize::run(&g);
    assert_eq!(
        print_graph(&route_experts::run(&before)),
        print_graph(&before)
    );
}

#[test]
fn jamba_fixture_routes_sparsely_in_the_interpreter() {
    use archc_compiler::interp::{bind_dims, interpret};
    use archc_runtime::TensorFile;
    let dir = common::repo("tests/fixtures/hf/jamba");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let arch = archc_compiler::import::import_hf(&config, "config.json").unwrap();
    let g = compile("jamba.arch", &arch).unwrap_or_else(|(_, r)| panic!("{r}"));
    let routed = archc_compiler::passes::optimize(&g, &PassOptions::all()).unwrap();
    assert!(print_graph(&routed).contains("fused.moe"));
    let file = TensorFile::open(&dir.join("inputs.safetensors")).unwrap();
    let inputs: HashMap<String, Tensor> = g
        .inputs
        .keys()
        .map(|n| (n.clone(), file.read_any(n).unwrap()))
        .collect();
    let dims = bind_dims(&g, &inputs, &HashMap::new()).unwrap();
    let run = |graph: &archc_compiler::graph::Graph| {
        let mut w = common::FileWeights(TensorFile::open(&dir.join("model.safetensors")).unwrap());
        interpret(graph, &dims, &inputs, &mut w).unwrap()
    };
    let (dense, sparse) = (run(&g), run(&routed));
    assert_eq!(dense, sparse);
    let want = TensorFile::open(&dir.join("outputs.safetensors")).unwrap();
    for (name, t) in &sparse {
        let err = common::rel_err(t, &want.read_any(name).unwrap());
        assert!(err <= 1e-4, "{name}: rel err {err:e}");
    }
}

/// Random tokens for the mixture.
fn tokens(batch: usize, seq: usize, seed: u64) -> HashMap<String, Tensor> {
    let x = random_tensor(seed, "x", DType::F32, &[batch, seq, 8], 3.0, 2);
    HashMap::from([("x".to_string(), x)])
}

/// The largest relative error of `got` against `want`, over the outputs.
fn worst(got: &[(String, Tensor)], want: &[(String, Tensor)]) -> f64 {
    got.iter()
        .zip(want)
        .map(|((_, g), (_, w))| common::rel_err(g, w))
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn route_experts_keeps_semantics(p in programs(3)) {
        check_pass(&[canonicalize::run], route_experts::run, &p);
    }

    #[test]
    fn sparse_experts_match_the_dense_reference(
        k in 1usize..=2,
        normalize in any::<bool>(),
        batch in 1usize..3,
        seq in prop_oneof![1usize..4, 20usize..70],
        seed in 0u64..1000,
    ) {
        let src = mixture(4, k, normalize);
        let g = compile("moe.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
        let inputs = tokens(batch, seq, seed);
        let dense = interpret_random(&g, &inputs);
        // The interpreter's sparse path.
        let routed = route_experts::run(&canonicalize::run(&g));
        prop_assert!(print_graph(&routed).contains("fused.moe"));
        prop_assert_eq!(&interpret_random(&routed, &inputs), &dense);
        // Native code (every backend built) and the Kernel IR interpreter.
        let native = common::native_random(&g, &PassOptions::all(), &inputs);
        let lowered = lower_optimized(&g, &PassOptions::all()).unwrap();
        prop_assert!(lowered.plan.kernels.iter().any(|k| k.contains("moe_route")));
        let w = WeightSource::Random(5);
        let mut exec = Executor::new(&lowered.plan, |n, d, s| w.weight(n, d, s)).unwrap();
        let by_kernels = exec
            .run(&KernelInterp(&lowered.kernels), &inputs, &HashMap::new())
            .unwrap();
        let (n, i) = (worst(&native, &dense), worst(&by_kernels, &dense));
        prop_assert!(n <= 1e-5, "native rel err {:e}\n{}", n, src);
        prop_assert!(i <= 1e-5, "kernel interpreter rel err {:e}\n{}", i, src);
    }
}
