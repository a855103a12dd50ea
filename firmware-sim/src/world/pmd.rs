//! Polarization mode dispersion: a drifting differential group delay that depolarizes
//! broadband light.
//!
//! Model. The fiber's PMD vector `τ⃗` (direction: the principal states; length: the differential
//! group delay, DGD) has three independent Gaussian components of standard deviation `σ`, so the
//! DGD is Maxwell-distributed with mean `⟨τ⟩ = 2σ·√(2/π)` = PMD coefficient × √L. Each component
//! drifts as an Ornstein–Uhlenbeck process with the fiber's correlation time, which keeps that
//! distribution at every instant. A DGD `τ` rotates each frequency of the light about the
//! principal axis by `2πν·τ`; averaged over a Gaussian spectrum of FWHM `Δν` the Stokes
//! components across the axis shrink by `V⊥ = exp(−(πΔν τ)²/(4 ln 2))` and the one along it is
//! kept. Averaged over the input state's projection on a principal axis of random orientation
//! (each of H, V, D, A sees `⟨(s·p)²⟩ = 1/3`), the visibility is `1/3 + 2/3·V⊥`. Each arm of an
//! entangled pair is depolarized independently (the pair's frequency anticorrelation, which could
//! undo part of it, is not modelled).

use super::rng::SimRng;

/// Fewest updates per correlation time of the PMD vector.
const UPDATES_PER_CORRELATION_TIME: f64 = 64.0;
/// Updates are at least this far apart (1 ms) ...
const MIN_UPDATE_PS: i64 = 1_000_000_000;
/// ... and at most this far (10 s).
const MAX_UPDATE_PS: i64 = 10_000_000_000_000;

/// `(π Δν τ)² / (4 ln 2)` for `Δν` in GHz and `τ` in ps.
fn exponent_per_dgd_squared(width_ghz: f64) -> f64 {
    let x = std::f64::consts::PI * width_ghz * 1e-3;
    x * x / (4.0 * std::f64::consts::LN_2)
}

/// Visibility across the principal axis for a DGD of `dgd_ps` and a spectrum of FWHM `width_ghz`.
pub fn perpendicular_visibility(dgd_ps: f64, width_ghz: f64) -> f64 {
    (-exponent_per_dgd_squared(width_ghz) * dgd_ps * dgd_ps).exp()
}

/// Visibility averaged over the principal axis's orientation, `1/3 + 2/3·V⊥`.
pub fn visibility(dgd_ps: f64, width_ghz: f64) -> f64 {
    (1.0 + 2.0 * perpendicular_visibility(dgd_ps, width_ghz)) / 3.0
}

/// [`visibility`] averaged over the Maxwell distribution of mean DGD `mean_dgd_ps`:
/// `⟨e^{−kτ²}⟩ = (1 + 2kσ²)^{−3/2}` with `σ = ⟨τ⟩·√(π/8)`.
pub fn mean_visibility(mean_dgd_ps: f64, width_ghz: f64) -> f64 {
    let sigma = component_sigma(mean_dgd_ps);
    let k = exponent_per_dgd_squared(width_ghz);
    (1.0 + 2.0 * (1.0 + 2.0 * k * sigma * sigma).powf(-1.5)) / 3.0
}

/// Standard deviation of one component of the PMD vector for a mean DGD.
fn component_sigma(mean_dgd_ps: f64) -> f64 {
    mean_dgd_ps * (std::f64::consts::PI / 8.0).sqrt()
}

/// Mean DGD of a span, PMD coefficient × √length.
pub fn mean_dgd_ps(ps_per_sqrt_km: f64, length_km: f64) -> f64 {
    ps_per_sqrt_km * length_km.sqrt()
}

/// A span's PMD vector while the world runs.
#[derive(Debug, Clone)]
pub struct Pmd {
    vector_ps: [f64; 3],
    sigma_ps: f64,
    width_ghz: f64,
    /// Share of the vector kept at each update, `exp(−Δt/T)`.
    keep: f64,
    update_ps: i64,
    next_update_ps: i64,
}

impl Pmd {
    /// A PMD vector drawn from its stationary law, drifting with `correlation_s`.
    pub fn new(mean_dgd_ps: f64, correlation_s: f64, width_ghz: f64, rng: &mut SimRng) -> Self {
        let sigma_ps = component_sigma(mean_dgd_ps);
        let update_ps = ((correlation_s * 1e12 / UPDATES_PER_CORRELATION_TIME) as i64)
            .clamp(MIN_UPDATE_PS, MAX_UPDATE_PS);
        Pmd {
            vector_ps: [0; 3].map(|_| sigma_ps * rng.normal()),
            sigma_ps,
            width_ghz,
            keep: (-(update_ps as f64) * 1e-12 / correlation_s).exp(),
            update_ps,
            next_update_ps: update_ps,
        }
    }

    /// The current DGD in ps.
    pub fn dgd_ps(&self) -> f64 {
        self.vector_ps.iter().map(|c| c * c).sum::<f64>().sqrt()
    }

    /// The current visibility, averaged over the input state's projection on the principal axis.
    pub fn visibility(&self) -> f64 {
        visibility(self.dgd_ps(), self.width_ghz)
    }

    /// Emulated time of the next drift update.
    pub fn next_update_ps(&self) -> i64 {
        self.next_update_ps
    }

    /// One Ornstein–Uhlenbeck step of every component.
    pub fn update(&mut self, rng: &mut SimRng) {
        let fresh = self.sigma_ps * (1.0 - self.keep * self.keep).sqrt();
        for c in &mut self.vector_ps {
            *c = self.keep * *c + fresh * rng.normal();
        }
        self.next_update_ps += self.update_ps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perpendicular_visibility_is_the_gaussian_spectrum_closed_form() {
        // 100 GHz FWHM, 3 ps: (π · 1e11 · 3e-12)² / (4 ln 2) = 0.3203...
        let expected = (-(std::f64::consts::PI * 0.3f64).powi(2) / (4.0 * 2f64.ln())).exp();
        assert!((perpendicular_visibility(3.0, 100.0) - expected).abs() < 1e-15);
        assert!((visibility(3.0, 100.0) - (1.0 + 2.0 * expected) / 3.0).abs() < 1e-15);
        assert!((visibility(0.0, 100.0) - 1.0).abs() < 1e-15);
        // A narrow laser barely notices what broadband SPDC light does.
        assert!(1.0 - visibility(1.0, 1.0) < 1e-5);
        assert!(1.0 - visibility(1.0, 125.0) > 0.02);
    }

    #[test]
    fn the_drifting_dgd_is_maxwellian_with_the_configured_mean_and_visibility() {
        let (mean, width) = (2.0, 120.0);
        let mut rng = SimRng::new(9, 0);
        let mut pmd = Pmd::new(mean, 1.0, width, &mut rng);
        let n = 10_000;
        let (mut dgd, mut vis, mut vis_sq) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            // One correlation time between samples: neighbours correlate by ρ = 1/e, which
            // widens the standard error by √((1+ρ)/(1−ρ)).
            for _ in 0..64 {
                pmd.update(&mut rng);
            }
            let v = pmd.visibility();
            dgd += pmd.dgd_ps();
            vis += v;
            vis_sq += v * v;
        }
        let n = f64::from(n);
        let rho = (-1.0f64).exp();
        let widen = ((1.0 + rho) / (1.0 - rho)).sqrt();
        // Maxwell: variance = mean² (3π/8 − 1).
        let sd = mean * (3.0 * std::f64::consts::PI / 8.0 - 1.0).sqrt();
        let dgd = dgd / n;
        assert!(
            (dgd - mean).abs() < 5.0 * widen * sd / n.sqrt(),
            "mean DGD {dgd}"
        );
        let (vis, vis_sd) = (vis / n, (vis_sq / n - (vis / n).powi(2)).sqrt());
        let expected = mean_visibility(mean, width);
        assert!(
            (vis - expected).abs() < 5.0 * widen * vis_sd / n.sqrt(),
            "{vis} against {expected}"
        );
    }
}
