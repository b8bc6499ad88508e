//! Random generators for the open-model load: Poisson arrivals, file sizes, chat-type mix.
//!
//! Kept free of I/O and seeded explicitly so that a run can be repeated and the generators can be
//! tested for their statistics.

use std::time::Duration;

use mft::layout::ChatType;
use rand::Rng;

/// Inter-arrival times of a Poisson process: exponentially distributed gaps with the given rate.
#[derive(Debug, Clone, Copy)]
pub struct PoissonArrivals {
    rate_per_s: f64,
}

impl PoissonArrivals {
    /// `rate_per_s` must be positive and finite.
    pub fn new(rate_per_s: f64) -> Option<Self> {
        (rate_per_s.is_finite() && rate_per_s > 0.0).then_some(PoissonArrivals { rate_per_s })
    }

    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }

    /// The gap to the next arrival, by inversion: `-ln(U) / rate` with `U` uniform in (0, 1].
    pub fn next_gap<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        // `random::<f64>()` is in [0, 1); 1 - u is in (0, 1], so the logarithm is finite.
        let u: f64 = 1.0 - rng.random::<f64>();
        Duration::from_secs_f64(-u.ln() / self.rate_per_s)
    }

    /// The arrival offsets from the start that fall within `horizon`.
    pub fn schedule<R: Rng + ?Sized>(&self, rng: &mut R, horizon: Duration) -> Vec<Duration> {
        let mut out = Vec::with_capacity((self.rate_per_s * horizon.as_secs_f64()) as usize + 16);
        let mut t = Duration::ZERO;
        loop {
            t += self.next_gap(rng);
            if t >= horizon {
                return out;
            }
            out.push(t);
        }
    }
}

/// How upload sizes are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeDist {
    /// Every file has the mean size.
    Fixed { bytes: u64 },
    /// Log-normal with the given arithmetic mean and shape `sigma`, clamped to `[1, max]`.
    LogNormal { mean: u64, sigma: f64, max: u64 },
}

impl SizeDist {
    /// Parameters `(mu, sigma)` of the underlying normal so that the arithmetic mean is `mean`:
    /// `E[X] = exp(mu + sigma^2 / 2)`.
    pub fn lognormal_params(mean: u64, sigma: f64) -> (f64, f64) {
        let mu = (mean.max(1) as f64).ln() - sigma * sigma / 2.0;
        (mu, sigma)
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match *self {
            SizeDist::Fixed { bytes } => bytes,
            SizeDist::LogNormal { mean, sigma, max } => {
                let (mu, sigma) = Self::lognormal_params(mean, sigma);
                let x = (mu + sigma * standard_normal(rng)).exp();
                (x.round() as u64).clamp(1, max.max(1))
            }
        }
    }
}

/// A standard normal deviate (Box–Muller).
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Weights of the three chat types, e.g. `im=0.7,groupchat=0.2,persistent=0.1`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMix {
    weights: Vec<(ChatType, f64)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChatMixError {
    #[error("chat mix entry `{0}` is not TYPE=WEIGHT")]
    Entry(String),
    #[error("{0}")]
    ChatType(#[from] mft::layout::BadChatType),
    #[error("chat mix weight `{0}` is not a non-negative number")]
    Weight(String),
    #[error("chat mix weights add up to zero")]
    Empty,
}

impl Default for ChatMix {
    fn default() -> Self {
        ChatMix {
            weights: vec![(ChatType::Im, 1.0)],
        }
    }
}

impl std::str::FromStr for ChatMix {
    type Err = ChatMixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights: Vec<(ChatType, f64)> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, w) = entry
                .split_once('=')
                .ok_or_else(|| ChatMixError::Entry(entry.to_string()))?;
            let chat: ChatType = name.trim().parse()?;
            let w: f64 = w
                .trim()
                .parse()
                .ok()
                .filter(|w: &f64| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| ChatMixError::Weight(w.to_string()))?;
            match weights.iter_mut().find(|(c, _)| *c == chat) {
                Some(slot) => slot.1 = w,
                None => weights.push((chat, w)),
            }
        }
        if weights.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
            return Err(ChatMixError::Empty);
        }
        Ok(ChatMix { weights })
    }
}

impl std::fmt::Display for ChatMix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(c, w)| format!("{c}={w}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl ChatMix {
    /// Draws a chat type in proportion to the weights.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> ChatType {
        let total: f64 = self.weights.iter().map(|(_, w)| w).sum();
        let mut x = rng.random::<f64>() * total;
        for (chat, w) in &self.weights {
            if x < *w {
                return *chat;
            }
            x -= w;
        }
        // Rounding left `x` just past the last bucket: take the last type with weight.
        self.weights
            .iter()
            .rev()
            .find(|(_, w)| *w > 0.0)
            .map_or(ChatType::Im, |(c, _)| *c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn poisson_gaps_have_the_requested_rate() {
        let mut rng = StdRng::seed_from_u64(7);
        let arrivals = PoissonArrivals::new(500.0).expect("positive rate");
        let n = 200_000;
        let total: f64 = (0..n)
            .map(|_| arrivals.next_gap(&mut rng).as_secs_f64())
            .sum();
        let mean = total / n as f64;
        // Mean gap 1/500 s = 2 ms, within 1 %.
        assert!((mean - 0.002).abs() < 0.00002, "mean gap {mean}");
    }

    #[test]
    fn poisson_gaps_are_exponential() {
        // For an exponential distribution P(gap > mean) = e^-1 ≈ 0.368 and the standard
        // deviation equals the mean.
        let mut rng = StdRng::seed_from_u64(11);
        let arrivals = PoissonArrivals::new(100.0).expect("positive rate");
        let gaps: Vec<f64> = (0..100_000)
            .map(|_| arrivals.next_gap(&mut rng).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let above = gaps.iter().filter(|g| **g > 0.01).count() as f64 / gaps.len() as f64;
        assert!((above - (-1.0f64).exp()).abs() < 0.01, "tail {above}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.02,
            "cv {}",
            var.sqrt() / mean
        );
    }

    #[test]
    fn poisson_schedule_counts_arrivals_in_the_horizon() {
        let mut rng = StdRng::seed_from_u64(3);
        let arrivals = PoissonArrivals::new(1000.0).expect("positive rate");
        let s = arrivals.schedule(&mut rng, Duration::from_secs(20));
        // 20 000 expected, standard deviation ~141.
        assert!(
            (s.len() as i64 - 20_000).abs() < 600,
            "{} arrivals",
            s.len()
        );
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.iter().all(|t| *t < Duration::from_secs(20)));
    }

    #[test]
    fn poisson_refuses_bad_rates() {
        assert!(PoissonArrivals::new(0.0).is_none());
        assert!(PoissonArrivals::new(-1.0).is_none());
        assert!(PoissonArrivals::new(f64::NAN).is_none());
    }

    #[test]
    fn lognormal_has_the_requested_mean() {
        let mut rng = StdRng::seed_from_u64(5);
        let dist = SizeDist::LogNormal {
            mean: 100_000,
            sigma: 1.0,
            max: u64::MAX,
        };
        let n = 400_000;
        let sum: u64 = (0..n).map(|_| dist.sample(&mut rng)).sum();
        let mean = sum as f64 / n as f64;
        assert!((mean / 100_000.0 - 1.0).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn lognormal_median_is_exp_mu() {
        let mut rng = StdRng::seed_from_u64(9);
        let dist = SizeDist::LogNormal {
            mean: 100_000,
            sigma: 1.0,
            max: u64::MAX,
        };
        let mut v: Vec<u64> = (0..100_001).map(|_| dist.sample(&mut rng)).collect();
        v.sort_unstable();
        let (mu, _) = SizeDist::lognormal_params(100_000, 1.0);
        let median = v[v.len() / 2] as f64;
        assert!((median / mu.exp() - 1.0).abs() < 0.02, "median {median}");
    }

    #[test]
    fn lognormal_is_clamped() {
        let mut rng = StdRng::seed_from_u64(1);
        let dist = SizeDist::LogNormal {
            mean: 1_000,
            sigma: 3.0,
            max: 5_000,
        };
        for _ in 0..10_000 {
            let s = dist.sample(&mut rng);
            assert!((1..=5_000).contains(&s));
        }
    }

    #[test]
    fn fixed_size_is_fixed() {
        let mut rng = StdRng::seed_from_u64(1);
        let dist = SizeDist::Fixed { bytes: 4242 };
        assert!((0..100).all(|_| dist.sample(&mut rng) == 4242));
    }

    #[test]
    fn chat_mix_parses_and_picks_in_proportion() {
        let mix: ChatMix = "im=0.7, groupchat=0.2,persistent=0.1"
            .parse()
            .expect("valid mix");
        let mut rng = StdRng::seed_from_u64(2);
        let mut counts = [0usize; 3];
        for _ in 0..100_000 {
            match mix.pick(&mut rng) {
                ChatType::Im => counts[0] += 1,
                ChatType::Groupchat => counts[1] += 1,
                ChatType::Persistent => counts[2] += 1,
            }
        }
        assert!((counts[0] as f64 / 1e5 - 0.7).abs() < 0.01);
        assert!((counts[1] as f64 / 1e5 - 0.2).abs() < 0.01);
        assert!((counts[2] as f64 / 1e5 - 0.1).abs() < 0.01);
    }

    #[test]
    fn chat_mix_refuses_nonsense() {
        assert!(matches!(
            "im".parse::<ChatMix>(),
            Err(ChatMixError::Entry(_))
        ));
        assert!(matches!(
            "mail=1".parse::<ChatMix>(),
            Err(ChatMixError::ChatType(_))
        ));
        assert!(matches!(
            "im=-1".parse::<ChatMix>(),
            Err(ChatMixError::Weight(_))
        ));
        assert!(matches!(
            "im=0".parse::<ChatMix>(),
            Err(ChatMixError::Empty)
        ));
    }
}
