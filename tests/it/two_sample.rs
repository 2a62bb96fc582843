//! Two-sample statistics for telling one class of events from another:
//! Kolmogorov-Smirnov with its p-value, chi-square on counts, and two
//! simple classifiers (logistic regression, the best decision stump)
//! scored by two-fold cross-validation on balanced classes.
//!
//! ```text
//! KS:        D = sup |F_a - F_b|,  p = Q_KS((sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) D),
//!            n_e = n m / (n + m),  Q_KS(l) = 2 sum_j (-1)^(j-1) exp(-2 j^2 l^2)
//!            (Numerical Recipes' form; ties make it conservative)
//! chi2:      sum over bins of (a_i - n E_i)^2 / (n E_i) + (b_i - m E_i)^2 / (m E_i),
//!            E_i = (a_i + b_i) / (n + m);  p = Q(dof / 2, chi2 / 2)
//! logistic:  features standardised on the training half, Newton steps with a
//!            small ridge; predict class 1 when p > 1/2
//! stump:     per feature the threshold and side with the best training
//!            accuracy; the best feature's stump is scored on the other half
//! accuracy:  over both folds (every event scored once, by the model trained
//!            on the other half); chance = 1/2, sd = 1 / (2 sqrt(n))
//! ```

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Kolmogorov-Smirnov distance and p-value of two samples.
pub fn ks(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let ne = (n * m / (n + m)).sqrt();
    let lambda = (ne + 0.12 + 0.11 / ne) * d;
    (d, q_ks(lambda))
}

fn q_ks(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for j in 1..=200 {
        let j = f64::from(j);
        let term = sign * (-2.0 * j * j * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-300 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Chi-square of two histograms over the same bins (bins empty in both are
/// skipped) and its p-value.
pub fn chi2(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n, m): (f64, f64) = (a.iter().sum(), b.iter().sum());
    let (mut chi2, mut dof) = (0.0, -1.0);
    for (&x, &y) in a.iter().zip(b) {
        if x + y == 0.0 {
            continue;
        }
        let e = (x + y) / (n + m);
        chi2 += (x - n * e).powi(2) / (n * e) + (y - m * e).powi(2) / (m * e);
        dof += 1.0;
    }
    if dof < 1.0 {
        return (0.0, 1.0);
    }
    (chi2, gamma_q(dof / 2.0, chi2 / 2.0))
}

fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 6] = [
        76.180_091_729_471_46,
        -86.505_320_329_416_77,
        24.014_098_240_830_91,
        -1.231_739_572_450_155,
        0.120_865_097_386_617_9e-2,
        -0.539_523_938_495_3e-5,
    ];
    let tmp = x + 5.5 - (x + 0.5) * (x + 5.5).ln();
    let mut ser = 1.000_000_000_190_015;
    for (k, c) in C.iter().enumerate() {
        ser += c / (x + 1.0 + k as f64);
    }
    -tmp + (2.506_628_274_631_000_5 * ser / x).ln()
}

/// Regularised upper incomplete gamma function Q(a, x).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (1.0 - sum * front).clamp(0.0, 1.0)
    } else {
        // Lentz's continued fraction.
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -f64::from(i) * (f64::from(i) - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (front * h).clamp(0.0, 1.0)
    }
}

/// A row of features and its class (0 or 1).
type Labelled = (Vec<f64>, f64);

/// Cross-validated accuracies of the two classifiers.
#[derive(Debug, Clone, Copy)]
pub struct Classified {
    /// Events scored (both classes, equal numbers).
    pub n: usize,
    /// Logistic regression accuracy.
    pub logistic: f64,
    /// Best-stump accuracy.
    pub stump: f64,
    /// Feature of the stump chosen most often (index).
    pub stump_feature: usize,
}

impl Classified {
    /// Standard deviation of an accuracy at chance.
    pub fn sd(&self) -> f64 {
        0.5 / (self.n as f64).sqrt()
    }
}

/// Two-fold cross-validated accuracies on `class0` vs `class1` (rows of
/// features), the larger class subsampled to the smaller (seeded).
pub fn classify(class0: &[Vec<f64>], class1: &[Vec<f64>], seed: u64) -> Classified {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = class0.len().min(class1.len());
    let mut pick = |rows: &[Vec<f64>]| {
        let mut idx: Vec<usize> = (0..rows.len()).collect();
        idx.shuffle(&mut rng);
        idx.truncate(k);
        idx.into_iter().map(|i| rows[i].clone()).collect::<Vec<_>>()
    };
    let (a, b) = (pick(class0), pick(class1));
    let half = k / 2;
    let fold = |lo: bool| -> (Vec<Labelled>, Vec<Labelled>) {
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (rows, y) in [(&a, 0.0), (&b, 1.0)] {
            for (i, r) in rows.iter().enumerate() {
                if (i < half) == lo {
                    train.push((r.clone(), y));
                } else {
                    test.push((r.clone(), y));
                }
            }
        }
        (train, test)
    };
    let (mut right_lr, mut right_st, mut n) = (0usize, 0usize, 0usize);
    let mut chosen = Vec::new();
    for lo in [true, false] {
        let (train, test) = fold(lo);
        let model = Logistic::fit(&train);
        let (feature, stump) = best_stump(&train);
        chosen.push(feature);
        for (x, y) in &test {
            right_lr += usize::from((model.probability(x) > 0.5) == (*y > 0.5));
            right_st += usize::from(stump.predict(x[feature]) == (*y > 0.5));
            n += 1;
        }
    }
    Classified {
        n,
        logistic: right_lr as f64 / n as f64,
        stump: right_st as f64 / n as f64,
        stump_feature: chosen[0],
    }
}

struct Logistic {
    mean: Vec<f64>,
    sd: Vec<f64>,
    w: Vec<f64>,
}

impl Logistic {
    fn fit(rows: &[Labelled]) -> Self {
        let d = rows[0].0.len();
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|j| rows.iter().map(|(x, _)| x[j]).sum::<f64>() / n)
            .collect();
        let sd: Vec<f64> = (0..d)
            .map(|j| {
                let v = rows
                    .iter()
                    .map(|(x, _)| (x[j] - mean[j]).powi(2))
                    .sum::<f64>()
                    / n;
                if v > 0.0 {
                    v.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let z: Vec<(Vec<f64>, f64)> = rows
            .iter()
            .map(|(x, y)| {
                let mut v = vec![1.0];
                v.extend((0..d).map(|j| (x[j] - mean[j]) / sd[j]));
                (v, *y)
            })
            .collect();
        let p = d + 1;
        let mut w = vec![0.0; p];
        for _ in 0..25 {
            let mut grad = vec![0.0; p];
            let mut hess = vec![vec![0.0; p]; p];
            for (x, y) in &z {
                let s = sigmoid(dot(&w, x));
                for i in 0..p {
                    grad[i] += (s - y) * x[i];
                    for j in 0..p {
                        hess[i][j] += s * (1.0 - s) * x[i] * x[j];
                    }
                }
            }
            for i in 0..p {
                grad[i] += 1e-2 * w[i];
                hess[i][i] += 1e-2;
            }
            let step = solve(hess, grad);
            let mut change = 0.0f64;
            for i in 0..p {
                w[i] -= step[i];
                change = change.max(step[i].abs());
            }
            if change < 1e-8 {
                break;
            }
        }
        Self { mean, sd, w }
    }

    fn probability(&self, x: &[f64]) -> f64 {
        let mut t = self.w[0];
        for (j, v) in x.iter().enumerate() {
            t += self.w[j + 1] * (v - self.mean[j]) / self.sd[j];
        }
        sigmoid(t)
    }
}

fn sigmoid(t: f64) -> f64 {
    1.0 / (1.0 + (-t.clamp(-500.0, 500.0)).exp())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solve `a x = b` (Gaussian elimination with partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, piv);
        b.swap(c, piv);
        let d = a[c][c];
        if d.abs() < 1e-300 {
            continue;
        }
        let pivot_row = a[c].clone();
        for r in c + 1..n {
            let f = a[r][c] / d;
            for (v, p) in a[r].iter_mut().zip(&pivot_row).skip(c) {
                *v -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = if a[r][r].abs() < 1e-300 {
            0.0
        } else {
            (b[r] - s) / a[r][r]
        };
    }
    x
}

#[derive(Debug, Clone, Copy)]
struct Stump {
    threshold: f64,
    /// Class 1 above the threshold (else below).
    above: bool,
}

impl Stump {
    fn predict(&self, v: f64) -> bool {
        (v > self.threshold) == self.above
    }
}

/// The feature and stump with the best training accuracy.
fn best_stump(rows: &[Labelled]) -> (usize, Stump) {
    let d = rows[0].0.len();
    let n = rows.len();
    let n1 = rows.iter().filter(|(_, y)| *y > 0.5).count();
    let mut best = (
        0usize,
        Stump {
            threshold: f64::INFINITY,
            above: true,
        },
        0usize,
    );
    for j in 0..d {
        let mut v: Vec<(f64, bool)> = rows.iter().map(|(x, y)| (x[j], *y > 0.5)).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Threshold below everything: all predicted "above".
        let (mut ones_below, mut seen) = (0usize, 0usize);
        let mut i = 0;
        loop {
            // Accuracy with the threshold after `seen` values.
            let zeros_below = seen - ones_below;
            let ones_above = n1 - ones_below;
            let right_above = zeros_below + ones_above;
            let right_below = n - right_above;
            let threshold = if seen == 0 {
                f64::NEG_INFINITY
            } else {
                v[seen - 1].0
            };
            for (right, above) in [(right_above, true), (right_below, false)] {
                if right > best.2 {
                    best = (j, Stump { threshold, above }, right);
                }
            }
            if i >= n {
                break;
            }
            // Step over ties.
            let x = v[i].0;
            while i < n && v[i].0 == x {
                ones_below += usize::from(v[i].1);
                i += 1;
            }
            seen = i;
        }
    }
    (best.0, best.1)
}

#[test]
fn two_sample_statistics_behave() {
    // Same distribution: p-values not small; shifted: tiny.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    use rand_distr::{Distribution, Normal};
    let g = Normal::new(0.0, 1.0).unwrap();
    let a: Vec<f64> = (0..2000).map(|_| g.sample(&mut rng)).collect();
    let b: Vec<f64> = (0..2000).map(|_| g.sample(&mut rng)).collect();
    let c: Vec<f64> = (0..2000).map(|_| g.sample(&mut rng) + 0.3).collect();
    assert!(ks(&a, &b).1 > 0.01, "{:?}", ks(&a, &b));
    assert!(ks(&a, &c).1 < 1e-6, "{:?}", ks(&a, &c));
    // Q(1, x) = exp(-x); chi2 with 2 dof at 5.99 has p = 0.05.
    assert!((gamma_q(1.0, 2.0) - (-2.0f64).exp()).abs() < 1e-10);
    assert!((gamma_q(1.0, 5.991_464_547 / 2.0) - 0.05).abs() < 1e-6);
    assert!((gamma_q(2.5, 10.0) - 0.001_249_73).abs() < 1e-7);
    // Classifiers: chance on the same distribution, not on the shifted one.
    let rows = |v: &[f64], w: &[f64]| -> Vec<Vec<f64>> {
        v.iter().zip(w).map(|(x, y)| vec![*x, *y]).collect()
    };
    let same = classify(&rows(&a, &b), &rows(&b, &a), 1);
    assert!((same.logistic - 0.5).abs() < 4.0 * same.sd(), "{same:?}");
    assert!((same.stump - 0.5).abs() < 4.0 * same.sd(), "{same:?}");
    let shifted = classify(&rows(&a, &b), &rows(&c, &a), 1);
    assert!(
        shifted.logistic > 0.55 && shifted.stump > 0.55,
        "{shifted:?}"
    );
    assert_eq!(shifted.stump_feature, 0);
}
