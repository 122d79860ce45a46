//! The blocked matmul template on ragged sizes: M, N and K that are no multiple of the
//! micro-kernel or the cache blocks, a symbolic row count, batched products and fused
//! epilogues, through the Kernel IR interpreter and Cranelift, against the graph interpreter.

use std::collections::HashMap;

use archc_compiler::codegen::backend::BackendKind;
use archc_compiler::codegen::kernel_interp::KernelInterp;
use archc_compiler::interp::{bind_dims, interpret};
use archc_compiler::passes::{lower_optimized_for, PassOptions};
use archc_kernels::target::{Target, X86Level};
use archc_runtime::{random_tensor, Executor, Launcher, WeightSource};

use crate::common::compile;

/// M = 13 rows (a symbolic `seq`), K = 70, N = 37; a plain product, a `linear` with a bias and
/// a gelu epilogue to 53 columns (its weight packed once; at 16 lanes: a 32-column panel, one
/// vector past it, five columns one at a time), and a batched product of the activations with
/// themselves. Weight `u` is the `b` of an outer product whose epilogue reads it too (so it
/// keeps its layout there), of one that reads it packed, and of an elementwise kernel.
const SRC: &str = "model mm {
  input x: f32[seq, 70]
  input w: f32[70, 37]
  input xs: f32[2, seq, 70]
  input col: f32[seq, 1]
  param u: [1, 37]
  output plain = matmul(x, w)
  output fused = gelu(linear(x, 53)) * 2.0
  output batched = matmul(xs, transpose(xs))
  output outer = matmul(col, u) * u
  output packed = tanh(matmul(col * 2.0, u))
  output scaled = u * 3.0
}
";

/// Cranelift's micro-kernel (4 × 8) with caches so small that every block is at its floor:
/// 16-element slices of K, 4-row and 8-column tasks.
fn tiny() -> Target {
    Target {
        l1_bytes: 64,
        l2_bytes: 64,
        l3_bytes: 64,
        ..Target::cranelift_x86_64()
    }
}

fn check(target: &Target, seq: usize) {
    let b = target.matmul_blocking();
    let g = compile("mm.arch", SRC).unwrap_or_else(|(_, r)| panic!("{r}"));
    let mut inputs = HashMap::new();
    for (name, shape) in [
        ("x", vec![seq, 70]),
        ("w", vec![70, 37]),
        ("xs", vec![2, seq, 70]),
        ("col", vec![seq, 1]),
    ] {
        let t = random_tensor(3, name, archc_runtime::DType::F32, &shape, 1.0, 2);
        inputs.insert(name.to_string(), t);
    }
    let dims = bind_dims(&g, &inputs, &HashMap::new()).unwrap();
    let want = interpret(&g, &dims, &inputs, &mut WeightSource::Random(5)).unwrap();
    let lowered = lower_optimized_for(&g, &PassOptions::all(), target).unwrap();
    let w = WeightSource::Random(5);
    let mut exec = Executor::new(&lowered.plan, |n, d, s| w.weight(n, d, s)).unwrap();
    // Cranelift takes four lanes only; a wider target's kernels run on LLVM where it is built.
    let native = match target.lanes {
        4 => Some(BackendKind::Cranelift),
        _ => Some(BackendKind::Llvm).filter(|b| b.available()),
    };
    let jit = native.map(|kind| crate::common::jit(kind, &lowered));
    let by_kernels = KernelInterp(&lowered.kernels);
    let mut backends: Vec<(&str, &dyn Launcher)> = vec![("kernel IR", &by_kernels)];
    if let (Some(kind), Some(jit)) = (native, &jit) {
        backends.push((kind.name(), jit.as_ref()));
    }
    for (backend, launcher) in backends {
        let context = format!("{backend}, seq {seq}, {b:?}");
        crate::common::assert_run_close(&mut exec, launcher, &inputs, &want, &context);
    }
}

#[test]
fn ragged_sizes_match_the_interpreter_with_the_smallest_blocks() {
    assert_eq!(
        tiny().matmul_blocking(),
        archc_kernels::target::MatmulBlocking {
            mr: 4,
            nr: 8,
            kc: 16,
            mc: 4,
            nc: 8
        }
    );
    for seq in [13, 1, 6] {
        check(&tiny(), seq);
    }
}

#[test]
fn ragged_sizes_match_the_interpreter_with_cranelifts_blocks() {
    check(&Target::cranelift_x86_64(), 13);
}

#[test]
fn a_wider_target_lowers_to_its_own_vector_width() {
    // 16-lane AVX-512 blocking (8 × 32): two 16-lane vectors across the micro-kernel.
    check(&Target::x86_64(X86Level::V4), 13);
    let g = compile("mm.arch", SRC).unwrap_or_else(|(_, r)| panic!("{r}"));
    let wide = lower_optimized_for(&g, &PassOptions::all(), &Target::x86_64(X86Level::V4)).unwrap();
    let text: String = wide
        .kernels
        .iter()
        .map(archc_kernels::print_kernel)
        .collect();
    assert!(text.contains("splat16"), "{text}");
}

/// Products whose reduction runs over `batch·seq` (the gradient of a weight shared by every
/// position, `xᵀ·dy` over the flattened batch) on every native backend against the graph
/// interpreter, down to one position. LLVM's code for them once left the output unwritten:
/// its inline stack probes of the matmul's large frame (LLVM kernels have none now).
#[test]
fn a_reduction_over_a_product_of_dims() {
    for (m, n) in [(16, 18), (8, 68)] {
        let src = format!(
            "model mm {{
  input a: f32[{m}, batch, seq]
  input g: f32[batch, seq, {n}]
  output y = matmul(reshape(a, [{m}, batch * seq]), reshape(g, [batch * seq, {n}]))
}}
"
        );
        let g = compile("mm.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
        for (batch, seq) in [(1, 1), (2, 3)] {
            let inputs: HashMap<String, archc_runtime::Tensor> =
                [("a", vec![m, batch, seq]), ("g", vec![batch, seq, n])]
                    .into_iter()
                    .map(|(name, s)| {
                        let t = random_tensor(4, name, archc_runtime::DType::F32, &s, 1.0, 2);
                        (name.to_string(), t)
                    })
                    .collect();
            let dims = bind_dims(&g, &inputs, &HashMap::new()).unwrap();
            let none = HashMap::new();
            let mut weights = archc_compiler::interp::MapWeights(&none);
            let want = interpret(&g, &dims, &inputs, &mut weights).unwrap();
            let got = crate::common::native_random(&g, &PassOptions::all(), &inputs);
            for ((name, w), (_, o)) in want.iter().zip(&got) {
                let err = crate::common::rel_err(o, w);
                assert!(
                    err <= 1e-5,
                    "{m}×{n}, {batch}×{seq}: {name}: rel err {err:e}"
                );
            }
        }
    }
}
