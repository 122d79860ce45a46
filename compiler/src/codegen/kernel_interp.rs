//! A launcher that runs kernels on the Kernel IR interpreter: slow, checked, and the oracle
//! the generated code is compared with.

use archc_kernels::interp::{run, BufData, KernelError};
use archc_kernels::ir::{Elem, Kernel};
use archc_runtime::Launcher;

/// Runs each kernel with the Kernel IR interpreter.
pub struct KernelInterp<'a>(pub &'a [Kernel]);

/// A copy of the `n` elements at `p`.
///
/// # Safety
/// `p` must point to `n` initialised elements of type `elem`.
unsafe fn read(p: *mut u8, n: usize, elem: Elem) -> BufData {
    // SAFETY: the caller's contract.
    unsafe {
        match elem {
            Elem::F32 => BufData::F32(std::slice::from_raw_parts(p.cast::<f32>(), n).to_vec()),
            Elem::I64 => BufData::I64(std::slice::from_raw_parts(p.cast::<i64>(), n).to_vec()),
            Elem::Bool => BufData::Bool(std::slice::from_raw_parts(p, n).to_vec()),
        }
    }
}

/// Writes `data` back to `p`.
///
/// # Safety
/// `p` must point to as many elements of `data`'s type as `data` holds, valid for writes.
unsafe fn write(p: *mut u8, data: &BufData) {
    // SAFETY: the caller's contract.
    unsafe {
        match data {
            BufData::F32(v) => std::ptr::copy_nonoverlapping(v.as_ptr(), p.cast::<f32>(), v.len()),
            BufData::I64(v) => std::ptr::copy_nonoverlapping(v.as_ptr(), p.cast::<i64>(), v.len()),
            BufData::Bool(v) => std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len()),
        }
    }
}

impl Launcher for KernelInterp<'_> {
    unsafe fn launch(
        &self,
        kernel: usize,
        args: &[*mut u8],
        lens: &[usize],
        dims: &[i64],
    ) -> Result<(), String> {
        let k = &self.0[kernel];
        let mut bufs: Vec<BufData> = k
            .params
            .iter()
            .zip(args.iter().zip(lens))
            // SAFETY: `launch`'s contract: `a` holds `n` elements of the parameter's type.
            .map(|(p, (&a, &n))| unsafe { read(a, n, p.elem) })
            .collect();
        match run(k, &mut bufs, dims) {
            Ok(()) => {}
            Err(KernelError::Check(code)) => {
                // SAFETY: the last argument is the status word, one i64.
                unsafe { write(args[args.len() - 1], &BufData::I64(vec![i64::from(code)])) };
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        }
        for ((p, a), data) in k.params.iter().zip(args).zip(&bufs) {
            if p.output {
                // SAFETY: `data` was read from this very output buffer, so it fits.
                unsafe { write(*a, data) };
            }
        }
        Ok(())
    }
}
