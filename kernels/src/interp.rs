//! The Kernel IR interpreter: the oracle every backend is checked against.

use std::collections::HashMap;

use crate::ir::*;

/// The contents of one buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum BufData {
    /// f32 elements.
    F32(Vec<f32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// One byte per boolean.
    Bool(Vec<u8>),
}

impl BufData {
    /// A zeroed buffer of `n` elements.
    pub fn zeros(elem: Elem, n: usize) -> BufData {
        match elem {
            Elem::F32 => BufData::F32(vec![0.0; n]),
            Elem::I64 => BufData::I64(vec![0; n]),
            Elem::Bool => BufData::Bool(vec![0; n]),
        }
    }

    fn len(&self) -> usize {
        match self {
            BufData::F32(v) => v.len(),
            BufData::I64(v) => v.len(),
            BufData::Bool(v) => v.len(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Val {
    F(f32),
    I(i64),
    B(bool),
    V([f32; 4]),
}

/// Why interpretation stopped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A `check` failed (the code tells which).
    #[error("kernel check {0} failed")]
    Check(u32),
    /// The kernel read or wrote outside a buffer: a compiler bug, caught here rather than UB.
    #[error("kernel `{kernel}` accessed buffer {buffer} at {index}, outside its {len} elements")]
    OutOfBounds {
        /// The kernel.
        kernel: String,
        /// Which buffer.
        buffer: usize,
        /// The index.
        index: i64,
        /// Its length.
        len: usize,
    },
}

struct Machine<'a> {
    kernel: &'a Kernel,
    bufs: &'a mut [BufData],
    dims: &'a [i64],
    vars: HashMap<Var, Val>,
}

/// Runs a kernel on `bufs` (in parameter order, the status word last) with `dims`.
pub fn run(kernel: &Kernel, bufs: &mut [BufData], dims: &[i64]) -> Result<(), KernelError> {
    let mut all: Vec<BufData> = bufs.to_vec();
    all.extend(kernel.locals.iter().map(|l| BufData::zeros(l.elem, l.len)));
    let mut m = Machine {
        kernel,
        bufs: &mut all,
        dims,
        vars: HashMap::new(),
    };
    let result = m.stmts(&kernel.body);
    let n = bufs.len();
    bufs.clone_from_slice(&all[..n]);
    result
}

fn lanes(v: Val) -> [f32; 4] {
    match v {
        Val::V(x) => x,
        s => [f(s); 4],
    }
}

fn f(v: Val) -> f32 {
    match v {
        Val::V(x) => x[0],
        Val::F(x) => x,
        Val::I(x) => x as f32,
        Val::B(x) => f32::from(u8::from(x)),
    }
}

fn i(v: Val) -> i64 {
    match v {
        Val::V(x) => x[0] as i64,
        Val::F(x) => x as i64,
        Val::I(x) => x,
        Val::B(x) => i64::from(x),
    }
}

fn b(v: Val) -> bool {
    match v {
        Val::V(x) => x[0] != 0.0,
        Val::F(x) => x != 0.0,
        Val::I(x) => x != 0,
        Val::B(x) => x,
    }
}

impl Machine<'_> {
    fn stmts(&mut self, body: &[Stmt]) -> Result<(), KernelError> {
        for s in body {
            match s {
                Stmt::For {
                    var, extent, body, ..
                } => {
                    let n = i(self.eval(extent)?);
                    for k in 0..n {
                        self.vars.insert(*var, Val::I(k));
                        self.stmts(body)?;
                    }
                }
                Stmt::Set(v, e) => {
                    let x = self.eval(e)?;
                    self.vars.insert(*v, x);
                }
                Stmt::Store(buf, idx, e) => {
                    let k = i(self.eval(idx)?);
                    let x = self.eval(e)?;
                    let at = self.bound(*buf, k)?;
                    match &mut self.bufs[*buf] {
                        BufData::F32(v) => v[at] = f(x),
                        BufData::I64(v) => v[at] = i(x),
                        BufData::Bool(v) => v[at] = u8::from(b(x)),
                    }
                }
                Stmt::VStore(buf, idx, e) => {
                    let k = i(self.eval(idx)?);
                    let x = lanes(self.eval(e)?);
                    self.bound(*buf, k + 3)?;
                    let at = self.bound(*buf, k)?;
                    if let BufData::F32(v) = &mut self.bufs[*buf] {
                        v[at..at + 4].copy_from_slice(&x);
                    }
                }
                Stmt::Check(c, code) => {
                    if !b(self.eval(c)?) {
                        return Err(KernelError::Check(*code));
                    }
                }
            }
        }
        Ok(())
    }

    fn bound(&self, buf: usize, k: i64) -> Result<usize, KernelError> {
        let len = self.bufs[buf].len();
        if k < 0 || k as usize >= len {
            return Err(KernelError::OutOfBounds {
                kernel: self.kernel.name.clone(),
                buffer: buf,
                index: k,
                len,
            });
        }
        Ok(k as usize)
    }

    fn eval(&self, e: &Expr) -> Result<Val, KernelError> {
        Ok(match e {
            Expr::Int(v) => Val::I(*v),
            Expr::F32(v) => Val::F(v.value()),
            Expr::Bool(v) => Val::B(*v),
            Expr::Var(v) => *self.vars.get(v).expect("variables are set before use"),
            Expr::Dim(k) => Val::I(self.dims[*k]),
            Expr::Load(buf, idx) => {
                let at = self.bound(*buf, i(self.eval(idx)?))?;
                match &self.bufs[*buf] {
                    BufData::F32(v) => Val::F(v[at]),
                    BufData::I64(v) => Val::I(v[at]),
                    BufData::Bool(v) => Val::B(v[at] != 0),
                }
            }
            Expr::VLoad(buf, idx) => {
                let k = i(self.eval(idx)?);
                self.bound(*buf, k + 3)?;
                let at = self.bound(*buf, k)?;
                match &self.bufs[*buf] {
                    BufData::F32(v) => Val::V([v[at], v[at + 1], v[at + 2], v[at + 3]]),
                    _ => Val::V([0.0; 4]),
                }
            }
            Expr::Splat(a) => Val::V([f(self.eval(a)?); 4]),
            Expr::Lane(a, l) => Val::F(lanes(self.eval(a)?)[usize::from(*l)]),
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (
                    lanes(self.eval(a)?),
                    lanes(self.eval(b)?),
                    lanes(self.eval(c)?),
                );
                // mul_add rounds once, as the FMA instruction does.
                Val::V(std::array::from_fn(|l| a[l].mul_add(b[l], c[l])))
            }
            Expr::Cast(t, a) => {
                let x = self.eval(a)?;
                match t {
                    Ty::F32 => Val::F(f(x)),
                    Ty::F32x4 => Val::V(lanes(x)),
                    Ty::I64 => Val::I(i(x)),
                    Ty::Bool => Val::B(b(x)),
                }
            }
            Expr::Select(c, x, y) => {
                if b(self.eval(c)?) {
                    self.eval(x)?
                } else {
                    self.eval(y)?
                }
            }
            Expr::Un(op, a) => {
                let x = self.eval(a)?;
                match (op, x) {
                    (op, Val::V(v)) => Val::V(v.map(|l| crate::math::unary(*op, l))),
                    (Un::Neg, Val::I(v)) => Val::I(v.wrapping_neg()),
                    (Un::Abs, Val::I(v)) => Val::I(v.wrapping_abs()),
                    (Un::Not, v) => Val::B(!b(v)),
                    (op, v) => Val::F(crate::math::unary(*op, f(v))),
                }
            }
            Expr::Bin(op, x, y) => {
                let (p, q) = (self.eval(x)?, self.eval(y)?);
                if matches!(p, Val::V(_)) || matches!(q, Val::V(_)) {
                    let (p, q) = (lanes(p), lanes(q));
                    let g: fn(f32, f32) -> f32 = match op {
                        Bin::Add => |a, b| a + b,
                        Bin::Sub => |a, b| a - b,
                        Bin::Mul => |a, b| a * b,
                        Bin::Div => |a, b| a / b,
                        Bin::Max => crate::math::maxf,
                        _ => crate::math::minf,
                    };
                    return Ok(Val::V(std::array::from_fn(|l| g(p[l], q[l]))));
                }
                match (p, q) {
                    (Val::F(p), Val::F(q)) => match op {
                        Bin::Add => Val::F(p + q),
                        Bin::Sub => Val::F(p - q),
                        Bin::Mul => Val::F(p * q),
                        Bin::Div => Val::F(p / q),
                        Bin::Rem => Val::F(p % q),
                        Bin::DivEuclid => Val::F(p.div_euclid(q)),
                        Bin::RemEuclid => Val::F(p.rem_euclid(q)),
                        Bin::Pow => Val::F(crate::math::powf(p, q)),
                        Bin::Max => Val::F(crate::math::maxf(p, q)),
                        Bin::Min => Val::F(crate::math::minf(p, q)),
                        Bin::Eq => Val::B(p == q),
                        Bin::Ne => Val::B(p != q),
                        Bin::Lt => Val::B(p < q),
                        Bin::Le => Val::B(p <= q),
                        Bin::Gt => Val::B(p > q),
                        Bin::Ge => Val::B(p >= q),
                        Bin::And | Bin::Or => Val::B(false),
                    },
                    (Val::B(p), Val::B(q)) => match op {
                        Bin::And => Val::B(p && q),
                        Bin::Or => Val::B(p || q),
                        Bin::Eq => Val::B(p == q),
                        Bin::Ne => Val::B(p != q),
                        _ => Val::B(false),
                    },
                    (p, q) => {
                        let (p, q) = (i(p), i(q));
                        match op {
                            Bin::Add => Val::I(p.wrapping_add(q)),
                            Bin::Sub => Val::I(p.wrapping_sub(q)),
                            Bin::Mul => Val::I(p.wrapping_mul(q)),
                            Bin::Div => Val::I(if q == 0 { 0 } else { p.wrapping_div(q) }),
                            Bin::Rem => Val::I(if q == 0 { 0 } else { p.wrapping_rem(q) }),
                            Bin::DivEuclid => Val::I(crate::math::div_euclid(p, q)),
                            Bin::RemEuclid => Val::I(crate::math::rem_euclid(p, q)),
                            Bin::Pow => Val::I(p.wrapping_pow(q.clamp(0, 63) as u32)),
                            Bin::Max => Val::I(p.max(q)),
                            Bin::Min => Val::I(p.min(q)),
                            Bin::Eq => Val::B(p == q),
                            Bin::Ne => Val::B(p != q),
                            Bin::Lt => Val::B(p < q),
                            Bin::Le => Val::B(p <= q),
                            Bin::Gt => Val::B(p > q),
                            Bin::Ge => Val::B(p >= q),
                            Bin::And => Val::B(p != 0 && q != 0),
                            Bin::Or => Val::B(p != 0 || q != 0),
                        }
                    }
                }
            }
        })
    }
}
