//! Small dense least squares: the damped Gauss-Newton step behind the far-field steering, and a
//! Levenberg-Marquardt minimiser for the controller model's fits (a handful of parameters, tens
//! of residuals, derivatives by finite differences).

/// Relative step of the finite differences.
const DIFFERENCE_STEP: f64 = 1e-6;

/// Solves the augmented system `[A | b]` by Gaussian elimination with partial pivoting.
fn solve(mut rows: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let n = rows.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| rows[a][col].abs().total_cmp(&rows[b][col].abs()))?;
        if rows[pivot][col].abs() < 1e-15 {
            return None;
        }
        rows.swap(col, pivot);
        let (done, rest) = rows.split_at_mut(col + 1);
        let pivot_row = &done[col];
        for row in rest {
            let factor = row[col] / pivot_row[col];
            for (cell, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *cell -= factor * p;
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let tail: f64 = (r + 1..n).map(|c| rows[r][c] * x[c]).sum();
        x[r] = (rows[r][n] - tail) / rows[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// The step `Δ` minimising `|r + JΔ|² + λ Σ_i (JᵀJ)_ii Δ_i²` (Levenberg-Marquardt with
/// damping `λ`) for the Jacobian `J` given by its `columns`; `ridge` is added to the diagonal so
/// that a parameter no residual depends on stays put instead of making the system singular.
/// `None` if it is singular all the same.
pub fn levenberg_step(
    columns: &[Vec<f64>],
    residual: &[f64],
    damping: f64,
    ridge: f64,
) -> Option<Vec<f64>> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let normal: Vec<Vec<f64>> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let mut row: Vec<f64> = columns.iter().map(|other| dot(column, other)).collect();
            row[i] = row[i] * (1.0 + damping) + ridge;
            row.push(-dot(column, residual));
            row
        })
        .collect();
    solve(normal)
}

/// Sum of squares of `r`.
fn squared_norm(r: &[f64]) -> f64 {
    r.iter().map(|v| v * v).sum()
}

/// Minimises `Σ r_k(p)²` from `start` by Levenberg-Marquardt, for at most `iterations` accepted
/// or rejected steps; `project` maps every trial point into the feasible set (bounds). Returns
/// the best point and its sum of squares.
pub fn minimise(
    residuals: impl Fn(&[f64]) -> Vec<f64>,
    project: impl Fn(&mut [f64]),
    start: &[f64],
    iterations: u32,
) -> (Vec<f64>, f64) {
    let n = start.len();
    let mut point = start.to_vec();
    project(&mut point);
    let mut r = residuals(&point);
    let mut sum = squared_norm(&r);
    let mut damping = 1e-3;
    for _ in 0..iterations {
        // Forward differences: one column of the Jacobian per parameter.
        let columns: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let h = DIFFERENCE_STEP * point[i].abs().max(1.0);
                let mut moved = point.clone();
                moved[i] += h;
                residuals(&moved)
                    .iter()
                    .zip(&r)
                    .map(|(a, b)| (a - b) / h)
                    .collect()
            })
            .collect();
        let Some(step) = levenberg_step(&columns, &r, damping, 1e-12) else {
            break;
        };
        let mut trial: Vec<f64> = point.iter().zip(&step).map(|(p, d)| p + d).collect();
        project(&mut trial);
        let trial_r = residuals(&trial);
        let trial_sum = squared_norm(&trial_r);
        if trial_sum < sum {
            let gain = sum - trial_sum;
            (point, r, sum) = (trial, trial_r, trial_sum);
            damping = (damping / 4.0).max(1e-9);
            if gain < 1e-14 * sum.max(1e-30) {
                break;
            }
        } else {
            damping *= 8.0;
            if damping > 1e8 {
                break;
            }
        }
    }
    (point, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_systems_are_solved_and_singular_ones_refused() {
        let x = solve(vec![vec![2.0, 1.0, 5.0], vec![1.0, 3.0, 10.0]]).unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12,
            "{x:?}"
        );
        assert!(solve(vec![vec![1.0, 2.0, 1.0], vec![2.0, 4.0, 2.0]]).is_none());
    }

    #[test]
    fn the_minimiser_finds_the_rosenbrock_valley_floor_and_honours_bounds() {
        let rosenbrock = |p: &[f64]| vec![10.0 * (p[1] - p[0] * p[0]), 1.0 - p[0]];
        let (p, sum) = minimise(rosenbrock, |_| {}, &[-1.2, 1.0], 200);
        assert!((p[0] - 1.0).abs() < 1e-6 && (p[1] - 1.0).abs() < 1e-6 && sum < 1e-12);
        // With x held at or below 0.5 the best is x = 0.5, y = 0.25.
        let (p, _) = minimise(rosenbrock, |p| p[0] = p[0].min(0.5), &[-1.2, 1.0], 200);
        assert!(
            (p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.25).abs() < 1e-3,
            "{p:?}"
        );
    }
}
