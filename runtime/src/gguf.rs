//! GGUF files (llama.cpp's checkpoints): a header, typed metadata (`llama.block_count`, the
//! tokenizer's vocabulary, ...), tensor descriptions, and the tensors' data, aligned, after
//! them. The file is memory-mapped; every count, length and offset is checked against its size
//! before it is used, so a truncated or hostile file is an error naming the file, never a
//! crash or an allocation of what a corrupt count asks for.
//!
//! Layout (little-endian, versions 2 and 3): `"GGUF"`, `version: u32`, `tensors: u64`,
//! `metadata: u64`; each metadata entry a string key, a `u32` value type and the value;
//! each tensor a string name, `dims: u32`, `dims` × `u64` extents (the fastest-varying first,
//! so a PyTorch `[out, in]` weight is `[in, out]` here), `type: u32`, `offset: u64` (from the
//! data section's start); then padding to `general.alignment` (32 by default). Strings are a
//! `u64` length and UTF-8 bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::quant::GgmlType;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any integer type (`u8` … `i64`), widened.
    Int(i64),
    /// An unsigned 64-bit integer too large for `i64`.
    U64(u64),
    /// `f32` or `f64`, widened.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// An array of one type.
    Array(Vec<Value>),
}

/// One tensor's description.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Its extents, outermost first (the reverse of the file's order), as PyTorch shows them.
    pub shape: Vec<usize>,
    /// Its element type.
    pub ty: GgmlType,
    /// Where its bytes are in the mapping.
    start: usize,
    /// How many bytes it has.
    len: usize,
}

/// Why a GGUF file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The path is not a regular file that can be opened.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The file cannot be mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file breaks the format.
    #[error("{path}: not a valid GGUF file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
    /// A tensor has an element type archc does not read.
    #[error("{path}: tensor `{name}` is {ty}; archc reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// ggml's name for its type.
        ty: &'static str,
    },
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    /// Its metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Its tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
}

/// The deepest nesting of metadata arrays read (GGUF writers nest one level at most).
const MAX_ARRAY_DEPTH: usize = 4;

/// A cursor over the mapped bytes that refuses to read past them.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "{what} at byte {} needs {n} bytes; the file ends at {}",
                    self.at,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of items each at least `min_bytes` long: no larger than what is left could hold.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, String> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.at) / min_bytes.max(1);
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| format!("{what} is {n}, more than the rest of the file can hold"))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(what, 1)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, String> {
        let v = match ty {
            0 => Value::Int(i64::from(self.array::<1>(key)?[0])),
            1 => Value::Int(i64::from(self.array::<1>(key)?[0] as i8)),
            2 => Value::Int(i64::from(u16::from_le_bytes(self.array(key)?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.array(key)?))),
            4 => Value::Int(i64::from(self.u32(key)?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.array(key)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array(key)?))),
            7 => Value::Bool(self.array::<1>(key)?[0] != 0),
            8 => Value::Str(self.string(key)?),
            9 if depth < MAX_ARRAY_DEPTH => {
                let item = self.u32(key)?;
                let n = self.count(key, 1)?;
                let mut items = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    items.push(self.value(item, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => {
                let v = self.u64(key)?;
                i64::try_from(v).map_or(Value::U64(v), Value::Int)
            }
            11 => Value::Int(i64::from_le_bytes(self.array(key)?)),
            12 => Value::Float(f64::from_le_bytes(self.array(key)?)),
            9 => return Err(format!("metadata `{key}` nests arrays too deeply")),
            t => return Err(format!("metadata `{key}` has unknown value type {t}")),
        };
        Ok(v)
    }
}

impl GgufFile {
    /// Maps and parses a GGUF file.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::files::open_regular(path)?;
        // SAFETY: the map is read-only and every access is checked against its length by
        // `parse`; the file must not change while it is mapped (as for safetensors, see
        // `TensorFile::open`).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (metadata, tensors) = parse(&map).map_err(|reason| GgufError::Format {
            path: path.to_path_buf(),
            reason,
        })?;
        let mut infos = BTreeMap::new();
        for (name, info) in tensors {
            match info {
                Ok(i) => {
                    infos.insert(name, i);
                }
                Err(id) => {
                    return Err(GgufError::Unsupported {
                        path: path.to_path_buf(),
                        name,
                        ty: GgmlType::name_of(id),
                    })
                }
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            metadata,
            tensors: infos,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.metadata.get(key) {
            Some(Value::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// A metadata float (an integer is one too).
    pub fn float(&self, key: &str) -> Option<f64> {
        match self.metadata.get(key) {
            Some(Value::Float(v)) => Some(*v),
            Some(Value::Int(v)) => Some(*v as f64),
            _ => None,
        }
    }

    /// A metadata string.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A tensor's bytes as the file stores them.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        let t = self.tensors.get(name)?;
        self.map.get(t.start..t.start + t.len)
    }

    /// A tensor's values as f32, in its shape's row-major order.
    pub fn dequantize(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.tensors.get(name)?;
        let n: usize = t.shape.iter().product();
        let mut out = vec![0.0; n];
        t.ty.dequantize(&self.map[t.start..t.start + t.len], &mut out);
        Some(out)
    }
}

/// A tensor's description, or the number of a type archc does not read.
type Parsed = Result<TensorInfo, u32>;

/// A file's metadata, and its tensors' descriptions in file order.
type Contents = (BTreeMap<String, Value>, Vec<(String, Parsed)>);

/// The metadata and tensor descriptions of a file's bytes.
fn parse(bytes: &[u8]) -> Result<Contents, String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4, "the magic")? != b"GGUF" {
        return Err("it does not start with `GGUF`".into());
    }
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "version {version} (archc reads versions 2 and 3, little-endian)"
        ));
    }
    // A tensor description takes at least 8 (name) + 4 + 4 + 8 bytes; an entry 8 + 4 + 1.
    let n_tensors = r.count("the tensor count", 24)?;
    let n_kv = r.count("the metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string("a metadata key")?;
        let ty = r.u32(&key)?;
        let v = r.value(ty, &key, 0)?;
        metadata.insert(key, v);
    }
    let align = match metadata.get("general.alignment") {
        None => 32,
        Some(Value::Int(a)) if *a > 0 && (*a as u64).is_power_of_two() => *a as usize,
        Some(v) => return Err(format!("general.alignment is {v:?}, not a power of two")),
    };
    let mut raw = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = r.string("a tensor name")?;
        let dims = r.u32(&name)? as usize;
        if dims > 4 {
            return Err(format!("tensor `{name}` has {dims} dims (GGUF allows 4)"));
        }
        let mut shape = Vec::with_capacity(dims);
        for _ in 0..dims {
            let d = r.u64(&name)?;
            shape.push(usize::try_from(d).map_err(|_| format!("tensor `{name}`: extent {d}"))?);
        }
        shape.reverse();
        let ty = r.u32(&name)?;
        let offset = r.u64(&name)?;
        raw.push((name, shape, ty, offset));
    }
    let data = r.at.div_ceil(align).saturating_mul(align);
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, shape, id, offset) in raw {
        let Some(ty) = GgmlType::from_id(id) else {
            tensors.push((name, Err(id)));
            continue;
        };
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}`: {shape:?} has too many elements"))?;
        let len = ty.bytes(n).ok_or_else(|| {
            format!("tensor `{name}`: {n} elements are not whole blocks of {ty:?}")
        })?;
        let start = usize::try_from(offset)
            .ok()
            .and_then(|o| data.checked_add(o))
            .filter(|&s| s.checked_add(len).is_some_and(|e| e <= bytes.len()))
            .ok_or_else(|| {
                format!(
                    "tensor `{name}` ({len} bytes at offset {offset}) runs past the end of the file ({} bytes)",
                    bytes.len()
                )
            })?;
        tensors.push((
            name,
            Ok(TensorInfo {
                shape,
                ty,
                start,
                len,
            }),
        ));
    }
    Ok((metadata, tensors))
}
