//! The check the fused backward regions share (`attention_grad.rs`, `scan_grad.rs`): the
//! gradient with the passes agrees with the gradient without them, region by region.

use std::collections::HashMap;

use archc_compiler::grad::gradient;
use archc_compiler::graph::print_graph;
use archc_compiler::passes::PassOptions;
use archc_runtime::Tensor;

use super::Within;

/// The fused gradient of `src` has every region of `parts` and agrees with the unfused one: in
/// the interpreter (the regions' bodies) within 1e-5, on every native backend (their kernels)
/// within 1e-4, and, with `gpu`, scheduled for a GPU in the simulator, which fails on any race
/// between threads. Differences are measured against the largest gradient element.
pub fn check(src: &str, inputs: &HashMap<String, Tensor>, gpu: bool, parts: &[&str]) {
    let g = super::compile("a.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let fused = gradient(&g, &PassOptions::all()).unwrap_or_else(|e| panic!("{e}"));
    let unfused = gradient(&g, &PassOptions::none()).unwrap_or_else(|e| panic!("{e}"));
    let text = print_graph(&fused);
    for part in parts {
        assert!(text.contains(part), "no {part} in the gradient of\n{src}");
    }
    let want = super::interpret_random(&unfused, inputs);
    let largest = super::largest_value(&want);
    let compare = |got: &[(String, Tensor)], tol: f32, how: &str| {
        for ((name, w), (_, g)) in want.iter().zip(got) {
            let diff = super::max_difference(w, g);
            assert!(
                diff / largest <= tol,
                "{name}: {how} is {:.2e} from the unfused gradient\n{src}",
                diff / largest
            );
        }
    };
    compare(
        &super::interpret_random(&fused, inputs),
        1e-5,
        "the interpreter",
    );
    let native =
        super::native_random_within(&fused, &PassOptions::all(), inputs, Within::Largest(1e-4));
    compare(&native, 1e-4, "native code");
    if gpu {
        compare(&super::gpu_sim(&fused, inputs), 1e-4, "cuda-sim");
    }
}
