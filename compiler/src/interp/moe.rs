//! A `fused.moe` region, run sparsely: each expert's graph over [`ROUTED`] rows runs on the
//! rows of the tokens routed to it, and its results are added into the output weighted.
//!
//! The sum is the one the dense body computes: f32 products `yₑ · w[e]` accumulated in f64 in
//! expert order, rounded once. The terms it skips are exact zeros, and every expert op is
//! row-local, so the result equals the body's bit for bit.

use std::collections::HashMap;

use archc_runtime::Tensor;

use super::{run_body, InterpError};
use crate::graph::{LayerKind, MoeInfo, ROUTED};

/// Runs the mixture on the region's operands; `shape` is its result shape.
pub(super) fn run(
    m: &MoeInfo,
    kinds: &[LayerKind],
    dims: &HashMap<String, i64>,
    operands: &[&Tensor],
    shape: &[usize],
) -> Result<Tensor, InterpError> {
    let x = operands[m.x].to_f32();
    let w = operands[m.w].to_f32();
    let experts = m.experts.len();
    let dim = shape.last().copied().unwrap_or(1);
    let tokens = w.len() / experts.max(1);
    let mut acc = vec![0f64; tokens * dim];
    for (e, expert) in m.experts.iter().enumerate() {
        let routed: Vec<usize> = (0..tokens).filter(|t| w[t * experts + e] != 0.0).collect();
        if routed.is_empty() {
            continue;
        }
        let width = x.len() / tokens.max(1);
        let rows: Vec<f32> = routed
            .iter()
            .flat_map(|t| x[t * width..(t + 1) * width].iter().copied())
            .collect();
        let rows = Tensor::f32(vec![routed.len(), width], rows);
        let mut ins = vec![&rows];
        ins.extend(expert.slots.iter().map(|s| operands[*s]));
        let mut dims = dims.clone();
        dims.insert(ROUTED.to_string(), routed.len() as i64);
        let y = run_body(&expert.body, kinds, &dims, &ins)?.to_f32();
        for (r, t) in routed.iter().enumerate() {
            let weight = w[t * experts + e];
            for d in 0..dim {
                acc[t * dim + d] += f64::from(y[r * dim + d] * weight);
            }
        }
    }
    Ok(Tensor::f32(
        shape.to_vec(),
        acc.into_iter().map(|v| v as f32).collect(),
    ))
}
