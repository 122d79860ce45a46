//! `canonicalize`: constant folding, identities, CSE and dead code, on a program written to
//! have each; its before/after dumps side by side, and a proptest that the interpreter gives
//! bit-identical outputs before and after on random programs.

use crate::common;

use archc_compiler::passes::canonicalize;
use common::{before_after, check_native, check_pass, compile, programs::programs};
use proptest::prelude::*;

const INPUT: &str = "model c {
  config { d = 4 }
  input x: f32[batch, d]
  k = sqrt(full([1, d], 2.0)) * 3.0        # folds to one constant
  a = exp(x) * k
  b = exp(x) * k                           # the same as a
  unused = tanh(x) * 100.0                 # dead
  y = stop_grad(a + b) * 1.0 + 0.0         # identities
  z = concat([slice(y, 1, 0, 2), slice(y, 1, 2, 4)], 1)   # y again
  output out = reshape(reshape(z, [x.shape[0], 2, 2]), [x.shape[0], 4]) + x.shape[1]
}
";

#[test]
fn canonicalize_before_after() {
    let g = compile("c.arch", INPUT).unwrap_or_else(|(_, r)| panic!("{r}"));
    let after = canonicalize::run(&g);
    archc_compiler::verify::graph(&after).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!(before_after(INPUT, &g, &after));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn canonicalize_keeps_semantics(p in programs(4)) {
        check_pass(&[], canonicalize::run, &p);
    }

    #[test]
    fn canonicalized_programs_compile_correctly(p in programs(3)) {
        let only = archc_compiler::passes::PassOptions::all();
        check_native(&only, &p);
    }
}

#[test]
fn a_double_flip_and_a_flip_of_one_element_are_removed() {
    let src = "model f {
  input x: f32[batch, 1, 5]
  output y = flip(flip(x, 2), 2) + flip(x, 1)
  output z = flip(x, 2)
}
";
    let g = compile("f.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let text = archc_compiler::graph::print_graph(&canonicalize::run(&g));
    assert_eq!(text.matches("flip").count(), 1, "{text}");
}
