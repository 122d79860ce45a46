//! What `archc train` does to the weights between steps: the optimisers (SGD with momentum,
//! AdamW), the learning-rate schedule (linear warmup, then constant or cosine), clipping by
//! the global gradient norm, and the EMA update of target copies.
//!
//! Each follows PyTorch's definition step for step (`torch.optim.SGD`, `torch.optim.AdamW`,
//! `torch.nn.utils.clip_grad_norm_`): hyperparameters are f64 (Python's floats), the scalars
//! made of them are rounded to f32 as torch's f32 kernels round them, and the elementwise
//! arithmetic is f32 in torch's order, so a step matches torch's within rounding
//! (tests/all/train.rs compares them on recorded torch steps).

use std::collections::HashMap;

/// Which optimiser, with its own hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// SGD with momentum (torch's: no dampening, `buf = μ·buf + g`, `p −= lr·buf`).
    Sgd {
        /// μ (0: plain SGD).
        momentum: f64,
    },
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    AdamW {
        /// β₁.
        beta1: f64,
        /// β₂.
        beta2: f64,
        /// ε, added to √v̂.
        eps: f64,
    },
}

/// The learning rate over steps: linear warmup from 0, then constant or a cosine decay to 0
/// at `total` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// The peak learning rate.
    pub lr: f64,
    /// Steps of linear warmup.
    pub warmup: u64,
    /// Decay along a half cosine after the warmup, reaching 0 at `total`.
    pub cosine: bool,
    /// The run's length in steps.
    pub total: u64,
}

impl Schedule {
    /// The learning rate of step `step` (counted from 1, as torch's optimiser state counts).
    pub fn at(&self, step: u64) -> f64 {
        if step <= self.warmup && self.warmup > 0 {
            return self.lr * step as f64 / self.warmup as f64;
        }
        if !self.cosine || self.total <= self.warmup {
            return self.lr;
        }
        let done = (step - self.warmup) as f64 / (self.total - self.warmup) as f64;
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * done.min(1.0)).cos())
    }
}

/// An optimiser's state: the step count and one or two buffers per weight.
#[derive(Clone, Debug, Default)]
pub struct OptimState {
    /// Steps taken.
    pub step: u64,
    /// SGD's momentum buffer, or AdamW's first moment, per weight.
    pub first: HashMap<String, Vec<f32>>,
    /// AdamW's second moment, per weight.
    pub second: HashMap<String, Vec<f32>>,
}

/// Multiplies every gradient by `max_norm / norm` when their global L2 norm is above
/// `max_norm` (torch's `clip_grad_norm_`, which adds 1e-6 to the norm); returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut HashMap<String, Vec<f32>>, max_norm: f32) -> f32 {
    let norm = grads
        .values()
        .flat_map(|g| g.iter())
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt() as f32;
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for x in grads.values_mut().flat_map(|g| g.iter_mut()) {
            *x *= scale;
        }
    }
    norm
}

impl OptimState {
    /// One step of `optimizer` on `params` with `grads` (same names and lengths; a weight
    /// without a gradient is left alone). `hyper(name)` gives each weight's learning rate and
    /// weight decay (parameter groups differ in them; SGD adds `decay·p` to the gradient,
    /// AdamW shrinks `p` by `lr·decay` first).
    pub fn update(
        &mut self,
        optimizer: Optimizer,
        hyper: impl Fn(&str) -> (f64, f64),
        params: &mut HashMap<String, Vec<f32>>,
        grads: &HashMap<String, Vec<f32>>,
    ) {
        self.step += 1;
        for (name, p) in params.iter_mut() {
            let Some(g) = grads.get(name).filter(|g| g.len() == p.len()) else {
                continue;
            };
            let (lr, decay) = hyper(name);
            let m = self
                .first
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; p.len()]);
            match optimizer {
                Optimizer::Sgd { momentum } => sgd(p, g, m, (lr, decay, momentum), self.step),
                Optimizer::AdamW { beta1, beta2, eps } => {
                    let v = self
                        .second
                        .entry(name.clone())
                        .or_insert_with(|| vec![0.0; p.len()]);
                    adamw(p, g, (m, v), (lr, decay, beta1, beta2, eps), self.step);
                }
            }
        }
    }
}

fn sgd(
    p: &mut [f32],
    g: &[f32],
    buf: &mut [f32],
    (lr, decay, momentum): (f64, f64, f64),
    step: u64,
) {
    let (lr, decay, momentum) = (lr as f32, decay as f32, momentum as f32);
    for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
        let d = g + decay * *p;
        let d = if momentum == 0.0 {
            d
        } else {
            // torch starts the buffer at the first gradient.
            *b = if step == 1 { d } else { momentum * *b + d };
            *b
        };
        *p -= lr * d;
    }
}

fn adamw(
    p: &mut [f32],
    g: &[f32],
    (m, v): (&mut [f32], &mut [f32]),
    (lr, decay, beta1, beta2, eps): (f64, f64, f64, f64, f64),
    step: u64,
) {
    let t = step as i32;
    let step_size = (lr / (1.0 - beta1.powi(t))) as f32;
    let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt() as f32;
    let shrink = (1.0 - lr * decay) as f32;
    let (w1, b2, w2, eps) = (
        (1.0 - beta1) as f32,
        beta2 as f32,
        (1.0 - beta2) as f32,
        eps as f32,
    );
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *p *= shrink;
        *m += w1 * (g - *m);
        *v = *v * b2 + w2 * (g * g);
        let denom = v.sqrt() / bias2_sqrt + eps;
        *p += -step_size * (*m / denom);
    }
}

/// The EMA momentum of update `step` (counted from 0) of `total`: linear from `start` to
/// `end`, as I-JEPA's momentum scheduler moves it (constant when they are equal).
pub fn ema_momentum((start, end): (f64, f64), step: u64, total: u64) -> f64 {
    if total == 0 || start == end {
        return start;
    }
    start + (end - start) * (step.min(total) as f64 / total as f64)
}

/// `target ← momentum·target + (1 − momentum)·online`: an EMA copy follows its online weight.
pub fn ema_update(target: &mut [f32], online: &[f32], momentum: f64) {
    let (keep, take) = (momentum as f32, (1.0 - momentum) as f32);
    for (t, &o) in target.iter_mut().zip(online) {
        *t = *t * keep + take * o;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_momentum_moves_linearly_to_its_end() {
        assert_eq!(ema_momentum((0.996, 0.996), 7, 10), 0.996);
        assert_eq!(ema_momentum((0.5, 1.0), 0, 4), 0.5);
        assert_eq!(ema_momentum((0.5, 1.0), 2, 4), 0.75);
        assert_eq!(ema_momentum((0.5, 1.0), 9, 4), 1.0);
    }

    #[test]
    fn warmup_then_cosine_reaches_zero() {
        let s = Schedule {
            lr: 1.0,
            warmup: 10,
            cosine: true,
            total: 110,
        };
        assert_eq!(s.at(5), 0.5);
        assert_eq!(s.at(10), 1.0);
        assert!((s.at(60) - 0.5).abs() < 1e-6);
        assert!(s.at(110).abs() < 1e-6);
    }

    #[test]
    fn clipping_scales_to_the_norm() {
        let mut g = HashMap::from([("a".to_string(), vec![3.0, 4.0])]);
        let norm = clip_grad_norm(&mut g, 1.0);
        assert_eq!(norm, 5.0);
        assert!((g["a"][0] - 0.6).abs() < 1e-6 && (g["a"][1] - 0.8).abs() < 1e-6);
    }
}
