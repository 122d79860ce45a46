//! A tensor's values as the raw storage of a buffer's dtype, and back: f32, f16 or bf16 bits
//! for floats (rounded to nearest even), i64 for integers, a byte per boolean,
//! little-endian, as kernels read and write them.

use crate::{storage_bytes, DType, Data, Tensor};

/// Writes a tensor's elements into raw storage of its buffer's dtype.
pub(crate) fn store(t: &Tensor, dtype: DType, dst: &mut [u8]) {
    match (&t.data, storage_bytes(dtype)) {
        (Data::F32(v), 2) => {
            let bits = |x: f32| match dtype {
                DType::F16 => half::f16::from_f32(x).to_bits(),
                _ => half::bf16::from_f32(x).to_bits(),
            };
            for (c, x) in dst.chunks_exact_mut(2).zip(v) {
                c.copy_from_slice(&bits(*x).to_le_bytes());
            }
        }
        (Data::F32(v), 4) => {
            for (c, x) in dst.chunks_exact_mut(4).zip(v) {
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
        (Data::I64(v), 8) => {
            for (c, x) in dst.chunks_exact_mut(8).zip(v) {
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
        (Data::Bool(v), 1) => {
            for (c, x) in dst.iter_mut().zip(v) {
                *c = u8::from(*x);
            }
        }
        // Mixed kinds were refused by binding; convert through f32 as a last resort.
        (_, 2 | 4) => store(&Tensor::f32(t.shape.clone(), t.to_f32()), dtype, dst),
        (_, 8) => {
            let v = t.to_f32().iter().map(|&x| x as i64).collect();
            store(&Tensor::int(DType::I64, t.shape.clone(), v), dtype, dst)
        }
        _ => {
            let v = t.to_f32().iter().map(|&x| x != 0.0).collect();
            store(&Tensor::bool(t.shape.clone(), v), dtype, dst)
        }
    }
}

/// A tensor's values as the `n` bytes of its storage for `dtype`, if it holds them so
/// (little-endian f32 for a float, i64 for an integer, a byte per boolean).
pub(crate) fn stored_bytes(t: &Tensor, dtype: DType, n: usize) -> Option<&[u8]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    let bytes: &[u8] = match (&t.data, storage_bytes(dtype)) {
        (Data::F32(v), 4) => bytemuck_f32(v),
        (Data::I64(v), 8) => bytemuck_i64(v),
        // SAFETY: a bool is one byte, 0 or 1, as the storage wants it.
        (Data::Bool(v), 1) => unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len()) },
        _ => return None,
    };
    (bytes.len() == n).then_some(bytes)
}

/// The bytes of f32 values.
fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: any f32's bytes are initialised u8s; the length is exact.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

/// The bytes of i64 values.
fn bytemuck_i64(v: &[i64]) -> &[u8] {
    // SAFETY: any i64's bytes are initialised u8s; the length is exact.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

/// Reads raw storage of a dtype back into a tensor.
pub(crate) fn load(src: &[u8], dtype: DType, shape: Vec<usize>) -> Tensor {
    match storage_bytes(dtype) {
        2 => {
            let value = |c: &[u8]| {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                match dtype {
                    DType::F16 => half::f16::from_bits(bits).to_f32(),
                    _ => half::bf16::from_bits(bits).to_f32(),
                }
            };
            Tensor {
                dtype,
                ..Tensor::f32(shape, src.chunks_exact(2).map(value).collect())
            }
        }
        4 => Tensor {
            dtype,
            ..Tensor::f32(
                shape,
                src.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        },
        8 => Tensor::int(
            dtype,
            shape,
            src.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        _ => Tensor::bool(shape, src.iter().map(|&b| b != 0).collect()),
    }
}
