//! The reference interpreter of the Graph IR: the oracle every optimisation and backend is
//! checked against.
//!
//! Naive loops, no cleverness, deterministic. Float values are f32; sums and dot products
//! accumulate in f64 and round once, so the interpreter's own error stays far below the 1e-4
//! parity tolerance. Integers are i64, booleans bool. Per-op semantics are on [`Op`].

mod contract;
mod elementwise;
mod layout;
mod moe;
mod svd;

use std::collections::HashMap;

use archc_runtime::{BindError, DType, Tensor};
use indexmap::IndexMap;

use crate::graph::{Dim, Graph, LayerKind, Op, RegionKind, TensorType};

/// Why a graph could not be run on the given inputs.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    /// The inputs do not fit the model's declarations.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A weight could not be provided.
    #[error("{0}")]
    Weight(String),
    /// A value went out of range while running (an index past the end, a huge shape).
    #[error("{origin}: {message} (node %{node})")]
    Runtime {
        /// The node index.
        node: usize,
        /// Where the node comes from (see `Node::origin`).
        origin: String,
        /// What went wrong.
        message: String,
    },
}

/// Provides weight tensors by checkpoint name, dtype and shape.
pub trait WeightSource {
    /// The weight `name`, which must have this dtype and shape.
    fn weight(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Result<Tensor, String>;
}

/// The largest tensor the interpreter will make, in elements (4 GiB of f32).
const MAX_ELEMENTS: usize = 1 << 30;

/// Binds the symbolic dims from the inputs' shapes and explicit `dims`, checking every input
/// against its declaration.
pub fn bind_dims(
    g: &Graph,
    inputs: &HashMap<String, Tensor>,
    explicit: &HashMap<String, i64>,
) -> Result<HashMap<String, i64>, InterpError> {
    let declared: Vec<(&str, DType, &[Dim])> = g
        .inputs
        .iter()
        .map(|(name, n)| (name.as_str(), g.ty(*n).dtype, g.ty(*n).shape.as_slice()))
        .collect();
    Ok(archc_runtime::bind_dims(
        &declared,
        &g.symbols,
        &g.dim_checks,
        inputs,
        explicit,
    )?)
}

fn eval_dim(d: &Dim, dims: &HashMap<String, i64>) -> Result<usize, InterpError> {
    let v = d.eval(&|s| dims.get(s).copied());
    match v {
        Some(v) if v >= 0 => Ok(v as usize),
        Some(v) => Err(InterpError::Weight(format!("dim `{d}` evaluates to {v}"))),
        None => Err(InterpError::Bind(BindError::UnboundDim(
            d.symbols()
                .find(|s| !dims.contains_key(*s))
                .unwrap_or("?")
                .to_string(),
        ))),
    }
}

/// Runs the graph. `dims` must bind every symbol (see [`bind_dims`]).
pub fn interpret(
    g: &Graph,
    dims: &HashMap<String, i64>,
    inputs: &HashMap<String, Tensor>,
    weights: &mut dyn WeightSource,
) -> Result<IndexMap<String, Tensor>, InterpError> {
    run_graph(g, &g.kinds, dims, inputs, weights)
}

/// Runs a body graph (a fused region's or a layer kind's) on its operands, bound to its inputs
/// `"0"`, `"1"`, …; returns its output `"out"`.
fn run_body(
    body: &Graph,
    kinds: &[LayerKind],
    dims: &HashMap<String, i64>,
    operands: &[&Tensor],
) -> Result<Tensor, InterpError> {
    let inputs: HashMap<String, Tensor> = operands
        .iter()
        .enumerate()
        .map(|(i, t)| (i.to_string(), (*t).clone()))
        .collect();
    let mut none = MapWeights(&HashMap::new());
    let mut out = run_graph(body, kinds, dims, &inputs, &mut none)?;
    Ok(out
        .swap_remove("out")
        .expect("bodies have the output `out`"))
}

fn run_graph(
    g: &Graph,
    kinds: &[LayerKind],
    dims: &HashMap<String, i64>,
    inputs: &HashMap<String, Tensor>,
    weights: &mut dyn WeightSource,
) -> Result<IndexMap<String, Tensor>, InterpError> {
    // Free each value after its last use, so long graphs stay small.
    let mut last_use: Vec<usize> = (0..g.dag.node_count()).collect();
    for n in g.dag.node_indices() {
        for o in g.operands(n) {
            last_use[o.index()] = last_use[o.index()].max(n.index());
        }
    }
    for n in g.outputs.values() {
        last_use[n.index()] = usize::MAX;
    }
    let mut values: Vec<Option<Tensor>> = vec![None; g.dag.node_count()];
    for n in g.dag.node_indices() {
        let node = &g.dag[n];
        let shape: Vec<usize> = node
            .ty
            .shape
            .iter()
            .map(|d| eval_dim(d, dims))
            .collect::<Result<_, _>>()?;
        let fail = |message: String| InterpError::Runtime {
            node: n.index(),
            origin: node.origin(),
            message,
        };
        if shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_none_or(|e| e > MAX_ELEMENTS)
        {
            return Err(fail(format!(
                "result shape {shape:?} is too large for the interpreter"
            )));
        }
        let ops: Vec<&Tensor> = g
            .operands(n)
            .iter()
            .map(|o| {
                values[o.index()]
                    .as_ref()
                    .expect("operands run before their users")
            })
            .collect();
        let out = match &node.op {
            Op::Input(name) => {
                let t = inputs
                    .get(name)
                    .ok_or_else(|| InterpError::Bind(BindError::MissingInput(name.clone())))?;
                elementwise::convert(t, node.ty.dtype)
            }
            Op::Param(name) => weights
                .weight(name, node.ty.dtype, &shape)
                .map_err(InterpError::Weight)?,
            Op::Fused(r) => match &r.kind {
                RegionKind::Moe(m) => moe::run(m, kinds, dims, &ops, &shape)?,
                _ => run_body(&r.body, kinds, dims, &ops)?,
            },
            Op::Call(k) => run_body(&kinds[*k].body, kinds, dims, &ops)?,
            _ => eval(&node.op, &ops, &node.ty, &shape, dims).map_err(fail)?,
        };
        values[n.index()] = Some(out);
        for o in g.operands(n) {
            if last_use[o.index()] == n.index() {
                values[o.index()] = None;
            }
        }
    }
    Ok(g.outputs
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                values[n.index()].clone().expect("outputs are kept"),
            )
        })
        .collect())
}

/// One op on evaluated operands. `shape` is the node's result shape with dims bound.
pub(crate) fn eval(
    op: &Op,
    ins: &[&Tensor],
    ty: &TensorType,
    shape: &[usize],
    dims: &HashMap<String, i64>,
) -> Result<Tensor, String> {
    let dim = |d: &Dim| eval_dim(d, dims).map_err(|e| e.to_string());
    match op {
        Op::Input(_) | Op::Param(_) | Op::Fused(_) | Op::Call(_) => {
            unreachable!("handled by the caller")
        }
        Op::Const(v) => Ok(elementwise::splat(v.value(), ty.dtype, shape)),
        Op::Size(d) => Ok(elementwise::splat(dim(d)? as f64, ty.dtype, shape)),
        Op::Iota => Ok(elementwise::convert(
            &Tensor::int(DType::I64, shape.to_vec(), (0..shape[0] as i64).collect()),
            ty.dtype,
        )),
        Op::Unary(u) => elementwise::unary(*u, ins[0]),
        Op::Binary(b) => elementwise::binary(*b, ins[0], ins[1], shape),
        Op::Select => elementwise::select(ins[0], ins[1], ins[2], shape),
        Op::Cast => Ok(elementwise::convert(ins[0], ty.dtype)),
        Op::Reduce { op, axes, keepdim } => contract::reduce(*op, ins[0], axes, *keepdim),
        Op::MatMul => contract::matmul(ins[0], ins[1], shape),
        Op::Scan { axis } => contract::scan(ins[0], ins[1], *axis),
        Op::SvdVals => svd::svdvals(ins[0]),
        Op::Reshape => Ok(Tensor {
            shape: shape.to_vec(),
            ..ins[0].clone()
        }),
        Op::Permute(perm) => Ok(layout::permute(ins[0], perm)),
        Op::Slice { axis, start, .. } => {
            Ok(layout::slice(ins[0], *axis, dim(start)?, shape[*axis]))
        }
        Op::Concat { axis } => Ok(layout::concat(ins, *axis, shape)),
        Op::Flip { axis } => Ok(layout::flip(ins[0], *axis)),
        Op::Pad {
            axis,
            before,
            value,
            ..
        } => Ok(layout::pad(
            ins[0],
            *axis,
            *before as usize,
            value.value(),
            shape,
        )),
        Op::Gather { axis } => layout::gather(ins[0], ins[1], *axis, shape),
    }
}

impl WeightSource for archc_runtime::WeightSource {
    fn weight(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
        archc_runtime::WeightSource::tensor(self, name, dtype, shape)
    }
}

/// Runs a graph whose weights come from a name → tensor map (tests and small tools).
pub struct MapWeights<'a>(pub &'a HashMap<String, Tensor>);

impl WeightSource for MapWeights<'_> {
    fn weight(&mut self, name: &str, _dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
        let t = self
            .0
            .get(name)
            .ok_or_else(|| format!("weight `{name}` is missing"))?;
        if t.shape != shape {
            return Err(format!(
                "weight `{name}` has shape {:?}, expected {shape:?}",
                t.shape
            ));
        }
        Ok(t.clone())
    }
}

/// A rank-0 tensor holding `v` as `dtype` (constant folding evaluates ops on these).
pub(crate) fn scalar(v: f64, dtype: DType) -> Tensor {
    elementwise::splat(v, dtype, &[])
}
