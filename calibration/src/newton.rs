//! Far from alignment, steer the correlations the counts show straight to their aligned values:
//! a damped Gauss-Newton step on a Jacobian of the correlations with respect to the actuators,
//! probed once and then kept current with Broyden's update from every step taken. Each step
//! costs one move and one measurement, against two per actuator for a coordinate sweep, which is
//! what makes the difference for motorised paddles after a sudden rotation.

use crate::least_squares::levenberg_step;

/// Correlations used: R11, R22, R12, R21 (see [`crate::counts::StateCounts::correlations`]).
pub const SIGNALS: usize = 4;

/// A linear model of the correlations around the present setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Jacobian {
    /// One column per actuator: change of each correlation per unit of scaled actuator value.
    pub columns: Vec<[f64; SIGNALS]>,
}

impl Jacobian {
    /// The step `Δ` (scaled units) minimising `Σ_k w_k (r_k + (JΔ)_k)² + λ Σ_i (JᵀWJ)_ii Δ_i²`:
    /// Levenberg-Marquardt with damping `λ`; `None` if the system is singular.
    pub fn damped_step(
        &self,
        residual: &[f64; SIGNALS],
        weights: &[f64; SIGNALS],
        damping: f64,
    ) -> Option<Vec<f64>> {
        // Each signal scaled by the root of its weight: the weighted problem in plain form.
        let roots = weights.map(f64::sqrt);
        let scaled: Vec<Vec<f64>> = self
            .columns
            .iter()
            .map(|column| column.iter().zip(&roots).map(|(c, w)| c * w).collect())
            .collect();
        let residual: Vec<f64> = residual.iter().zip(&roots).map(|(r, w)| r * w).collect();
        // The ridge keeps an actuator that shows in no signal from making the system singular;
        // such an actuator simply does not move.
        levenberg_step(&scaled, &residual, damping, 1e-9)
    }

    /// Broyden's rank-one update after a step `delta` changed the correlations by `change`.
    pub fn update(&mut self, delta: &[f64], change: &[f64; SIGNALS]) {
        let norm: f64 = delta.iter().map(|d| d * d).sum();
        if norm <= 0.0 || !norm.is_finite() {
            return;
        }
        let mut miss = *change;
        for (column, d) in self.columns.iter().zip(delta) {
            for (m, c) in miss.iter_mut().zip(column) {
                *m -= c * d;
            }
        }
        for (column, d) in self.columns.iter_mut().zip(delta) {
            for (c, m) in column.iter_mut().zip(&miss) {
                *c += m * d / norm;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the updates below are exact in binary floating point
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn an_undamped_step_solves_a_linear_model_exactly() {
        let j = Jacobian {
            columns: vec![[1.0, 0.0, 0.5, 0.0], [0.0, 2.0, 0.0, -1.0]],
        };
        // Residual produced by Δ = (0.3, -0.2): the step must undo it.
        let r = [-0.3, 0.4, -0.15, -0.2];
        let step = j.damped_step(&r, &[1.0; 4], 0.0).unwrap();
        assert!(close(step[0], 0.3) && close(step[1], -0.2), "{step:?}");
        // Damping shortens the step without turning it around.
        let damped = j.damped_step(&r, &[1.0; 4], 1.0).unwrap();
        assert!(damped[0] > 0.0 && damped[0] < 0.3 && damped[1] < 0.0 && damped[1] > -0.2);
        // A signal with no weight is ignored: only R11 counts, so only actuator 0 moves.
        let only_first = j.damped_step(&r, &[1.0, 0.0, 0.0, 0.0], 0.0).unwrap();
        assert!(
            close(only_first[0], 0.3) && only_first[1].abs() < 1e-6,
            "{only_first:?}"
        );
    }

    #[test]
    fn broyden_learns_the_change_along_the_step() {
        let mut j = Jacobian {
            columns: vec![[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
        };
        let delta = [0.5, 0.0];
        j.update(&delta, &[1.0, 0.0, 0.25, 0.0]);
        // Along the step the model now predicts what was seen; across it, nothing changed.
        assert_eq!(j.columns[0], [2.0, 0.0, 0.5, 0.0]);
        assert_eq!(j.columns[1], [0.0, 1.0, 0.0, 0.0]);
        j.update(&[0.0, 0.0], &[1.0; 4]);
        assert_eq!(j.columns[1], [0.0, 1.0, 0.0, 0.0]);
    }
}
