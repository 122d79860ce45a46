//! Lowering: Graph IR → Kernel IR kernels plus the Plan that runs them.
//!
//! Every compute node becomes one kernel from a template (elementwise, layout, contraction);
//! reshapes become aliases; inputs and weights become bound buffers. Fusion passes run before
//! this and hand it fewer, bigger nodes.

mod attention;
mod body;
mod contract;
mod elementwise;
mod index;
mod layout;
mod region;
mod scan;
mod ssd;

use archc_kernels::ir::{Elem, Kernel, Param, Stmt, Ty};
use archc_runtime::{Binding, Buffer, DType, Plan, Step, Storage};

use crate::graph::{Graph, Op, RegionKind};

/// A kernel body and the messages of its checks (check code i is message i − 1).
pub struct Template {
    body: Vec<Stmt>,
    checks: Vec<String>,
    locals: Vec<archc_kernels::ir::Local>,
}

impl Template {
    /// A kernel body without locals.
    fn new(body: Vec<Stmt>, checks: Vec<String>) -> Template {
        Template {
            body,
            checks,
            locals: Vec::new(),
        }
    }
}

/// The compiled form of a graph: kernels and the plan that launches them.
pub struct Lowered {
    /// The plan (buffers, bindings, steps).
    pub plan: Plan,
    /// One kernel per step, in `plan.kernels` order.
    pub kernels: Vec<Kernel>,
}

/// The storage element of a dtype.
pub fn elem(d: DType) -> Elem {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => Elem::F32,
        DType::I32 | DType::I64 => Elem::I64,
        DType::Bool => Elem::Bool,
    }
}

/// The scalar type values of a dtype have in kernels.
pub fn ty(d: DType) -> Ty {
    elem(d).ty()
}

fn op_name(op: &Op) -> String {
    if let Op::Fused(r) = op {
        return r.kind.name().to_string();
    }
    let s = op.to_string();
    let word: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    word
}

/// Lowers a graph.
pub fn lower(g: &Graph) -> Lowered {
    let mut plan = Plan {
        model: g.name.clone(),
        symbols: g.symbols.clone(),
        buffers: Vec::new(),
        inputs: Vec::new(),
        weights: Vec::new(),
        outputs: Vec::new(),
        kernels: Vec::new(),
        steps: Vec::new(),
        checks: Vec::new(),
        index_bounds: Default::default(),
        ema_sources: Default::default(),
    };
    for (name, (_, kind)) in &g.params {
        if let crate::graph::ParamKind::Ema { online, .. } = kind {
            plan.ema_sources.insert(name.clone(), online.clone());
        }
    }
    for name in g.inputs.keys() {
        if let Some(b) = index_bound(g, name) {
            plan.index_bounds.insert(name.clone(), b);
        }
    }
    let mut kernels = Vec::new();
    let mut buffer_of = vec![usize::MAX; g.dag.node_count()];
    for n in g.dag.node_indices() {
        let node = &g.dag[n];
        let operands = g.operands(n);
        let storage = match &node.op {
            Op::Param(_) => Storage::Weight,
            Op::Reshape => Storage::Alias(plan.root(buffer_of[operands[0].index()])),
            _ => Storage::Arena,
        };
        let buffer = plan.buffers.len();
        plan.buffers.push(Buffer {
            name: format!("%{}", n.index()),
            dtype: node.ty.dtype,
            shape: node.ty.shape.clone(),
            storage,
        });
        buffer_of[n.index()] = buffer;
        match &node.op {
            Op::Input(name) => plan.inputs.push(Binding {
                name: name.clone(),
                buffer,
            }),
            Op::Param(name) => plan.weights.push(Binding {
                name: name.clone(),
                buffer,
            }),
            Op::Reshape => {}
            op => {
                let ins: Vec<_> = operands.iter().map(|o| g.ty(*o)).collect();
                let mut cx = index::Ctx::new(&g.symbols);
                let t = match op {
                    Op::Fused(r) => match &r.kind {
                        RegionKind::Attention(a) => attention::lower(&mut cx, r, a, &node.ty, &ins),
                        RegionKind::Scan(s) => match &s.ssd {
                            Some(d) => ssd::lower(&mut cx, r, s, d, &node.ty, ins.len()),
                            None => scan::lower(&mut cx, r, s, &node.ty, ins.len()),
                        },
                        _ => region::lower(&mut cx, r, &node.ty, &ins),
                    },
                    _ => elementwise::lower(&mut cx, op, &node.ty, &ins)
                        .or_else(|| layout::lower(&mut cx, op, &node.ty, &ins))
                        .or_else(|| contract::lower(&mut cx, op, &node.ty, &ins))
                        .expect("every compute op has a template"),
                };
                // Check codes are global to the plan, so the runtime can name the failure.
                let base = plan.checks.len() as u32;
                let body = renumber_checks(t.body, base);
                plan.checks.extend(t.checks);
                let name = format!("k{}_{}", n.index(), op_name(op));
                let mut params = vec![Param {
                    name: format!("%{}", n.index()),
                    elem: elem(node.ty.dtype),
                    output: true,
                }];
                params.extend(operands.iter().map(|o| Param {
                    name: format!("%{}", o.index()),
                    elem: elem(g.ty(*o).dtype),
                    output: false,
                }));
                params.push(Param {
                    name: "status".into(),
                    elem: Elem::I64,
                    output: true,
                });
                let mut args = vec![buffer];
                args.extend(operands.iter().map(|o| buffer_of[o.index()]));
                plan.steps.push(Step {
                    kernel: kernels.len(),
                    args,
                });
                plan.kernels.push(name.clone());
                kernels.push(Kernel {
                    name,
                    params,
                    locals: t.locals,
                    body,
                });
            }
        }
    }
    for (name, n) in &g.outputs {
        plan.outputs.push(Binding {
            name: name.clone(),
            buffer: buffer_of[n.index()],
        });
    }
    Lowered { plan, kernels }
}

/// The size of the table an integer input indexes, if it feeds a gather (token ids, patch
/// indices), so that random ids stay in range.
fn index_bound(g: &Graph, input: &str) -> Option<u64> {
    let mut frontier = vec![*g.inputs.get(input)?];
    let mut bound: Option<u64> = None;
    while let Some(n) = frontier.pop() {
        for user in g.users(n) {
            match &g.dag[user].op {
                Op::Cast | Op::Reshape => frontier.push(user),
                Op::Gather { axis } if g.operands(user).get(1) == Some(&n) => {
                    let x = g.operands(user)[0];
                    if let Some(size) = g.ty(x).shape[*axis].as_const() {
                        bound = Some(bound.map_or(size as u64, |b| b.min(size as u64)));
                    }
                }
                _ => {}
            }
        }
    }
    bound
}

fn renumber_checks(body: Vec<Stmt>, base: u32) -> Vec<Stmt> {
    body.into_iter()
        .map(|s| match s {
            Stmt::Check(c, code) => Stmt::Check(c, code + base),
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => Stmt::For {
                var,
                extent,
                kind,
                body: renumber_checks(body, base),
            },
            s => s,
        })
        .collect()
}
