//! `fuse_scan`: a selective scan with its discretisation and read-out becomes one region. The
//! snapshot is a Mamba-1 mixer's core, written out; proptests check that the rewrite keeps the
//! interpreter's outputs bit for bit on random programs (Mamba and Mamba-2 layers among them),
//! and that the fused kernel equals the sequential recurrence on random shapes: with and
//! without a read-out, state sizes that are not multiples of 4, long sequences.

use crate::common;

use archc_compiler::graph::print_graph;
use archc_compiler::passes::{canonicalize, fuse_scan, PassOptions};
use common::{before_after, check_fused, check_native, check_pass, compile, programs::programs};
use proptest::prelude::*;

/// A selective scan over `x: [batch, seq, c]` with state size `n`; with `readout`, the output is
/// `Σₙ h·C + D·x` gated by `silu(z)`, otherwise the state itself.
fn selective_scan(c: usize, n: usize, readout: bool) -> String {
    let out = if readout {
        "  y = sum(h * unsqueeze(C, -2), -1) + x * D\n  output y = y * silu(z)\n"
    } else {
        "  output h = h\n"
    };
    format!(
        "model selective_scan {{
  input x: f32[batch, seq, {c}]
  input z: f32[batch, seq, {c}]
  input delta: f32[batch, seq, {c}]
  input B: f32[batch, seq, {n}]
  input C: f32[batch, seq, {n}]
  param A_log: [{c}, {n}]
  param D: [{c}]
  dt = softplus(delta)                               # Δ, one per channel and step
  a = exp(unsqueeze(dt, -1) * -exp(A_log))           # exp(Δ·A): [batch, seq, c, n]
  b = unsqueeze(dt * x, -1) * unsqueeze(B, -2)        # Δ·B·x:    [batch, seq, c, n]
  h = scan(a, b, 1)
{out}}}
"
    )
}

/// Mamba-2's scan: one decay per head, the input an outer product `Δx ⊗ B`, grouped B and C.
fn mamba2_scan(groups: usize, heads: usize, p: usize, n: usize) -> String {
    format!(
        "model ssd {{
  input x: f32[batch, seq, {groups}, {heads}, {p}]
  input delta: f32[batch, seq, {groups}, {heads}]
  input B: f32[batch, seq, {groups}, {n}]
  input C: f32[batch, seq, {groups}, {n}]
  param A_log: [{groups}, {heads}]
  param D: [{groups}, {heads}]
  b = x.shape[0]
  l = x.shape[1]
  dt = softplus(delta)
  decay = reshape(exp(dt * -exp(A_log)), [b, l, {groups}, {heads}, 1, 1])
  dtx = unsqueeze(dt, -1) * x
  h = scan(decay, unsqueeze(dtx, -1) * reshape(B, [b, l, {groups}, 1, 1, {n}]), 1)
  output y = sum(h * reshape(C, [b, l, {groups}, 1, 1, {n}]), -1) + x * unsqueeze(D, -1)
}}
"
    )
}

#[test]
fn fuse_scan_before_after() {
    let src = selective_scan(8, 4, true);
    let g = compile("scan.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let before = canonicalize::run(&g);
    let after = fuse_scan::run(&before);
    archc_compiler::verify::graph(&after).unwrap_or_else(|e| panic!("{e}"));
    let text = print_graph(&after);
    assert!(text.contains("fused.scan[scan="), "{text}");
    // No scan is left outside a region.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with('%') && l.contains("= scan[")),
        "{text}"
    );
    insta::assert_snapshot!(before_after(&src, &before, &after));
}

#[test]
fn mamba2_scan_takes_the_ssd_form() {
    let src = mamba2_scan(2, 2, 4, 8);
    let g = compile("ssd.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let before = canonicalize::run(&g);
    let after = fuse_scan::run(&before);
    archc_compiler::verify::graph(&after).unwrap_or_else(|e| panic!("{e}"));
    let text = print_graph(&after);
    assert!(text.contains("fused.ssd[scan="), "{text}");
    insta::assert_snapshot!(before_after(&src, &before, &after));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn fuse_scan_keeps_semantics(p in programs(3)) {
        check_pass(&[canonicalize::run], fuse_scan::run, &p);
    }

    #[test]
    fn programs_with_fused_scans_match_the_interpreter(p in programs(3)) {
        check_native(&PassOptions::all(), &p);
    }

    #[test]
    fn fused_scan_matches_the_sequential_recurrence(
        c in 1usize..10,
        n in prop_oneof![Just(1usize), Just(3), Just(4), Just(16)],
        readout in any::<bool>(),
        batch in 1usize..3,
        seq in prop_oneof![1usize..4, 100usize..300],
        seed in 0u64..1000,
    ) {
        // (A single channel with a single state is Mamba-2 shaped too: it may take the SSD form.)
        let src = selective_scan(c, n, readout);
        check_fused(&src, "[scan=%", batch, seq, seed, 1e-5);
    }

    #[test]
    fn chunked_ssd_matches_the_sequential_recurrence(
        groups in 1usize..3,
        heads in 1usize..3,
        p in prop_oneof![Just(1usize), Just(3), Just(4), Just(8), Just(16)],
        n in prop_oneof![Just(2usize), Just(5), Just(16)],
        batch in 1usize..3,
        seq in prop_oneof![1usize..4, 30usize..140],
        seed in 0u64..1000,
    ) {
        let src = mamba2_scan(groups, heads, p, n);
        check_fused(&src, "fused.ssd", batch, seq, seed, 1e-5);
    }
}
