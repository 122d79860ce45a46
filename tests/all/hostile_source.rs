//! Hostile `.arch` sources and source paths, through the binary under time and memory limits
//! (`common::limited`): deep nesting, exponential-looking grammar, elaboration that would grow
//! without bound, huge names, and paths that are not regular files. Each must end in a clear
//! error with a non-zero exit, never a signal, a hang or a panic.

use std::path::Path;

use crate::common::{archc_limited, scratch_dir};

/// `model m { input x: f32[4] ... output y = BODY }` with `defs` before the output.
fn model(defs: &str, body: &str) -> String {
    format!("model m {{\n  input x: f32[batch, 4]\n{defs}\n  output y = {body}\n}}\n")
}

/// Writes `text` to `name` in `dir` and returns the file name.
fn put(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).expect("scratch is writable");
    name.to_string()
}

/// Every command that compiles a source ends in `code` with each of `needles` in its error.
fn every_command(dir: &Path, file: &str, code: i32, needles: &[&str]) {
    for args in [
        vec!["check", file],
        vec!["dump", "--stage", "ast", file],
        vec!["dump", "--stage", "fused", file],
        vec!["run", file],
        vec!["build", file, "-o", "bin"],
    ] {
        archc_limited(&args, dir).expect(code, needles);
    }
}

#[test]
fn deep_nesting_is_a_located_error_not_a_stack_overflow() {
    let d = scratch_dir("deep-nesting");
    let calls = format!("{}x{}", "exp(".repeat(2600), ")".repeat(2600));
    let ifs = format!(
        "model m {{\n  input x: f32[batch, 4]\n  y = x\n  {}y = x{}\n  output z = y\n}}\n",
        "if true { ".repeat(2900),
        " }".repeat(2900)
    );
    let cases = [
        (
            "parens.arch",
            model("", &format!("{}x{}", "(".repeat(3600), ")".repeat(3600))),
        ),
        ("neg.arch", model("", &format!("{}x", "-".repeat(10_000)))),
        (
            "not.arch",
            model("", &format!("{}x", "not ".repeat(10_000))),
        ),
        ("plus.arch", model("", &vec!["x"; 12_700].join(" + "))),
        (
            "index.arch",
            model("  l = [1]", &format!("x * l{}", "[0]".repeat(5000))),
        ),
        ("calls.arch", model("", &calls)),
        ("ifs.arch", ifs),
    ];
    for (name, text) in cases {
        let f = put(&d, name, &text);
        every_command(&d, &f, 1, &["E0003", &format!("{name}:")]);
    }
}

#[test]
fn nested_brackets_parse_in_linear_time() {
    let d = scratch_dir("nested-brackets");
    // Unclosed: the parser must fail without trying every split of the nesting.
    let open = put(
        &d,
        "open.arch",
        &model(&format!("  l = {}1", "[".repeat(100)), "x"),
    );
    archc_limited(&["check", &open], &d).expect(1, &["E0001", "open.arch:4:"]);
    // Closed and deep but within the limit: it parses.
    let deep = put(
        &d,
        "deep.arch",
        &model(
            &format!("  l = {}1{}", "[".repeat(100), "]".repeat(100)),
            "x",
        ),
    );
    archc_limited(&["check", &deep], &d).expect(0, &[]);
}

#[test]
fn elaboration_has_a_budget() {
    let d = scratch_dir("budget");
    let doubling: String = (1..=40)
        .map(|i| format!("a{i} = a{} + a{}", i - 1, i - 1))
        .collect::<Vec<_>>()
        .join(", ");
    let lists = format!(
        "model m {{\n  config {{ a0 = range(65536), {doubling} }}\n  input x: f32[batch, 4]\n  output y = x\n}}\n"
    );
    let comprehension = model("  l = [range(65536) for i in range(65536)]", "x");
    let stacks = model(
        "  block b0(x) { return x * 2.0 }\n  block b1(x) { return stack(x, 1000, b0) }\n  block b2(x) { return stack(x, 1000, b1) }\n  block b3(x) { return stack(x, 1000, b2) }",
        "b3(x)",
    );
    let calls: String = (1..=48)
        .map(|i| format!("  block b{i}(x) {{ return b{}(b{}(x)) }}\n", i - 1, i - 1))
        .collect();
    let calls = model(
        &format!("  block b0(x) {{ return x + 1.0 }}\n{calls}"),
        "b48(x)",
    );
    for (name, text) in [
        ("lists.arch", lists),
        ("comprehension.arch", comprehension),
        ("stacks.arch", stacks),
        ("calls.arch", calls),
    ] {
        let f = put(&d, name, &text);
        archc_limited(&["check", &f], &d).expect(1, &["E0207", "--max-nodes"]);
    }
    // The limit is the user's to raise or lower.
    let small = put(&d, "small.arch", &model("", "x + x + x"));
    archc_limited(&["--max-nodes", "2", "check", &small], &d).expect(1, &["E0207"]);
    archc_limited(&["check", &small], &d).expect(0, &[]);
}

#[test]
fn did_you_mean_on_huge_names_is_bounded() {
    let d = scratch_dir("huge-names");
    let (a, b) = ("a".repeat(50_000), "b".repeat(50_000));
    let f = put(&d, "names.arch", &model(&format!("  {a} = x"), &b));
    archc_limited(&["check", &f], &d).expect(1, &["E0101"]);
}

#[test]
fn source_paths_must_be_regular_files_of_sensible_size() {
    let d = scratch_dir("source-paths");
    for dev in ["/dev/urandom", "/dev/zero"] {
        archc_limited(&["check", dev], &d).expect(2, &["is a device"]);
    }
    archc_limited(&["check", "."], &d).expect(2, &["is a directory"]);
    let fifo = d.join("fifo.arch");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo works");
    archc_limited(&["check", "fifo.arch"], &d).expect(2, &["is a FIFO"]);
    let big = put(&d, "big.arch", &format!("# {}\n", "x".repeat(5 << 20)));
    archc_limited(&["check", &big], &d).expect(2, &["larger than"]);
    archc_limited(&["check", "missing.arch"], &d).expect(2, &["cannot read `missing.arch`"]);
}
