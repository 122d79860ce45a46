//! The safe boundary between the executor and compiled kernels: a launch takes buffers
//! (slices of memory the launcher's device addresses), never raw pointers, and a launcher of
//! native code checks them against the kernel's [`Signature`] before its code touches them.
//!
//! What makes this sound is a split of duties:
//! - the compiler promises that a kernel, run with dims `d`, reads and writes each parameter
//!   only below the element count its signature gives for `d` (the plan's buffer shapes, from
//!   which the kernel was lowered);
//! - the launcher checks, at every launch, that each buffer is at least that long, aligned for
//!   its element type, writable where the kernel writes it, and that the dims are as many as
//!   the kernels read and not negative.
//!
//! No caller can then make a kernel run past a buffer, whatever it passes.

use std::collections::HashMap;

use crate::{numel, storage_bytes, Buffer, Dim, Plan, Size, SizeOp, Step};

/// Which memory a launcher's kernels address. The executor keeps its arena and weights there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The host's memory, addressed by kernels running on its CPUs.
    Host,
}

/// One buffer argument of a launch.
#[derive(Debug)]
pub enum Arg<'a> {
    /// A buffer the kernel only reads.
    In(&'a [u8]),
    /// A buffer the kernel writes (its output), borrowed exclusively for the launch.
    Out(&'a mut [u8]),
}

impl Arg<'_> {
    /// Its bytes.
    pub fn len(&self) -> usize {
        match self {
            Arg::In(b) => b.len(),
            Arg::Out(b) => b.len(),
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address of its first byte.
    pub fn addr(&self) -> usize {
        match self {
            Arg::In(b) => b.as_ptr() as usize,
            Arg::Out(b) => b.as_ptr() as usize,
        }
    }
}

/// Launches compiled kernels on buffers of its device.
pub trait Launcher {
    /// The memory its kernels address.
    fn device(&self) -> Device;

    /// Runs kernel number `kernel` once on `args` (in its parameter order, without the status
    /// word) for `dims`, the values of the plan's symbols. Returns the kernel's status word:
    /// 0, or the code of the first check that failed; or 0 for a launch it defers (see
    /// [`Launcher::finish`]).
    fn launch(&self, kernel: usize, args: &mut [Arg<'_>], dims: &[i64])
        -> Result<i64, LaunchError>;

    /// The copies it keeps of the executor's buffers in the memory its kernels address,
    /// where that is not where the executor's buffers are (a GPU's, `crate::resident`); None
    /// for one whose kernels read the buffers in place.
    fn copies(&self) -> Option<&dyn Copies> {
        None
    }

    /// Seconds its kernels ran since the last call, as the device measured them (a GPU's
    /// events), without the copies and the launches' overhead; None where it measures none.
    /// A launcher may start measuring only at the first call.
    fn kernel_seconds(&self) -> Option<f64> {
        None
    }

    /// Runs the launches it has deferred: a launcher may queue a launch that cannot fail (its
    /// kernel has no checks: `Plan::fallible`) and return 0 for it before it has run (a GPU's,
    /// `crate::cuda_graphs`). The executor calls it at the end of each frame's steps, also
    /// after a failure.
    fn finish(&self) -> Result<(), LaunchError> {
        Ok(())
    }
}

/// What the executor tells a launcher that keeps copies of its buffers in another memory
/// (`crate::resident`), so that they stay there from one launch to the next.
pub trait Copies {
    /// The address ranges `(address, bytes)` whose bytes stay the same until the next call
    /// (the executor's weights, once prepared): arguments inside them may be copied over once
    /// and the copies reused.
    fn constants(&self, ranges: &[(usize, usize)]) -> Result<(), LaunchError>;

    /// A run begins, with its arena at `arena`, or ends (None; the prepare steps run outside
    /// any). Until the next call, the arena's bytes are the kernels': they may be kept in the
    /// other memory, taking in the bytes the executor says it [stored](Copies::stored) and
    /// handing back those it [fetches](Copies::fetch).
    fn arena(&self, arena: Option<&[u8]>) -> Result<(), LaunchError>;

    /// The executor wrote `bytes` of the arena (a run's inputs) before any launch reads them.
    fn stored(&self, bytes: &[u8]) -> Result<(), LaunchError>;

    /// The executor is about to read `bytes` of the arena (a run's outputs): they must hold
    /// what the kernels wrote.
    fn fetch(&self, bytes: &mut [u8]) -> Result<(), LaunchError>;
}

/// Why a launch was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No kernel has this number.
    #[error("there is no kernel {0}")]
    NoKernel(usize),
    /// The arguments are not the kernel's parameters.
    #[error("the kernel takes {want} buffers, not {got}")]
    Arity {
        /// Parameters (the status word excluded).
        want: usize,
        /// Buffers passed.
        got: usize,
    },
    /// The dims are not the plan's.
    #[error("the kernels read {want} dims, not {got}")]
    Dims {
        /// Symbols of the plan.
        want: usize,
        /// Values passed.
        got: usize,
    },
    /// A dim is negative.
    #[error("dim {index} is {value}, which is negative")]
    NegativeDim {
        /// Its position.
        index: usize,
        /// Its value.
        value: i64,
    },
    /// A buffer is shorter than the kernel reaches for these dims.
    #[error("buffer {param} has {got} bytes; the kernel reaches {want} for these dims")]
    Short {
        /// The parameter.
        param: usize,
        /// Bytes the signature asks for.
        want: usize,
        /// Bytes passed.
        got: usize,
    },
    /// A buffer's address does not suit its element type.
    #[error("buffer {param} is not aligned to {align} bytes")]
    Misaligned {
        /// The parameter.
        param: usize,
        /// The alignment it needs.
        align: usize,
    },
    /// The kernel writes a buffer passed as read-only.
    #[error("the kernel writes buffer {0}, which was passed read-only")]
    ReadOnly(usize),
    /// The backend could not run the kernel.
    #[error("{0}")]
    Backend(String),
}

/// One parameter of a kernel, as the launcher checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSignature {
    /// Bytes of one element, or of one block of a block-quantized buffer (`len` then counts
    /// blocks).
    pub elem_bytes: usize,
    /// The alignment its loads assume (a block-quantized buffer's claim none: 1).
    pub align: usize,
    /// Whether the kernel writes it.
    pub output: bool,
    /// The elements the kernel may touch, as an expression of the dims.
    pub len: Size,
}

impl ParamSignature {
    /// The bytes the kernel may touch for `dims` (saturating).
    pub fn bytes(&self, dims: &[i64]) -> usize {
        let n = usize::try_from(self.len.eval(dims).max(0)).unwrap_or(usize::MAX);
        n.saturating_mul(self.elem_bytes)
    }
}

/// One kernel's parameters, the status word excluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// In argument order.
    pub params: Vec<ParamSignature>,
}

/// The signatures of a plan's kernels, and how many dims they read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signatures {
    /// The plan's symbols: a launch passes this many dims.
    pub symbols: usize,
    /// By kernel number.
    pub kernels: Vec<Signature>,
}

impl Signatures {
    /// Checks a launch of `kernel` against its signature (see the module doc).
    pub fn check(&self, kernel: usize, args: &[Arg<'_>], dims: &[i64]) -> Result<(), LaunchError> {
        let sig = self
            .kernels
            .get(kernel)
            .ok_or(LaunchError::NoKernel(kernel))?;
        if dims.len() != self.symbols {
            return Err(LaunchError::Dims {
                want: self.symbols,
                got: dims.len(),
            });
        }
        if let Some((index, &value)) = dims.iter().enumerate().find(|(_, &v)| v < 0) {
            return Err(LaunchError::NegativeDim { index, value });
        }
        if args.len() != sig.params.len() {
            return Err(LaunchError::Arity {
                want: sig.params.len(),
                got: args.len(),
            });
        }
        for (param, (p, a)) in sig.params.iter().zip(args).enumerate() {
            let want = p.bytes(dims);
            if a.len() < want {
                return Err(LaunchError::Short {
                    param,
                    want,
                    got: a.len(),
                });
            }
            // An empty buffer (a slice of a sequence of one, `seq - 1` long) is never read,
            // and its address may be any.
            if !a.is_empty() && a.addr() % p.align.max(1) != 0 {
                return Err(LaunchError::Misaligned {
                    param,
                    align: p.align,
                });
            }
            if p.output && matches!(a, Arg::In(_)) {
                return Err(LaunchError::ReadOnly(param));
            }
        }
        Ok(())
    }
}

impl Plan {
    /// Its kernels' signatures, from the buffers its steps pass them. A kernel that serves
    /// several steps may touch, for each parameter, no more than the smallest of the buffers
    /// those steps pass (each step is correct), so its length is their minimum.
    pub fn signatures(&self) -> Result<Signatures, String> {
        let mut lens: Vec<Option<Vec<ParamSignature>>> = vec![None; self.kernels.len()];
        let frames = std::iter::once((&self.buffers, self.prepare.iter().chain(&self.steps)))
            .chain(
                self.kinds
                    .iter()
                    .map(|k| (&k.buffers, k.steps.iter().chain(&[]))),
            );
        for (buffers, steps) in frames {
            for step in steps {
                let Step::Kernel { kernel, args, .. } = step else {
                    continue;
                };
                let slot = lens
                    .get_mut(*kernel)
                    .ok_or_else(|| format!("a step launches kernel {kernel}, which is not"))?;
                let params = args
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| param(&self.symbols, buffers, b, step.writes(i)))
                    .collect::<Result<Vec<_>, String>>()?;
                *slot = Some(match slot.take() {
                    None => params,
                    Some(old) => narrowest(old, params)?,
                });
            }
        }
        Ok(Signatures {
            symbols: self.symbols.len().max(self.dims_width),
            // A kernel no step launches may run on nothing.
            kernels: lens
                .into_iter()
                .map(|p| Signature {
                    params: p.unwrap_or_default(),
                })
                .collect(),
        })
    }
}

/// The parameter a step's buffer `b` is.
fn param(
    symbols: &[String],
    buffers: &[Buffer],
    b: usize,
    output: bool,
) -> Result<ParamSignature, String> {
    let buffer = buffers
        .get(b)
        .ok_or_else(|| format!("a step passes buffer {b}, which is not"))?;
    let len = buffer.shape.iter().try_fold(Size::Const(1), |acc, d| {
        let d = size_of(symbols, d)
            .ok_or_else(|| format!("buffer `{}` has a dim `{d}` of no symbol", buffer.name))?;
        // A negative extent holds no elements (as `numel` counts them).
        let d = Size::op(SizeOp::Max, d, Size::Const(0));
        Ok::<Size, String>(Size::op(SizeOp::Mul, acc, d))
    })?;
    Ok(match buffer.blocks {
        // Whole blocks: ⌈n / 32⌉ of them.
        Some(q) => {
            let (elems, bytes) = q.ggml().block();
            let up = Size::op(SizeOp::Add, len, Size::Const(elems as i64 - 1));
            ParamSignature {
                elem_bytes: bytes,
                align: 1,
                output,
                len: Size::op(SizeOp::Div, up, Size::Const(elems as i64)),
            }
        }
        None => ParamSignature {
            elem_bytes: storage_bytes(buffer.dtype),
            align: storage_bytes(buffer.dtype),
            output,
            len,
        },
    })
}

/// Two steps' parameters of one kernel, each the smaller.
fn narrowest(
    a: Vec<ParamSignature>,
    b: Vec<ParamSignature>,
) -> Result<Vec<ParamSignature>, String> {
    if a.len() != b.len() {
        return Err("two steps pass one kernel different numbers of buffers".into());
    }
    a.into_iter()
        .zip(b)
        .map(|(x, y)| {
            if (x.elem_bytes, x.align, x.output) != (y.elem_bytes, y.align, y.output) {
                return Err("two steps pass one kernel buffers of different types".into());
            }
            let len = if x.len == y.len {
                x.len
            } else {
                Size::op(SizeOp::Min, x.len, y.len)
            };
            Ok(ParamSignature { len, ..x })
        })
        .collect()
}

/// A dim as a size of the symbols (None if it names another).
fn size_of(symbols: &[String], d: &Dim) -> Option<Size> {
    let index: HashMap<&str, usize> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    d.terms().try_fold(Size::Const(0), |acc, (monomial, c)| {
        let term = monomial.iter().try_fold(Size::Const(c), |p, s| {
            Some(Size::op(
                SizeOp::Mul,
                p,
                Size::Symbol(*index.get(s.as_str())?),
            ))
        })?;
        Some(Size::op(SizeOp::Add, acc, term))
    })
}

/// Bytes of buffer `b` of a frame for these dims.
pub(crate) fn buffer_bytes(buffers: &[Buffer], b: usize, dims: &HashMap<String, i64>) -> usize {
    buffers[b].bytes(numel(&buffers[b], dims))
}

/// A kernel step's buffers as launch arguments: those `writes` names (its output, and a
/// scratch buffer) writable, the others read-only. Refuses a written buffer that shares
/// memory with another argument, or a buffer with bytes but no memory.
///
/// # Safety
/// `ptrs[b]` must be null or point to `sizes[i]` bytes of buffer `b = args[i]` that stay valid
/// and untouched by anything else while the result lives (the output's, read-only ones not
/// written).
pub(crate) unsafe fn arguments<'a>(
    args: &[usize],
    sizes: &[usize],
    ptrs: &[*mut u8],
    writes: &dyn Fn(usize) -> bool,
) -> Result<Vec<Arg<'a>>, String> {
    let range = |i: usize| (ptrs[args[i]] as usize, sizes[i]);
    for w in (0..args.len()).filter(|w| writes(*w)) {
        let (out, n) = range(w);
        for i in (0..args.len()).filter(|i| *i != w) {
            let (p, m) = range(i);
            if n > 0 && m > 0 && p < out.saturating_add(n) && out < p.saturating_add(m) {
                return Err(format!(
                    "argument {w}, which the kernel writes, shares memory with argument {i}"
                ));
            }
        }
    }
    args.iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (&b, &n))| {
            let p = ptrs[b];
            // An empty buffer keeps its address where it has one: a kernel that pads loads at
            // a clamped index before it selects the padding (the arena gives every buffer
            // readable bytes, `Plan::layout`).
            if n == 0 && p.is_null() {
                return Ok(if writes(i) {
                    Arg::Out(&mut [])
                } else {
                    Arg::In(&[])
                });
            }
            if p.is_null() {
                return Err(format!("argument {i} (buffer {b}) has no memory"));
            }
            // SAFETY: the caller's contract; a written buffer overlaps no other argument
            // (checked above).
            Ok(unsafe {
                if writes(i) {
                    Arg::Out(std::slice::from_raw_parts_mut(p, n))
                } else {
                    Arg::In(std::slice::from_raw_parts(p, n))
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> Signatures {
        let p = |elem_bytes, output, len| ParamSignature {
            elem_bytes,
            align: elem_bytes,
            output,
            len,
        };
        Signatures {
            symbols: 1,
            kernels: vec![Signature {
                params: vec![
                    p(4, true, Size::Symbol(0)),
                    p(
                        8,
                        false,
                        Size::op(SizeOp::Mul, Size::Symbol(0), Size::Const(2)),
                    ),
                ],
            }],
        }
    }

    #[test]
    fn a_launch_is_checked_against_the_signature() {
        let s = sig();
        let words = |n: usize| vec![0u64; n];
        let (mut o, i) = (words(1), words(6));
        assert!(s
            .check(0, &[Arg::Out(bytes_mut(&mut o)), Arg::In(bytes(&i))], &[2])
            .is_ok());
        let err = s.check(0, &[Arg::Out(bytes_mut(&mut o)), Arg::In(bytes(&i))], &[3]);
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("buffer 0 has 8 bytes; the kernel reaches 12 for these dims".into())
        );
        let err = s.check(
            0,
            &[Arg::Out(&mut bytes_mut(&mut o)[1..]), Arg::In(bytes(&i))],
            &[1],
        );
        assert!(matches!(
            err,
            Err(LaunchError::Misaligned { param: 0, align: 4 })
        ));
        let err = s.check(0, &[Arg::In(bytes(&i)), Arg::In(bytes(&i))], &[1]);
        assert!(matches!(err, Err(LaunchError::ReadOnly(0))));
        assert!(matches!(
            s.check(0, &[Arg::In(bytes(&i))], &[1]),
            Err(LaunchError::Arity { want: 2, got: 1 })
        ));
        assert!(matches!(
            s.check(0, &[], &[-1]),
            Err(LaunchError::NegativeDim {
                index: 0,
                value: -1
            })
        ));
        assert!(matches!(
            s.check(0, &[], &[1, 2]),
            Err(LaunchError::Dims { want: 1, got: 2 })
        ));
        assert!(matches!(
            s.check(1, &[], &[1]),
            Err(LaunchError::NoKernel(1))
        ));
    }

    fn bytes(v: &[u64]) -> &[u8] {
        // SAFETY: u64 has no padding, and u8 alignment 1.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 8) }
    }

    fn bytes_mut(v: &mut [u64]) -> &mut [u8] {
        // SAFETY: as above; the borrow is exclusive.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 8) }
    }
}
