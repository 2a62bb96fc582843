//! Where salt events go in time, and how a file's events are merged.
//! Pure functions: no I/O.
//!
//! Real triggers are separated by the dead time `D` (one event window,
//! 4.5 ms) plus an exponential gap `X ~ Exp(lambda)`. Salt events are an
//! independent Poisson process of rate `mu` on the live time, with the same
//! dead time after every event, real or salt. In each gap between events at
//! `a` and `b`:
//!
//! ```text
//! p = a + D
//! loop:  y ~ Exp(mu);  t = p + y
//!        if t + D > b: stop          (the salt's own window must end before b)
//!        salt at t;  p = t + D
//! mu = rate_per_event * n_real / sum_i max(0, gap_i - 2 D)
//! ```
//!
//! so the expected count is about `rate_per_event * n_real` (a Poisson
//! count from the hidden rate). Every gap of the merged stream is then
//! close to `D + Exp(lambda + mu)`, whether its ends are real or salt:
//! the gap after a salt event is `Exp(lambda + mu)`, the one before it (by
//! memorylessness) is the same as a gap between real events. Salt thus
//! raises the apparent trigger rate a little, as the extra events must, but
//! does not mark the events next to it.

use rand::Rng;
use rand_distr::{Distribution, Exp};

/// Draw salt trigger times [ns] among sorted real trigger times.
///
/// `left_anchor` is the last trigger of the previous file of the run (when
/// known): the gap between it and `real[0]` may host salt too, so the first
/// event of a file can be salt. `rate_per_event` is the mean number of salt
/// events per real event. Returns sorted times, each at least `dead_ns` from
/// every real, anchor and other salt time.
///
/// # Panics
/// When `real` is not sorted or `dead_ns <= 0` (caller contract).
pub fn place_salt_times<R: Rng>(
    rng: &mut R,
    real: &[i64],
    left_anchor: Option<i64>,
    dead_ns: i64,
    rate_per_event: f64,
) -> Vec<i64> {
    assert!(dead_ns > 0, "dead time must be positive");
    assert!(
        real.windows(2).all(|w| w[0] <= w[1]),
        "real times not sorted"
    );
    let times: Vec<i64> = left_anchor
        .into_iter()
        .chain(real.iter().copied())
        .collect();
    let room: f64 = times
        .windows(2)
        .map(|w| (w[1] - w[0] - 2 * dead_ns).max(0) as f64)
        .sum();
    let expected = rate_per_event * real.len() as f64;
    let mut salt = Vec::new();
    if !(expected > 0.0 && room > 0.0) {
        return salt;
    }
    let Ok(wait) = Exp::new(expected / room) else {
        return salt;
    };
    for w in times.windows(2) {
        let (mut p, b) = (w[0] + dead_ns, w[1]);
        loop {
            let t = p.saturating_add(wait.sample(rng).min(1e18) as i64);
            if t.saturating_add(dead_ns) > b {
                break;
            }
            salt.push(t);
            p = t + dead_ns;
        }
    }
    salt
}

/// Where each event of a salted file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Real event: its row in the original file.
    Real(usize),
    /// Salt event: its index among the salt events.
    Salt(usize),
}

/// Merge real and salt events in trigger-time order (a real event first on
/// a tie, which placement never produces).
pub fn merge_order(real_times: &[i64], salt_times: &[i64]) -> Vec<Origin> {
    let mut out = Vec::with_capacity(real_times.len() + salt_times.len());
    let (mut i, mut j) = (0, 0);
    while i < real_times.len() || j < salt_times.len() {
        let take_real =
            j >= salt_times.len() || (i < real_times.len() && real_times[i] <= salt_times[j]);
        if take_real {
            out.push(Origin::Real(i));
            i += 1;
        } else {
            out.push(Origin::Salt(j));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Exp};

    const DEAD: i64 = 4_500_000;

    #[test]
    fn salt_respects_the_dead_time_and_stops_when_there_is_no_room() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Gaps: exactly 2D (no room), 2D + 1 (room for one), 10D.
        let real = [0, 2 * DEAD, 4 * DEAD + 1, 14 * DEAD + 1];
        let salt = place_salt_times(&mut rng, &real, None, DEAD, 50.0);
        assert!(!salt.is_empty() && salt.len() <= 10);
        let mut all: Vec<i64> = real.iter().chain(&salt).copied().collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[1] - w[0] >= DEAD), "{all:?}");
        assert!(salt.iter().all(|&t| t > real[0] && t < real[3]));
        assert!(place_salt_times(&mut rng, &[0, 2 * DEAD], None, DEAD, 3.0).is_empty());
        assert!(place_salt_times(&mut rng, &real, None, DEAD, 0.0).is_empty());
        // The anchor opens the gap before the first event.
        let before = place_salt_times(&mut rng, &[10 * DEAD], Some(0), DEAD, 100.0);
        assert!(!before.is_empty());
        assert!(before.iter().all(|t| (DEAD..=9 * DEAD).contains(t)));
    }

    #[test]
    fn gaps_next_to_salt_look_like_real_gaps() {
        // Poisson triggers at 40 Hz after a 4.5 ms dead time, as the simulator makes them.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let exp = Exp::new(40.0).unwrap();
        let mut t = 0i64;
        let real: Vec<i64> = (0..40_000)
            .map(|_| {
                t += DEAD + (exp.sample(&mut rng) * 1e9) as i64;
                t
            })
            .collect();
        let salt = place_salt_times(&mut rng, &real, None, DEAD, 0.05);
        assert!(
            (salt.len() as f64 - 2_000.0).abs() < 200.0,
            "{} salt",
            salt.len()
        );
        let order = merge_order(&real, &salt);
        let times: Vec<i64> = order
            .iter()
            .map(|o| match o {
                Origin::Real(i) => real[*i],
                Origin::Salt(j) => salt[*j],
            })
            .collect();
        // Gaps before a salt event, after one, and between real events.
        let (mut before, mut after, mut real_real) = (vec![], vec![], vec![]);
        for (k, w) in times.windows(2).enumerate() {
            let excess = (w[1] - w[0] - DEAD) as f64 * 1e-9;
            match (order[k], order[k + 1]) {
                (_, Origin::Salt(_)) => before.push(excess),
                (Origin::Salt(_), _) => after.push(excess),
                _ => real_real.push(excess),
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let short = |v: &[f64]| v.iter().filter(|&&x| x < 0.005).count() as f64 / v.len() as f64;
        let (m, f) = (mean(&real_real), short(&real_real));
        for v in [&before, &after] {
            assert!(
                (mean(v) / m - 1.0).abs() < 0.06,
                "mean excess {} vs {m}",
                mean(v)
            );
            assert!(
                (short(v) - f).abs() < 0.03,
                "short fraction {} vs {f}",
                short(v)
            );
        }
    }

    #[test]
    fn merge_interleaves_by_time() {
        use Origin::*;
        assert_eq!(
            merge_order(&[10, 30, 50], &[20, 60]),
            [Real(0), Salt(0), Real(1), Real(2), Salt(1)]
        );
        assert_eq!(merge_order(&[], &[1]), [Salt(0)]);
    }
}
