//! Every class of bad input gets a located error: `error[CODE]`, `--> file:line:col`, the
//! source line with a caret, and exit status 1. Usage errors exit 2.
//!
//! In each case `$` marks where the caret must point; it is removed before compiling.

use crate::common;

use common::archc;

/// (code, source with `$` at the expected location, a fragment of the message)
const CASES: &[(&str, &str, &str)] = &[
    ("E0001", "model m {\n  x = $)\n}\n", "syntax error"),
    ("E0001", "model m {\n  input x: f32[2]\n  output y = x +\n$", "found end of file"),
    ("E0002", "model m {\n  config { a = $99999999999999999999 }\n}\n", "does not fit"),
    ("E0101", "model m {\n  input x: f32[2]\n  output y = x + $wieght\n}\n", "unknown name `wieght`"),
    ("E0102", "model m {\n  input x: f32[2, 3]\n  output y = $lienar(x, 4)\n}\n", "did you mean `linear`"),
    ("E0103", "model m {\n  input x: f32[2, 3]\n  output y = linear(x, 4, true, $5)\n}\n", "positional argument"),
    ("E0104", "model m {\n  input x: f32[2, 3, 8]\n  output y = attention(x, 2, $haeds = 3)\n}\n", "no argument named `haeds`"),
    ("E0105", "model m {\n  input x: f32[2, 3]\n  output y = $linear(x)\n}\n", "needs the argument `features`"),
    ("E0106", "model m {\n  input x: f32[2, 3]\n  output y = linear(x, 4, $features = 4)\n}\n", "given twice"),
    ("E0107", "model m {\n  config { a = 1, $a = 2 }\n  input x: f32[a]\n  output y = x\n}\n", "defined twice"),
    ("E0107", "model m {\n  input x: f32[2, 3]\n  block two(x) {\n    param w: [3]\n    param $w: [3]\n    return x * w\n  }\n  output y = two(x)\n}\n", "declared twice"),
    ("E0108", "model m {\n  input x: f32[2]\n  block loop(x) {\n    return $loop(x)\n  }\n  output y = loop(x)\n}\n", "recursive"),
    ("E0109", "model m {\n  input x: f32[2]\n  block $nothing(x) {\n    y = x\n  }\n  output y = nothing(x)\n}\n", "without `return`"),
    ("E0110", "model $m {\n  input x: f32[2]\n  y = x\n}\n", "has no `output`"),
    ("E0111", "model m {\n  input x: f32[2, $2.5]\n  output y = x\n}\n", "integer or a symbol"),
    ("E0112", "model m {\n  input x: f32[2]\n  return $x\n}\n", "belongs in a block"),
    ("E0201", "model m {\n  input a: f32[batch, 4]\n  input b: f32[batch, 5]\n  output y = $a + b\n}\n", "do not broadcast"),
    ("E0202", "model m {\n  input a: f32[2, 4]\n  input b: f32[5, 3]\n  output y = $matmul(a, b)\n}\n", "inner dims 4 and 5 differ"),
    ("E0203", "model m {\n  input a: f32[4]\n  input b: i32[4]\n  output y = $a * b\n}\n", "one dtype"),
    ("E0204", "model m {\n  input x: f32[$0, 4]\n  output y = x\n}\n", "must be positive"),
    ("E0205", "model m {\n  input x: f32[2, 4]\n  output y = sum(x, $5)\n}\n", "out of range"),
    ("E0206", "model m {\n  input x: f32[2, 6]\n  output y = $reshape(x, [5, 2])\n}\n", "element counts differ"),
    ("E0301", "model m {\n  input x: f32[2, 4]\n  block id(x) {\n    return x\n  }\n  output y = stack(x, 4, pattern = $\"AB\", A = id)\n}\n", "letter `B`"),
    ("E0302", "model m {\n  input x: f32[2, 4]\n  block id(x) {\n    return x\n  }\n  output y = stack(x, 5, pattern = $\"AA\", A = id)\n}\n", "does not divide 5"),
    ("E0303", "model m {\n  input x: f32[2, 4]\n  block id(x) {\n    return x\n  }\n  output y = stack(x, $0, id)\n}\n", "1 to 4096 layers"),
    ("E0304", "model m {\n  input x: f32[2, 4]\n  block id(x) {\n    return x\n  }\n  shared t = ema($id, 0.99) @target\n  output y = t(x)\n}\n", "`shared` block instance"),
    ("E0401", "model m {\n  config { a = 4, b = 0, c = a / $b }\n  input x: f32[a]\n  output y = x\n}\n", "division by zero"),
    ("E0402", "model m {\n  input x: f32[2]\n  a, b = $[x, x, x]\n  output y = a\n}\n", "cannot unpack"),
    ("E0403", "model m {\n  input x: f32[batch, 4]\n  block w(x) {\n    param p: [$x.shape[0]]\n    return x\n  }\n  output y = w(x)\n}\n", "constant dims"),
    ("E0405", "model m {\n  config { h = 4 }\n  input x: f32[h]\n  $assert(h % 3 == 0, \"h must be a multiple of 3\")\n  output y = x\n}\n", "h must be a multiple of 3"),
    ("E0107", "model m {\n  config { $sum = 3 }\n  input x: f32[sum]\n  output y = x\n}\n", "would hide the built-in"),
    ("E0107", "model m {\n  input x: f32[2, 3]\n  block two(x) {\n    a = linear(x, 3)\n    return $linear(a, 3)\n  }\n  shared t = two @t\n  output y = t(x)\n}\n", "declared twice"),
    ("E0303", "model m {\n  input x: f32[2, 4]\n  block id(x, k) {\n    return x\n  }\n  output y = stack(x, 4, id, k = $at([1, 9], 1, otherwise = 0))\n}\n", "outside the stack's 0..4"),
    ("E0304", "model m {\n  input x: f32[2, 4]\n  block enc(x) {\n    param $w: [4]\n    return x * w\n  }\n  shared online = enc @online\n  shared target = ema(online, 0.9) @target\n  output y = target(x)\n}\n", "never declares"),
    ("E0404", "model m {\n  input x: f32[2]\n  if $1 {\n    y = x\n  }\n  output z = x\n}\n", "compile-time bool"),
    ("E0111", "model m {\n  input x: f32[2, 4]\n  block id(x, k) {\n    return x\n  }\n  output y = stack(x, 4, id, k = every(2, then = 1, otherwise = $none))\n}\n", "argument `otherwise` of `every` is `none`, but `every` needs a value for it"),
    ("E0111", "model m {\n  config { d = 10 }\n  output y = iota($d / 4)\n}\n", "round it to an integer with `floor(...)` or `ceil(...)`"),
    ("E0304", "model m {\n  input x: f32[2, 4]\n  block enc(x) {\n    return linear(x, 4)\n  }\n  shared online = enc @online\n  shared target = ema(online, 0.9, end = $1.5) @target\n  output y = online(x) + target(x)\n}\n", "float in (0, 1]"),
    ("E0205", "model m {\n  input x: f32[2, n]\n  output y = $svdvals(x)\n}\n", "constant number of columns"),
    ("E0305", "model m {\n  input x: f32[2, 4]\n  output loss = sum(linear(x, 1), [0, 1])\n  train {\n    $optimiser = adamw(),\n  }\n}\n", "did you mean `optimizer`?"),
    ("E0305", "model m {\n  input x: f32[2, 4]\n  output loss = sum(linear(x, 1), [0, 1])\n  train { optimizer = $adam(lr = 1e-3) }\n}\n", "one of: adamw, sgd"),
    ("E0305", "model m {\n  input x: f32[2, 4]\n  output loss = sum(linear(x, 1), [0, 1])\n  train { optimizer = sgd(lr = $-0.5) }\n}\n", "`lr` must be > 0"),
    ("E0305", "model m {\n  input x: f32[2, 4]\n  output loss = sum(linear(x, 1), [0, 1])\n  train { groups = [group(\"*bias\"), $group(\"encoder.*\", frozen = true)] }\n}\n", "holds no trained weight"),
    ("E0305", "model m {\n  input x: f32[2, 4]\n  output loss = sum(linear(x, 1), [0, 1])\n  train { loss = $loss * 2.0 }\n}\n", "already declares"),
    ("E0101", "model m {\n  input x: f32[2, 4]\n  output y = linear(x, 1)\n  train { loss = sum(y, [0, 1]) + $missing }\n}\n", "unknown name"),
    ("E0305", "model m {\n  input x: f32[2, 4]\n  output y = linear(x, 1)\n  train { loss = $argmax(y, 0) }\n}\n", "a loss is a float tensor"),
    ("E0107", "model m {\n  input x: f32[2, 4]\n  output loss = sum(linear(x, 1), [0, 1])\n  train { clip = 1.0 }\n  $train { clip = 2.0 }\n}\n", "second `train` section"),
    ("E0201", "model m {\n  input x: f32[batch, seq, 4]\n  input i: i32[3]\n  output y = $gather(x, i, 1)\n}\n", "first 1 dims broadcast with [batch] (batch dims), followed by the positions; found indices [3]. For the same positions in every batch row, reshape the indices to [1, 3]"),
];

fn line_col(marked: &str) -> (String, String) {
    let at = marked.find('$').expect("case has a marker");
    let before = &marked[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (marked.replacen('$', "", 1), format!("{line}:{col}"))
}

#[test]
fn each_error_class_is_located() {
    let dir = std::env::temp_dir().join(format!("archc-diag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut codes = std::collections::BTreeSet::new();
    for (i, (code, marked, fragment)) in CASES.iter().enumerate() {
        let (src, loc) = line_col(marked);
        let path = dir.join(format!("case{i}.arch"));
        std::fs::write(&path, &src).unwrap();
        let p = path.to_str().unwrap();
        let (status, stdout, stderr) = archc(&["check", p]);
        let ctx = format!("case {i} ({code}):\n{src}\nstderr:\n{stderr}");
        assert_eq!(status, 1, "{ctx}");
        assert!(stdout.is_empty(), "{ctx}");
        assert!(stderr.contains(&format!("error[{code}]")), "{ctx}");
        // The error points at the user's text, or (inside a prelude block) names the user's
        // call that led there.
        let here = stderr.contains(&format!("--> {p}:{loc}"))
            || stderr.contains(&format!("called at {p}:{loc}"));
        assert!(here, "expected {loc}; {ctx}");
        assert!(stderr.contains(fragment), "expected `{fragment}`; {ctx}");
        let caret = stderr
            .lines()
            .find(|l| l.trim_start().starts_with('|') && l.contains('^'));
        assert!(caret.is_some(), "no caret line; {ctx}");
        codes.insert(*code);
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        codes.len() >= 15,
        "only {} distinct error classes",
        codes.len()
    );
}

#[test]
fn caret_sits_under_the_offending_text() {
    let dir = std::env::temp_dir().join(format!("archc-caret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.arch");
    std::fs::write(
        &path,
        "model m {\n  input weight: f32[4]\n  output y = weight + wieght\n}\n",
    )
    .unwrap();
    let (_, _, stderr) = archc(&["check", path.to_str().unwrap()]);
    let lines: Vec<&str> = stderr.lines().collect();
    let src = lines
        .iter()
        .position(|l| l.contains("output y = weight + wieght"))
        .expect("source line");
    let (code_line, caret_line) = (lines[src], lines[src + 1]);
    let col = code_line.rfind("wieght").unwrap();
    assert_eq!(&caret_line[col..col + 6], "^^^^^^", "{stderr}");
    assert!(stderr.contains("did you mean"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_inside_prelude_blocks_name_the_call_chain() {
    let dir = std::env::temp_dir().join(format!("archc-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gqa.arch");
    // 4 heads over 3 key/value heads cannot group.
    std::fs::write(
        &path,
        "model m {\n  input x: f32[1, 5, 24]\n  output y = attention(x, 4, 3) @attn\n}\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (status, _, stderr) = archc(&["check", p]);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("error[E0405]: the query heads must be a multiple of the key/value heads"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--> compiler/prelude/attention.arch:"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("in block `attention`, called at {p}:3:14")),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn usage_errors_exit_2() {
    let (status, _, stderr) = archc(&["check", "no/such/file.arch"]);
    assert_eq!(status, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read `no/such/file.arch`"),
        "{stderr}"
    );
    let (status, _, _) = archc(&["dump", "--stage", "nonsense", "examples/llama.arch"]);
    assert_eq!(status, 2);
    let (status, _, _) = archc(&["frobnicate"]);
    assert_eq!(status, 2);
}
