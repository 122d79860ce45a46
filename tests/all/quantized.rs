//! Weights kept block-quantized in memory (ggml's Q8_0, Q4_0, Q4_1). A kernel loading them
//! dequantizes every element exactly as ggml's reference does, on the Kernel IR interpreter
//! and on every native backend, scalar and in vectors of 4 to 16 lanes, and so does one that
//! reads a block's parts (`Expr::Block`), or the row parts of groups of 16 rows, and
//! multiplies and adds them itself. Whole models whose weights stay in blocks (their matmuls
//! reading them in place, most in groups of rows; a tied embedding gathered from them) give
//! the graph interpreter's outputs on the dequantized weights within 1e-4, for one row
//! (decoding), ragged row counts, and prompts long enough for the blocked kernel that packs
//! the blocks; with LLVM at 16, 8 and 4 lanes.

use std::collections::{BTreeMap, HashMap, HashSet};

#[cfg(feature = "llvm")]
use archc_compiler::codegen::backend::BackendKind;
use archc_compiler::codegen::kernel_interp::KernelInterp;
use archc_compiler::interp::{bind_dims, interpret, MapWeights};
use archc_compiler::passes::{lower_optimized_for, PassOptions};
use archc_kernels::ir::build::{add, axis, bin, load, mul, var};
use archc_kernels::ir::{Axis, Bin, BlockPart, Elem, Expr, Kernel, Param, Stmt, Var};
use archc_kernels::target::Target;
#[cfg(feature = "llvm")]
use archc_kernels::target::X86Level;
use archc_runtime::quant::{BlockFormat, GgmlType};
use archc_runtime::{
    random_tensor, Arg, DType, Executor, Launcher, ParamSignature, Signature, Signatures, Size,
    SplitMix64, Tensor, WeightData, WeightSource,
};

use crate::common::{self, compile, repo};

const FORMATS: [(BlockFormat, Elem); 3] = [
    (BlockFormat::Q8_0, Elem::Q8_0),
    (BlockFormat::Q4_0, Elem::Q4_0),
    (BlockFormat::Q4_1, Elem::Q4_1),
];

/// The same in groups of 16 rows: the plain format's blocks, and the element type.
const GROUPED: [(BlockFormat, Elem); 3] = [
    (BlockFormat::Q8_0, Elem::Q8_0x16),
    (BlockFormat::Q4_0, Elem::Q4_0x16),
    (BlockFormat::Q4_1, Elem::Q4_1x16),
];

/// `n` elements (whole blocks) of random blocks: scales and minimums random finite f16s of
/// either sign, the quantized values random bytes.
fn random_blocks(format: BlockFormat, n: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed, "blocks");
    let (_, bytes) = format.ggml().block();
    let halves = if format == BlockFormat::Q4_1 { 2 } else { 1 };
    (0..n / 32)
        .flat_map(|_| {
            let mut block: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
            for h in 0..halves {
                let x = (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0;
                block[2 * h..2 * h + 2].copy_from_slice(&half::f16::from_f32(x).to_le_bytes());
            }
            block
        })
        .collect()
}

/// The values blocks hold, by ggml's reference dequantization.
fn dequantized(format: BlockFormat, blocks: &[u8]) -> Vec<f32> {
    let mut out = vec![0.0; blocks.len() / format.ggml().block().1 * 32];
    format.ggml().dequantize(blocks, &mut out);
    out
}

/// `out[i] = w[i]` for `dims[0]` elements of a quantized `w`, scalar or `width` lanes at a time.
fn widen(elem: Elem, width: u8) -> Kernel {
    let i = Var(0);
    let store = match width {
        1 => Stmt::Store(0, var(i), load(1, var(i))),
        w => {
            let at = mul(var(i), Expr::Int(i64::from(w)));
            Stmt::VStore(0, at.clone(), Expr::VLoad(1, Box::new(at), w), w)
        }
    };
    let extent = bin(Bin::Div, Expr::Dim(0), Expr::Int(i64::from(width)));
    let param = |name: &str, elem, output| Param {
        name: name.into(),
        elem,
        output,
    };
    Kernel {
        name: format!("widen_{elem:?}_{width}"),
        params: vec![
            param("out", Elem::F32, true),
            param("w", elem, false),
            param("status", Elem::I64, true),
        ],
        locals: Vec::new(),
        shared: Vec::new(),
        body: vec![axis(Axis::Grid, i, extent, vec![store])],
        occupancy: None,
    }
}

fn launch(launcher: &dyn Launcher, blocks: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0u8; 4 * n];
    let mut args = [Arg::Out(&mut out), Arg::In(blocks)];
    let status = launcher.launch(0, &mut args, &[n as i64]).unwrap();
    assert_eq!(status, 0);
    out.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `out[32·b + j] = quants · scale (+ min)` for every block `b`, from `Expr::Block`'s parts,
/// `width` integers at a time (a multiply, then an add: ggml's order).
fn from_parts(elem: Elem, width: u8) -> Kernel {
    let b = Var(0);
    let part = |p| Expr::Block(1, Box::new(var(b)), p);
    let splat = |e: Expr| Expr::Splat(Box::new(e), width);
    let runs = 32 / i64::from(width);
    let mut body = Vec::new();
    for r in 0..runs {
        let at = (r * i64::from(width)) as u8;
        let q = part(BlockPart::Quants { at, width });
        let mut x = mul(q, splat(part(BlockPart::Scale)));
        if elem == Elem::Q4_1 {
            x = add(x, splat(part(BlockPart::Min)));
        }
        let to = add(mul(var(b), Expr::Int(32)), Expr::Int(i64::from(at)));
        body.push(Stmt::VStore(0, to, x, width));
    }
    let mut k = widen(elem, width);
    k.name = format!("parts_{elem:?}_{width}");
    let blocks = bin(Bin::Div, Expr::Dim(0), Expr::Int(32));
    k.body = vec![axis(Axis::Grid, b, blocks, body)];
    k
}

/// The signature of a kernel writing `n` f32s (`dims[0]`) from `n` elements of `format`.
fn signatures(format: BlockFormat, n: usize) -> Signatures {
    Signatures {
        symbols: 1,
        kernels: vec![Signature {
            params: vec![
                ParamSignature {
                    elem_bytes: 4,
                    align: 4,
                    output: true,
                    len: Size::Symbol(0),
                },
                ParamSignature {
                    elem_bytes: format.ggml().block().1,
                    align: 1,
                    output: false,
                    len: Size::Const((n / 32) as i64),
                },
            ],
        }],
    }
}

/// The launchers each kernel runs on besides the interpreter, by name: Cranelift (4 lanes at
/// most) and, where built, LLVM.
fn natives(
    kernels: &[Kernel],
    signatures: Signatures,
    width: u8,
) -> Vec<(&'static str, Box<dyn Launcher>)> {
    let mut out: Vec<(&'static str, Box<dyn Launcher>)> = Vec::new();
    if width <= 4 {
        let jit = archc_compiler::codegen::jit::compile(kernels, signatures.clone()).unwrap();
        out.push(("cranelift", Box::new(jit.with_threads(3).unwrap())));
    }
    #[cfg(feature = "llvm")]
    {
        let jit = archc_compiler::codegen::llvm::compile(kernels, signatures).unwrap();
        out.push(("llvm", Box::new(jit.with_threads(3).unwrap())));
    }
    #[cfg(not(feature = "llvm"))]
    let _ = signatures;
    out
}

/// Kernel `k` passes the verifier and, launched on `blocks` (of `format`, or its groups),
/// writes exactly `want` on the interpreter and on every native backend for `width` lanes.
fn writes_bit_for_bit(k: Kernel, (format, width): (BlockFormat, u8), blocks: &[u8], want: &[f32]) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let n = want.len();
    let problems = archc_kernels::verify::verify_kernel(&k, 1);
    assert!(problems.is_empty(), "{problems:?}");
    let kernels = [k];
    let name = &kernels[0].name;
    let by_ir = launch(&KernelInterp(&kernels), blocks, n);
    assert_eq!(bits(&by_ir), bits(want), "the interpreter, {name}");
    for (backend, native) in natives(&kernels, signatures(format, n), width) {
        let got = launch(native.as_ref(), blocks, n);
        assert_eq!(bits(&got), bits(want), "{backend}, {name}");
    }
}

#[test]
fn loads_dequantize_as_ggml_does_on_every_backend() {
    let n = 32 * 40;
    for (format, elem) in FORMATS {
        let blocks = random_blocks(format, n, 7);
        let want = dequantized(format, &blocks);
        for width in [1u8, 4, 8, 16] {
            let mut kernels = vec![widen(elem, width)];
            if width > 1 {
                kernels.push(from_parts(elem, width));
            }
            for k in kernels {
                writes_bit_for_bit(k, (format, width), &blocks, &want);
            }
        }
    }
}

/// `out[c·rows + r] = w[r, c]` for a `rows × 64` matrix in groups of 16 rows (`dims[0]`
/// elements), from `Expr::Block`'s row parts, `width` rows at a time: each group's scales
/// (and minimums), then per element of its blocks the rows' integers, multiplied and added.
fn from_groups(elem: Elem, width: u8) -> Kernel {
    let (g, rows) = (Var(0), bin(Bin::Div, Expr::Dim(0), Expr::Int(64)));
    let splat_rows = 16 / i64::from(width);
    let mut body = Vec::new();
    for c in 0..splat_rows {
        let first = i64::from(width) * c;
        let block = add(mul(var(g), Expr::Int(16)), Expr::Int(first));
        let part = |p| Expr::Block(1, Box::new(block.clone()), p);
        for j in 0..32u8 {
            let mut x = mul(
                part(BlockPart::Column { j, width }),
                part(BlockPart::Scales { width }),
            );
            if elem == Elem::Q4_1x16 {
                x = add(x, part(BlockPart::Mins { width }));
            }
            // Group g is rows 16·(g / 2).., columns 32·(g mod 2)..
            let row = add(
                mul(bin(Bin::Div, var(g), Expr::Int(2)), Expr::Int(16)),
                Expr::Int(first),
            );
            let col = add(
                mul(bin(Bin::Rem, var(g), Expr::Int(2)), Expr::Int(32)),
                Expr::Int(i64::from(j)),
            );
            body.push(Stmt::VStore(0, add(mul(col, rows.clone()), row), x, width));
        }
    }
    let mut k = widen(elem, width);
    k.name = format!("groups_{elem:?}_{width}");
    let groups = bin(Bin::Div, Expr::Dim(0), Expr::Int(512));
    k.body = vec![axis(Axis::Grid, g, groups, body)];
    k
}

#[test]
fn groups_of_rows_read_as_their_blocks_dequantize_on_every_backend() {
    let (rows, cols) = (48, 64);
    let n = rows * cols;
    for (format, elem) in GROUPED {
        let grouped = format.grouped();
        let plain = random_blocks(format, n, 9);
        let mut blocks = vec![0; plain.len()];
        assert!(grouped.interleave(&plain, rows, &mut blocks).is_some());
        let values = dequantized(format, &plain);
        // Transposed: a vector's lanes are rows.
        let want: Vec<f32> = (0..n)
            .map(|i| values[(i % rows) * cols + i / rows])
            .collect();
        for width in [4u8, 8, 16] {
            writes_bit_for_bit(from_groups(elem, width), (grouped, width), &blocks, &want);
        }
    }
}

#[test]
fn the_verifier_refuses_stores_to_blocks_and_odd_widths() {
    let mut k = widen(Elem::Q8_0, 4);
    k.params[0].elem = Elem::Q4_1;
    let text: String = archc_kernels::verify::verify_kernel(&k, 1)
        .iter()
        .map(|p| p.what.clone())
        .collect();
    assert!(
        text.contains("block-quantized buffer (read-only)"),
        "{text}"
    );
    let mut k = widen(Elem::Q8_0, 4);
    if let Stmt::For { body, .. } = &mut k.body[0] {
        body[0] = Stmt::VStore(
            0,
            Expr::Int(0),
            Expr::VLoad(1, Box::new(Expr::Int(0)), 3),
            3,
        );
    }
    let text: String = archc_kernels::verify::verify_kernel(&k, 1)
        .iter()
        .map(|p| p.what.clone())
        .collect();
    assert!(text.contains("widths divide 16"), "{text}");
    // Groups of rows are read by row parts only, and row parts read only groups.
    let text: String = [widen(Elem::Q4_1x16, 4), from_groups(Elem::Q4_1, 4)]
        .iter()
        .flat_map(|k| archc_kernels::verify::verify_kernel(k, 1))
        .map(|p| p.what)
        .collect();
    assert!(
        text.contains("groups of rows are read only by Block's row parts"),
        "{text}"
    );
    assert!(text.contains("row parts read groups of rows"), "{text}");
}

/// A model whose matmuls read quantized weights: a fused epilogue, a residual, rows merged
/// over a batch, and a table that is both gathered and the tied output projection.
const MODEL: &str = "model q {
  input x: f32[batch, seq, 64]
  input ids: i32[batch, seq]
  param table: [48, 64]
  h = gelu(linear(x, 96)) @up
  y = x + linear(h, 64) @down
  output logits = matmul(y + gather(table, ids), transpose(table))
}
";

/// Runs `g` with its weights whose rows are whole blocks kept in `format` (the others random
/// f32), on the Kernel IR interpreter and every native backend, against the graph interpreter
/// on the same weights dequantized.
/// At least `min_grouped` weights are read in groups of rows.
fn check(
    g: &archc_compiler::graph::Graph,
    (format, min_grouped): (BlockFormat, usize),
    inputs: &HashMap<String, Tensor>,
) {
    let random = WeightSource::Random(11);
    let mut blocks = BTreeMap::new();
    let mut f32s = HashMap::new();
    let mut bytes = HashMap::new();
    for (i, (name, (n, _))) in g.params.iter().enumerate() {
        let shape: Vec<usize> = g
            .ty(*n)
            .shape
            .iter()
            .map(|d| d.as_const().unwrap() as usize)
            .collect();
        if shape.len() == 2 && shape[1].is_multiple_of(32) {
            let b = random_blocks(format, shape[0] * shape[1], i as u64);
            f32s.insert(name.clone(), Tensor::f32(shape, dequantized(format, &b)));
            bytes.insert(name.clone(), b);
            blocks.insert(name.clone(), format);
        } else {
            f32s.insert(
                name.clone(),
                random.tensor(name, DType::F32, &shape).unwrap(),
            );
        }
    }
    assert!(!blocks.is_empty());
    let dims = bind_dims(g, inputs, &HashMap::new()).unwrap();
    let want = interpret(g, &dims, inputs, &mut MapWeights(&f32s)).unwrap();
    let passes = PassOptions::all().with_blocks(blocks);
    let mut runs: Vec<(
        String,
        Target,
        Option<archc_compiler::codegen::backend::BackendKind>,
    )> = vec![("kernel IR".into(), Target::cranelift_x86_64(), None)];
    for kind in common::backends() {
        runs.push((kind.name().into(), kind.target(), Some(kind)));
    }
    // LLVM at narrower vectors too (what an AVX2 or SSE2 machine gets): the groups of 16 rows
    // are then 2 or 4 vectors each, with one group per task.
    #[cfg(feature = "llvm")]
    for level in [X86Level::V3, X86Level::Baseline] {
        let target = Target::x86_64(level);
        let name = format!("llvm at {} lanes", target.lanes);
        runs.push((name, target, Some(BackendKind::Llvm)));
    }
    for (backend, target, kind) in runs {
        let lowered = lower_optimized_for(g, &passes, &target).unwrap();
        let plan = &lowered.plan;
        let quantized: HashSet<&String> = plan
            .weights
            .iter()
            .filter(|w| plan.buffers[w.buffer].blocks.is_some())
            .map(|w| &w.name)
            .collect();
        assert_eq!(
            quantized.len(),
            bytes.len(),
            "{backend}: every weight stays in blocks"
        );
        let grouped = plan.buffers.iter().filter_map(|b| b.blocks);
        assert!(
            grouped.filter(|b| b.is_grouped()).count() >= min_grouped,
            "{backend}: matmuls read at least {min_grouped} weights in groups of rows"
        );
        let mut exec = Executor::new(&lowered.plan, |name, _, _| {
            Ok::<WeightData, String>(match bytes.get(name) {
                Some(b) => WeightData::Bytes(b.clone()),
                None => WeightData::Tensor(f32s[name].clone()),
            })
        })
        .unwrap();
        let launcher: Box<dyn Launcher> = match kind {
            Some(kind) => common::jit(kind, &lowered),
            None => Box::new(KernelInterp(&lowered.kernels)),
        };
        let context = format!("{backend}, {format:?}");
        common::assert_run_close(&mut exec, launcher.as_ref(), inputs, &want, &context);
    }
}

#[test]
fn matmuls_read_blocks_in_place_as_the_interpreter_computes_on_their_values() {
    let g = compile("q.arch", MODEL).unwrap_or_else(|(_, r)| panic!("{r}"));
    for (format, _) in FORMATS {
        for (batch, seq) in [(1, 1), (2, 3), (1, 9), (2, 21)] {
            let mut inputs = HashMap::new();
            let x = random_tensor(3, "x", DType::F32, &[batch, seq, 64], 1.0, 0);
            inputs.insert("x".to_string(), x);
            let ids: Vec<i64> = (0..batch * seq).map(|i| (i as i64 * 7) % 40).collect();
            inputs.insert(
                "ids".to_string(),
                Tensor::int(DType::I32, vec![batch, seq], ids),
            );
            // `up`, `down` and the tied table's copy for its projection.
            check(&g, (format, 3), &inputs);
        }
    }
}

#[test]
fn the_llama_example_runs_on_q4_1_weights() {
    let text = std::fs::read_to_string(repo("examples/llama.arch")).unwrap();
    let g = compile("llama.arch", &text).unwrap_or_else(|(_, r)| panic!("{r}"));
    for (batch, seq) in [(2, 5), (1, 40)] {
        let ids: Vec<i64> = (0..batch * seq).map(|i| (i as i64 * 37) % 512).collect();
        let ids = Tensor::int(DType::I32, vec![batch, seq], ids);
        let inputs = HashMap::from([("input_ids".to_string(), ids)]);
        // With blocks the layers stay unrolled: each of the two layers' six matmuls whose
        // weights are whole blocks reads its own weight in groups, and so does the output
        // projection (a copy of the tied embedding's).
        check(&g, (BlockFormat::Q4_1, 13), &inputs);
    }
}

#[test]
fn a_gguf_type_names_its_block_format() {
    assert_eq!(GgmlType::Q4_1.format(), Some(BlockFormat::Q4_1));
    assert_eq!(GgmlType::F16.format(), None);
    assert_eq!(BlockFormat::Q8_0.bytes(64), 68);
}

/// `build` and `dump` read a GGUF file's block formats only: another file is a usage error, a
/// damaged one an error naming it.
#[test]
fn build_and_dump_take_only_a_gguf_file_for_its_blocks() {
    let d = common::scratch_dir("quantized-cli");
    let llama = repo("examples/llama.arch");
    let llama = llama.to_str().unwrap_or_default();
    let readme = repo("README.md");
    let args = [
        "build",
        llama,
        "--weights",
        readme.to_str().unwrap_or_default(),
        "-o",
        "x",
    ];
    common::archc_limited(&args, &d).expect(2, &["is not a GGUF checkpoint"]);
    std::fs::write(d.join("cut.gguf"), b"GGUF\x03\x00\x00\x00").expect("writable");
    let args = ["dump", "--stage", "kernels", llama, "--weights", "cut.gguf"];
    common::archc_limited(&args, &d).expect(1, &["cut.gguf"]);
    std::fs::remove_dir_all(&d).ok();
}
