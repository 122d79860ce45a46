//! Training: the optimisers, clipping and the EMA update against torch's recorded steps
//! (scripts/make_optim_fixture.py), and `archc train` through the binary.

use std::collections::HashMap;

use crate::common::{self, repo};
use archc_runtime::optim::{clip_grad_norm, ema_update, OptimState, Optimizer};
use archc_runtime::TensorFile;

fn fixture() -> HashMap<String, Vec<f32>> {
    read(&repo("tests/fixtures/optim.safetensors"))
}

/// max |got − want| ÷ max |want|.
fn rel(got: &[f32], want: &[f32]) -> f64 {
    let diff = got.iter().zip(want).map(|(a, b)| f64::from((a - b).abs()));
    let scale = want.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max);
    diff.fold(0.0, f64::max) / scale
}

/// Three steps of an optimiser from the fixture's weight and gradients, each within 1e-6 of
/// torch's.
fn three_steps(optimizer: Optimizer, (lr, decay): (f64, f64), prefix: &str) {
    let f = fixture();
    let mut params = HashMap::from([("p".to_string(), f["p0"].clone())]);
    let mut state = OptimState::default();
    for i in 1..=3 {
        let grads = HashMap::from([("p".to_string(), f[&format!("g{i}")].clone())]);
        state.update(optimizer, |_| (lr, decay), &mut params, &grads);
        let err = rel(&params["p"], &f[&format!("{prefix}_{i}")]);
        assert!(err <= 1e-6, "{prefix} step {i}: rel err {err:.2e}");
    }
}

#[test]
fn adamw_matches_torch() {
    let adamw = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    three_steps(adamw, (1e-2, 0.1), "adamw");
}

#[test]
fn sgd_with_momentum_matches_torch() {
    three_steps(Optimizer::Sgd { momentum: 0.9 }, (0.05, 0.01), "sgd");
}

#[test]
fn ema_and_clipping_match_torch() {
    let f = fixture();
    // The EMA target after one AdamW step of its online weight.
    let mut params = HashMap::from([("p".to_string(), f["p0"].clone())]);
    let grads = HashMap::from([("p".to_string(), f["g1"].clone())]);
    let adamw = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    OptimState::default().update(adamw, |_| (1e-2, 0.1), &mut params, &grads);
    let mut target = f["t0"].clone();
    ema_update(&mut target, &params["p"], 0.996);
    let err = rel(&target, &f["ema_1"]);
    assert!(err <= 1e-6, "ema: rel err {err:.2e}");
    let mut grads = HashMap::from([
        ("a".to_string(), f["g1"].clone()),
        ("b".to_string(), f["g2"].clone()),
    ]);
    clip_grad_norm(&mut grads, 0.5);
    for (name, want) in [("a", "clip_a"), ("b", "clip_b")] {
        let err = rel(&grads[name], &f[want]);
        assert!(err <= 1e-6, "clip {name}: rel err {err:.2e}");
    }
}

/// Least squares on a linear map: the model `archc train` fits in the tests.
const REGRESSION: &str = "model reg {
  input x: f32[batch, 4]
  input y: f32[batch, 1]
  output pred = linear(x, 1) @proj
  output loss = sum((pred - y) * (pred - y), [0, 1]) / 8.0
}
";

/// A JEPA-shaped model: an online encoder trained to predict its EMA copy's output (behind
/// `stop_grad`) of the same input plus a shift.
const WITH_EMA: &str = "model jepa {
  input x: f32[batch, 4]
  block enc(x) {
    return linear(x, 4) @proj
  }
  shared online = enc @encoder
  shared target = ema(online, 0.9) @target
  d = online(x) - stop_grad(target(x) + 1.0)
  output loss = sum(d * d, [0, 1])
}
";

/// 64 samples of y = x·w + 0.25, w = (1.5, −2, 0.5, 3).
fn regression_data(path: &std::path::Path) {
    let x: Vec<f32> = (0..256)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let w = [1.5f32, -2.0, 0.5, 3.0];
    let y: Vec<f32> = x
        .chunks(4)
        .map(|r| r.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + 0.25)
        .collect();
    common::write_safetensors(path, &[("x", vec![64, 4], x), ("y", vec![64, 1], y)], &[]);
}

/// Every tensor of a safetensors file, as f32 values.
fn read(path: &std::path::Path) -> HashMap<String, Vec<f32>> {
    let f = TensorFile::open(path).unwrap();
    f.names()
        .into_iter()
        .map(|n| {
            let t = f.read_any(&n).unwrap();
            (n, t.to_f32())
        })
        .collect()
}

/// `archc train` fits the linear map; its checkpoint runs with `archc run`; resuming half-way
/// gives the uninterrupted run's weights; the interpreter trains alike; the log has a line a
/// step.
#[test]
fn train_fits_resumes_and_saves() {
    let dir = common::scratch_dir("train");
    std::fs::write(dir.join("reg.arch"), REGRESSION).unwrap();
    regression_data(&dir.join("data.safetensors"));
    let run = |args: &[&str]| common::archc_limited(args, &dir);
    let train = [
        "train",
        "reg.arch",
        "--data",
        "data.safetensors",
        "--lr",
        "0.05",
    ];
    let whole = [
        &train[..],
        &["--steps", "600", "--checkpoint", "whole.safetensors"],
    ]
    .concat();
    let log = [&whole[..], &["--log", "train.jsonl"]].concat();
    let out = run(&log);
    out.expect(0, &[]);
    assert!(out.stdout.contains("trained 600 steps"), "{}", out.stdout);
    let w = read(&dir.join("whole.safetensors"));
    for (got, want) in w["proj.weight"].iter().zip([1.5, -2.0, 0.5, 3.0]) {
        assert!((got - want).abs() < 1e-3, "{:?}", w["proj.weight"]);
    }
    assert!(
        (w["proj.bias"][0] - 0.25).abs() < 1e-3,
        "{:?}",
        w["proj.bias"]
    );
    let lines = std::fs::read_to_string(dir.join("train.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 600);
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert!(last["loss"].as_f64().unwrap() < 1e-6, "{last}");
    run(&["run", "reg.arch", "--weights", "whole.safetensors"]).expect(0, &[]);
    run(&[
        &train[..],
        &["--steps", "300", "--checkpoint", "half.safetensors"],
    ]
    .concat())
    .expect(0, &[]);
    let resume = [
        "--steps",
        "300",
        "--resume",
        "half.safetensors",
        "--checkpoint",
        "rest.safetensors",
    ];
    run(&[&train[..], &resume[..]].concat()).expect(0, &[]);
    assert_eq!(
        read(&dir.join("rest.safetensors")),
        w,
        "resumed != uninterrupted"
    );
    // A resumed run continues its log: the lines up to the checkpoint's step stay (a run
    // that went on past its checkpoint left lines the resumed run takes again).
    let half = [
        &train[..],
        &["--steps", "200", "--resume", "half.safetensors"],
    ]
    .concat();
    let logged = [&half[..], &["--log", "train.jsonl", "--plot", "curves.png"]].concat();
    run(&logged).expect(0, &[]);
    let steps: Vec<u64> = std::fs::read_to_string(dir.join("train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=500).collect::<Vec<_>>());
    assert!(std::fs::metadata(dir.join("curves.png")).unwrap().len() > 1000);
    std::fs::write(dir.join("bad.jsonl"), "{\"step\": 1}\nnot json\n").unwrap();
    run(&[&half[..], &["--log", "bad.jsonl"]].concat()).expect(1, &["bad.jsonl:2"]);
    let kept = std::fs::read_to_string(dir.join("bad.jsonl")).unwrap();
    assert_eq!(
        kept, "{\"step\": 1}\nnot json\n",
        "a log it cannot read is left as it was"
    );
    let few = ["--steps", "20", "--checkpoint"];
    run(&[&train[..], &few[..], &["c.safetensors"]].concat()).expect(0, &[]);
    let interp = [
        &train[..],
        &few[..],
        &["i.safetensors", "--backend", "interp"],
    ]
    .concat();
    run(&interp).expect(0, &[]);
    let (c, i) = (
        read(&dir.join("c.safetensors")),
        read(&dir.join("i.safetensors")),
    );
    for (name, v) in &c {
        assert!(rel(&i[name], v) <= 1e-4, "{name}: {:?} vs {:?}", i[name], v);
    }
}

/// The EMA copy follows its online weights (not trained itself), as the update rule says.
#[test]
fn train_moves_ema_copies_toward_online_weights() {
    let dir = common::scratch_dir("train-ema");
    std::fs::write(dir.join("jepa.arch"), WITH_EMA).unwrap();
    let x: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
    common::write_safetensors(&dir.join("d.safetensors"), &[("x", vec![8, 4], x)], &[]);
    let args = [
        "train",
        "jepa.arch",
        "--data",
        "d.safetensors",
        "--optimizer",
        "sgd",
    ];
    let one = |steps: &str, ckpt: &str| {
        let more = ["--steps", steps, "--lr", "0.01", "--checkpoint", ckpt];
        common::archc_limited(&[&args[..], &more[..]].concat(), &dir).expect(0, &[]);
        read(&dir.join(ckpt))
    };
    let (a, b) = (one("1", "a.safetensors"), one("2", "b.safetensors"));
    // Random initial weights, the copy starting equal; after a step, the copy moved a tenth
    // of the way to the online weights: t1 = 0.9·t0 + 0.1·w1, t0 = w0.
    for w in ["proj.weight", "proj.bias"] {
        let (online, target) = (&a[&format!("encoder.{w}")], &a[&format!("target.{w}")]);
        assert_ne!(online, target, "{w}: the copy was trained or not moved");
        let t2 = &b[&format!("target.{w}")];
        let want: Vec<f32> = target
            .iter()
            .zip(&b[&format!("encoder.{w}")])
            .map(|(t, o)| t * 0.9 + 0.1 * o)
            .collect();
        assert!(rel(t2, &want) <= 1e-6, "{w}: {t2:?} vs {want:?}");
    }
}

/// Parameter groups of a `train` section: one frozen (untouched, and not differentiated), one
/// at half the learning rate without weight decay, the rest at the optimiser's own; one SGD
/// step on the whole batch moves each weight exactly so. An EMA schedule's end shows in the
/// graph dump.
#[test]
fn train_section_groups_scale_decay_and_freeze() {
    let dir = common::scratch_dir("train-groups");
    let model = "model groups {
  input x: f32[batch, 4]
  param w: [4] @a.w
  param v: [4] @b.v
  param u: [4] @c.u
  output loss = sum(x * w, [0, 1]) + sum(x * v, [0, 1]) + sum(x * u, [0, 1])
  train {
    optimizer = sgd(lr = 0.1, weight_decay = 0.2),
    groups = [group(\"c.*\", frozen = true), group(\"b.*\", lr_scale = 0.5, weight_decay = 0.0)],
  }
}
";
    std::fs::write(dir.join("groups.arch"), model).unwrap();
    let x: Vec<f32> = (0..32).map(|i| (i as f32 * 0.61).cos()).collect();
    let g: Vec<f32> = (0..4).map(|c| (0..8).map(|r| x[r * 4 + c]).sum()).collect();
    common::write_safetensors(&dir.join("d.safetensors"), &[("x", vec![8, 4], x)], &[]);
    let w0 = vec![0.5f32, -1.0, 2.0, 0.25];
    let init = [
        ("a.w", vec![4], w0.clone()),
        ("b.v", vec![4], w0.clone()),
        ("c.u", vec![4], w0.clone()),
    ];
    common::write_safetensors(&dir.join("init.safetensors"), &init, &[]);
    let args = [
        "train",
        "groups.arch",
        "--data",
        "d.safetensors",
        "--weights",
        "init.safetensors",
        "--steps",
        "1",
        "--checkpoint",
        "out.safetensors",
    ];
    let out = common::archc_limited(&args, &dir);
    out.expect(0, &[]);
    assert!(out.stdout.contains("2 parameter groups"), "{}", out.stdout);
    let got = read(&dir.join("out.safetensors"));
    let step = |lr: f32, decay: f32| -> Vec<f32> {
        w0.iter()
            .zip(&g)
            .map(|(p, g)| p - lr * (g + decay * p))
            .collect()
    };
    assert!(
        rel(&got["a.w"], &step(0.1, 0.2)) <= 1e-6,
        "{:?}",
        got["a.w"]
    );
    assert!(
        rel(&got["b.v"], &step(0.05, 0.0)) <= 1e-6,
        "{:?}",
        got["b.v"]
    );
    assert_eq!(got["c.u"], w0, "a frozen weight moved");

    let ema = WITH_EMA.replace("ema(online, 0.9)", "ema(online, 0.9, end = 1.0)");
    std::fs::write(dir.join("ema.arch"), ema).unwrap();
    let dump = common::archc_limited(&["dump", "--stage", "graph", "ema.arch"], &dir);
    dump.expect(0, &[]);
    assert!(
        dump.stdout
            .contains("ema target.proj.weight <- encoder.proj.weight momentum=0.9 end=1.0"),
        "{}",
        dump.stdout
    );
}

/// Bad input to `archc train` is a clear error with status 1 or 2, never a crash.
#[test]
fn train_errors() {
    let dir = common::scratch_dir("train-errors");
    std::fs::write(dir.join("reg.arch"), REGRESSION).unwrap();
    regression_data(&dir.join("data.safetensors"));
    let z = ("z", vec![64, 4], vec![0.0f32; 256]);
    common::write_safetensors(&dir.join("other.safetensors"), &[z], &[]);
    let run = |args: &[&str]| common::archc_limited(args, &dir);
    let base = ["train", "reg.arch", "--steps", "5"];
    let other = ["--data", "other.safetensors"];
    run(&[&base[..], &other[..]].concat()).expect(1, &["no samples of the model's inputs"]);
    let data = ["--data", "data.safetensors"];
    run(&[&base[..], &data[..], &["--loss", "pred2"]].concat()).expect(1, &["pred2"]);
    run(&[&base[..], &data[..], &["--batch", "0"]].concat()).expect(1, &["--batch"]);
    run(&[&base[..], &data[..], &["--lr", "1e30"]].concat()).expect(1, &["the loss is"]);
    run(&[&base[..], &data[..], &["--resume", "missing.safetensors"]].concat()).expect(2, &[]);
}

/// examples/ijepa_train.arch trains: its target blocks drawn at random each step (the data
/// has images only), the collapse metrics logged at every step and plotted.
#[test]
fn the_ijepa_objective_trains_with_drawn_masks() {
    let dir = common::scratch_dir("train-ijepa");
    let images: Vec<f32> = (0..16 * 64)
        .map(|i| ((i * 7919) % 17) as f32 / 16.0)
        .collect();
    let data = ("pixel_values", vec![16, 1, 8, 8], images);
    common::write_safetensors(&dir.join("d.safetensors"), &[data], &[]);
    let example = repo("examples/ijepa_train.arch")
        .to_string_lossy()
        .into_owned();
    let args = [
        "train",
        &example,
        "--data",
        "d.safetensors",
        "--steps",
        "3",
        "--batch",
        "4",
        "--log",
        "l.jsonl",
        "--plot",
        "curves.png",
    ];
    common::archc_limited(&args, &dir).expect(0, &[]);
    // The plot: a PNG with a panel per scalar (loss, embedding_std, mean_cosine, grad_norm,
    // lr: two columns, three rows of 560 × 330, and the title's 40 pixels).
    let png = std::fs::read(dir.join("curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!((be(16), be(20)), (1120, 1030));
    let log = std::fs::read_to_string(dir.join("l.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["loss", "embedding_std", "mean_cosine"] {
            assert!(
                v[key].as_f64().is_some_and(f64::is_finite),
                "{key} in {line}"
            );
        }
    }
}

/// The prelude's losses (compiler/prelude/loss.arch) against their definitions, computed here
/// in f64: cross-entropy with an ignored target, MSE, smooth L1, cosine; and the gradient of
/// the cross-entropy, `(softmax − onehot) / count` on the rows it counts, 0 on the ignored one.
#[test]
fn losses_match_their_definitions() {
    let dir = common::scratch_dir("losses");
    let model = "model losses {
  input targets: i64[2, 3]
  input a: f32[batch, 4]
  input b: f32[batch, 4]
  param logits: [2, 3, 5]
  output ce = cross_entropy(logits, targets)
  output mse = mse(a, b)
  output sl1 = smooth_l1(a, b, beta = 0.5)
  output cos = cosine_loss(a, b)
}
";
    std::fs::write(dir.join("l.arch"), model).unwrap();
    let logits: Vec<f32> = (0..30).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.7).collect();
    let targets = vec![0i64, 4, -100, 2, 2, 1];
    let a: Vec<f32> = (0..8).map(|i| (i as f32 * 0.9).sin()).collect();
    let b: Vec<f32> = (0..8).map(|i| (i as f32 * 0.4).cos()).collect();
    let w = ("logits", vec![2, 3, 5], logits.clone());
    common::write_safetensors(&dir.join("w.safetensors"), &[w], &[]);
    let (fa, fb) = (("a", vec![2, 4], a.clone()), ("b", vec![2, 4], b.clone()));
    let t = ("targets", vec![2, 3], targets.clone());
    common::write_safetensors(&dir.join("in.safetensors"), &[fa, fb], &[t]);
    let cot = |v: f32| (vec![], vec![v]);
    let cots: Vec<(&str, Vec<usize>, Vec<f32>)> =
        [("ce", 1.0), ("mse", 0.0), ("sl1", 0.0), ("cos", 0.0)]
            .into_iter()
            .map(|(n, v)| {
                let (s, d) = cot(v);
                (n, s, d)
            })
            .collect();
    common::write_safetensors(&dir.join("cot.safetensors"), &cots, &[]);
    let run = |args: &[&str]| {
        common::archc_limited(args, &dir)
            .expect(0, &[])
            .stdout
            .clone()
    };
    let files = ["--weights", "w.safetensors", "--inputs", "in.safetensors"];
    run(&[
        &["run", "l.arch"][..],
        &files[..],
        &["--outputs", "out.safetensors"],
    ]
    .concat());
    let grad = [
        "--cotangents",
        "cot.safetensors",
        "--outputs",
        "g.safetensors",
    ];
    run(&[&["grad", "l.arch"][..], &files[..], &grad[..]].concat());
    let (out, g) = (
        read(&dir.join("out.safetensors")),
        read(&dir.join("g.safetensors")),
    );
    // Cross-entropy and its gradient, row by row.
    let (mut ce, mut count, mut want_grad) = (0.0f64, 0.0, vec![0.0f64; 30]);
    for (row, &t) in targets.iter().enumerate() {
        let z: Vec<f64> = logits[row * 5..row * 5 + 5]
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        if t < 0 {
            continue;
        }
        ce -= z[t as usize] - lse;
        count += 1.0;
        for (k, zk) in z.iter().enumerate() {
            want_grad[row * 5 + k] = (zk - lse).exp() - if k == t as usize { 1.0 } else { 0.0 };
        }
    }
    let want_grad: Vec<f32> = want_grad.iter().map(|x| (x / count) as f32).collect();
    let diffs: Vec<f64> = a.iter().zip(&b).map(|(x, y)| f64::from(x - y)).collect();
    let mse = diffs.iter().map(|d| d * d).sum::<f64>() / 8.0;
    let sl1 = diffs
        .iter()
        .map(|d| if d.abs() < 0.5 { d * d } else { d.abs() - 0.25 })
        .sum::<f64>()
        / 8.0;
    let cos = (0..2)
        .map(|r| {
            let (x, y) = (&a[r * 4..r * 4 + 4], &b[r * 4..r * 4 + 4]);
            let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(p * q)).sum();
            let n = |v: &[f32]| v.iter().map(|p| f64::from(p * p)).sum::<f64>().sqrt();
            1.0 - dot / (n(x) * n(y))
        })
        .sum::<f64>()
        / 2.0;
    for (name, want) in [("ce", ce / count), ("mse", mse), ("sl1", sl1), ("cos", cos)] {
        let got = f64::from(out[name][0]);
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{name}: {got} vs {want}"
        );
    }
    assert!(
        rel(&g["logits"], &want_grad) <= 1e-5,
        "{:?} vs {want_grad:?}",
        g["logits"]
    );
}

/// The causal examples' `train` sections (next-token loss, AdamW, warmup and cosine, clipping,
/// a no-decay group) train them on token ids: the first loss is about ln(vocab) (random weights
/// guess uniformly), and it falls as the model learns the batch. GPT-2 has no section and is
/// trained by `--objective next-token`, the same loss; a model without `input_ids` → `logits`
/// is refused, and so is the flag on a model whose section already computes its loss.
#[test]
fn next_token_objective_trains_the_language_examples() {
    let dir = common::scratch_dir("train-next-token");
    let ids: Vec<i64> = (0..8 * 16).map(|i| (i * 7919 + 13) % 512).collect();
    common::write_safetensors(
        &dir.join("ids.safetensors"),
        &[],
        &[("input_ids", vec![8, 16], ids)],
    );
    for name in ["llama", "mamba", "jamba", "gpt2"] {
        let example = repo(&format!("examples/{name}.arch"))
            .to_string_lossy()
            .into_owned();
        let mut args = vec![
            "train",
            example.as_str(),
            "--data",
            "ids.safetensors",
            "--steps",
            "30",
            "--batch",
            "4",
            "--log",
            "l.jsonl",
        ];
        if name == "gpt2" {
            args.extend(["--objective", "next-token", "--lr", "3e-3"]);
        }
        let out = common::archc_limited(&args, &dir);
        out.expect(0, &[]);
        if name != "gpt2" {
            assert!(
                out.stdout.contains("adamw betas=(0.9, 0.95)")
                    && out.stdout.contains("1 parameter group"),
                "{name}: {}",
                out.stdout
            );
        }
        let log = std::fs::read_to_string(dir.join("l.jsonl")).unwrap();
        let losses: Vec<f64> = log
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        assert!(
            (losses[0] - 512f64.ln()).abs() < 0.5,
            "{name}: first loss {}",
            losses[0]
        );
        assert!(losses[29] < 0.9 * losses[0], "{name}: {losses:?}");
    }
    for (example, error) in [
        ("llama", "its `train` section computes"),
        ("bert", "--objective next-token needs"),
    ] {
        let path = repo(&format!("examples/{example}.arch"));
        let path = path.to_string_lossy();
        let args = ["train", &path, "--objective", "next-token"];
        let more = ["--data", "ids.safetensors", "--steps", "1"];
        common::archc_limited(&[&args[..], &more[..]].concat(), &dir).expect(1, &[error]);
    }
}
