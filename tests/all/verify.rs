//! The verifiers: for each IR, a well-formed input passes and a hand-broken one gives the
//! expected errors, written beside it.

use crate::common;

use archc_compiler::graph::{
    Graph, Ieee64, NodeIndex, Op, Region, RegionKind, TensorType, UnaryOp,
};
use archc_compiler::passes::{lower_optimized, PassOptions};
use archc_compiler::verify;
use archc_kernels::ir::build::{load, var};
use archc_kernels::ir::{Axis, Elem, Expr, Ieee32, Kernel, Local, Param, Scope, Stmt, Var};
use archc_runtime::{DType, Dim, Step};

fn f32s(shape: &[i64]) -> TensorType {
    TensorType::new(
        DType::F32,
        shape.iter().map(|&d| Dim::constant(d)).collect(),
    )
}

/// `x: f32[2, 3]`, `y: f32[3]`, `s = x + y` (declared as `sum_ty`), output `s`.
fn add_graph(sum_ty: TensorType) -> Graph {
    let mut g = Graph::default();
    let x = g.add(Op::Input("x".into()), f32s(&[2, 3]), "", &[]);
    let y = g.add(Op::Input("y".into()), f32s(&[3]), "", &[]);
    g.inputs.insert("x".into(), x);
    g.inputs.insert("y".into(), y);
    let s = g.add(
        Op::Binary(archc_compiler::graph::BinaryOp::Add),
        sum_ty,
        "blk",
        &[x, y],
    );
    g.dag[s].at = "m.arch:4:7".into();
    g.outputs.insert("s".into(), s);
    g
}

fn errors(r: Result<(), verify::VerifyError>) -> String {
    r.err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn graph_verifier() {
    assert_eq!(errors(verify::graph(&add_graph(f32s(&[2, 3])))), "");

    let mut g = add_graph(f32s(&[2, 4]));
    let c = g.add(Op::Const(Ieee64::new(1.0)), f32s(&[]), "", &[]);
    let x = g.inputs["x"];
    g.dag
        .add_edge(c, x, archc_compiler::graph::Edge { slot: 0 });
    g.add(
        Op::Reduce {
            op: archc_compiler::graph::ReduceOp::Sum,
            axes: vec![2],
            keepdim: false,
        },
        f32s(&[2]),
        "",
        &[c],
    );
    g.outputs.insert("gone".into(), NodeIndex::new(99));
    assert_eq!(
        errors(verify::graph(&g)),
        "graph: %0 ? (input `x`): an operand is not created before its user (a cycle or a bad order)
graph: %2 m.arch:4:7 (add in `blk`): its type is f32[2, 4], but its operands give f32[2, 3]
graph: %4 ? (reduce_sum): reduces axis 2 of a rank-0 value
graph: bindings: output `gone` is %99, but there are 5 nodes"
    );
}

/// `x: f32[4]` into a fused node of type `ty` whose body is `exp(in0)`.
fn fused_graph(kind: RegionKind, ty: TensorType) -> Graph {
    let mut body = Graph::default();
    let i = body.add(Op::Input("0".into()), f32s(&[4]), "", &[]);
    body.inputs.insert("0".into(), i);
    let e = body.add(Op::Unary(UnaryOp::Exp), f32s(&[4]), "", &[i]);
    body.outputs.insert("out".into(), e);
    let mut g = Graph::default();
    let x = g.add(Op::Input("x".into()), f32s(&[4]), "", &[]);
    g.inputs.insert("x".into(), x);
    let f = g.add(Op::Fused(Box::new(Region { kind, body })), ty, "", &[x]);
    g.outputs.insert("y".into(), f);
    g
}

#[test]
fn region_verifier() {
    let ok = fused_graph(RegionKind::Elementwise, f32s(&[4]));
    assert_eq!(errors(verify::graph(&ok)), "");

    let anchor = NodeIndex::new(1);
    let broken = fused_graph(RegionKind::Reduce { anchor }, f32s(&[5]));
    assert_eq!(
        errors(verify::graph(&broken)),
        "regions: %1 ? (fused.reduce): the body's output is f32[4], but the node is f32[5]
regions: %1 ? (fused.reduce): its anchor (a reduce) is %1, a `exp`"
    );
}

fn param(name: &str, elem: Elem, output: bool) -> Param {
    Param {
        name: name.into(),
        elem,
        output,
    }
}

/// `grid for v0 in 0..4 { body }` over `out: f32[4]`, `x: f32[4]`, a local of 2 f32.
fn kernel(body: Vec<Stmt>) -> Kernel {
    Kernel {
        name: "k0".into(),
        params: vec![
            param("out", Elem::F32, true),
            param("x", Elem::F32, false),
            param("status", Elem::I64, true),
        ],
        locals: vec![Local {
            name: "acc".into(),
            elem: Elem::F32,
            len: 2,
        }],
        shared: Vec::new(),
        body: vec![Stmt::For {
            var: Var(0),
            extent: Expr::Int(4),
            kind: Axis::Grid,
            body,
        }],
        occupancy: None,
    }
}

fn kernel_errors(k: &Kernel) -> String {
    let problems = archc_kernels::verify::verify_kernel(k, 0);
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.at, p.what))
        .collect();
    lines.join("\n")
}

#[test]
fn kernel_verifier() {
    let ok = kernel(vec![
        Stmt::Store(3, Expr::Int(1), load(1, var(Var(0)))),
        Stmt::Store(0, var(Var(0)), load(3, Expr::Int(1))),
    ]);
    assert_eq!(kernel_errors(&ok), "");

    let broken = kernel(vec![
        Stmt::Store(0, Expr::Int(0), load(1, var(Var(0)))),
        Stmt::Store(1, var(Var(0)), Expr::F32(Ieee32::new(0.0))),
        Stmt::Set(Var(1), var(Var(7))),
        Stmt::Store(0, var(Var(0)), Expr::Int(1)),
        Stmt::Store(3, Expr::Int(2), Expr::F32(Ieee32::new(0.0))),
        Stmt::VStore(0, var(Var(0)), Expr::F32(Ieee32::new(0.0)), 4),
        Stmt::Store(9, var(Var(0)), Expr::F32(Ieee32::new(0.0))),
        Stmt::Check(Expr::Int(1), 1),
    ]);
    assert_eq!(
        kernel_errors(&broken),
        "kernel k0: store to b0[0] in a Grid loop, at an index that does not depend on the loop's variable: threads would write one element
kernel k0: store to b1, a param not marked output
kernel k0: v7 is used before it is set
kernel k0: the value stored to b0 is I64, not F32
kernel k0: store at b3[2], outside array `acc` of 2 elements
kernel k0: the value stored to b0 is F32, not F32xN(4)
kernel k0: store to b9, but there are 3 params, 1 locals and 0 shared arrays
kernel k0: a check's condition is I64, not Bool"
    );
}

#[test]
fn kernel_verifier_knows_the_schedule_layer() {
    // A block's threads write a shared array, meet at a barrier, and read it back; an f16
    // output takes f32 values; 8-lane vectors are fine in a buffer of floats.
    let mut ok = kernel(vec![
        archc_kernels::ir::build::axis(
            Axis::Thread,
            Var(1),
            Expr::Int(2),
            vec![Stmt::Store(4, var(Var(1)), load(1, var(Var(0))))],
        ),
        Stmt::Barrier(Scope::Block),
        Stmt::Store(0, var(Var(0)), load(4, Expr::Int(1))),
        Stmt::Set(Var(2), Expr::VLoad(1, Box::new(Expr::Int(0)), 8)),
        Stmt::Set(Var(3), Expr::Lane(Box::new(var(Var(2))), 7)),
    ]);
    ok.params[0].elem = Elem::F16;
    ok.shared = vec![Local {
        name: "tile".into(),
        elem: Elem::F32,
        len: 2,
    }];
    assert_eq!(kernel_errors(&ok), "");

    let broken = kernel(vec![
        archc_kernels::ir::build::axis(
            Axis::Thread,
            Var(1),
            Expr::Int(2),
            vec![Stmt::Barrier(Scope::Warp)],
        ),
        Stmt::Set(
            Var(2),
            Expr::Splat(Box::new(Expr::F32(Ieee32::new(1.0))), 8),
        ),
        Stmt::Set(Var(3), Expr::Lane(Box::new(var(Var(2))), 8)),
        Stmt::VStore(0, var(Var(0)), var(Var(2)), 4),
    ]);
    assert_eq!(
        kernel_errors(&broken),
        "kernel k0: a Warp barrier inside a Thread loop: the threads would not all reach it
kernel k0: lane 8 of a 8-lane vector
kernel k0: the value stored to b0 is F32xN(8), not F32xN(4)"
    );
}

const MODEL: &str = "model m {
  input x: f32[batch, 8]
  param w: [8, 8]
  h = tanh(matmul(x, w))
  output y = matmul(h, w) + h
}
";

#[test]
fn plan_verifier() {
    let g = common::compile("m.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    let mut broken = lower_optimized(&g, &PassOptions::all().verified()).unwrap();
    assert_eq!(errors(verify::lowered(&broken)), "");
    let good = broken.plan.clone();

    // The steps swapped: the first reads what the second writes, outside lifetimes; and the
    // second then writes the weight.
    broken.plan.steps.reverse();
    let weight = broken.plan.weights[0].buffer;
    if let Step::Kernel { args, .. } = &mut broken.plan.steps[1] {
        args[0] = weight;
    }
    assert_eq!(
        errors(verify::lowered(&broken)),
        "plan: top level step 0 (m.arch:5:14 (fused.matmul)): argument 1 reads buffer 2 `%2` before it is written
plan: top level step 1 (m.arch:4:7 (fused.matmul)): writes buffer 1 `%1`, a weight
plan: top level step 0: uses buffer 4 `%3` outside its lifetime (steps 1..=2): its memory may be another buffer's
plan: top level step 1: uses buffer 0 `%0` outside its lifetime (steps 0..=0): its memory may be another buffer's"
    );

    // A step without its last argument.
    broken.plan = good;
    if let Step::Kernel { args, .. } = &mut broken.plan.steps[0] {
        args.pop();
    }
    assert_eq!(
        errors(verify::lowered(&broken)),
        "plan: top level step 0 (m.arch:4:7 (fused.matmul)): passes 2 buffers to `k2_matmul`, which takes 3 and the status word"
    );
}

#[test]
fn pipeline_names_the_pass() {
    // Every stage of every example verifies; the error names the stage that broke it.
    let g = common::compile("m.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    assert!(lower_optimized(&g, &PassOptions::none().verified()).is_ok());
    let mut bad = g.clone();
    let x = bad.inputs["x"];
    bad.dag[x].ty = f32s(&[3]);
    let e = lower_optimized(&bad, &PassOptions::all().verified())
        .err()
        .map(|e| e.to_string());
    let e = e.unwrap_or_default();
    assert!(
        e.starts_with("internal error: `elaboration` broke an invariant\ngraph: %"),
        "{e}"
    );
}
