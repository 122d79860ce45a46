//! The schedule layer of the Kernel IR: axis kinds, vectors of a width, barriers, shared
//! arrays and the 2-byte float types. Hand-written kernels run on the Kernel IR interpreter
//! and on Cranelift and must agree bit for bit (and with the values computed here); the
//! f16/bf16 conversions must match the `half` crate bit for bit on every f16 and bf16 and on
//! f32 edge cases (NaN, ±Inf, subnormals, overflow, ties).

use archc_compiler::codegen::cranelift::CodegenError;
use archc_compiler::codegen::jit;
use archc_compiler::codegen::kernel_interp::KernelInterp;
use archc_kernels::interp::{run, BufData, KernelError};
use archc_kernels::ir::build::{add, axis, bin, load, mul, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Ieee32, Kernel, Local, Param, Scope, Stmt, Var};
use archc_runtime::{Arg, Launcher, ParamSignature, Signature, Signatures, Size, SplitMix64};

fn param(name: &str, elem: Elem, output: bool) -> Param {
    Param {
        name: name.into(),
        elem,
        output,
    }
}

/// A kernel over `params` (the status word is appended) with shared arrays `shared`.
fn kernel(name: &str, mut params: Vec<Param>, shared: Vec<Local>, body: Vec<Stmt>) -> Kernel {
    params.push(param("status", Elem::I64, true));
    Kernel {
        name: name.into(),
        params,
        locals: Vec::new(),
        shared,
        body,
        occupancy: None,
    }
}

/// Runs `k` on `bufs` (raw bytes, the status word excluded) with `launcher`; returns them.
fn launch(launcher: &dyn Launcher, bufs: &[Vec<u8>], dims: &[i64]) -> Vec<Vec<u8>> {
    let mut bufs: Vec<Vec<u8>> = bufs.to_vec();
    let mut args: Vec<Arg> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| if i == 0 { Arg::Out(b) } else { Arg::In(b) })
        .collect();
    let status = launcher
        .launch(0, &mut args, dims)
        .expect("the kernel runs");
    assert_eq!(status, 0, "no check failed");
    bufs
}

/// The signatures of a kernel run only on buffers of these sizes: their whole lengths.
fn whole(k: &Kernel, bufs: &[Vec<u8>], dims: usize) -> Signatures {
    let params = k
        .params
        .iter()
        .zip(bufs)
        .map(|(p, b)| ParamSignature {
            elem_bytes: p.elem.size(),
            align: p.elem.size(),
            output: p.output,
            len: Size::Const((b.len() / p.elem.size()) as i64),
        })
        .collect();
    Signatures {
        symbols: dims,
        kernels: vec![Signature { params }],
    }
}

/// The kernel's outputs from the interpreter and from Cranelift (4 threads), which must be
/// equal byte for byte.
fn both(k: &Kernel, bufs: &[Vec<u8>], dims: &[i64]) -> Vec<Vec<u8>> {
    let kernels = [k.clone()];
    let interp = launch(&KernelInterp(&kernels), bufs, dims);
    let jit = jit::compile(&kernels, whole(k, bufs, dims.len()))
        .expect("the kernel compiles")
        .with_threads(4)
        .unwrap();
    let native = launch(&jit, bufs, dims);
    assert_eq!(
        interp, native,
        "interpreter and Cranelift differ on {}",
        k.name
    );
    native
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// `out[r] = Σ_c x[r, c] · (1 + u) over u in 0..4 (unrolled)`, then doubled `d1` times in a
/// serial loop: Grid rows, a Reduce axis, an Unroll axis, a Serial axis and a one-thread
/// Thread loop around the store.
#[test]
fn every_axis_kind_runs_the_same_on_both_backends() {
    let (r, c, u, s, t, acc) = (Var(0), Var(1), Var(2), Var(3), Var(4), Var(5));
    let x_at = add(mul(var(r), Expr::Dim(1)), var(c));
    let body = vec![axis(
        Axis::Grid,
        r,
        Expr::Dim(0),
        vec![
            Stmt::Set(acc, Expr::F32(Ieee32::new(0.0))),
            axis(
                Axis::Reduce,
                c,
                Expr::Dim(1),
                vec![axis(
                    Axis::Unroll,
                    u,
                    Expr::Int(4),
                    vec![Stmt::Set(
                        acc,
                        add(
                            var(acc),
                            mul(
                                load(1, x_at.clone()),
                                add(
                                    Expr::F32(Ieee32::new(1.0)),
                                    Expr::Cast(archc_kernels::ir::Ty::F32, Box::new(var(u))),
                                ),
                            ),
                        ),
                    )],
                )],
            ),
            axis(
                Axis::Serial,
                s,
                Expr::Int(3),
                vec![Stmt::Set(acc, mul(var(acc), Expr::F32(Ieee32::new(2.0))))],
            ),
            axis(
                Axis::Thread,
                t,
                Expr::Int(1),
                vec![Stmt::Store(0, add(var(r), var(t)), var(acc))],
            ),
        ],
    )];
    let k = kernel(
        "axes",
        vec![param("out", Elem::F32, true), param("x", Elem::F32, false)],
        vec![],
        body,
    );
    let (rows, cols) = (37usize, 5usize);
    let x: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 - 3.0).collect();
    let out = both(
        &k,
        &[f32_bytes(&vec![0.0; rows]), f32_bytes(&x)],
        &[rows as i64, cols as i64],
    );
    let want: Vec<f32> = (0..rows)
        .map(|r| {
            let mut acc = 0.0f32;
            for c in 0..cols {
                for u in 0..4 {
                    acc += x[r * cols + c] * (1.0 + u as f32);
                }
            }
            acc * 8.0
        })
        .collect();
    assert_eq!(f32s(&out[0]), want);
}

/// Each block of 8 reverses its elements through a shared array: thread `t` writes slot `t`,
/// a barrier, then thread `t` reads slot `7 − t` (written by another thread).
fn reverse_blocks() -> Kernel {
    let (b, t, t2) = (Var(0), Var(1), Var(2));
    let at = |t: Var| add(mul(var(b), Expr::Int(8)), var(t));
    let shared = 3; // out, x, status, then the shared array
    let body = vec![axis(
        Axis::Grid,
        b,
        Expr::Dim(0),
        vec![
            axis(
                Axis::Thread,
                t,
                Expr::Int(8),
                vec![Stmt::Store(shared, var(t), load(1, at(t)))],
            ),
            Stmt::Barrier(Scope::Block),
            axis(
                Axis::Thread,
                t2,
                Expr::Int(8),
                vec![Stmt::Store(
                    0,
                    at(t2),
                    load(shared, bin(Bin::Sub, Expr::Int(7), var(t2))),
                )],
            ),
        ],
    )];
    kernel(
        "reverse_blocks",
        vec![param("out", Elem::F32, true), param("x", Elem::F32, false)],
        vec![Local {
            name: "tile".into(),
            elem: Elem::F32,
            len: 8,
        }],
        body,
    )
}

#[test]
fn a_barrier_and_a_shared_array_exchange_values_between_threads() {
    let k = reverse_blocks();
    let blocks = 13;
    let x: Vec<f32> = (0..8 * blocks).map(|i| i as f32).collect();
    let out = both(
        &k,
        &[f32_bytes(&vec![0.0; 8 * blocks]), f32_bytes(&x)],
        &[blocks as i64],
    );
    let want: Vec<f32> = (0..8 * blocks)
        .map(|i| (i / 8 * 8 + 7 - i % 8) as f32)
        .collect();
    assert_eq!(f32s(&out[0]), want);
}

#[test]
fn a_barrier_inside_a_thread_loop_is_refused_by_the_interpreter() {
    let t = Var(0);
    let k = kernel(
        "bad_barrier",
        vec![param("out", Elem::F32, true)],
        vec![],
        vec![axis(
            Axis::Thread,
            t,
            Expr::Int(2),
            vec![Stmt::Barrier(Scope::Warp)],
        )],
    );
    let mut bufs = vec![BufData::F32(vec![0.0]), BufData::I64(vec![0])];
    assert_eq!(
        run(&k, &mut bufs, &[]),
        Err(KernelError::BarrierInThreadLoop("bad_barrier".into()))
    );
}

#[test]
fn cranelift_refuses_vectors_of_other_widths() {
    let i = Var(0);
    let k = kernel(
        "wide",
        vec![param("out", Elem::F32, true), param("x", Elem::F32, false)],
        vec![],
        vec![axis(
            Axis::Grid,
            i,
            Expr::Int(1),
            vec![Stmt::VStore(
                0,
                Expr::Int(0),
                Expr::VLoad(1, Box::new(Expr::Int(0)), 8),
                8,
            )],
        )],
    );
    match jit::compile(std::slice::from_ref(&k), whole(&k, &[], 0)) {
        Err(CodegenError::VectorWidth { kernel, lanes }) => {
            assert_eq!((kernel.as_str(), lanes), ("wide", 8))
        }
        other => panic!("expected a vector width error, got {:?}", other.err()),
    }
    // The interpreter runs any width.
    let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
    let mut bufs = vec![
        BufData::F32(vec![0.0; 8]),
        BufData::F32(x.clone()),
        BufData::I64(vec![0]),
    ];
    run(&k, &mut bufs, &[]).expect("runs");
    assert_eq!(bufs[0], BufData::F32(x));
}

/// `out[i] = in[i]` converting between storage types, scalar or four lanes at a time.
fn convert(from: Elem, to: Elem, vector: bool) -> Kernel {
    let i = Var(0);
    let body = if vector {
        let at = mul(var(i), Expr::Int(4));
        vec![axis(
            Axis::Grid,
            i,
            bin(Bin::Div, Expr::Dim(0), Expr::Int(4)),
            vec![Stmt::VStore(
                0,
                at.clone(),
                Expr::VLoad(1, Box::new(at), 4),
                4,
            )],
        )]
    } else {
        vec![axis(
            Axis::Grid,
            i,
            Expr::Dim(0),
            vec![Stmt::Store(0, var(i), load(1, var(i)))],
        )]
    };
    kernel(
        &format!("convert_{from:?}_{to:?}"),
        vec![param("out", to, true), param("in", from, false)],
        vec![],
        body,
    )
}

/// f32 values that exercise every rounding path: NaNs with payloads, ±Inf, ±0, f32 and f16
/// subnormals, the f16 and bf16 overflow thresholds, ties, then random bit patterns.
fn edge_f32s() -> Vec<f32> {
    let mut v: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7F80_0001),
        f32::from_bits(0xFFC1_2345),
        f32::from_bits(0x7FBF_FFFF),
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::MAX,
        f32::MIN,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        1e6,
        6.103_515_6e-5,
        6.097_555e-5,
        5.960_464_5e-8,
        2.980_232_2e-8,
        2.980_232_4e-8,
        8.940_697e-8,
        1e-10,
        1.0 + 1.0 / 1024.0 + 1.0 / 2048.0,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        f32::from_bits(0x7F7F_8000),
        f32::from_bits(0x7F7F_7FFF),
        f32::from_bits(0x3F80_8001),
    ];
    let mut rng = SplitMix64::new(7, "edge_f32s");
    v.extend((0..20_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
    while !v.len().is_multiple_of(4) {
        v.push(0.5);
    }
    v
}

/// The 2-byte types with `half`'s conversions: f32 → bits and bits → f32.
type Half = (Elem, fn(f32) -> u16, fn(u16) -> f32);

const HALVES: [Half; 2] = [
    (
        Elem::F16,
        |x| half::f16::from_f32(x).to_bits(),
        |h| half::f16::from_bits(h).to_f32(),
    ),
    (
        Elem::BF16,
        |x| half::bf16::from_f32(x).to_bits(),
        |h| half::bf16::from_bits(h).to_f32(),
    ),
];

#[test]
fn f32_to_f16_and_bf16_round_as_the_half_crate_does() {
    let x = edge_f32s();
    let dims = [x.len() as i64];
    for (elem, narrow, _) in HALVES {
        for vector in [false, true] {
            let k = convert(Elem::F32, elem, vector);
            let out = both(&k, &[vec![0; 2 * x.len()], f32_bytes(&x)], &dims);
            let want: Vec<u16> = x.iter().map(|v| narrow(*v)).collect();
            assert_eq!(u16s(&out[0]), want, "{elem:?}, vector {vector}");
        }
    }
}

#[test]
fn every_f16_and_bf16_widens_as_the_half_crate_does() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let dims = [all.len() as i64];
    for (elem, _, widen) in HALVES {
        for vector in [false, true] {
            let k = convert(elem, Elem::F32, vector);
            let out = both(&k, &[vec![0; 4 * all.len()], u16_bytes(&all)], &dims);
            let got: Vec<u32> = f32s(&out[0]).iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = all.iter().map(|h| widen(*h).to_bits()).collect();
            assert_eq!(got, want, "{elem:?}, vector {vector}");
        }
    }
}

#[test]
fn a_kernel_loading_bf16_and_storing_f16_agrees_with_the_interpreter() {
    // out = in · 3 + 1, from bf16 to f16: the product is rounded once, at the store.
    let i = Var(0);
    let value = add(
        mul(load(1, var(i)), Expr::F32(Ieee32::new(3.0))),
        Expr::F32(Ieee32::new(1.0)),
    );
    let k = kernel(
        "bf16_to_f16",
        vec![
            param("out", Elem::F16, true),
            param("in", Elem::BF16, false),
        ],
        vec![],
        vec![axis(
            Axis::Grid,
            i,
            Expr::Dim(0),
            vec![Stmt::Store(0, var(i), value)],
        )],
    );
    let all: Vec<u16> = (0..=u16::MAX).step_by(7).collect();
    let out = both(
        &k,
        &[vec![0; 2 * all.len()], u16_bytes(&all)],
        &[all.len() as i64],
    );
    let want: Vec<u16> = all
        .iter()
        .map(|b| half::f16::from_f32(half::bf16::from_bits(*b).to_f32() * 3.0 + 1.0).to_bits())
        .collect();
    assert_eq!(u16s(&out[0]), want);
}

#[test]
fn the_printer_shows_axis_kinds_barriers_and_shared_arrays() {
    insta::assert_snapshot!(archc_kernels::print_kernel(&reverse_blocks()));
    let launch = archc_compiler::lower::launch::launch(&reverse_blocks()).expect("dims only");
    assert_eq!(
        launch.show(&["blocks".to_string()]),
        "grid=[blocks] block=[8]"
    );
}
