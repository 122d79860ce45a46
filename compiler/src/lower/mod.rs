//! Lowering: Graph IR → Kernel IR kernels plus the Plan that runs them.
//!
//! Every compute node becomes one kernel from a template (elementwise, layout, contraction);
//! reshapes become aliases; inputs and weights become bound buffers. Fusion passes run before
//! this and hand it fewer, bigger nodes.

mod attention;
mod attention_grad;
mod attention_grad_tiles;
mod attention_lanes;
mod attention_mma;
mod attention_rows;
mod attention_split;
mod attention_staging;
mod attention_tasks;
mod attention_tiles;
mod body;
mod contract;
mod cooperative;
mod elementwise;
mod fragments;
mod frame;
mod hoist;
mod index;
mod lanes;
pub mod launch;
mod layout;
mod matmul;
mod micro;
mod moe;
mod pack;
mod product;
mod region;
mod register_tiles;
mod same_weights;
mod scan;
mod scan_blocks;
mod scan_grad;
pub mod schedule;
mod ssd;
mod ssd_blocks;
mod ssd_mma;
mod svd;

pub use same_weights::same_weights;

use std::collections::BTreeMap;

use archc_kernels::ir::{Axis, Elem, Expr, Kernel, Stmt, Ty};
use archc_kernels::target::Target;
use archc_runtime::quant::BlockFormat;
use archc_runtime::{DType, Kind, Plan, Step};

use crate::graph::{Graph, Op};

/// The kernels of one op, launched in order on its buffers (and its scratch buffer, which
/// each that uses it declares): each a suffix of the op's kernel name (`""` for an op of one
/// kernel) and its template. Most ops are one kernel; on a GPU an attention over a symbolic
/// number of queries is two, its tiles and its rows (a decoding step's), each with registers
/// of its own, and Mamba-2's SSD three (`ssd_blocks.rs`).
pub type Templates = Vec<(&'static str, Template)>;

/// A kernel body and the messages of its checks (check code i is message i − 1).
pub struct Template {
    body: Vec<Stmt>,
    checks: Vec<String>,
    locals: Vec<archc_kernels::ir::Local>,
    /// Arrays a block of threads shares (GPU templates), addressed after the locals.
    shared: Vec<archc_kernels::ir::Local>,
    /// The shape of an f32 arena buffer the kernel works in (`scan_grad`'s checkpoints, the
    /// SSD's states), passed after the inputs: live during the op's kernels only.
    scratch: Option<Vec<crate::graph::Dim>>,
    /// The blocks a GPU multiprocessor should hold at once (see `Kernel::occupancy`).
    occupancy: Option<u32>,
}

impl Template {
    /// A kernel body without locals.
    fn new(body: Vec<Stmt>, checks: Vec<String>) -> Template {
        Template {
            body,
            checks,
            locals: Vec::new(),
            shared: Vec::new(),
            scratch: None,
            occupancy: None,
        }
    }
}

/// Thread-private f32 arrays of the given names and lengths.
fn f32_locals(arrays: &[(&str, i64)]) -> Vec<archc_kernels::ir::Local> {
    arrays
        .iter()
        .map(|(name, len)| archc_kernels::ir::Local {
            name: (*name).into(),
            elem: Elem::F32,
            len: *len as usize,
        })
        .collect()
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
        DType::F32 => Elem::F32,
        DType::F16 => Elem::F16,
        DType::BF16 => Elem::BF16,
        DType::I32 | DType::I64 => Elem::I64,
        DType::Bool => Elem::Bool,
    }
}

/// The kernel element type of a buffer: its block format's, or its dtype's storage.
pub fn buffer_elem(b: &archc_runtime::Buffer) -> Elem {
    match b.blocks {
        Some(BlockFormat::Q8_0) => Elem::Q8_0,
        Some(BlockFormat::Q4_0) => Elem::Q4_0,
        Some(BlockFormat::Q4_1) => Elem::Q4_1,
        Some(BlockFormat::Q8_0x16) => Elem::Q8_0x16,
        Some(BlockFormat::Q4_0x16) => Elem::Q4_0x16,
        Some(BlockFormat::Q4_1x16) => Elem::Q4_1x16,
        None => elem(b.dtype),
    }
}

/// The scalar type values of a dtype have in kernels.
pub fn ty(d: DType) -> Ty {
    elem(d).ty()
}

/// `body` with its top-level Grid loops run only when `cond` is `when`: one of a kernel's
/// paths, which the dims choose between at run time (their grid extents are `select`ed).
pub(crate) fn grids_when(body: Vec<Stmt>, cond: &Expr, when: bool) -> Vec<Stmt> {
    body.into_iter()
        .map(|s| match s {
            Stmt::For {
                var,
                extent,
                kind: Axis::Grid,
                body,
            } => {
                let (yes, no) = if when {
                    (extent, Expr::Int(0))
                } else {
                    (Expr::Int(0), extent)
                };
                Stmt::For {
                    var,
                    extent: Expr::Select(Box::new(cond.clone()), Box::new(yes), Box::new(no)),
                    kind: Axis::Grid,
                    body,
                }
            }
            s => s,
        })
        .collect()
}

/// Lowers a graph for Cranelift's target (see [`lower_for`]).
pub fn lower(g: &Graph) -> Lowered {
    lower_for(g, &Target::cranelift_x86_64())
}

/// Lowers a graph for `target` with every weight stored as its dtype (see [`lower_with`]).
pub fn lower_for(g: &Graph, target: &Target) -> Lowered {
    lower_with(g, target, &BTreeMap::new())
}

/// Lowers a graph for `target`: its layer kinds first (each compiled once), then its top
/// level. The target's late schedule ([`schedule::Schedule`]) sizes the tiles and the matmul
/// blocking. The weights `blocks` names stay in that block format in memory, read by kernels
/// that dequantize as they load (a GGUF checkpoint's quantized tensors).
pub fn lower_with(g: &Graph, target: &Target, blocks: &BTreeMap<String, BlockFormat>) -> Lowered {
    let mut plan = Plan {
        model: g.name.clone(),
        symbols: g.symbols.clone(),
        buffers: Vec::new(),
        inputs: Vec::new(),
        weights: Vec::new(),
        outputs: Vec::new(),
        kernels: Vec::new(),
        prepare: Vec::new(),
        steps: Vec::new(),
        kinds: Vec::new(),
        kernel_local_bytes: 0,
        checks: Vec::new(),
        fallible: Vec::new(),
        dynamic_shared: Vec::new(),
        dim_checks: g.dim_checks.clone(),
        index_bounds: index_bounds(g),
        ema_sources: Default::default(),
        generation: Default::default(),
        dims_width: 0,
        stateful: None,
    };
    for (name, (_, kind)) in &g.params {
        if let crate::graph::ParamKind::Ema { online, .. } = kind {
            plan.ema_sources.insert(name.clone(), online.clone());
        }
    }
    let mut kernels = frame::Kernels::new(target);
    let mut top = pack::Packing::default();
    for (k, packing) in g.kinds.iter().zip(pack::Packing::kinds_of(g)) {
        let prefix = format!("kind{}_", plan.kinds.len());
        let no_blocks = &BTreeMap::new();
        let f = frame::lower(
            &k.body,
            Some(&prefix),
            &mut plan,
            &mut kernels,
            (&packing, no_blocks),
        );
        top.kinds.push(f.packed_slots);
        plan.kinds.push(Kind {
            name: k.name.clone(),
            buffers: f.buffers,
            steps: f.steps,
        });
    }
    let f = frame::lower(g, None, &mut plan, &mut kernels, (&top, blocks));
    plan.buffers = f.buffers;
    plan.steps = f.steps;
    plan.prepare = f.prepare;
    plan.inputs = f.inputs;
    plan.weights = f.weights;
    plan.outputs = f.outputs;
    if let Some(block) = kernels.schedule.gpu_block {
        map_to_gpu(&mut plan, &mut kernels.list, block);
    }
    plan.kernel_local_bytes = kernels
        .list
        .iter()
        .map(archc_kernels::ir::Kernel::local_bytes)
        .max()
        .unwrap_or(0);
    plan.fallible = kernels
        .list
        .iter()
        .map(archc_kernels::ir::Kernel::has_checks)
        .collect();
    plan.dynamic_shared = kernels
        .list
        .iter()
        .map(|k| {
            let bytes = archc_kernels::shared::SharedLayout::of(k).launch_bytes();
            u32::try_from(bytes).unwrap_or(u32::MAX)
        })
        .collect();
    Lowered {
        plan,
        kernels: kernels.list,
    }
}

/// Splits every kernel's parallel loops into blocks of `block` threads
/// (`archc_kernels::gpu::map`) and gives every step its kernel's new launch geometry.
fn map_to_gpu(plan: &mut Plan, kernels: &mut [Kernel], block: u32) {
    for k in kernels.iter_mut() {
        *k = archc_kernels::gpu::map(k, block).kernel;
    }
    let kinds = plan.kinds.iter_mut().flat_map(|k| k.steps.iter_mut());
    for step in plan.steps.iter_mut().chain(&mut plan.prepare).chain(kinds) {
        if let Step::Kernel { kernel, launch, .. } = step {
            *launch = kernels.get(*kernel).and_then(launch::launch);
        }
    }
}

/// The sizes of the tables integer inputs index (see [`index_bound`]). Computed on the graph
/// before the passes: in a fused graph the gather sits inside a region.
pub fn index_bounds(g: &Graph) -> std::collections::BTreeMap<String, u64> {
    g.inputs
        .keys()
        .filter_map(|name| Some((name.clone(), index_bound(g, name)?)))
        .collect()
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
