//! Choosing the next token from a row of logits: greedy by default, or sampled with
//! transformers' processors in transformers' order (temperature, then top-k, then top-p).

use crate::SplitMix64;

/// How the next token is chosen.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to at least `p` (1: all).
    pub top_p: f32,
}

impl Default for Sampling {
    /// Greedy: the most likely token, nothing cut.
    fn default() -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl Sampling {
    /// Whether this is greedy decoding.
    pub fn greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// The token chosen from `logits` (one row; tokens in `banned` are never chosen), drawing
    /// from `rng` when sampling. NaN logits count as never chosen.
    pub fn choose(&self, logits: &[f32], banned: &[usize], rng: &mut SplitMix64) -> usize {
        let allowed = |i: usize, x: f32| !x.is_nan() && !banned.contains(&i);
        // Most likely first; ties go to the lower id, as argmax does.
        let first = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
        let mut order: Vec<usize> = (0..logits.len())
            .filter(|&i| allowed(i, logits[i]))
            .collect();
        if self.greedy() {
            // One pass over the vocabulary, not a sort of it (at every step).
            return order.into_iter().min_by(first).unwrap_or(0);
        }
        if self.top_k > 0 && self.top_k < order.len() {
            order.select_nth_unstable_by(self.top_k - 1, first);
            order.truncate(self.top_k);
        }
        order.sort_by(first);
        let Some(&best) = order.first() else {
            return 0;
        };
        let top = logits[best] / self.temperature;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| f64::from(logits[i] / self.temperature - top).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        // Top-p: the smallest prefix whose mass reaches p (at least one token).
        let mut keep = order.len();
        if self.top_p < 1.0 {
            let mut mass = 0.0;
            for (n, w) in weights.iter().enumerate() {
                mass += w / total;
                if mass >= f64::from(self.top_p) {
                    keep = n + 1;
                    break;
                }
            }
        }
        let kept: f64 = weights[..keep].iter().sum();
        let mut draw = f64::from(rng.next_f32()) * kept;
        for (n, w) in weights[..keep].iter().enumerate() {
            if draw < *w {
                return order[n];
            }
            draw -= w;
        }
        order[keep - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_and_sampling_stays_in_the_nucleus() {
        let logits = [0.0, 3.0, f32::NAN, 2.9, -1.0];
        let mut rng = SplitMix64::new(1, "t");
        let greedy = Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        };
        assert_eq!(greedy.choose(&logits, &[], &mut rng), 1);
        assert_eq!(greedy.choose(&logits, &[1], &mut rng), 3);
        let nucleus = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.6,
        };
        // Token 1 alone holds about 0.51 of the mass, 1 and 3 about 0.97: the nucleus.
        let drawn: Vec<usize> = (0..200)
            .map(|_| nucleus.choose(&logits, &[], &mut rng))
            .collect();
        assert!(drawn.iter().all(|&t| t == 1 || t == 3));
        assert!(drawn.contains(&1) && drawn.contains(&3));
        let top1 = Sampling {
            temperature: 5.0,
            top_k: 1,
            top_p: 1.0,
        };
        assert!((0..50).all(|_| top1.choose(&logits, &[], &mut rng) == 1));
    }
}
