//! Bad input never crashes: random bytes, random edits and truncations of the examples all
//! end in a located diagnostic or a successful compile, never a panic; what compiles also goes
//! through every pass and the lowering without one.

use crate::common;

use archc_compiler::passes::{lower_optimized, PassOptions};
use common::{compile, example_source, EXAMPLES};
use proptest::prelude::*;

/// Compiles and, on error, checks that the rendered diagnostic names a location; on success,
/// runs the passes and the lowering.
fn compile_safely(text: &str) {
    match compile("fuzz.arch", text) {
        Err((code, rendered)) => {
            assert!(code.starts_with('E'), "bad code {code}");
            assert!(rendered.contains(" --> "), "no location in:\n{rendered}");
            assert!(rendered.contains('^'), "no caret in:\n{rendered}");
        }
        Ok(g) => {
            let lowered = lower_optimized(&g, &PassOptions::all()).unwrap();
            assert!(!lowered.plan.outputs.is_empty() || g.outputs.is_empty());
        }
    }
}

/// Tokens that edits splice in: syntax, names the prelude knows, numbers that break shapes.
const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    "=",
    "@",
    ".",
    "+",
    "-",
    "*",
    "/",
    "%",
    "==",
    "0",
    "-1",
    "3",
    "999999999999999999999",
    "1e400",
    "\"",
    "\"MAMA\"",
    "x",
    "h",
    "dim",
    "heads",
    "seq",
    "batch",
    "stack",
    "every",
    "at",
    "ema",
    "bind",
    "matmul",
    "reshape",
    "gather",
    "scan",
    "attention",
    "mamba",
    "moe",
    "block",
    "param",
    "return",
    "if",
    "else",
    "none",
    "true",
    "shared",
    "output",
    "input",
    "f32",
    "i32",
    "\n",
    "#",
    "µ",
    "\u{0}",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Replace(usize, usize, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..12).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(a, t)| Edit::Insert(a, t)),
        (any::<usize>(), 1usize..8, prop::sample::select(TOKENS))
            .prop_map(|(a, n, t)| Edit::Replace(a, n, t)),
    ]
}

fn boundary(text: &str, i: usize) -> usize {
    let mut i = i % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, e: &Edit) -> String {
    let mut t = text.to_string();
    match e {
        Edit::Delete(a, n) => {
            let a = boundary(&t, *a);
            let b = boundary(&t, (a + n).min(t.len()));
            t.replace_range(a..b.max(a), "");
        }
        Edit::Insert(a, s) => {
            let a = boundary(&t, *a);
            t.insert_str(a, s);
        }
        Edit::Replace(a, n, s) => {
            let a = boundary(&t, *a);
            let b = boundary(&t, (a + n).min(t.len()));
            t.replace_range(a..b.max(a), s);
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        compile_safely(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_edits_of_examples_never_panic(
        which in 0..EXAMPLES.len(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut text = example_source(EXAMPLES[which]);
        for e in &edits {
            text = apply(&text, e);
        }
        compile_safely(&text);
    }
}

#[test]
fn truncated_examples_never_panic() {
    for name in EXAMPLES {
        let src = example_source(name);
        // Every 5th cut point keeps the test fast while crossing every kind of token.
        for cut in (0..src.len()).step_by(5) {
            compile_safely(&src[..boundary(&src, cut)]);
        }
    }
}
