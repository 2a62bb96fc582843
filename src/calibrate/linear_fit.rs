//! Least squares with iterative outlier rejection, shared by the lifetime
//! fit, the Kr83m maps and the liquid-level plane.
//!
//! ```text
//! beta = (X^T W X)^-1 X^T W y                  (normal equations, Cholesky)
//! robust scale s_r = 1.4826 median |r_i|       (residuals of the previous pass)
//! pass k+1 keeps |r_i| < clip s_r              (5 passes, or until the kept set is stable)
//! cov(beta) = s^2 (X^T W X)^-1,  s^2 = sum_kept w_i r_i^2 / (n_kept - p)
//! ```

/// A fitted linear model.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearFit {
    /// Coefficients.
    pub coef: Vec<f64>,
    /// Covariance of the coefficients.
    pub cov: Vec<Vec<f64>>,
    /// Residual standard deviation of the kept rows.
    pub residual_sd: f64,
    /// Rows kept after outlier rejection.
    pub n_kept: usize,
}

/// Solve the symmetric positive definite system `a x = b` and invert `a`
/// (Cholesky); None when `a` is singular. Index loops read as the formulas do.
#[allow(clippy::needless_range_loop)]
fn cholesky_solve_and_invert(a: &[Vec<f64>], b: &[f64]) -> Option<(Vec<f64>, Vec<Vec<f64>>)> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if !(d > 1e-300 && d.is_finite()) {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    let solve = |rhs: &[f64]| {
        let mut y = vec![0.0; n];
        for i in 0..n {
            y[i] = (rhs[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
        }
        x
    };
    let x = solve(b);
    let mut inv = vec![vec![0.0; n]; n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let col = solve(&e);
        for i in 0..n {
            inv[i][j] = col[i];
        }
    }
    Some((x, inv))
}

/// Solve the symmetric positive definite system `a x = b` (Cholesky; the
/// lower triangle of `a` is read); None when `a` is singular.
pub(crate) fn cholesky_solve(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    cholesky_solve_and_invert(a, b).map(|(x, _)| x)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

/// Weighted least squares of `y` on the rows of `x` (one row of features per
/// point), rejecting points beyond `clip` robust standard deviations.
/// None with fewer kept points than features + 2, or a singular design.
#[allow(clippy::needless_range_loop)]
pub fn robust_least_squares(x: &[Vec<f64>], y: &[f64], w: &[f64], clip: f64) -> Option<LinearFit> {
    let p = x.first()?.len();
    let mut keep = vec![true; y.len()];
    let mut fit = None;
    for _ in 0..6 {
        let mut a = vec![vec![0.0; p]; p];
        let mut b = vec![0.0; p];
        let mut n_kept = 0usize;
        for ((row, (&yi, &wi)), _) in x
            .iter()
            .zip(y.iter().zip(w))
            .zip(&keep)
            .filter(|(_, k)| **k)
        {
            n_kept += 1;
            for i in 0..p {
                b[i] += wi * row[i] * yi;
                for j in 0..=i {
                    a[i][j] += wi * row[i] * row[j];
                }
            }
        }
        if n_kept < p + 2 {
            return None;
        }
        for i in 0..p {
            for j in 0..i {
                a[j][i] = a[i][j];
            }
        }
        let (coef, inv) = cholesky_solve_and_invert(&a, &b)?;
        let resid: Vec<f64> = x
            .iter()
            .zip(y)
            .map(|(row, yi)| yi - row.iter().zip(&coef).map(|(r, c)| r * c).sum::<f64>())
            .collect();
        let kept_abs: Vec<f64> = resid
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(r, _)| r.abs())
            .collect();
        let scale = 1.4826 * median(kept_abs);
        let ss: f64 = resid
            .iter()
            .zip(w)
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|((r, wi), _)| wi * r * r)
            .sum();
        let s2 = ss / (n_kept - p) as f64;
        let cov = inv
            .iter()
            .map(|row| row.iter().map(|v| v * s2).collect())
            .collect();
        fit = Some(LinearFit {
            coef,
            cov,
            residual_sd: s2.sqrt(),
            n_kept,
        });
        let next: Vec<bool> = resid.iter().map(|r| r.abs() < clip * scale).collect();
        if next == keep || scale.is_nan() || scale <= 0.0 {
            break;
        }
        keep = next;
    }
    fit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_an_outlier_is_recovered() {
        let xs: Vec<f64> = (0..50).map(f64::from).collect();
        let mut y: Vec<f64> = xs
            .iter()
            .map(|x| 2.0 + 0.5 * x + if (*x as i32) % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        y[10] = 100.0;
        let rows: Vec<Vec<f64>> = xs.iter().map(|x| vec![1.0, *x]).collect();
        let f = robust_least_squares(&rows, &y, &vec![1.0; 50], 4.0).unwrap();
        assert!(
            (f.coef[1] - 0.5).abs() < 1e-3 && (f.coef[0] - 2.0).abs() < 0.05,
            "{f:?}"
        );
        assert_eq!(f.n_kept, 49);
        assert!(f.cov[1][1] > 0.0);
    }
}
