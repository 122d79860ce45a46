//! Weight memory of an executor: bytes of a memory-mapped checkpoint that kernels read in
//! place, or storage of its own (converted, misaligned, random or prepared values).

use crate::{storage_bytes, Buffer, Tensor, TensorFile};

/// A weight's values as a source hands them to [`crate::Executor::new`].
pub enum WeightData<'w> {
    /// Values the executor stores in memory of its own, in the buffer's storage dtype.
    Tensor(Tensor),
    /// Bytes in the buffer's storage layout (a block-quantized buffer's blocks), exactly its
    /// size, which the executor keeps: a quantized tensor whose rows were reordered.
    Bytes(Vec<u8>),
    /// Bytes already in the buffer's storage layout (little-endian f32 or i64, exactly the
    /// buffer's size), which kernels read in place: a memory-mapped checkpoint's tensor. They
    /// must not change while they are borrowed.
    InPlace {
        /// The tensor's bytes, from [`TensorFile::in_place`].
        bytes: &'w [u8],
        /// The file they are mapped from, which releases their pages once they are unused.
        file: &'w TensorFile,
    },
}

impl From<Tensor> for WeightData<'_> {
    fn from(t: Tensor) -> Self {
        WeightData::Tensor(t)
    }
}

/// How many bytes of weights an executor references, by where they live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightBytes {
    /// Read in place from memory-mapped files: resident only once a kernel reads them.
    pub mapped: usize,
    /// In memory the executor allocated.
    pub owned: usize,
}

/// The memory of one weight buffer.
pub(crate) enum Memory<'w> {
    /// Storage of the executor's own, in 8-byte words.
    Owned(Vec<u64>),
    /// Storage shared with other executors of the same weights (a prefill's and a step's),
    /// read-only once shared: no step writes a loaded or prepared weight.
    Shared(std::sync::Arc<Vec<u64>>),
    /// A mapped file's bytes, read-only: no step writes a loaded weight (see
    /// `Executor::new`).
    Mapped(&'w [u8], &'w TensorFile),
}

impl Memory<'_> {
    /// The address kernels get. Kernels take `*mut u8` for every buffer, but write only their
    /// outputs, which are never mapped weights.
    pub(crate) fn ptr(&mut self) -> *mut u8 {
        match self {
            Memory::Owned(v) => v.as_mut_ptr().cast(),
            Memory::Shared(v) => v.as_ptr().cast_mut().cast(),
            Memory::Mapped(b, _) => b.as_ptr().cast_mut(),
        }
    }

    /// Its address range, `(address, bytes)`.
    pub(crate) fn range(&self) -> (usize, usize) {
        match self {
            Memory::Owned(v) => (v.as_ptr() as usize, v.len() * 8),
            Memory::Shared(v) => (v.as_ptr() as usize, v.len() * 8),
            Memory::Mapped(b, _) => (b.as_ptr() as usize, b.len()),
        }
    }

    /// The storage as shared memory (owned storage becomes shared; mapped bytes are shared by
    /// the file's mapping already and give none).
    pub(crate) fn share(&mut self) -> Option<std::sync::Arc<Vec<u64>>> {
        if let Memory::Owned(v) = self {
            *self = Memory::Shared(std::sync::Arc::new(std::mem::take(v)));
        }
        match self {
            Memory::Shared(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Frees the memory: owned storage goes back to the allocator, and a mapped tensor's
    /// pages leave the process's resident set (a prepare step read them all).
    pub(crate) fn release(self) {
        if let Memory::Mapped(bytes, file) = self {
            file.release(bytes);
        }
    }

    /// Bytes by where they live.
    pub(crate) fn bytes(&self) -> WeightBytes {
        match self {
            Memory::Owned(v) => WeightBytes {
                mapped: 0,
                owned: v.len() * 8,
            },
            Memory::Shared(v) => WeightBytes {
                mapped: 0,
                owned: v.len() * 8,
            },
            Memory::Mapped(b, _) => WeightBytes {
                mapped: b.len(),
                owned: 0,
            },
        }
    }
}

/// Whether mapped bytes can be read in place by kernels of a buffer of this dtype: generated
/// scalar loads carry Cranelift's `aligned` flag, which promises natural alignment (the
/// element's size; vector loads claim none), and the interpreter reads elements through
/// typed slices. Bytes elsewhere are copied.
pub(crate) fn readable_in_place(bytes: &[u8], buffer: &Buffer) -> bool {
    // Loads from block-quantized buffers claim no alignment.
    buffer.blocks.is_some() || bytes.as_ptr().align_offset(storage_bytes(buffer.dtype)) == 0
}
