//! The GPU's own templates in the simulator (`--device cuda-sim`), against the interpreter
//! and the CPU's kernels: tensor-core and warpgroup matmuls, the shared-memory f32 matmul,
//! attention on tensor cores and on lanes, the block scan and the block SSD; and their PTX
//! assembled by ptxas.

use super::{ptxas_or_skip, CUDA_BUILT};
use crate::common::{self, archc, archc_limited, rel_err, scratch_dir};
use archc_runtime::TensorFile;

/// Matmuls of bf16 and f16 operands run on tensor cores when lowered for a GPU: `mma.sync`
/// m16n8k16 on fragments laid out as the PTX ISA says, which cuda-sim models, loaded by
/// `ldmatrix`, the slices staged ahead by `cp.async` (reduced axis 40: 16-byte chunks) or by
/// plain loads (33: not aligned). Ragged edges
/// (rows, reduced axis and columns that no tile divides), a batched matmul whose `b` is
/// broadcast, and epilogues are checked against the CPU's kernels (which round what they
/// store as the GPU's do) and the Graph IR interpreter (which rounds nothing in between).
#[test]
fn narrow_matmuls_run_on_tensor_cores_in_the_simulator() {
    let d = scratch_dir("tensor-cores");
    let file = matmuls_model(&d);
    for dtype in ["bf16", "f16"] {
        let kernels = narrow_kernels(&file, dtype);
        assert_eq!(kernels.matches("mma.m16n8k16").count(), 4, "{kernels}");
        // Each stages its slices by cp.async (`a` and `b` of two slices in the prologue and
        // of one two ahead in the loop) where the dims allow, by plain loads where not.
        assert_eq!(kernels.matches("cp.async b").count(), 24, "{kernels}");
        if CUDA_BUILT {
            let mma = mma_sync(dtype);
            let expect = [
                mma.as_str(),
                "ldmatrix.sync.aligned.m8n8.x4.trans",
                "cp.async.cg.shared.global",
            ];
            assemble(&file, (dtype, "sm_80"), &expect);
        }
        let how = [
            ("interp", ["--backend", "interp"]),
            ("cpu", ["--backend", "cranelift"]),
            ("sim", ["--device", "cuda-sim"]),
        ];
        let outs = run_each(&d, (&file, &["batch=2", "seq=70"], dtype), &how);
        for n in ["c", "e", "f", "g"] {
            let sim = outs[2].read_any(n).unwrap();
            for (want, against) in [(&outs[0], "the interpreter"), (&outs[1], "the CPU")] {
                let err = rel_err(&sim, &want.read_any(n).unwrap());
                println!("{dtype} {n}: tensor cores against {against}, rel err {err:.2e}");
                assert!(err <= 1e-2, "{dtype} {n} against {against}: {err:e}");
            }
        }
    }
}

/// On Hopper (sm_90a) the same matmuls run as warpgroup products: `wgmma.mma_async`
/// m64n128k16 reading both operands from shared memory through descriptors (`a` k-major with
/// the 32-byte swizzle, `b` mn-major), four per slice of 64, which cuda-sim models by the
/// same layouts, one product left in flight across the next slice's barrier and copies
/// (the simulator reads a product's tiles at its wait, so a stage reused too early fails).
/// Against the CPU's kernels and the interpreter as on sm_80; the PTX holds the inline
/// `wgmma`, both waits and the async-proxy fence before each barrier, and ptxas assembles it
/// without serialising the products.
#[test]
fn narrow_matmuls_run_on_warpgroups_in_the_simulator() {
    let d = scratch_dir("warpgroups");
    let file = matmuls_model(&d);
    for dtype in ["bf16", "f16"] {
        let kernels = kernels_for(&file, (dtype, "sm_90a"));
        assert_eq!(kernels.matches("wgmma.m64n128k64").count(), 4, "{kernels}");
        assert_eq!(
            kernels.matches("wgmma.wait until ≤ 1").count(),
            4,
            "{kernels}"
        );
        assert_eq!(kernels.matches("cp.async b").count(), 24, "{kernels}");
        if CUDA_BUILT {
            let wgmma = format!("wgmma.mma_async.sync.aligned.m64n128k16.f32.{dtype}.{dtype}");
            let expect = [
                wgmma.as_str(),
                "wgmma.wait_group.sync.aligned 1",
                "wgmma.wait_group.sync.aligned 0",
                ".shared .align 1024",
                "fence.proxy.async.shared::cta",
            ];
            assemble(&file, (dtype, "sm_90a"), &expect);
        }
        let how: [(&str, &[&str]); 3] = [
            ("interp", &["--backend", "interp"]),
            ("cpu", &["--backend", "cranelift"]),
            ("sim90", &["--device", "cuda-sim", "--arch", "sm_90a"]),
        ];
        let outs = run_each(&d, (&file, &["batch=2", "seq=70"], dtype), &how);
        for n in ["c", "e", "f", "g"] {
            let sim = outs[2].read_any(n).unwrap();
            for (want, against) in [(&outs[0], "the interpreter"), (&outs[1], "the CPU")] {
                let err = rel_err(&sim, &want.read_any(n).unwrap());
                println!("{dtype} {n}: warpgroups against {against}, rel err {err:.2e}");
                assert!(err <= 1e-2, "{dtype} {n} against {against}: {err:e}");
            }
        }
    }
}

/// Matmuls of f32 operands run on a GPU as the shared-memory GEMM of CUDA cores
/// (`lower/matmul/thread_tiles.rs`: 64 × 64 tiles per block, slices of 16 staged in shared
/// memory two ahead, a 4 × 8 register tile per thread), on the model of the tensor-core test, against
/// the Graph IR interpreter: f32 within 1e-4.
#[test]
fn f32_matmuls_run_on_shared_tiles_in_the_simulator() {
    let d = scratch_dir("thread-tiles");
    let file = matmuls_model(&d);
    let kernels = narrow_kernels(&file, "f32");
    assert_eq!(kernels.matches("b_values").count(), 4, "{kernels}");
    // Staged by cp.async of 4 floats where the dims allow (as the tensor-core test).
    assert_eq!(kernels.matches("cp.async b").count(), 24, "{kernels}");
    let how = [
        ("interp", ["--backend", "interp"]),
        ("sim", ["--device", "cuda-sim"]),
    ];
    let outs = run_each(&d, (&file, &["batch=2", "seq=70"], "f32"), &how);
    for n in ["c", "e", "f", "g"] {
        let err = rel_err(&outs[1].read_any(n).unwrap(), &outs[0].read_any(n).unwrap());
        println!("{n}: shared tiles against the interpreter, rel err {err:.2e}");
        assert!(err <= 1e-4, "{n}: {err:e}");
    }
}

/// A model of matmuls with ragged edges on every axis (70 rows, reduced axes of 40 and 33,
/// 136 and 24 columns), a broadcast `b` with an epilogue, a batched `z·zᵀ`, a `linear`, and a
/// reduced axis of 200 (slices enough to go round the staging's ring of stages), written
/// into `d`; returns its path.
fn matmuls_model(d: &std::path::Path) -> String {
    let src = d.join("matmuls.arch");
    std::fs::write(
        &src,
        "model tc {\n  input x: f32[batch, seq, 40]\n  input y: f32[40, 136]\n  input z: f32[batch, seq, 33]\n  input u: f32[batch, seq, 200]\n  input v: f32[200, 16]\n  output c = gelu(matmul(x, y) + 1.5)\n  output e = matmul(z, transpose(z, -1, -2)) * 0.5\n  output f = linear(x, 24)\n  output g = matmul(u, v)\n}\n",
    )
    .unwrap();
    src.to_string_lossy().into_owned()
}

/// Attention whose q, k and v are f16 or bf16 runs on tensor cores when lowered for a GPU
/// (FlashAttention-2's loop nest: `mma.sync` for `Q·Kᵀ` and `P·V`, the online softmax's row
/// maxima and sums folded across lanes). Causal grouped-query attention, a sliding window, a
/// padding mask, a softcap written as math and cross-attention over a memory of another
/// length, at lengths no tile divides, against the CPU's kernels in the same storage type:
/// within 1e-3 in f16 (`P` is rounded to f16 for its product on tensor cores, to nothing on
/// the CPU; 3e-4 seen) and 1e-2 in bf16 (2e-3 seen). The kernels assemble for both
/// architectures, the softmax's exponentials on the special-function unit (`ex2.approx`).
#[test]
fn narrow_attention_runs_on_tensor_cores_in_the_simulator() {
    let d = scratch_dir("tensor-core-attention");
    let file = attention_model(&d);
    for (dtype, bound) in [("f16", 1e-3), ("bf16", 1e-2)] {
        let kernels = narrow_kernels(&file, dtype);
        assert_eq!(folds(&kernels, "Max", 4), 5, "{kernels}");
        if CUDA_BUILT {
            // f16 for sm_80, bf16 for sm_90a (each takes a while to compile, and together
            // they cover both intrinsics and both architectures).
            let arch = if dtype == "f16" { "sm_80" } else { "sm_90a" };
            let mma = mma_sync(dtype);
            let expect = [mma.as_str(), "shfl.sync.bfly", "ex2.approx.ftz.f32"];
            assemble(&file, (dtype, arch), &expect);
        }
        if !common::SIMULATOR_CHECKS {
            continue;
        }
        let how = [
            ("cpu", ["--backend", "cranelift"]),
            ("sim", ["--device", "cuda-sim"]),
        ];
        let dims = ["batch=2", "seq=70", "mem=150"];
        let outs = run_each(&d, (&file, &dims, dtype), &how);
        for n in ["causal", "window", "padded", "cross", "capped"] {
            let err = rel_err(&outs[1].read_any(n).unwrap(), &outs[0].read_any(n).unwrap());
            println!("{dtype} {n}: tensor cores against the CPU, rel err {err:.2e}");
            assert!(err <= bound, "{dtype} {n}: {err:e}");
        }
    }
}

/// The selective scan runs on a GPU as a block scan (`lower/scan_blocks.rs`): a block per 32
/// channels, a lane each, its warps each composing the affine maps of their segment of a
/// chunk, the block scanning the warps' maps in shared memory, the state carried from one
/// chunk of 128 steps into the next. A Mamba-1 scan with its read-out and gate (5 states: not
/// a multiple of 4) and a scan that stores its state, at 2100 steps (a ragged last chunk)
/// over 2 × 19 channels (a second block with lanes to spare), against the Graph IR
/// interpreter: f32 within 1e-4.
#[test]
fn selective_scan_runs_as_a_block_scan_in_the_simulator() {
    let d = scratch_dir("block-scan");
    let src = d.join("scan.arch");
    std::fs::write(
        &src,
        "model scans {
  input x: f32[batch, seq, 19]
  input z: f32[batch, seq, 19]
  input delta: f32[batch, seq, 19]
  input B: f32[batch, seq, 5]
  input C: f32[batch, seq, 5]
  param A_log: [19, 5]
  param D: [19]
  dt = softplus(delta)
  a = exp(unsqueeze(dt, -1) * -exp(A_log))
  b = unsqueeze(dt * x, -1) * unsqueeze(B, -2)
  h = scan(a, b, 1)
  y = sum(h * unsqueeze(C, -2), -1) + x * D
  output y = y * silu(z)
  output s = scan(sigmoid(z), x, 1)
}
",
    )
    .unwrap();
    let file = src.to_string_lossy().into_owned();
    let kernels = narrow_kernels(&file, "f32");
    assert_eq!(kernels.matches("maps_h").count(), 2, "{kernels}");
    let how = [
        ("interp", ["--backend", "interp"]),
        ("sim", ["--device", "cuda-sim"]),
    ];
    let outs = run_each(&d, (&file, &["batch=2", "seq=2100"], "f32"), &how);
    for n in ["y", "s"] {
        let err = rel_err(&outs[1].read_any(n).unwrap(), &outs[0].read_any(n).unwrap());
        println!("{n}: block scan against the interpreter, rel err {err:.2e}");
        assert!(err <= 1e-4, "{n}: {err:e}");
    }
}

/// Mamba-2's SSD runs on a GPU as blocks per segment of a head's chunks (`lower/ssd_blocks.rs`:
/// the segments' own states, a pass over them, then each segment's outputs from the state
/// before it; each chunk's scores, outputs and state spread over the block's threads in
/// shared memory, the states in a scratch buffer), against the Graph IR interpreter: f32
/// within 1e-4. Small heads take chunks of 64, and 1,100 steps make 18 chunks, two per
/// segment (the last segments empty); Mamba-2's own heads (64 channels, 128 state elements)
/// take 32, so that the chunk's arrays fit in 48 KiB, and two blocks, 32 channels each (x's
/// tile holds 32 × 32). Both sequences end in a short chunk.
///
/// Stored in f16 or bf16, the chunk's four products run on tensor cores (`lower/ssd_mma.rs`:
/// `mma.sync` from `ldmatrix`, B, x and the state's copy transposed where k runs along their
/// rows), against the CPU's kernels in the same storage: within 1e-3 in f16 (4e-4 seen) and
/// 1e-2 in bf16 (3e-3 seen; the decayed scores, the weighed x and the state's copy are
/// rounded to the storage type for their products, as in Mamba-2's kernels). They assemble
/// for both architectures.
#[test]
fn ssd_runs_in_segments_of_chunks_in_the_simulator() {
    let d = scratch_dir("block-ssd");
    let cases = [(3, 6, 5, 64, 1100, 6), (2, 64, 128, 32, 70, 32)];
    for (heads, head_dim, d_state, chunk, seq, channels) in cases {
        let src = d.join(format!("ssd{head_dim}.arch"));
        std::fs::write(
            &src,
            format!(
                "model ssd {{
  config {{ heads = {heads}, head_dim = {head_dim}, d_state = {d_state} }}
  input x: f32[batch, seq, heads, head_dim]
  input delta: f32[batch, seq, heads]
  input B: f32[batch, seq, d_state]
  input C: f32[batch, seq, d_state]
  param A_log: [heads]
  param D: [heads]
  dt = softplus(delta)
  u = reshape(x, [batch, seq, 1, heads, head_dim])
  Bg = reshape(B, [batch, seq, 1, 1, 1, d_state])
  Cg = reshape(C, [batch, seq, 1, 1, 1, d_state])
  decay = reshape(exp(dt * -exp(A_log)), [batch, seq, 1, heads, 1, 1])
  dtu = reshape(dt, [batch, seq, 1, heads, 1]) * u
  h = scan(decay, unsqueeze(dtu, -1) * Bg, 1)
  y = sum(h * Cg, -1) + u * reshape(D, [1, heads, 1])
  output y = reshape(y, [batch, seq, heads, head_dim])
}}
"
            ),
        )
        .unwrap();
        let file = src.to_string_lossy().into_owned();
        let kernels = narrow_kernels(&file, "f32");
        let scores = format!("f32[{}] scores", chunk * chunk);
        assert!(kernels.contains(&scores), "{kernels}");
        let x = format!("f32[{}] x", chunk * channels);
        assert!(kernels.contains(&x), "{kernels}");
        assert!(kernels.contains(".scratch"), "{kernels}");
        for part in ["ssd_pass(", "ssd_outputs("] {
            assert!(kernels.contains(part), "{kernels}");
        }
        let seq = format!("seq={seq}");
        let dims = ["batch=2", seq.as_str()];
        let how = [
            ("interp", ["--backend", "interp"]),
            ("sim", ["--device", "cuda-sim"]),
        ];
        let outs = run_each(&d, (&file, &dims, "f32"), &how);
        let err = rel_err(
            &outs[1].read_any("y").unwrap(),
            &outs[0].read_any("y").unwrap(),
        );
        println!("P {head_dim} N {d_state}: block SSD against the interpreter, rel err {err:.2e}");
        assert!(err <= 1e-4, "{err:e}");
        for (dtype, bound, arch) in [("f16", 1e-3, "sm_80"), ("bf16", 1e-2, "sm_90a")] {
            let kernels = narrow_kernels(&file, dtype);
            assert!(kernels.contains("mma.m16n8k16"), "{kernels}");
            assert!(kernels.contains("ldmatrix.x4.trans"), "{kernels}");
            if CUDA_BUILT {
                assemble(
                    &file,
                    (dtype, arch),
                    &[mma_sync(dtype).as_str(), "ldmatrix"],
                );
            }
            if !common::SIMULATOR_CHECKS {
                continue;
            }
            let how = [
                ("cpu", ["--backend", "cranelift"]),
                ("sim", ["--device", "cuda-sim"]),
            ];
            let outs = run_each(&d, (&file, &dims, dtype), &how);
            let err = rel_err(
                &outs[1].read_any("y").unwrap(),
                &outs[0].read_any("y").unwrap(),
            );
            println!("P {head_dim} N {d_state} {dtype}: SSD on tensor cores against the CPU, rel err {err:.2e}");
            assert!(err <= bound, "{dtype}: {err:e}");
        }
    }
}

/// Attention in f32 runs on a GPU's CUDA cores as FlashAttention's loop nest with four
/// threads per query row (`lower/attention_lanes.rs`: the scores' partial dot products folded
/// across the row's lanes, the online softmax in registers), on the model of the tensor-core
/// test, against the Graph IR interpreter: f32 within 1e-4.
#[test]
#[cfg_attr(
    feature = "llvm",
    ignore = "cuda-sim is feature-independent: the default feature set runs it"
)]
fn f32_attention_runs_on_four_lanes_per_row_in_the_simulator() {
    let d = scratch_dir("lane-attention");
    let file = attention_model(&d);
    let kernels = narrow_kernels(&file, "f32");
    assert_eq!(folds(&kernels, "Add", 4), 5, "{kernels}");
    let how = [
        ("interp", ["--backend", "interp"]),
        ("sim", ["--device", "cuda-sim"]),
    ];
    let dims = ["batch=2", "seq=70", "mem=150"];
    let outs = run_each(&d, (&file, &dims, "f32"), &how);
    for n in ["causal", "window", "padded", "cross", "capped"] {
        let err = rel_err(&outs[1].read_any(n).unwrap(), &outs[0].read_any(n).unwrap());
        println!("{n}: four lanes per row against the interpreter, rel err {err:.2e}");
        assert!(err <= 1e-4, "{n}: {err:e}");
    }
}

/// A few query rows (a decoding step's one) take a row per GPU block, its threads splitting
/// the keys, and groups of lanes each key's channels, then merging their online softmaxes
/// (`lower/attention_split.rs`): the model of the tests above (heads of 64: two lanes per
/// key) and one of heads of 128 (four lanes), at 3 queries against 700 keys of memory
/// (cross-attention) and 3 of their own (most threads see none), f32 and bf16, against the
/// interpreter and the CPU's bf16 kernels.
#[test]
#[cfg_attr(
    feature = "llvm",
    ignore = "cuda-sim is feature-independent: the default feature set runs it"
)]
fn few_query_rows_split_their_keys_across_a_block_in_the_simulator() {
    let d = scratch_dir("split-rows");
    let models = [
        (
            attention_model(&d),
            2,
            &["causal", "window", "padded", "cross", "capped"][..],
        ),
        (wide_attention_model(&d), 4, &["causal", "cross"][..]),
    ];
    for (file, lanes, outputs) in models {
        let kernels = narrow_kernels(&file, "f32");
        let per_key = kernels
            .lines()
            .filter(|l| l.contains("[0..+8] across") && l.ends_with(&format!("{lanes} lanes")))
            .count();
        assert_eq!(per_key, outputs.len(), "{kernels}");
        let dims = ["batch=2", "seq=3", "mem=700"];
        for (dtype, bound) in [("f32", 1e-4), ("bf16", 1e-2)] {
            let reference = if dtype == "f32" {
                ["--backend", "interp"]
            } else {
                ["--backend", "cranelift"]
            };
            let how = [("cpu", reference), ("sim", ["--device", "cuda-sim"])];
            let outs = run_each(&d, (&file, &dims, dtype), &how);
            for n in outputs {
                let err = rel_err(&outs[1].read_any(n).unwrap(), &outs[0].read_any(n).unwrap());
                println!("{n} {dtype} ({lanes} lanes a key): split rows against the CPU, rel err {err:.2e}");
                assert!(err <= bound, "{n} {dtype}: {err:e}");
            }
        }
    }
}

/// Causal grouped-query attention and cross-attention with heads of 128, written into `d`;
/// returns its path.
fn wide_attention_model(d: &std::path::Path) -> String {
    let operands = [
        ("q_causal", 4, "seq"),
        ("k_causal", 2, "seq"),
        ("v_causal", 2, "seq"),
        ("q_cross", 4, "seq"),
        ("memory", 2, "mem"),
    ];
    let inputs: String = operands
        .iter()
        .map(|(name, heads, len)| format!("  input {name}: f32[batch, {heads}, {len}, 128]\n"))
        .collect();
    let outputs = "  output causal = sdpa(q_causal, k_causal, v_causal, causal = true)
  output cross = sdpa(q_cross, memory, memory)";
    let src = format!("model wide {{\n{inputs}{outputs}\n}}\n");
    write_model(d, "wide.arch", &src)
}

/// `src` written into `d` as `name`; returns its path.
fn write_model(d: &std::path::Path, name: &str, src: &str) -> String {
    let path = d.join(name);
    std::fs::write(&path, src).unwrap();
    path.to_string_lossy().into_owned()
}

/// A model of attentions (causal grouped-query, a sliding window of 20, a padding mask,
/// cross-attention over a memory of another length, a softcap written as math with a value
/// width of 24), written into `d`; returns its path.
fn attention_model(d: &std::path::Path) -> String {
    write_model(
        d,
        "attn.arch",
        "model attn {
  input q_causal: f32[batch, 4, seq, 64]
  input k_causal: f32[batch, 2, seq, 64]
  input v_causal: f32[batch, 2, seq, 64]
  input q_window: f32[batch, 4, seq, 64]
  input k_window: f32[batch, 2, seq, 64]
  input v_window: f32[batch, 2, seq, 64]
  input q_padded: f32[batch, 4, seq, 64]
  input k_padded: f32[batch, 2, seq, 64]
  input v_padded: f32[batch, 2, seq, 64]
  input q_capped: f32[batch, 4, seq, 64]
  input k_capped: f32[batch, 2, seq, 64]
  input v_capped: f32[batch, 2, seq, 24]
  input q_cross: f32[batch, 4, seq, 64]
  input memory: f32[batch, 2, mem, 64]
  input mask: bool[batch, seq]
  output causal = sdpa(q_causal, k_causal, v_causal, causal = true)
  output window = sdpa(q_window, k_window, v_window, causal = true, window = 20)
  output padded = sdpa(q_padded, k_padded, v_padded, mask = mask)
  output cross = sdpa(q_cross, memory, memory)
  q = reshape(q_capped, [q_capped.shape[0], 2, 2, q_capped.shape[2], 64])
  s = matmul(q, transpose(unsqueeze(k_capped, 2))) / 8.0
  output capped = matmul(softmax(30.0 * tanh(s / 30.0), -1), unsqueeze(v_capped, 2))
}
",
    )
}

/// How many `WarpFold`s of `op` across `lanes` lanes `kernels` (a dump) holds.
fn folds(kernels: &str, op: &str, lanes: u32) -> usize {
    let across = format!("across {lanes} lanes");
    kernels
        .lines()
        .filter(|l| l.contains(&format!("fold.{op} ")) && l.ends_with(&across))
        .count()
}

/// The kernels of `file` stored as `dtype`, scheduled for sm_80.
fn narrow_kernels(file: &str, dtype: &str) -> String {
    kernels_for(file, (dtype, "sm_80"))
}

/// The kernels of `file` stored as `dtype`, scheduled for GPU architecture `arch`.
fn kernels_for(file: &str, (dtype, arch): (&str, &str)) -> String {
    let dump = [
        "dump", "--stage", "kernels", "--arch", arch, "--dtype", dtype, file,
    ];
    let (s, kernels, e) = archc(&dump);
    assert_eq!(s, 0, "{e}");
    kernels
}

/// PTX's name of the `mma.sync` m16n8k16 of `dtype` operands.
fn mma_sync(dtype: &str) -> String {
    format!("mma.sync.aligned.m16n8k16.row.col.f32.{dtype}.{dtype}.f32")
}

/// The outputs of `file` run with `dims` bound and floats stored as `dtype` in scratch
/// directory `d`, once by each of `how`'s (tag, device or backend flag and value).
fn run_each<'f, F: AsRef<[&'f str]>>(
    d: &std::path::Path,
    (file, dims, dtype): (&str, &[&str], &str),
    how: &[(&str, F)],
) -> Vec<TensorFile> {
    let mut outs = Vec::new();
    for (tag, flags) in how {
        let out = d.join(format!("{dtype}-{tag}.safetensors"));
        let o = out.to_string_lossy().into_owned();
        let mut args = vec!["run", file, "--dtype", dtype, "--outputs", &o];
        args.extend(flags.as_ref());
        for dim in dims {
            args.extend(["--dim", dim]);
        }
        archc_limited(&args, d).expect(0, &[]);
        outs.push(TensorFile::open(&out).unwrap());
    }
    outs
}

/// The kernels of `file` stored as `dtype` compile for `arch` to PTX with every instruction
/// `expect` names, and ptxas assembles them with no performance notes (its table of
/// registers, spills and shared memory printed).
fn assemble(file: &str, (dtype, arch): (&str, &str), expect: &[&str]) {
    let dump = [
        "dump", "--stage", "ptx", "--arch", arch, "--dtype", dtype, file,
    ];
    let (s, ptx, e) = archc(&dump);
    assert_eq!(s, 0, "{e}");
    for instruction in expect {
        assert!(
            ptx.contains(instruction),
            "{arch} {dtype}: no {instruction}"
        );
    }
    if ptxas_or_skip().is_some() {
        let (s, table, e) = archc(&[&dump[..], &["--stats"]].concat());
        assert_eq!(s, 0, "{e}");
        println!("{arch} {dtype}:\n{table}");
        // No `wgmma` pipeline serialised, nothing else ptxas could not do at full speed.
        assert!(table.contains("; 0 performance notes"), "{table}");
    }
}
