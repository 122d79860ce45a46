//! A launcher that runs kernels on the Kernel IR interpreter: slow, checked, and the oracle
//! the generated code is compared with.

use archc_kernels::interp::{run, BufData, KernelError};
use archc_kernels::ir::{Elem, Kernel};
use archc_runtime::Launcher;

/// Runs each kernel with the Kernel IR interpreter.
pub struct KernelInterp<'a>(pub &'a [Kernel]);

fn read(p: *mut u8, n: usize, elem: Elem) -> BufData {
    // SAFETY: the executor passes a pointer to `n` elements of this buffer's storage.
    unsafe {
        match elem {
            Elem::F32 => BufData::F32(std::slice::from_raw_parts(p.cast::<f32>(), n).to_vec()),
            Elem::F16 => BufData::F16(std::slice::from_raw_parts(p.cast::<u16>(), n).to_vec()),
            Elem::BF16 => BufData::BF16(std::slice::from_raw_parts(p.cast::<u16>(), n).to_vec()),
            Elem::I64 => BufData::I64(std::slice::from_raw_parts(p.cast::<i64>(), n).to_vec()),
            Elem::Bool => BufData::Bool(std::slice::from_raw_parts(p, n).to_vec()),
        }
    }
}

fn write(p: *mut u8, data: &BufData) {
    // SAFETY: `data` was read from this very buffer, so it has the buffer's length.
    unsafe {
        match data {
            BufData::F32(v) => std::ptr::copy_nonoverlapping(v.as_ptr(), p.cast::<f32>(), v.len()),
            BufData::F16(v) | BufData::BF16(v) => {
                std::ptr::copy_nonoverlapping(v.as_ptr(), p.cast::<u16>(), v.len())
            }
            BufData::I64(v) => std::ptr::copy_nonoverlapping(v.as_ptr(), p.cast::<i64>(), v.len()),
            BufData::Bool(v) => std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len()),
        }
    }
}

impl Launcher for KernelInterp<'_> {
    fn launch(
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
            .map(|(p, (&a, &n))| read(a, n, p.elem))
            .collect();
        match run(k, &mut bufs, dims) {
            Ok(()) => {}
            Err(KernelError::Check(code)) => {
                write(args[args.len() - 1], &BufData::I64(vec![i64::from(code)]));
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        }
        for ((p, a), data) in k.params.iter().zip(args).zip(&bufs) {
            if p.output {
                write(*a, data);
            }
        }
        Ok(())
    }
}
