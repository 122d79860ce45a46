//! The recipe of a training run: the model's `train` section with `archc train`'s flags over
//! it, and the built-in defaults under both.

use archc_compiler::graph::{ParamGroup, Training};
use archc_runtime::optim::{Optimizer, Schedule};

use super::{LrSchedule, OptimizerKind, TrainArgs};

/// Everything the loop needs to know about how to train.
pub(super) struct Recipe {
    /// The output minimised.
    pub loss: String,
    /// The optimiser with its own hyperparameters.
    pub optimizer: Optimizer,
    /// The peak learning rate.
    pub lr: f64,
    /// The weight decay of weights outside a group that sets its own.
    pub weight_decay: f64,
    /// Steps of linear warmup.
    pub warmup: u64,
    /// A cosine decay after the warmup.
    pub cosine: bool,
    /// The largest global gradient norm.
    pub clip: Option<f64>,
    /// The section's parameter groups (its other entries are resolved above).
    groups: Training,
}

impl Recipe {
    /// Flags first, then the section, then the defaults (AdamW at 1e-3, no decay, constant).
    pub fn resolve(a: &TrainArgs, t: Option<&Training>) -> Recipe {
        let spec = t.and_then(|t| t.optimizer);
        let kind = match (a.optimizer, spec.map(|s| s.kind)) {
            (Some(OptimizerKind::Adamw), _) | (None, None) => OptimizerKind::Adamw,
            (Some(OptimizerKind::Sgd), _) => OptimizerKind::Sgd,
            (None, Some(Optimizer::AdamW { .. })) => OptimizerKind::Adamw,
            (None, Some(Optimizer::Sgd { .. })) => OptimizerKind::Sgd,
        };
        let written = spec.map(|s| s.kind);
        let optimizer = match kind {
            OptimizerKind::Adamw => {
                let (b1, b2, e) = match written {
                    Some(Optimizer::AdamW { beta1, beta2, eps }) => (beta1, beta2, eps),
                    _ => (0.9, 0.999, 1e-8),
                };
                Optimizer::AdamW {
                    beta1: a.beta1.unwrap_or(b1),
                    beta2: a.beta2.unwrap_or(b2),
                    eps: a.eps.unwrap_or(e),
                }
            }
            OptimizerKind::Sgd => {
                let m = match written {
                    Some(Optimizer::Sgd { momentum }) => momentum,
                    _ => 0.9,
                };
                Optimizer::Sgd {
                    momentum: a.momentum.unwrap_or(m),
                }
            }
        };
        let schedule = t.and_then(|t| t.schedule);
        Recipe {
            loss: a
                .loss
                .clone()
                .or_else(|| t.and_then(|t| t.loss.clone()))
                .unwrap_or_else(|| "loss".to_string()),
            optimizer,
            lr: a.lr.or(spec.map(|s| s.lr)).unwrap_or(1e-3),
            weight_decay: a
                .weight_decay
                .or(spec.map(|s| s.weight_decay))
                .unwrap_or(0.0),
            warmup: a.warmup.or(schedule.map(|s| s.warmup)).unwrap_or_default(),
            cosine: match a.schedule {
                Some(s) => matches!(s, LrSchedule::Cosine),
                None => schedule.is_some_and(|s| s.cosine),
            },
            clip: a.clip.or(t.and_then(|t| t.clip)),
            groups: Training {
                groups: t.map(|t| t.groups.clone()).unwrap_or_default(),
                ..Training::default()
            },
        }
    }

    /// The learning-rate schedule of a run ending at step `total`.
    pub fn schedule(&self, total: u64) -> Schedule {
        Schedule {
            lr: self.lr,
            warmup: self.warmup,
            cosine: self.cosine,
            total,
        }
    }

    /// Weight `name`'s learning rate and weight decay when the schedule is at `lr`.
    pub fn hyper(&self, name: &str, lr: f64) -> (f64, f64) {
        let group: Option<&ParamGroup> = self.groups.group_of(name);
        match group {
            Some(g) => (lr * g.lr_scale, g.weight_decay.unwrap_or(self.weight_decay)),
            None => (lr, self.weight_decay),
        }
    }

    /// One line for the summary: `adamw lr=0.001 weight_decay=0.05 cosine warmup=200`.
    pub fn describe(&self) -> String {
        let kind = match self.optimizer {
            Optimizer::AdamW { beta1, beta2, eps } => {
                format!("adamw betas=({beta1}, {beta2}) eps={eps:e}")
            }
            Optimizer::Sgd { momentum } => format!("sgd momentum={momentum}"),
        };
        let shape = if self.cosine { "cosine" } else { "constant" };
        let clip = self.clip.map_or(String::new(), |c| format!(", clip {c}"));
        let groups = match self.groups.groups.len() {
            0 => String::new(),
            n => format!(", {n} parameter group{}", if n == 1 { "" } else { "s" }),
        };
        format!(
            "{kind} lr={} weight_decay={}, {shape} after {} warmup steps{clip}{groups}",
            self.lr, self.weight_decay, self.warmup
        )
    }
}
