//! The training data: a safetensors file holding, for model inputs, all the samples along the
//! first axis; each step takes `batch` of them, in an order shuffled per epoch from the seed.
//! Inputs the file lacks are drawn at random for each step (I-JEPA's masks): floats uniform in
//! [−1, 1), integers uniform in [0, 65536) (a model takes them `%` the range it needs). Both
//! are functions of the seed and the step number alone, so a resumed run sees the batches the
//! uninterrupted one would have.

use std::collections::HashMap;
use std::path::Path;

use archc_runtime::{random_tensor, DType, Data, SplitMix64, Tensor, TensorFile};

/// Every model input's samples.
pub(crate) struct Samples {
    tensors: HashMap<String, Tensor>,
    count: usize,
    seed: u64,
}

impl Samples {
    /// Reads the model's `inputs` that `path` holds (at least one, all with one number of
    /// samples); the others are drawn (`draw`).
    pub(crate) fn open(path: &Path, inputs: &[String], seed: u64) -> Result<Samples, String> {
        let file = TensorFile::open(path).map_err(|e| e.to_string())?;
        let mut tensors = HashMap::new();
        let mut count: Option<(usize, &str)> = None;
        for name in inputs.iter().filter(|n| file.contains(n)) {
            let t = file.read_any(name).map_err(|e| e.to_string())?;
            let n = t.shape.first().copied().unwrap_or(0);
            match count {
                Some((m, other)) if m != n => {
                    return Err(format!(
                        "{}: `{name}` has {n} samples (its first axis) but `{other}` has {m}",
                        path.display()
                    ))
                }
                _ => count = Some((n, name)),
            }
            tensors.insert(name.clone(), t);
        }
        let Some((count, _)) = count.filter(|c| c.0 > 0) else {
            return Err(format!(
                "{}: no samples of the model's inputs ({}); it holds: {}",
                path.display(),
                inputs.join(", "),
                file.names().join(", ")
            ));
        };
        Ok(Samples {
            tensors,
            count,
            seed,
        })
    }

    /// Whether the file holds input `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Input `name` drawn for step `step`.
    pub(crate) fn draw(&self, name: &str, dtype: DType, shape: &[usize], step: u64) -> Tensor {
        random_tensor(
            self.seed,
            &format!("{name} at step {step}"),
            dtype,
            shape,
            1.0,
            1 << 16,
        )
    }

    /// How many samples there are.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The samples of step `step` (from 0): `batch` of them, the epoch's shuffled order
    /// continuing across epochs.
    pub(crate) fn batch(&self, step: u64, batch: usize) -> HashMap<String, Tensor> {
        let start = step as usize * batch;
        let rows: Vec<usize> = (start..start + batch)
            .map(|i| self.order(i / self.count)[i % self.count])
            .collect();
        self.tensors
            .iter()
            .map(|(name, t)| (name.clone(), take_rows(t, &rows)))
            .collect()
    }

    /// Epoch `epoch`'s order: a Fisher–Yates shuffle from the seed and the epoch.
    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.count).collect();
        let mut rng = SplitMix64::new(self.seed, &format!("epoch {epoch}"));
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }
}

/// The rows `rows` of `t` along its first axis.
fn take_rows(t: &Tensor, rows: &[usize]) -> Tensor {
    let width: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = rows.len();
    let pick = |r: &usize| r * width..(r + 1) * width;
    let data = match &t.data {
        Data::F32(v) => Data::F32(rows.iter().flat_map(|r| v[pick(r)].to_vec()).collect()),
        Data::I64(v) => Data::I64(rows.iter().flat_map(|r| v[pick(r)].to_vec()).collect()),
        Data::Bool(v) => Data::Bool(rows.iter().flat_map(|r| v[pick(r)].to_vec()).collect()),
    };
    Tensor {
        dtype: t.dtype,
        shape,
        data,
    }
}
