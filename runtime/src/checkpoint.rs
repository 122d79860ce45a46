//! Checkpoints of one or more safetensors files, read as one set of tensor names: several
//! `--weights` files, or a sharded checkpoint's `model.safetensors.index.json`. Every file stays
//! memory-mapped; a tensor is read from the one file that holds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::tensor_file::{closest_names, TensorFileError};
use crate::{DType, Tensor, TensorFile};

/// Safetensors files merged by tensor name.
pub struct Checkpoint {
    files: Vec<TensorFile>,
    /// Which file holds each tensor.
    owner: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens each path: a safetensors file, or (a name ending in `.json`) a sharded
    /// checkpoint's index, whose `weight_map` names the shards relative to the index's
    /// directory. A tensor in two files is an error naming both.
    pub fn open(paths: &[PathBuf]) -> Result<Checkpoint, TensorFileError> {
        let mut c = Checkpoint {
            files: Vec::new(),
            owner: HashMap::new(),
        };
        for path in paths {
            if path.extension().is_some_and(|e| e == "json") {
                c.add_index(path)?;
            } else {
                c.add(TensorFile::open(path)?)?;
            }
        }
        Ok(c)
    }

    fn add(&mut self, file: TensorFile) -> Result<(), TensorFileError> {
        let i = self.files.len();
        for name in file.names() {
            if let Some(&j) = self.owner.get(&name) {
                return Err(TensorFileError::Duplicate {
                    name,
                    first: self.files[j].path().to_path_buf(),
                    second: file.path().to_path_buf(),
                });
            }
            self.owner.insert(name, i);
        }
        self.files.push(file);
        Ok(())
    }

    /// Adds every shard an index lists, and checks that each holds the tensors listed for it.
    fn add_index(&mut self, index: &Path) -> Result<(), TensorFileError> {
        let bad = |reason: String| TensorFileError::Index {
            path: index.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(index).map_err(|source| TensorFileError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| bad("it has no `weight_map` object".into()))?;
        let dir = index.parent().unwrap_or(Path::new(""));
        // Shards in order of first mention, each opened once.
        let mut shards: Vec<(String, Vec<&str>)> = Vec::new();
        for (tensor, shard) in map {
            let shard = shard
                .as_str()
                .ok_or_else(|| bad(format!("the shard of `{tensor}` is not a file name")))?;
            match shards.iter_mut().find(|(s, _)| s == shard) {
                Some((_, tensors)) => tensors.push(tensor),
                None => shards.push((shard.to_string(), vec![tensor])),
            }
        }
        for (shard, tensors) in shards {
            let file = TensorFile::open(&dir.join(&shard))?;
            if let Some(name) = tensors.iter().find(|t| !file.contains(t)) {
                return Err(bad(format!(
                    "it lists tensor `{name}` in `{}`, which does not hold it",
                    file.path().display()
                )));
            }
            self.add(file)?;
        }
        Ok(())
    }

    /// Whether some file holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.owner.contains_key(name)
    }

    /// Reads a tensor from the file that holds it, checked as [`TensorFile::read`] checks it.
    pub fn read(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, TensorFileError> {
        self.file_of(name)?.read(name, dtype, shape)
    }

    /// The file that holds a tensor, or an error naming the closest names.
    pub fn file_of(&self, name: &str) -> Result<&TensorFile, TensorFileError> {
        match self.owner.get(name) {
            Some(&i) => Ok(&self.files[i]),
            None => {
                let names: Vec<String> = self.owner.keys().cloned().collect();
                let files: Vec<String> = self
                    .files
                    .iter()
                    .map(|f| format!("`{}`", f.path().display()))
                    .collect();
                Err(TensorFileError::Missing {
                    files: files.join(", "),
                    name: name.to_string(),
                    closest: closest_names(name, &names),
                })
            }
        }
    }
}
