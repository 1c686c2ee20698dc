//! Hot-code ranks drawn from a Zipf distribution: rank k (1-based) is drawn with probability
//! proportional to 1 / k^s.
//!
//! `rand_distr`'s `Zipf` (0.6, built on rand 0.10) samples by rejection in constant memory, so
//! a precomputed CDF table is not needed even for a million ranks.

use rand::Rng;
use rand_distr::Distribution;

/// Draws 0-based indices into the hot part of the code list; index 0 is the most popular.
#[derive(Debug, Clone, Copy)]
pub struct ZipfRanks {
    dist: rand_distr::Zipf<f64>,
    n: usize,
}

impl ZipfRanks {
    /// Ranks over `n` items with exponent `s` (0 gives a uniform draw).
    pub fn new(n: usize, s: f64) -> Result<Self, rand_distr::ZipfError> {
        let dist = rand_distr::Zipf::new(n as f64, s)?;
        Ok(Self { dist, n })
    }

    /// How many ranks there are.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Never true: a distribution has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// A 0-based index in `0..n`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        // The sampler returns a whole number in [1, n] as a float; the `min` only guards the
        // conversion against rounding at the top end.
        let rank = self.dist.sample(rng) as usize;
        rank.saturating_sub(1).min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn frequencies(n: usize, s: f64, draws: usize) -> Vec<f64> {
        let ranks = ZipfRanks::new(n, s).expect("valid parameters");
        let mut rng = SmallRng::seed_from_u64(42);
        let mut counts = vec![0u64; n];
        for _ in 0..draws {
            counts[ranks.sample(&mut rng)] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn rank_one_is_the_most_frequent() {
        let freq = frequencies(1_000, 1.0, 200_000);
        let top = freq.iter().cloned().fold(f64::MIN, f64::max);
        assert_eq!(freq[0], top);
        assert!(freq[0] > freq[1] && freq[1] > freq[2], "{:?}", &freq[..3]);
    }

    #[test]
    fn frequencies_follow_one_over_k_to_the_s() {
        let (n, s) = (100, 1.0);
        let freq = frequencies(n, s, 400_000);
        let harmonic: f64 = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).sum();
        for k in [1usize, 2, 3, 5, 10, 50] {
            let expected = 1.0 / (k as f64).powf(s) / harmonic;
            let observed = freq[k - 1];
            let relative = (observed - expected).abs() / expected;
            assert!(
                relative < 0.1,
                "rank {k}: observed {observed:.5}, expected {expected:.5}"
            );
        }
    }

    #[test]
    fn a_larger_exponent_concentrates_on_the_top_ranks() {
        let mild = frequencies(1_000, 0.8, 100_000);
        let steep = frequencies(1_000, 1.4, 100_000);
        let top10 = |f: &[f64]| f[..10].iter().sum::<f64>();
        assert!(top10(&steep) > top10(&mild) + 0.2);
    }

    #[test]
    fn exponent_zero_is_uniform() {
        let freq = frequencies(10, 0.0, 100_000);
        for f in freq {
            assert!((f - 0.1).abs() < 0.01, "{f}");
        }
    }

    #[test]
    fn samples_stay_in_range() {
        let ranks = ZipfRanks::new(3, 1.0).expect("valid parameters");
        let mut rng = SmallRng::seed_from_u64(1);
        assert!((0..10_000).all(|_| ranks.sample(&mut rng) < 3));
    }
}
