//! Lowering one graph, the top level or a layer kind's body, into buffers and steps: one
//! kernel per compute node. At the top level, nodes computed from weights alone become
//! prepare steps (run once, after the weights load); in a body, the inputs and the output are
//! slots bound by each call.

use std::collections::{BTreeMap, HashMap, HashSet};

use archc_kernels::ir::{Elem, Kernel, Local, Param, Stmt};
use archc_kernels::target::Target;
use archc_runtime::quant::BlockFormat;
use archc_runtime::{root, Binding, Buffer, DType, Plan, Step, Storage};
use petgraph::graph::NodeIndex;

use super::index::Ctx;
use super::matmul::{group_readers, transposed_weight};
use super::pack::{self, Packing};
use super::schedule::Schedule;
use super::{
    attention, attention_grad, buffer_elem, contract, elementwise, layout, moe, region, scan,
    scan_grad, ssd, Template, Templates,
};
use crate::graph::{Dim, Graph, MoeInfo, Op, RegionKind, TensorType, UnaryOp, ROUTED};

/// One lowered graph.
#[derive(Default)]
pub struct Frame {
    /// Its buffers.
    pub buffers: Vec<Buffer>,
    /// Its steps.
    pub steps: Vec<Step>,
    /// Steps computing weight-only values (top level only).
    pub prepare: Vec<Step>,
    /// Input bindings (top level only).
    pub inputs: Vec<Binding>,
    /// Weight bindings (top level only).
    pub weights: Vec<Binding>,
    /// Output bindings.
    pub outputs: Vec<Binding>,
    /// In a body: the slots its matmuls read packed ahead, with the panels' width (each call
    /// passes them packed).
    pub packed_slots: Vec<(usize, i64)>,
    /// At the top level: the packed copy of each (weight buffer, panel width) made so far.
    packed: HashMap<(usize, i64), usize>,
}

fn op_name(op: &Op) -> String {
    if let Op::Fused(r) = op {
        return r.kind.name().to_string();
    }
    op.to_string()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The kernel templates for a compute op (see [`Templates`]).
fn template(cx: &mut Ctx, op: &Op, out: &TensorType, ins: &[&TensorType]) -> Templates {
    let one = match op {
        Op::Fused(r) => match &r.kind {
            RegionKind::Attention(a) => return attention::lower(cx, r, a, out, ins),
            RegionKind::AttentionGrad(a) => attention_grad::lower(cx, r, a, out, ins),
            RegionKind::ScanGrad(s) => scan_grad::lower(cx, r, s, out),
            RegionKind::Scan(s) => match &s.ssd {
                Some(d) => return ssd::lower(cx, r, s, d, out, ins.len()),
                None => scan::lower(cx, r, s, out, ins.len()),
            },
            _ => region::lower(cx, r, out, ins),
        },
        _ => elementwise::lower(cx, op, out, ins)
            .or_else(|| layout::lower(cx, op, out, ins))
            .or_else(|| contract::lower(cx, op, out, ins))
            .expect("every compute op has a template"),
    };
    vec![("", one)]
}

/// What makes two kernels the same code: element types of the buffers, locals, check
/// messages and body (names aside). Compared as structures, not as text.
type Code = (Vec<Elem>, [Vec<Local>; 2], Vec<String>, Vec<Stmt>);

/// The kernels of a plan. A kernel whose code equals one already made (a transpose of
/// another weight of the same shape, one more layer of an unrolled stack) is that kernel:
/// compiled once, launched on other buffers.
pub struct Kernels {
    /// The schedule constants the templates use.
    pub schedule: Schedule,
    /// The kernels, in `Plan::kernels` order.
    pub list: Vec<Kernel>,
    /// The code of each kernel (everything but names) → its index.
    by_code: HashMap<Code, usize>,
}

impl Kernels {
    /// No kernels yet, scheduled for `target` (its late [`Schedule`]).
    pub fn new(target: &Target) -> Kernels {
        Kernels {
            schedule: Schedule::for_target(target),
            list: Vec::new(),
            by_code: HashMap::new(),
        }
    }
}

/// Adds the kernels computing `op` from `operands` into `out` (buffers of frame `f`); returns
/// their steps, in order, which read the weights their matmuls take packed (see [`pack`])
/// packed. The parts of an op share its buffers, and its scratch buffer when one asks for it
/// (each part that uses it declares it).
fn kernel(
    plan: &mut Plan,
    kernels: &mut Kernels,
    name: String,
    (op, ty): (&Op, &TensorType),
    operands: &[(&TensorType, usize)],
    out: usize,
    (f, packing, transposed): (&mut Frame, &Packing, Option<usize>),
) -> Vec<Step> {
    let ins: Vec<&TensorType> = operands.iter().map(|o| o.0).collect();
    let mut args = vec![out];
    args.extend(operands.iter().map(|o| o.1));
    let mut cx = Ctx::new(&plan.symbols, &kernels.schedule);
    cx.packable = pack::packable(&f.buffers, &args[1..], packing);
    cx.blocks = (0..args.len())
        .filter(|&i| f.buffers[root(&f.buffers, args[i])].blocks.is_some())
        .collect();
    cx.packable.retain(|p| !cx.blocks.contains(p));
    cx.transposed = transposed.map(|o| (o + 1, buffer_elem(&f.buffers[args[o + 1]])));
    let parts = template(&mut cx, op, ty, &ins);
    if let Some(shape) = parts.iter().find_map(|(_, t)| t.scratch.as_ref()) {
        f.buffers.push(Buffer {
            name: format!("{}.scratch", f.buffers[out].name),
            dtype: archc_runtime::DType::F32,
            shape: shape.clone(),
            storage: Storage::Arena,
            live: None,
            blocks: None,
        });
        args.push(f.buffers.len() - 1);
    }
    let packed = cx.packed;
    let mut steps = Vec::new();
    for (suffix, t) in parts {
        let mut step = emit(
            plan,
            kernels,
            format!("{name}{suffix}"),
            t,
            &args,
            &f.buffers,
        );
        for &(param, nr) in &packed {
            read_packed(plan, kernels, f, (&mut step, param), nr);
        }
        steps.push(step);
    }
    steps
}

/// Has step argument `param` (a weight) read packed with `nr`-column panels: at the top level
/// a packed copy made by a prepare step (once per weight and width), in a body the slot
/// recorded for the calls to pass packed.
fn read_packed(
    plan: &mut Plan,
    kernels: &mut Kernels,
    f: &mut Frame,
    (step, param): (&mut Step, usize),
    nr: i64,
) {
    let Step::Kernel { args, .. } = step else {
        return;
    };
    let src = root(&f.buffers, args[param]);
    if let Storage::Slot(s) = f.buffers[src].storage {
        if !f.packed_slots.contains(&(s, nr)) {
            f.packed_slots.push((s, nr));
        }
        return;
    }
    args[param] = packed_weight(plan, kernels, f, src, nr);
}

/// The packed copy (`nr`-column panels) of top-level weight buffer `src`, made by a prepare
/// step the first time it is asked for.
fn packed_weight(
    plan: &mut Plan,
    kernels: &mut Kernels,
    f: &mut Frame,
    src: usize,
    nr: i64,
) -> usize {
    if let Some(&b) = f.packed.get(&(src, nr)) {
        return b;
    }
    let b = f.buffers.len();
    let from = f.buffers[src].clone();
    f.buffers.push(Buffer {
        name: format!("{}_packed{nr}", from.name),
        storage: Storage::Weight,
        live: None,
        blocks: None,
        ..from.clone()
    });
    let ty = TensorType {
        dtype: from.dtype,
        shape: from.shape.clone(),
    };
    let mut cx = Ctx::new(&plan.symbols, &kernels.schedule);
    let t = pack::lower(&mut cx, &ty, nr);
    let name = format!("pack{nr}_{}", from.name.trim_start_matches('%'));
    let step = emit(plan, kernels, name, t, &[b, src], &f.buffers);
    f.prepare.push(step);
    f.packed.insert((src, nr), b);
    b
}

/// Drops the prepare steps whose values nothing reads (a transposed weight whose matmuls read
/// the weight's blocks in place instead), last first, so their own sources go too.
fn prune_prepare(f: &mut Frame) {
    let root_of = |b: usize| root(&f.buffers, b);
    let mut read: HashSet<usize> = f
        .steps
        .iter()
        .flat_map(|s| s.args().to_vec())
        .chain(f.outputs.iter().map(|o| o.buffer))
        .map(root_of)
        .collect();
    let mut kept = Vec::new();
    for step in f.prepare.iter().rev() {
        let out = step.args().first().map(|&o| root_of(o));
        if out.is_some_and(|o| read.contains(&o)) {
            read.extend(step.args().iter().skip(1).map(|&b| root_of(b)));
            kept.push(step.clone());
        }
    }
    kept.reverse();
    f.prepare = kept;
}

/// Adds the kernel of template `t` run on buffers `args` (the first is its output), or finds
/// the same code made before; returns its step.
fn emit(
    plan: &mut Plan,
    kernels: &mut Kernels,
    name: String,
    t: Template,
    args: &[usize],
    names: &[Buffer],
) -> Step {
    let mut params: Vec<Param> = args
        .iter()
        .enumerate()
        .map(|(i, b)| Param {
            name: names[*b].name.clone(),
            elem: buffer_elem(&names[root(names, *b)]),
            // The output, and the scratch buffer the template asked for (passed last).
            output: i == 0 || (t.scratch.is_some() && i + 1 == args.len()),
        })
        .collect();
    let elems: Vec<Elem> = params.iter().map(|p| p.elem).collect();
    let arrays = [t.locals.clone(), t.shared.clone()];
    let code: Code = (elems, arrays, t.checks.clone(), t.body.clone());
    let scratch = t.scratch.is_some();
    let step = |kernel: usize, list: &[Kernel]| Step::Kernel {
        kernel,
        args: args.to_vec(),
        origin: String::new(),
        launch: super::launch::launch(&list[kernel]),
        scratch,
    };
    if let Some(&kernel) = kernels.by_code.get(&code) {
        return step(kernel, &kernels.list);
    }
    // Check codes are global to the plan, so the runtime can name the failure.
    let base = plan.checks.len() as u32;
    let body = renumber_checks(t.body, base);
    plan.checks.extend(t.checks);
    params.push(Param {
        name: "status".into(),
        elem: Elem::I64,
        output: true,
    });
    plan.kernels.push(name.clone());
    kernels.list.push(Kernel {
        name,
        params,
        locals: t.locals,
        shared: t.shared,
        body,
        occupancy: t.occupancy,
    });
    kernels.by_code.insert(code, kernels.list.len() - 1);
    step(kernels.list.len() - 1, &kernels.list)
}

/// Lowers `g`; `prefix` names a layer kind's kernels (None: the top level). At the top
/// level, the weights `blocks` names stay in their block format (unless a layer kind reads
/// them: its kernels are compiled once for every layer's weights).
pub fn lower(
    g: &Graph,
    prefix: Option<&str>,
    plan: &mut Plan,
    kernels: &mut Kernels,
    (packing, blocks): (&Packing, &BTreeMap<String, BlockFormat>),
) -> Frame {
    let body = prefix.is_some();
    let weight_only = if body {
        vec![false; g.dag.node_count()]
    } else {
        g.weight_only()
    };
    let mut f = Frame::default();
    let output = g.outputs.get("out").copied();
    let mut buffer_of = vec![usize::MAX; g.dag.node_count()];
    let mut grouped_copy = HashMap::new();
    for n in g.dag.node_indices() {
        let node = &g.dag[n];
        let operands = g.operands(n);
        let computed = !matches!(node.op, Op::Input(_) | Op::Param(_) | Op::Reshape);
        let storage = match &node.op {
            Op::Input(slot) if body => {
                Storage::Slot(1 + slot.parse::<usize>().expect("body inputs are numbered"))
            }
            Op::Param(_) => Storage::Weight,
            Op::Reshape => Storage::Alias(root(&f.buffers, buffer_of[operands[0].index()])),
            _ if body && computed && Some(n) == output => Storage::Slot(0),
            _ if weight_only[n.index()] && computed => Storage::Weight,
            _ => Storage::Arena,
        };
        let buffer = f.buffers.len();
        let quantized = match &node.op {
            Op::Param(name) if !body => blocks.get(name).filter(|_| {
                !g.users(n)
                    .iter()
                    .any(|u| matches!(g.dag[*u].op, Op::Call(_)))
            }),
            _ => None,
        };
        // Matmuls that can read the weight in groups of rows do; when other kernels read it
        // too (a tied embedding's gather), those matmuls read a grouped copy of their own.
        let readers = quantized.map_or(Vec::new(), |_| group_readers(g, n));
        let all = !readers.is_empty() && readers.len() == g.users(n).len();
        let quantized = quantized.map(|&q| if all { q.grouped() } else { q });
        f.buffers.push(Buffer {
            name: format!("%{}", n.index()),
            dtype: node.ty.dtype,
            shape: node.ty.shape.clone(),
            storage,
            live: None,
            blocks: quantized,
        });
        buffer_of[n.index()] = buffer;
        let name = || {
            format!(
                "{}k{}_{}",
                prefix.unwrap_or(""),
                n.index(),
                op_name(&node.op)
            )
        };
        match &node.op {
            Op::Input(name) if !body => f.inputs.push(Binding {
                name: name.clone(),
                buffer,
            }),
            Op::Param(name) => {
                f.weights.push(Binding {
                    name: name.clone(),
                    buffer,
                });
                if let Some(q) = quantized.filter(|_| !all && !readers.is_empty()) {
                    grouped_copy.insert(n, f.buffers.len());
                    f.weights.push(Binding {
                        name: name.clone(),
                        buffer: f.buffers.len(),
                    });
                    f.buffers.push(Buffer {
                        name: format!("%{}.x16", n.index()),
                        blocks: Some(q.grouped()),
                        ..f.buffers[buffer].clone()
                    });
                }
            }
            Op::Input(_) | Op::Reshape => {}
            Op::Call(kind) => {
                let mut args = vec![buffer];
                args.extend(operands.iter().map(|o| buffer_of[o.index()]));
                for &(slot, nr) in packing.kinds.get(*kind).into_iter().flatten() {
                    let src = root(&f.buffers, args[slot]);
                    args[slot] = packed_weight(plan, kernels, &mut f, src, nr);
                }
                f.steps.push(Step::Call { kind: *kind, args });
            }
            Op::Fused(r) if matches!(r.kind, RegionKind::Moe(_)) => {
                if let RegionKind::Moe(m) = &r.kind {
                    let at = (g, n, prefix.unwrap_or(""));
                    let steps = experts(at, m, &buffer_of, plan, kernels, &mut f);
                    f.steps.extend(steps);
                }
            }
            op => {
                let mut ins: Vec<(&TensorType, usize)> = operands
                    .iter()
                    .map(|o| (g.ty(*o), buffer_of[o.index()]))
                    .collect();
                let transposed = transposed_weight(g, n).and_then(|(slot, w)| {
                    let b = grouped_copy
                        .get(&w)
                        .copied()
                        .unwrap_or(buffer_of[w.index()]);
                    f.buffers[b].blocks.map(|_| (slot, b))
                });
                let grouped = operands.iter().any(|o| {
                    let b = root(&f.buffers, buffer_of[o.index()]);
                    f.buffers[b].blocks.is_some_and(BlockFormat::is_grouped)
                });
                if grouped && transposed.is_none() {
                    // A transpose of a weight kept in groups of rows, which only matmuls
                    // that read the groups in place read (see `group_readers`): nothing to run.
                    continue;
                }
                if let Some((operand, w)) = transposed {
                    ins[operand].1 = w;
                }
                let steps = kernel(
                    plan,
                    kernels,
                    name(),
                    (op, &node.ty),
                    &ins,
                    buffer,
                    (&mut f, packing, transposed.map(|t| t.0)),
                );
                for mut step in steps {
                    if let Step::Kernel { origin, .. } = &mut step {
                        *origin = node.origin();
                    }
                    if weight_only[n.index()] {
                        f.prepare.push(step);
                    } else {
                        f.steps.push(step);
                    }
                }
            }
        }
    }
    for (name, n) in &g.outputs {
        f.outputs.push(Binding {
            name: name.clone(),
            buffer: buffer_of[n.index()],
        });
    }
    if !body {
        prune_prepare(&mut f);
    }
    // A body whose value is one of its inputs, or a view of one, copies it into the result.
    if let (true, Some(n)) = (body, output) {
        if !matches!(f.buffers[buffer_of[n.index()]].storage, Storage::Slot(0)) {
            copy_result(
                g,
                n,
                prefix.unwrap_or(""),
                plan,
                kernels,
                &mut f,
                &buffer_of,
            );
        }
    }
    f
}

/// The steps of a sparse mixture (node `n` of `g`; see `moe.rs`): zero the output, then per
/// expert route, gather, the expert's body on its rows, and scatter-add.
fn experts(
    (g, n, prefix): (&Graph, NodeIndex, &str),
    m: &MoeInfo,
    buffer_of: &[usize],
    plan: &mut Plan,
    kernels: &mut Kernels,
    f: &mut Frame,
) -> Vec<Step> {
    let ops: Vec<usize> = g.operands(n).iter().map(|o| buffer_of[o.index()]).collect();
    let (out, w) = (buffer_of[n.index()], ops[m.w]);
    let x = g.ty(g.operands(n)[m.x]).shape.clone();
    let dim = g.ty(n).shape.last().cloned().unwrap_or_default();
    let tokens = Dim::product(&x[..x.len() - 1]).unwrap_or_default();
    let width = x.last().cloned().unwrap_or_default();
    let size = tokens.mul(&dim).unwrap_or_default();
    let name = |what: &str| format!("{prefix}k{}_moe_{what}", n.index());
    let origin = g.dag[n].origin();
    let mut steps = vec![emit_with(plan, kernels, name("zero"), &[out], f, |cx| {
        moe::zero(cx, &size)
    })];
    for (e, expert) in m.experts.iter().enumerate() {
        let mut scratch = |what: &str, dtype: DType, shape: Vec<Dim>| {
            f.buffers.push(Buffer {
                name: format!("%{}.{what}{e}", n.index()),
                dtype,
                shape,
                storage: Storage::Arena,
                live: None,
                blocks: None,
            });
            f.buffers.len() - 1
        };
        let list = scratch(
            "routed",
            DType::I64,
            vec![tokens.add(&Dim::constant(1)).unwrap_or_default()],
        );
        let rows = scratch("rows", DType::F32, vec![tokens.clone(), width.clone()]);
        let y = scratch("expert", DType::F32, vec![tokens.clone(), dim.clone()]);
        let (count, num) = (m.experts.len(), &tokens);
        steps.push(emit_with(
            plan,
            kernels,
            name(&format!("route{e}")),
            &[list, w],
            f,
            |cx| moe::route(cx, num, e, count),
        ));
        steps.push(emit_with(
            plan,
            kernels,
            name(&format!("gather{e}")),
            &[rows, ops[m.x], list],
            f,
            |cx| moe::gather(cx, &width),
        ));
        let mut slots = vec![y, rows];
        slots.extend(expert.slots.iter().map(|s| ops[*s]));
        let tag = format!("{}e{e}_", name(""));
        steps.extend(expert_body(
            &expert.body,
            (&slots, list),
            (&tokens, &tag),
            plan,
            kernels,
            f,
        ));
        steps.push(emit_with(
            plan,
            kernels,
            name(&format!("scatter{e}")),
            &[out, y, w, list],
            f,
            |cx| moe::scatter(cx, &dim, e, count),
        ));
    }
    for s in &mut steps {
        if let Step::Kernel { origin: o, .. } = s {
            o.clone_from(&origin);
        }
    }
    steps
}

/// The steps of one expert's body on the rows in `slots[1]` (the result in `slots[0]`, its other
/// inputs in the rest), whose row count is the first element of buffer `list`; `tag` prefixes
/// its kernels' and buffers' names.
fn expert_body(
    body: &Graph,
    (slots, list): (&[usize], usize),
    (tokens, tag): (&Dim, &str),
    plan: &mut Plan,
    kernels: &mut Kernels,
    f: &mut Frame,
) -> Vec<Step> {
    // The row count is one more symbol while the body lowers, then a load of the count.
    let first = kernels.list.len();
    plan.symbols.push(ROUTED.to_string());
    let none = (&Packing::default(), &BTreeMap::new());
    let lowered = lower(body, Some(tag), plan, kernels, none);
    plan.symbols.pop();
    for k in &mut kernels.list[first..] {
        moe::read_count(k, plan.symbols.len());
    }
    let map = splice(lowered.buffers, slots, (tokens, tag), f);
    lowered
        .steps
        .into_iter()
        .map(|s| match s {
            Step::Kernel { kernel, args, .. } => Step::Kernel {
                kernel,
                args: args.iter().map(|a| map[*a]).chain([list]).collect(),
                origin: String::new(),
                // Again: the row loops now read their count from the list.
                launch: super::launch::launch(&kernels.list[kernel]),
                // An expert's feed-forward has no scan to take a scratch buffer.
                scratch: false,
            },
            call => call,
        })
        .collect()
}

/// [`emit`] with the template `make` builds.
fn emit_with(
    plan: &mut Plan,
    kernels: &mut Kernels,
    name: String,
    args: &[usize],
    f: &Frame,
    make: impl FnOnce(&mut Ctx) -> Template,
) -> Step {
    let t = make(&mut Ctx::new(&plan.symbols, &kernels.schedule));
    emit(plan, kernels, name, t, args, &f.buffers)
}

/// Adds an expert body's buffers to the frame: slot `i` is `slots[i]`, the others get room for
/// every token and names after `tag`; returns the frame buffer of each body buffer.
fn splice(
    buffers: Vec<Buffer>,
    slots: &[usize],
    (tokens, tag): (&Dim, &str),
    f: &mut Frame,
) -> Vec<usize> {
    let mut map = Vec::with_capacity(buffers.len());
    for mut b in buffers {
        let at = match b.storage {
            Storage::Slot(i) => slots[i],
            storage => {
                b.storage = match storage {
                    Storage::Alias(a) => Storage::Alias(root(&f.buffers, map[a])),
                    s => s,
                };
                b.name = format!("{tag}{}", b.name);
                for d in &mut b.shape {
                    if d.as_symbol() == Some(ROUTED) {
                        *d = tokens.clone();
                    }
                }
                f.buffers.push(b);
                f.buffers.len() - 1
            }
        };
        map.push(at);
    }
    map
}

fn copy_result(
    g: &Graph,
    n: NodeIndex,
    prefix: &str,
    plan: &mut Plan,
    kernels: &mut Kernels,
    f: &mut Frame,
    buffer_of: &[usize],
) {
    let ty = g.ty(n).clone();
    let out = f.buffers.len();
    f.buffers.push(Buffer {
        name: "result".into(),
        dtype: ty.dtype,
        shape: ty.shape.clone(),
        storage: Storage::Slot(0),
        live: None,
        blocks: None,
    });
    let copy = Op::Unary(UnaryOp::StopGrad);
    let steps = kernel(
        plan,
        kernels,
        format!("{prefix}result_copy"),
        (&copy, &ty),
        &[(&ty, buffer_of[n.index()])],
        out,
        (f, &Packing::default(), None),
    );
    f.steps.extend(steps);
    f.outputs = vec![Binding {
        name: "out".into(),
        buffer: out,
    }];
}

pub(super) fn renumber_checks(body: Vec<Stmt>, base: u32) -> Vec<Stmt> {
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
