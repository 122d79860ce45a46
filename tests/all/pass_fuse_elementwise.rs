//! `fuse_elementwise`: elementwise chains become one loop nest, reductions take their operand
//! as a prologue and matmuls and reductions take elementwise epilogues. The before/after dumps
//! of a small decoder block sit side by side; proptests check that the interpreter gives
//! bit-identical outputs before and after on random programs, and that the fused kernels
//! match the interpreter.

use crate::common;

use archc_compiler::passes::{canonicalize, fuse_elementwise, PassOptions};
use common::{before_after, check_native, check_pass, compile, programs::programs};
use proptest::prelude::*;

const INPUT: &str = "model f {
  input ids: i32[batch, seq]
  param table: [16, 8]
  param w: [8, 8]
  param up: [8, 8]
  x = gather(table, ids)                          # stored: two users
  h = rmsnorm(x) @norm                            # Σx² (prologue) → rsqrt (epilogue); scale
  y = x + silu(matmul(h, w)) * matmul(h, up)      # matmul epilogue: silu, product, residual
  output out = y
  half = slice(y, 2, 0, 4)
  output mirrored = concat([half, -half], 2) * 0.5   # layout ops inside one loop nest
}
";

#[test]
fn fuse_elementwise_before_after() {
    let g = compile("f.arch", INPUT).unwrap_or_else(|(_, r)| panic!("{r}"));
    let before = canonicalize::run(&g);
    let after = fuse_elementwise::run(&before);
    archc_compiler::verify::graph(&after).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!(before_after(INPUT, &before, &after));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn fuse_elementwise_keeps_semantics(p in programs(4)) {
        check_pass(&[canonicalize::run], fuse_elementwise::run, &p);
    }

    #[test]
    fn fused_kernels_match_the_interpreter(p in programs(4)) {
        let only = PassOptions::none().enable("canonicalize").enable("fuse_elementwise");
        check_native(&only, &p);
    }
}
