//! `interleave_stack`: a hybrid stack compiles each distinct layer kind once. The snapshot is
//! a small Jamba-like stack (attention every 3 layers, Mamba otherwise, a shared weight);
//! proptests check that outlining random stacks keeps the interpreter's outputs bit for bit
//! and that the compiled calls match the interpreter; and the number of compiled kernels of a
//! stack does not grow with its depth.

use crate::common;

use archc_compiler::graph::print_graph;
use archc_compiler::passes::{interleave_stack, lower_optimized, PassOptions};
use common::{before_after, check_native, check_pass, compile, programs::Program};
use proptest::prelude::*;

/// A hybrid stack of `layers` layers: attention every `period` at `offset`, Mamba otherwise;
/// every layer also adds a `shared` projection whose one weight all layers use.
fn hybrid(layers: usize, period: usize, offset: usize) -> String {
    format!(
        "model hybrid {{
  input ids: i32[batch, seq]
  input m: i32[batch, seq]
  block attn(x) {{
    return attention(x, 2, 1, causal = true) @self_attn
  }}
  block ssm(x) {{
    return mamba(x, d_state = 4, dt_rank = 2) @mamba
  }}
  block layer(x, mixer, proj) {{
    x = x + mixer(rmsnorm(x) @norm)
    return x + tanh(proj(x, 8))
  }}
  shared shared_proj = linear @shared_proj
  h = embedding(ids, 11, 8) @emb
  h = h + unsqueeze(cast(m, f32), -1) * 0.0
  h = stack(h, {layers}, layer, mixer = every({period}, {offset}, attn, otherwise = ssm),
            proj = shared_proj) @layers
  output y = h
  output total = sum(h * h, [1, 2])
}}
"
    )
}

#[test]
fn interleave_stack_before_after() {
    let src = hybrid(6, 3, 1);
    let g = compile("hybrid.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let after = interleave_stack::run(&g);
    archc_compiler::verify::graph(&after).unwrap_or_else(|e| panic!("{e}"));
    let text = print_graph(&after);
    assert!(text.contains("kind0 "), "{text}");
    assert!(text.contains("kind1 "), "{text}");
    assert!(!text.contains("kind2 "), "{text}");
    assert_eq!(text.matches("= call kind").count(), 6, "{text}");
    insta::assert_snapshot!(before_after(&src, &g, &after));
}

#[test]
fn compiled_kernels_do_not_grow_with_depth() {
    let kernels = |layers: usize| {
        let g = compile("h.arch", &hybrid(layers, 3, 1)).unwrap();
        lower_optimized(&g, &PassOptions::all())
            .unwrap()
            .kernels
            .len()
    };
    assert_eq!(kernels(6), kernels(48));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn interleave_stack_keeps_semantics(
        layers in 1usize..7,
        period in 1usize..4,
        offset in 0usize..3,
        batch in 1usize..3,
        seq in 1usize..9,
    ) {
        let p = Program { source: hybrid(layers, period, offset % period), batch, seq };
        check_pass(&[], interleave_stack::run, &p);
        check_native(&PassOptions::all(), &p);
    }
}
