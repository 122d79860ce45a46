//! The gradient of `gather` with respect to the table: a scatter-add of the output's gradient
//! into the rows the indices picked, written as a one-hot matrix product so that it needs no
//! op of its own and runs on every backend (`onehotᵀ · g`: an embedding's gradient is
//! `[vocab, tokens] × [tokens, width]`).

use archc_runtime::Dim;

use super::emit::Emit;
use super::GradError;
use crate::graph::{BinaryOp, NodeIndex, Op, TensorType};

/// `gather(x, idx, axis)`'s gradient `g` carried back to `x`.
///
/// `out[p, i…, s] = x[p, idx[p, i…], s]`: p are the leading `axis` dims, i… the rest of the
/// indices' dims and s the table's dims after `axis`. Then
/// `dx[p, v, s] = Σ_i [idx[p, i] = v] · g[p, i, s]`, a batched matrix product over p of the
/// one-hot `[i, v]` (transposed) and `g` flattened to `[i, s]`.
pub(super) fn vjp(
    e: &mut Emit<'_>,
    x: NodeIndex,
    idx: NodeIndex,
    axis: usize,
    g: NodeIndex,
) -> Result<NodeIndex, GradError> {
    let (xt, it, gt) = (e.ty(x), e.ty(idx), e.ty(g));
    let vocab = xt.shape[axis].clone();
    let rows = |dims: &[Dim]| Dim::product(dims).ok_or(GradError::Overflow);
    let (i_dims, s_dims) = (&it.shape[axis..], &xt.shape[axis + 1..]);
    let (i_count, s_count) = (rows(i_dims)?, rows(s_dims)?);
    // onehot[p, i…, v] = (idx[p, i…] == v)
    let mut column = it.shape.clone();
    column.push(Dim::constant(1));
    let idx_col = e.reshape(idx, column);
    let iota = e.typed(
        Op::Iota,
        TensorType::new(it.dtype, vec![vocab.clone()]),
        &[],
    );
    let hit = e.binary(BinaryOp::Eq, idx_col, iota)?;
    let onehot = e.choose(hit, 1.0, 0.0, xt.dtype)?;
    let mut flat = it.shape[..axis].to_vec();
    flat.extend([i_count.clone(), vocab.clone()]);
    let onehot = e.reshape(onehot, flat);
    let onehot_t = e.transpose(onehot)?;
    // g[p, i…, s…] → [p, i, s]
    let p_out = gt.rank() - i_dims.len() - s_dims.len();
    let mut g_flat = gt.shape[..p_out].to_vec();
    g_flat.extend([i_count, s_count]);
    let g2 = e.reshape(g, g_flat);
    let d = e.op(Op::MatMul, &[onehot_t, g2])?;
    // [p, v, s] → [p, v, s…], then summed over the p dims the table broadcast along.
    let mut shaped = e.ty(d).shape[..e.ty(d).rank() - 2].to_vec();
    shaped.push(vocab);
    shaped.extend(s_dims.iter().cloned());
    let d = e.reshape(d, shaped);
    e.unbroadcast(d, &xt.shape)
}
