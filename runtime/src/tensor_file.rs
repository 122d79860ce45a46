//! Safetensors files: weights, inputs and outputs. Files are memory-mapped and validated
//! before any tensor is read, so a truncated or corrupt file is an error, never a bad read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use safetensors::SafeTensors;

use crate::spelling::edit_distance;
use crate::{DType, Data, Tensor};

/// Why a tensor file or a tensor in it cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    /// The path is not a readable regular file, or the output cannot be written.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The file cannot be opened or mapped.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a safetensors file at all (bad header).
    #[error("`{path}` is not a safetensors file: {reason}")]
    NotSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: String,
    },
    /// The header is fine but the data is cut short or inconsistent.
    #[error("`{path}` is truncated or corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not add up.
        reason: String,
    },
    /// A tensor the model needs is not in the file (or in any file of a checkpoint).
    #[error("tensor `{name}` is missing from {files}{}", suggest(.closest))]
    Missing {
        /// The files looked in, each in backticks.
        files: String,
        /// The tensor's name.
        name: String,
        /// The closest names the file does have.
        closest: Vec<String>,
    },
    /// Two files of one checkpoint hold a tensor of the same name.
    #[error("tensor `{name}` is in both `{first}` and `{second}`")]
    Duplicate {
        /// The tensor's name.
        name: String,
        /// The file read first.
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },
    /// A sharded checkpoint's index cannot be used.
    #[error("`{path}` is not a usable safetensors index: {reason}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor has a shape other than the model declares.
    #[error("tensor `{name}` in `{path}` has shape {found:?}, but the model expects {expected:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What the model declares.
        expected: Vec<usize>,
        /// What the file holds.
        found: Vec<usize>,
    },
    /// A tensor has an element type that cannot stand for the declared one.
    #[error("tensor `{name}` in `{path}` has dtype {found}, but the model expects {expected}")]
    DType {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What the model declares.
        expected: DType,
        /// What the file holds.
        found: String,
    },
}

pub(crate) fn suggest(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!(
            "; the closest names in the file are: {}",
            closest.join(", ")
        )
    }
}

/// An open, validated safetensors file.
pub struct TensorFile {
    path: PathBuf,
    map: Mmap,
    header: usize,
    meta: Metadata,
}

impl TensorFile {
    /// Opens and validates a safetensors file.
    pub fn open(path: &Path) -> Result<TensorFile, TensorFileError> {
        let io = |source| TensorFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::files::open_regular(path)?;
        // SAFETY: the map is read-only, and every access is bounds-checked against the header,
        // which `read_metadata` checked against the file's length (a file shorter or longer
        // than its header says is an error here). The file must not change while it is mapped
        // (the README says so): kernels read weights in place, and a file truncated under them
        // would fault (SIGBUS), as with any memory-mapped weights (llama.cpp's too).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header, meta) = SafeTensors::read_metadata(&map).map_err(|e| classify(path, e))?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            map,
            header,
            meta,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.meta.tensors().into_keys().collect();
        n.sort();
        n
    }

    /// Whether the file holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.meta.info(name).is_some()
    }

    /// Reads a tensor, checking it against the declared dtype and shape. Floats of any width
    /// stand for a float dtype (widened to f32), i32 or i64 for an integer dtype.
    pub fn read(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, TensorFileError> {
        let info = self.checked_info(name, shape)?;
        let t = self.read_any(name)?;
        let fits = match (&t.data, dtype) {
            (Data::F32(_), d) => d.is_float(),
            (Data::I64(_), d) => d.is_int(),
            (Data::Bool(_), d) => d == DType::Bool,
        };
        if !fits {
            return Err(TensorFileError::DType {
                path: self.path.clone(),
                name: name.to_string(),
                expected: dtype,
                found: format!("{:?}", info.dtype),
            });
        }
        Ok(Tensor { dtype, ..t })
    }

    /// A tensor's bytes in the mapped file when they are already the runtime's storage of
    /// `dtype` (the same float type, i64 for an integer one, little-endian), so kernels can
    /// read them in place; None when they need converting. The shape is checked as
    /// [`TensorFile::read`] checks it. The bytes are paged in only when something reads them.
    pub fn in_place(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Option<&[u8]>, TensorFileError> {
        let info = self.checked_info(name, shape)?;
        // The file's bytes are the buffer's storage (see `storage_bytes`).
        let same = match info.dtype {
            Dtype::F32 => dtype == DType::F32,
            Dtype::F16 => dtype == DType::F16,
            Dtype::BF16 => dtype == DType::BF16,
            Dtype::I64 => dtype.is_int(),
            _ => false,
        };
        Ok((same && cfg!(target_endian = "little")).then(|| self.bytes(info)))
    }

    /// Reads a tensor as [`TensorFile::read`] does, then releases its pages (see
    /// [`TensorFile::release`]): for a tensor converted once into memory of its own.
    pub fn read_once(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, TensorFileError> {
        let t = self.read(name, dtype, shape)?;
        self.release(self.bytes(self.info(name)?));
        Ok(t)
    }

    /// Drops the pages that lie wholly inside `bytes` (a tensor's bytes from
    /// [`TensorFile::in_place`]) from this process's resident set: a weight read once, by a
    /// prepare step or a copy, need not stay resident. A later read faults them in from the
    /// file again. Bytes from elsewhere are ignored.
    pub fn release(&self, bytes: &[u8]) {
        // 4 KiB pages: on a system with larger pages the range is widened to whole pages,
        // which drops a neighbour's pages too, and those are read back from the file alike.
        const PAGE: usize = 4096;
        let base = self.map.as_ptr() as usize;
        let Some(start) = (bytes.as_ptr() as usize).checked_sub(base) else {
            return;
        };
        let end = start.saturating_add(bytes.len());
        let (first, last) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if end > self.map.len() || first >= last {
            return;
        }
        // The map starts on a page boundary, so offsets and addresses agree modulo a page.
        #[cfg(unix)]
        {
            // SAFETY: the map is a shared, read-only mapping of a file nothing writes while
            // archc runs (see `open`): after MADV_DONTNEED a read faults the page in from the
            // file again, so every reference into the map still reads the same bytes. memmap2
            // makes the advice unsafe for mappings whose pages would come back different
            // (private or anonymous ones). A failure only leaves the pages resident.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first,
                    last - first,
                )
            };
        }
    }

    /// The tensor's info, checked against the declared shape.
    fn checked_info(&self, name: &str, shape: &[usize]) -> Result<&TensorInfo, TensorFileError> {
        let info = self.info(name)?;
        if info.shape != shape {
            return Err(TensorFileError::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        Ok(info)
    }

    /// A tensor's bytes; `open` checked that the offsets lie inside the file.
    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        let (start, end) = info.data_offsets;
        &self.map[8 + self.header + start..8 + self.header + end]
    }

    /// Reads a tensor as it is stored (widened to f32 or i64).
    pub fn read_any(&self, name: &str) -> Result<Tensor, TensorFileError> {
        let info = self.info(name)?;
        let bytes = self.bytes(info);
        let shape = info.shape.clone();
        let dtype_err = || TensorFileError::DType {
            path: self.path.clone(),
            name: name.to_string(),
            expected: DType::F32,
            found: format!("{:?} (unsupported)", info.dtype),
        };
        let words = |n: usize| bytes.chunks_exact(n);
        Ok(match info.dtype {
            Dtype::F32 => Tensor::f32(
                shape,
                words(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            Dtype::F16 => Tensor {
                dtype: DType::F16,
                ..Tensor::f32(
                    shape,
                    words(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                )
            },
            Dtype::BF16 => Tensor {
                dtype: DType::BF16,
                ..Tensor::f32(
                    shape,
                    words(2)
                        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                )
            },
            Dtype::I64 => Tensor::int(
                DType::I64,
                shape,
                words(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            Dtype::I32 => Tensor::int(
                DType::I32,
                shape,
                words(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or_default())))
                    .collect(),
            ),
            Dtype::BOOL => Tensor::bool(shape, bytes.iter().map(|&b| b != 0).collect()),
            _ => return Err(dtype_err()),
        })
    }

    fn info(&self, name: &str) -> Result<&TensorInfo, TensorFileError> {
        self.meta
            .info(name)
            .ok_or_else(|| TensorFileError::Missing {
                files: format!("`{}`", self.path.display()),
                name: name.to_string(),
                closest: closest_names(name, &self.names()),
            })
    }
}

fn classify(path: &Path, e: safetensors::SafeTensorError) -> TensorFileError {
    use safetensors::SafeTensorError as E;
    let reason = e.to_string();
    match e {
        E::HeaderTooSmall
        | E::HeaderTooLarge
        | E::InvalidHeader(_)
        | E::InvalidHeaderDeserialization(_) => TensorFileError::NotSafetensors {
            path: path.to_path_buf(),
            reason,
        },
        _ => TensorFileError::Corrupt {
            path: path.to_path_buf(),
            reason,
        },
    }
}

/// Up to three names sharing the longest dotted suffix with `name`, then the smallest edit
/// distance: checkpoint names differ mostly in their prefixes.
pub(crate) fn closest_names(name: &str, names: &[String]) -> Vec<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let mut scored: Vec<(usize, usize, &String)> = names
        .iter()
        .map(|n| {
            let other: Vec<&str> = n.split('.').collect();
            let common = parts
                .iter()
                .rev()
                .zip(other.iter().rev())
                .take_while(|(a, b)| a == b)
                .count();
            (usize::MAX - common, edit_distance(name, n), n)
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(3)
        .map(|(_, _, n)| n.clone())
        .collect()
}

/// Writes named tensors to a safetensors file, each in its dtype (f32, f16, bf16, i32, i64 or
/// bool).
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), TensorFileError> {
    let mut raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let (dtype, bytes): (Dtype, Vec<u8>) = match (&t.data, t.dtype) {
            // Values of a narrow float were rounded to it where they were stored: exact.
            (Data::F32(v), DType::BF16) => (
                Dtype::BF16,
                v.iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
            (Data::F32(v), DType::F16) => (
                Dtype::F16,
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
            (Data::F32(v), _) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            (Data::I64(v), DType::I32) => (
                Dtype::I32,
                v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
            ),
            (Data::I64(v), _) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            (Data::Bool(v), _) => (Dtype::BOOL, v.iter().map(|&x| u8::from(x)).collect()),
        };
        raw.push((name.clone(), dtype, t.shape.clone(), bytes));
    }
    let views = raw
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TensorFileError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let meta: Option<HashMap<String, String>> = None;
    let bytes = safetensors::serialize(views, meta).map_err(|e| TensorFileError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(crate::files::write_atomically(path, &bytes)?)
}
