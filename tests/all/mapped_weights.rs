//! Weights read in place from a memory-mapped checkpoint: which ones are mapped, which are
//! copied, that prepared values replace their sources, and that none of it changes a result.

use std::collections::HashMap;
use std::path::PathBuf;

use archc_compiler::passes::{lower_optimized, PassOptions};
use archc_runtime::{
    write_tensors, DType, Executor, RunError, Step, Tensor, WeightBytes, WeightSource,
};

use crate::common::{self, compile};

/// A model with a weight the run reads as it is (`scale`) and one only a prepare step reads
/// (the linear weight, transposed once).
const MODEL: &str = "model m {
  input x: f32[batch, 8]
  param scale: f32[8]
  output y = linear(x * scale, 16, bias = false) @proj
}
";

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("archc-mapped-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn weights(dtype: DType) -> Vec<(String, Tensor)> {
    let t = |shape: Vec<usize>, k: f32| {
        let n: usize = shape.iter().product();
        Tensor {
            dtype,
            ..Tensor::f32(shape, (0..n).map(|i| (i as f32 * k).sin()).collect())
        }
    };
    vec![
        ("scale".to_string(), t(vec![8], 0.7)),
        ("proj.weight".to_string(), t(vec![16, 8], 0.3)),
    ]
}

/// Runs the model on a source; returns the outputs and the weight bytes before and after
/// `prepare`.
fn run(source: &WeightSource) -> (Vec<(String, Tensor)>, WeightBytes, WeightBytes) {
    let g = compile("m.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    let lowered = lower_optimized(&g, &PassOptions::default()).unwrap();
    let jit = common::jit(
        archc_compiler::codegen::backend::BackendKind::Cranelift,
        &lowered,
    );
    let mut exec = Executor::new(&lowered.plan, |n, d, s| source.weight(n, d, s)).unwrap();
    let loaded = exec.weight_bytes();
    exec.prepare(jit.as_ref()).unwrap();
    let prepared = exec.weight_bytes();
    let x = Tensor::f32(vec![2, 8], (0..16).map(|i| i as f32 / 7.0).collect());
    let inputs = HashMap::from([("x".to_string(), x)]);
    let out = exec.run(jit.as_ref(), &inputs, &HashMap::new()).unwrap();
    (out, loaded, prepared)
}

#[test]
fn f32_weights_are_read_in_place_and_prepared_ones_replace_their_sources() {
    let dir = scratch("f32");
    let file = dir.join("w.safetensors");
    write_tensors(&file, &weights(DType::F32)).unwrap();
    let mapped = WeightSource::open(&plan(), &[file], 0).unwrap();
    let (out, loaded, prepared) = run(&mapped);
    // Both weights point into the file; nothing is copied while loading.
    assert_eq!(
        loaded,
        WeightBytes {
            mapped: (8 + 16 * 8) * 4,
            owned: 0
        }
    );
    // The transposed linear weight is owned; its source is released, `scale` stays mapped.
    assert_eq!(
        prepared,
        WeightBytes {
            mapped: 8 * 4,
            owned: 16 * 8 * 4
        }
    );
    // The same weights copied into owned memory give the same bits.
    let tensors: HashMap<String, Tensor> = weights(DType::F32).into_iter().collect();
    let owned = OwnedSource(tensors);
    let g = compile("m.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    let lowered = lower_optimized(&g, &PassOptions::default()).unwrap();
    let jit = common::jit(
        archc_compiler::codegen::backend::BackendKind::Cranelift,
        &lowered,
    );
    let mut exec = Executor::new(&lowered.plan, |n, _, _| owned.get(n)).unwrap();
    assert_eq!(exec.weight_bytes().mapped, 0);
    let x = Tensor::f32(vec![2, 8], (0..16).map(|i| i as f32 / 7.0).collect());
    let inputs = HashMap::from([("x".to_string(), x)]);
    assert_eq!(
        exec.run(jit.as_ref(), &inputs, &HashMap::new()).unwrap(),
        out
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn half_precision_and_misaligned_weights_are_copied() {
    let dir = scratch("copied");
    let half = dir.join("half.safetensors");
    write_f16(&half);
    // A header of odd length puts the f32 data at an odd address.
    let odd = dir.join("odd.safetensors");
    write_misaligned(&odd);
    for file in [half, odd] {
        let (_, loaded, _) = run(&WeightSource::open(&plan(), &[file], 0).unwrap());
        let all = (8 + 16 * 8) * 4;
        assert_eq!(
            loaded,
            WeightBytes {
                mapped: 0,
                owned: all
            }
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Random weights are always owned.
    let (_, loaded, _) = run(&WeightSource::Random(3));
    assert_eq!(loaded.mapped, 0);
}

/// A safetensors file written by hand: `header` is the JSON header, `data` the bytes after it.
fn write_raw(path: &std::path::Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn write_f16(path: &std::path::Path) {
    let header = r#"{"proj.weight":{"dtype":"F16","shape":[16,8],"data_offsets":[0,256]},"scale":{"dtype":"F16","shape":[8],"data_offsets":[256,272]}}"#;
    // 0x3800 is 0.5 in f16.
    write_raw(path, header, &[0x00, 0x38].repeat(136));
}

fn write_misaligned(path: &std::path::Path) {
    let mut header = r#"{"proj.weight":{"dtype":"F32","shape":[16,8],"data_offsets":[0,512]},"scale":{"dtype":"F32","shape":[8],"data_offsets":[512,544]}}"#.to_string();
    if header.len().is_multiple_of(2) {
        header.push(' ');
    }
    write_raw(path, &header, &0.5f32.to_le_bytes().repeat(136));
}

/// Owned tensors by name.
struct OwnedSource(HashMap<String, Tensor>);

impl OwnedSource {
    fn get(&self, name: &str) -> Result<Tensor, String> {
        self.0.get(name).cloned().ok_or_else(|| name.to_string())
    }
}

/// The model's plan (`WeightSource::open` reads its EMA sources).
fn plan() -> archc_runtime::Plan {
    let g = compile("m.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    lower_optimized(&g, &PassOptions::default()).unwrap().plan
}

#[test]
fn released_pages_read_back_the_same_bytes() {
    let dir = scratch("release");
    let file = dir.join("w.safetensors");
    let big = Tensor::f32(vec![64, 1024], (0..65536).map(|i| i as f32).collect());
    write_tensors(&file, &[("big".to_string(), big.clone())]).unwrap();
    let f = archc_runtime::TensorFile::open(&file).unwrap();
    let bytes = f.in_place("big", DType::F32, &[64, 1024]).unwrap().unwrap();
    let first = bytes.to_vec();
    // Whole pages inside the tensor leave the resident set; reads fault them back in.
    f.release(bytes);
    assert_eq!(bytes, first.as_slice());
    assert_eq!(f.read_any("big").unwrap(), big);
    // Bytes that are not the file's are ignored.
    f.release(&first);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plans_whose_steps_write_a_loaded_weight_are_refused() {
    let mut plan = plan();
    let weight = plan.weights[0].buffer;
    let step = plan.steps.iter_mut().chain(plan.prepare.iter_mut()).next();
    match step.unwrap() {
        Step::Kernel { args, .. } | Step::Call { args, .. } => args[0] = weight,
    }
    let source = WeightSource::Random(1);
    let err = Executor::new(&plan, |n, d, s| source.weight(n, d, s)).err();
    assert!(
        matches!(err, Some(RunError::Plan(ref m)) if m.contains("read-only")),
        "{err:?}"
    );
}
