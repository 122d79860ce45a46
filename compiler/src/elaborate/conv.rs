//! `conv2d(x, weight, stride, padding, dilation, groups)`: PyTorch's `F.conv2d` on NCHW
//! tensors, without bias (add it after: `+ reshape(b, [1, out, 1, 1])`).
//!
//! It is spelled as im2col feeding a matmul: `pad`, two `gather`s whose constant indices
//! (`o·stride + k·dilation`) take each window, and a permute and reshape to the patches
//! `[batch, groups, channels/groups·kh·kw, positions]`; then one batched matmul by the weight
//! as it is stored, `[groups, out/groups, channels/groups·kh·kw]`, whose result
//! `[batch, groups, out/groups, positions]` is already NCHW. `fuse_elementwise` makes the pad,
//! the gathers and the permute one kernel that writes the patches, so a convolution is that
//! copy plus the tiled matmul.

use archc_runtime::DType;
use petgraph::graph::NodeIndex;

use crate::graph::{BinaryOp, Dim, Ieee64, Op};
use crate::syntax::{Diagnostic, Span};

use super::args::{Bound, CallArgs};
use super::builtins::kind_error;
use super::value::Value;
use super::Elab;

/// One spatial axis of the convolution: input size, kernel size and the three settings.
struct Axis {
    size: Dim,
    kernel: i64,
    stride: i64,
    padding: i64,
    dilation: i64,
}

impl Elab<'_> {
    pub(super) fn conv2d(&mut self, ca: CallArgs) -> Result<Value, Diagnostic> {
        let mut b = ca.bind(&["x", "weight", "stride", "padding", "dilation", "groups"])?;
        let span = b.span();
        let (x, xs) = b.req("x")?;
        let x = self.expect_tensor(&x, xs, "the input of `conv2d`")?;
        let (w, ws) = b.req("weight")?;
        let w = self.expect_tensor(&w, ws, "the weight of `conv2d`")?;
        let (xt, wt) = (self.graph.ty(x).clone(), self.graph.ty(w).clone());
        if xt.rank() != 4 || !xt.dtype.is_float() {
            return Err(conv_error(
                xs,
                format!(
                    "`conv2d` needs a float input [batch, channels, height, width], found {xt}"
                ),
            ));
        }
        let wc: Option<Vec<i64>> = wt.shape.iter().map(Dim::as_const).collect();
        let (Some([out, cg, kh, kw]), true) = (
            wc.and_then(|v| <[i64; 4]>::try_from(v).ok()),
            wt.dtype == xt.dtype,
        ) else {
            return Err(conv_error(ws, format!("`conv2d` needs a weight {}[out, channels/groups, kh, kw] of constant dims, found {wt}", xt.dtype)));
        };
        let stride = pair(&mut b, "stride", 1)?;
        let padding = pair(&mut b, "padding", 0)?;
        let dilation = pair(&mut b, "dilation", 1)?;
        let (groups, gs) = self.opt_int(&mut b, "conv2d", "groups", 1)?;
        let channels = xt.shape[1].as_const();
        if groups < 1 || out % groups != 0 || channels != cg.checked_mul(groups) {
            return Err(conv_error(gs, format!(
                "`conv2d` with {groups} groups needs {} input channels and output channels divisible by {groups}; the input has {} channels and the weight {out} outputs of {cg} channels",
                cg.saturating_mul(groups),
                xt.shape[1]
            )));
        }
        let axes = [(2, kh, 0), (3, kw, 1)].map(|(a, k, i)| Axis {
            size: xt.shape[a].clone(),
            kernel: k,
            stride: stride.0[i],
            padding: padding.0[i],
            dilation: dilation.0[i],
        });
        let (oh, ow) = (out_size(&axes[0], stride.1)?, out_size(&axes[1], stride.1)?);
        let mut v = x;
        for (a, ax) in [(2, &axes[0]), (3, &axes[1])] {
            if ax.padding > 0 {
                let op = Op::Pad {
                    axis: a,
                    before: ax.padding,
                    after: ax.padding,
                    value: Ieee64::new(0.0),
                };
                v = self.op(op, &[v], span)?;
            }
        }
        // [N, C, Hp, Wp] → [N, C, KH, OH, Wp] → [N, C, KH, OH, KW, OW]
        let rows = self.window_index(&axes[0], &oh, 2, span)?;
        v = self.op(Op::Gather { axis: 2 }, &[v, rows], span)?;
        let cols = self.window_index(&axes[1], &ow, 4, span)?;
        v = self.op(Op::Gather { axis: 4 }, &[v, cols], span)?;
        let n = xt.shape[0].clone();
        let k = cg
            .checked_mul(kh)
            .and_then(|v| v.checked_mul(kw))
            .map(Dim::constant)
            .ok_or_else(|| conv_error(ws, "the weight is too large".into()))?;
        let positions = oh
            .mul(&ow)
            .ok_or_else(|| conv_error(span, "output too large".into()))?;
        let g = Dim::constant(groups);
        // [N, C, KH, OH, KW, OW] → [N, C, KH, KW, OH, OW] → [N, G, C/G·KH·KW, OH·OW]
        v = self.op(Op::Permute(vec![0, 1, 2, 4, 3, 5]), &[v], span)?;
        v = self.reshaped(v, vec![n.clone(), g.clone(), k.clone(), positions], span)?;
        let wm = self.reshaped(w, vec![g, Dim::constant(out / groups), k], span)?;
        let y = self.op(Op::MatMul, &[wm, v], span)?;
        let y = self.reshaped(y, vec![n, Dim::constant(out), oh, ow], span)?;
        Ok(Value::Tensor(y))
    }

    /// The i64 index `o·stride + k·dilation` of shape `[1, …, 1, kernel, out]` (`lead` ones)
    /// that gathers every window along one padded axis.
    fn window_index(
        &mut self,
        ax: &Axis,
        out: &Dim,
        lead: usize,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        let mut scaled = |n: Dim, step: i64, last: bool| -> Result<NodeIndex, Diagnostic> {
            let i = self.iota_of(n.clone(), DType::I64, span)?;
            let s = self.scalar(step as f64, DType::I64, span)?;
            let i = self.bin(BinaryOp::Mul, i, s, span)?;
            let mut shape = vec![Dim::constant(1); lead + 2];
            shape[lead + usize::from(last)] = n;
            self.reshaped(i, shape, span)
        };
        let o = scaled(out.clone(), ax.stride, true)?;
        let k = scaled(Dim::constant(ax.kernel), ax.dilation, false)?;
        self.bin(BinaryOp::Add, o, k, span)
    }
}

/// `(size + 2·padding − dilation·(kernel − 1) − 1) / stride + 1`; a symbolic size needs the
/// division to be exact (stride 1 always is).
fn out_size(ax: &Axis, span: Span) -> Result<Dim, Diagnostic> {
    // Weight dims are any positive i64, so the kernel's reach is computed with checks.
    let reach = ax
        .dilation
        .checked_mul(ax.kernel - 1)
        .and_then(|r| (2 * ax.padding - 1).checked_sub(r));
    let span_len = reach.and_then(|r| ax.size.add(&Dim::constant(r)));
    let too_small = || {
        conv_error(
            span,
            format!(
                "a kernel of {} with dilation {} does not fit an axis of {} padded by {}",
                ax.kernel, ax.dilation, ax.size, ax.padding
            ),
        )
    };
    let Some(len) = span_len else {
        return Err(too_small());
    };
    let steps = match len.as_const() {
        Some(l) if l < 0 => return Err(too_small()),
        Some(l) => Some(Dim::constant(l / ax.stride)),
        None => len.div_exact(&Dim::constant(ax.stride)),
    };
    steps
        .and_then(|s| s.add(&Dim::constant(1)))
        .ok_or_else(|| {
            conv_error(
                span,
                format!(
                    "stride {} does not divide the symbolic axis {} exactly; use constant sizes or stride 1",
                    ax.stride, ax.size
                ),
            )
        })
}

/// An integer or a list `[h, w]` of two positive (non-negative for `padding`) integers.
fn pair(b: &mut Bound, arg: &str, default: i64) -> Result<([i64; 2], Span), Diagnostic> {
    let min = if arg == "padding" { 0 } else { 1 };
    let (v, s) = match b.opt(arg) {
        None => return Ok(([default; 2], b.span())),
        Some(v) => v,
    };
    let bad = |v: &Value| {
        kind_error(
            "conv2d",
            arg,
            &format!("an integer ≥ {min} or a list of two"),
            v,
            s,
        )
    };
    let both = match &v {
        Value::Int(i) => [*i; 2],
        Value::List(items) => match items.as_slice() {
            [Value::Int(h), Value::Int(w)] => [*h, *w],
            _ => return Err(bad(&v)),
        },
        _ => return Err(bad(&v)),
    };
    if both.iter().any(|&i| i < min || i > 1 << 20) {
        return Err(bad(&v));
    }
    Ok((both, s))
}

fn conv_error(span: Span, message: String) -> Diagnostic {
    Diagnostic::new("E0205", span, message).label("does not fit `conv2d`")
}
