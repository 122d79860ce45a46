//! Checkpoints of a training run: the weights as safetensors by their checkpoint names (so
//! `archc run --weights` and `archc generate` load them), and beside them,
//! `NAME.optim.safetensors`, the optimiser's state (`step`, `first/W`, `second/W`) that
//! `--resume` continues from. Each file is written to a temporary name and renamed, so an
//! interrupted save leaves the last checkpoint whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use archc_runtime::optim::OptimState;
use archc_runtime::{write_tensors, DType, Tensor, TensorFile};

/// The weights being trained, as f32 values with their shapes.
pub(crate) struct Weights {
    /// Values by checkpoint name.
    pub(crate) values: HashMap<String, Vec<f32>>,
    /// Shapes by checkpoint name.
    pub(crate) shapes: HashMap<String, Vec<usize>>,
}

impl Weights {
    /// The tensor of weight `name`.
    pub(crate) fn tensor(&self, name: &str) -> Option<Tensor> {
        let v = self.values.get(name)?;
        Some(Tensor::f32(self.shapes.get(name)?.clone(), v.clone()))
    }
}

/// Where the optimiser's state of checkpoint `path` lives.
pub(crate) fn state_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "checkpoint".into(), |s| s.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}.optim.safetensors"))
}

/// Writes `tensors` to `path` through a temporary file in the same directory.
fn write_whole(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), String> {
    let name = path
        .file_name()
        .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.partial"));
    write_tensors(&tmp, tensors).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Saves the weights to `path` and the optimiser's state beside them.
pub(crate) fn save(path: &Path, weights: &Weights, state: &OptimState) -> Result<(), String> {
    let mut names: Vec<&String> = weights.values.keys().collect();
    names.sort();
    let tensors: Vec<(String, Tensor)> = names
        .iter()
        .filter_map(|n| Some(((*n).clone(), weights.tensor(n)?)))
        .collect();
    write_whole(path, &tensors)?;
    let mut moments = vec![(
        "step".to_string(),
        Tensor::int(DType::I64, vec![1], vec![state.step as i64]),
    )];
    for (prefix, map) in [("first", &state.first), ("second", &state.second)] {
        for n in &names {
            if let (Some(v), Some(shape)) = (map.get(*n), weights.shapes.get(*n)) {
                moments.push((
                    format!("{prefix}/{n}"),
                    Tensor::f32(shape.clone(), v.clone()),
                ));
            }
        }
    }
    write_whole(&state_path(path), &moments)
}

/// The optimiser's state saved beside checkpoint `path`, or None when there is none.
pub(crate) fn load_state(path: &Path) -> Result<Option<OptimState>, String> {
    let p = state_path(path);
    if !p.exists() {
        return Ok(None);
    }
    let f = TensorFile::open(&p).map_err(|e| e.to_string())?;
    let step = f.read_any("step").map_err(|e| e.to_string())?;
    let step = match step.data {
        archc_runtime::Data::I64(v) if v.len() == 1 && v[0] >= 0 => v[0] as u64,
        _ => return Err(format!("{}: `step` is not one count", p.display())),
    };
    let mut state = OptimState {
        step,
        ..OptimState::default()
    };
    for name in f.names() {
        let t = || f.read_any(&name).map(|t| t.to_f32());
        if let Some(w) = name.strip_prefix("first/") {
            state
                .first
                .insert(w.to_string(), t().map_err(|e| e.to_string())?);
        } else if let Some(w) = name.strip_prefix("second/") {
            state
                .second
                .insert(w.to_string(), t().map_err(|e| e.to_string())?);
        }
    }
    Ok(Some(state))
}
