//! Deterministic random tensors for `--seed`: the same seed gives the same weights and inputs
//! on every machine and every version, so results can be compared across runs and tools.
//!
//! SplitMix64 is written out here rather than taken from `rand`, whose generators are not
//! promised to stay the same between releases.

use crate::{DType, Tensor};

/// A SplitMix64 generator.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`, decorrelated per `name` (a weight or input name), so that adding
    /// a tensor does not change the others.
    pub fn new(seed: u64, name: &str) -> SplitMix64 {
        // FNV-1a of the name, mixed with the seed.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        SplitMix64(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A random tensor: floats uniform in [−scale, scale), integers uniform in [0, int_bound),
/// booleans fair coins.
pub fn random_tensor(
    seed: u64,
    name: &str,
    dtype: DType,
    shape: &[usize],
    scale: f32,
    int_bound: u64,
) -> Tensor {
    let mut g = SplitMix64::new(seed, name);
    let n: usize = shape.iter().product();
    match dtype {
        d if d.is_float() => Tensor {
            dtype,
            ..Tensor::f32(
                shape.to_vec(),
                (0..n).map(|_| (g.next_f32() * 2.0 - 1.0) * scale).collect(),
            )
        },
        DType::Bool => Tensor::bool(
            shape.to_vec(),
            (0..n).map(|_| g.next_u64() & 1 == 1).collect(),
        ),
        _ => Tensor::int(
            dtype,
            shape.to_vec(),
            (0..n)
                .map(|_| (g.next_u64() % int_bound.max(1)) as i64)
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tensor_and_names_decorrelate() {
        let a = random_tensor(7, "w", DType::F32, &[4], 0.5, 0);
        assert_eq!(a, random_tensor(7, "w", DType::F32, &[4], 0.5, 0));
        assert_ne!(a, random_tensor(7, "v", DType::F32, &[4], 0.5, 0));
        let ids = random_tensor(1, "ids", DType::I32, &[100], 0.0, 10);
        assert!(
            matches!(&ids.data, crate::Data::I64(v) if v.iter().all(|&x| (0..10).contains(&x)))
        );
    }
}
