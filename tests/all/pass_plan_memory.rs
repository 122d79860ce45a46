//! `plan_memory`: buffers whose lifetimes do not overlap share arena memory. The snapshot shows
//! a small model's plan without and with the pass; proptests check that sharing memory never
//! changes a result (bit for bit, on random programs) and that the layout never gives two
//! buffers that are live at once overlapping bytes.

use crate::common;

use std::collections::HashMap;

use archc_compiler::passes::{lower_optimized, PassOptions};
use archc_runtime::{layout, print_plan, Buffer, DType, Dim, Storage};
use common::{compile, native_random, program_inputs, programs::programs};
use proptest::prelude::*;

const INPUT: &str = "model m {
  input x: f32[batch, 8]
  param w1: [8, 32]
  param w2: [32, 32]
  param w3: [32, 8]
  h = tanh(matmul(x, w1))
  h = tanh(matmul(h, w2))                # h of the first line is dead here
  h = tanh(matmul(h, w2)) * 2.0
  output y = matmul(h, w3)
}
";

#[test]
fn plan_memory_before_after() {
    let g = compile("m.arch", INPUT).unwrap_or_else(|(_, r)| panic!("{r}"));
    let dims = HashMap::from([("batch".to_string(), 4)]);
    let off = PassOptions::all().disable("plan_memory").unwrap();
    let before = print_plan(&lower_optimized(&g, &off).unwrap().plan, &dims);
    let after = print_plan(
        &lower_optimized(&g, &PassOptions::all()).unwrap().plan,
        &dims,
    );
    let bytes = |p: &str| -> u64 { p.lines().next().unwrap()[13..].parse().unwrap() };
    assert!(bytes(&after) < bytes(&before), "{after}");
    insta::assert_snapshot!(format!(
        "{INPUT}\n--- without plan_memory ---\n{before}\n--- with plan_memory ---\n{after}"
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn shared_memory_changes_no_result(p in programs(4)) {
        let g = compile("p.arch", &p.source).unwrap();
        let inputs = program_inputs(p.batch, p.seq, 1);
        let off = PassOptions::all().disable("plan_memory").unwrap();
        let separate = native_random(&g, &off, &inputs);
        let shared = native_random(&g, &PassOptions::all(), &inputs);
        prop_assert_eq!(separate, shared);
    }

    #[test]
    fn buffers_live_at_once_never_overlap(
        spans in prop::collection::vec((0usize..20, 0usize..6, 1i64..50), 1..30),
    ) {
        let buffers: Vec<Buffer> = spans
            .iter()
            .enumerate()
            .map(|(i, &(first, len, n))| Buffer {
                name: format!("b{i}"),
                dtype: DType::F32,
                shape: vec![Dim::constant(n)],
                storage: Storage::Arena,
                live: Some((first, first + len)),
                blocks: None,
            })
            .collect();
        let (offsets, size) = layout(&buffers, &HashMap::new());
        for (i, a) in buffers.iter().enumerate() {
            let (la, sa) = (a.live.unwrap(), offsets[i].unwrap());
            let ea = sa + 4 * a.shape[0].as_const().unwrap() as usize;
            prop_assert!(ea <= size);
            for (j, b) in buffers.iter().enumerate().skip(i + 1) {
                let (lb, sb) = (b.live.unwrap(), offsets[j].unwrap());
                let eb = sb + 4 * b.shape[0].as_const().unwrap() as usize;
                let in_time = la.0 <= lb.1 && lb.0 <= la.1;
                prop_assert!(!in_time || ea <= sb || eb <= sa, "b{i} and b{j} overlap");
            }
        }
    }
}

/// A plan whose buffers grow with every dim holds, in an arena laid out for some dims, the
/// buffers of any dims no larger (what the executor relies on to lay a generation step's arena
/// out only every so many steps); a buffer that shrinks as a dim grows (`seq - 1`) makes the
/// plan say so.
#[test]
fn a_layout_for_larger_dims_holds_smaller_ones_when_sizes_grow() {
    let src = "model m {
  input x: f32[batch, seq, 8]
  param w: [8, 8]
  output y = tanh(matmul(tanh(x), w)) + x
}
";
    let g = compile("m.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let plan = lower_optimized(&g, &PassOptions::all()).unwrap().plan;
    assert!(plan.sizes_grow());
    let dims = |b: i64, s: i64| HashMap::from([("batch".to_string(), b), ("seq".to_string(), s)]);
    let big = plan.layout(&dims(2, 40));
    for (b, s) in [(1, 1), (2, 17), (2, 40)] {
        let small = plan.layout(&dims(b, s));
        assert!(small.bytes <= big.bytes);
        for (i, buffer) in plan.buffers.iter().enumerate() {
            let (Some(at), Some(_)) = (big.top[i], small.top[i]) else {
                continue;
            };
            let n = archc_runtime::numel(buffer, &dims(b, s)) * 4;
            assert!(at + n <= big.bytes, "buffer {i} fits the larger arena");
        }
    }
    let shrinking = "model m {
  input x: f32[seq, 8]
  output y = tanh(slice(x, 0, 1))
}
";
    let g = compile("m.arch", shrinking).unwrap_or_else(|(_, r)| panic!("{r}"));
    let plan = lower_optimized(&g, &PassOptions::all()).unwrap().plan;
    assert!(!plan.sizes_grow());
}
