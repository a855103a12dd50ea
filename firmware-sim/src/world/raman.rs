//! Spontaneous Raman scattering of classical channels that share the quantum channel's fiber.
//!
//! Model (Eraerds et al., New J. Phys. 12, 063027 (2010), Eqs. 1–2; Kumar, Qin and Alléaume,
//! New J. Phys. 17, 043027 (2015), Eqs. 6–7). Classical light of launch power `P` scatters into
//! the quantum channel's filter (bandwidth `Δλ`) with the effective coefficient `ρ` (1/(km·nm));
//! with attenuation `α_q` at the quantum and `α_c` at the classical wavelength (1/km), the noise
//! power reaching the quantum receiver from a span of length `L` is
//! - co-propagating (launched at the quantum transmitter's end):
//!   `P ρ Δλ e^{−α_q L} (1 − e^{−(α_c−α_q)L}) / (α_c − α_q)`, which is `P ρ Δλ L e^{−αL}` when the
//!   two attenuations are equal;
//! - counter-propagating (launched at the receiver's end):
//!   `P ρ Δλ (1 − e^{−(α_c+α_q)L}) / (α_c + α_q)`.
//!
//! The noise is broadband and unpolarized: at the receiver it is a Poisson stream of photons,
//! each going to any detector with error probability 1/2. Emulator and planner both take it from
//! [`ClassicalSpec::noise_photons_per_s`].

use serde::{Deserialize, Serialize};

use super::param::{ConfigError, Section};

/// Planck's constant times the speed of light, in J·m.
const HC_J_M: f64 = 6.626_070_15e-34 * 299_792_458.0;
/// Speed of light in nm·THz.
const C_NM_THZ: f64 = 299_792.458;
/// `h/k_B` in K/THz: the Boltzmann factor of a shift `Δν` at temperature `T` is
/// `exp(−H_OVER_K·Δν/T)`.
const H_OVER_K_K_PER_THZ: f64 = 47.992_430_7;
/// Fiber temperature assumed by the default coefficient table.
const FIBER_TEMPERATURE_K: f64 = 300.0;

/// Normalised Raman gain spectrum of fused silica (peak 1 at 13.2 THz) against the frequency
/// shift in THz, read coarsely from the well-known curve (Stolen and Ippen 1973; Agrawal,
/// Nonlinear Fiber Optics, Fig. 8.2): the shape only, the scale is set below.
const GAIN_SHAPE: [(f64, f64); 24] = [
    (0.0, 0.0),
    (1.0, 0.08),
    (2.0, 0.16),
    (3.0, 0.23),
    (4.0, 0.29),
    (5.0, 0.35),
    (6.0, 0.40),
    (7.0, 0.45),
    (8.0, 0.50),
    (9.0, 0.56),
    (10.0, 0.64),
    (11.0, 0.75),
    (12.0, 0.88),
    (13.2, 1.0),
    (14.0, 0.92),
    (15.0, 0.62),
    (16.0, 0.42),
    (17.0, 0.38),
    (18.0, 0.40),
    (20.0, 0.25),
    (24.0, 0.12),
    (28.0, 0.04),
    (33.0, 0.01),
    (40.0, 0.0),
];

/// Scale of the default coefficient, 1/(km·nm): with it the Stokes side within 1–5 THz of the
/// classical channel comes out at 2.7–3.2 × 10⁻⁹ and the anti-Stokes side at 1.5–2.5 × 10⁻⁹,
/// the C-band range Kumar et al. (2015) measured (1.5–3.1 × 10⁻⁹).
const COEFFICIENT_SCALE: f64 = 5.0e-9;

/// Typical attenuation of standard single-mode fiber (ITU-T G.652.D) against wavelength, in
/// nm and dB/km; 1550 nm matches the presets' 0.2 dB/km.
const ATTENUATION: [(f64, f64); 8] = [
    (1260.0, 0.38),
    (1310.0, 0.33),
    (1383.0, 0.31),
    (1450.0, 0.25),
    (1490.0, 0.22),
    (1550.0, 0.20),
    (1590.0, 0.20),
    (1625.0, 0.22),
];

/// Closest classical and quantum wavelengths accepted, nm: nearer, they are one channel.
pub const MIN_SPACING_NM: f64 = 0.1;

/// Wavelengths the attenuation table covers, in nm.
pub const WAVELENGTH_RANGE_NM: (f64, f64) = (1260.0, 1625.0);

/// Which end of the fiber launches the classical light.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Launched at the quantum transmitter's end, travelling with the photons.
    #[default]
    Co,
    /// Launched at the quantum receiver's end, travelling against the photons.
    Counter,
}

impl Direction {
    /// Both directions.
    pub const ALL: [Direction; 2] = [Direction::Co, Direction::Counter];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Co => "co",
            Direction::Counter => "counter",
        }
    }
}

fn default_classical_wavelength() -> f64 {
    1570.0
}

fn default_quantum_wavelength() -> f64 {
    1550.0
}

fn default_filter() -> f64 {
    0.16
}

/// Classical channels sharing the fiber, and the quantum channel's wavelength plan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassicalSpec {
    /// Total launch power of the classical channels, in dBm.
    pub power_dbm: f64,
    /// Where the classical light is launched.
    #[serde(default)]
    pub direction: Direction,
    /// Wavelength of the classical channels, in nm.
    #[serde(default = "default_classical_wavelength")]
    pub wavelength_nm: f64,
    /// Wavelength of the quantum channel, in nm.
    #[serde(default = "default_quantum_wavelength")]
    pub quantum_wavelength_nm: f64,
    /// Effective Raman coefficient, 1/(km·nm); [`default_coefficient`] of the spacing when absent.
    #[serde(default)]
    pub raman_coefficient: Option<f64>,
    /// Bandwidth of the quantum receiver's spectral filter, in nm (0.16 nm is 20 GHz at 1550).
    #[serde(default = "default_filter")]
    pub filter_nm: f64,
    /// Attenuation at the classical wavelength, dB/km; the G.652.D table when absent.
    #[serde(default)]
    pub loss_db_per_km: Option<f64>,
}

impl ClassicalSpec {
    /// Classical light of `power_dbm` with the default wavelength plan.
    pub fn with_power(power_dbm: f64) -> Self {
        ClassicalSpec {
            power_dbm,
            direction: Direction::Co,
            wavelength_nm: default_classical_wavelength(),
            quantum_wavelength_nm: default_quantum_wavelength(),
            raman_coefficient: None,
            filter_nm: default_filter(),
            loss_db_per_km: None,
        }
    }

    /// Checks every field, naming it in `section`.
    pub fn validate(&self, section: Section<'_>) -> Result<(), ConfigError> {
        section.check("power_dbm", self.power_dbm, -100.0, 40.0, "dBm")?;
        let (low, high) = WAVELENGTH_RANGE_NM;
        let classical = section.check("wavelength_nm", self.wavelength_nm, low, high, "nm")?;
        let quantum = section.check(
            "quantum_wavelength_nm",
            self.quantum_wavelength_nm,
            low,
            high,
            "nm",
        )?;
        if (classical - quantum).abs() < MIN_SPACING_NM {
            return Err(section.inconsistent(
                "wavelength_nm",
                format!(
                    "the classical and quantum channels need wavelengths at least {MIN_SPACING_NM} nm apart"
                ),
            ));
        }
        if let Some(rho) = self.raman_coefficient {
            section.check("raman_coefficient", rho, 0.0, 1e-6, "/(km·nm)")?;
        }
        section.check("filter_nm", self.filter_nm, 1e-4, 100.0, "nm")?;
        if let Some(loss) = self.loss_db_per_km {
            section.check("loss_db_per_km", loss, 0.0, 100.0, "dB/km")?;
        }
        Ok(())
    }

    /// The effective Raman coefficient in use, 1/(km·nm).
    pub fn coefficient(&self) -> f64 {
        self.raman_coefficient
            .unwrap_or_else(|| default_coefficient(self.wavelength_nm, self.quantum_wavelength_nm))
    }

    /// Attenuation at the classical wavelength in use, dB/km.
    pub fn classical_loss_db_per_km(&self) -> f64 {
        self.loss_db_per_km
            .unwrap_or_else(|| attenuation_db_per_km(self.wavelength_nm))
    }

    /// Raman noise power (W) inside the quantum filter at the receiver's end of a span of
    /// `length_km` whose quantum-wavelength attenuation is `quantum_loss_db_per_km`.
    pub fn noise_power_w(&self, length_km: f64, quantum_loss_db_per_km: f64) -> f64 {
        let launch_w = 1e-3 * 10f64.powf(self.power_dbm / 10.0);
        let scattered = launch_w * self.coefficient() * self.filter_nm;
        let alpha_q = nepers_per_km(quantum_loss_db_per_km);
        let alpha_c = nepers_per_km(self.classical_loss_db_per_km());
        scattered
            * match self.direction {
                Direction::Co => (-alpha_q * length_km).exp() * path(alpha_c - alpha_q, length_km),
                Direction::Counter => path(alpha_c + alpha_q, length_km),
            }
    }

    /// Raman noise photons per second inside the quantum filter at the receiver's end.
    pub fn noise_photons_per_s(&self, length_km: f64, quantum_loss_db_per_km: f64) -> f64 {
        self.noise_power_w(length_km, quantum_loss_db_per_km) * self.quantum_wavelength_nm * 1e-9
            / HC_J_M
    }
}

/// `∫₀ᴸ e^{−a z} dz = (1 − e^{−aL})/a`, equal to `L` at `a = 0`, for either sign of `a`.
fn path(a: f64, length_km: f64) -> f64 {
    let x = a * length_km;
    if x.abs() < 1e-9 {
        length_km * (1.0 - 0.5 * x)
    } else {
        -(-x).exp_m1() / a
    }
}

/// dB/km to 1/km (natural attenuation coefficient).
pub fn nepers_per_km(loss_db_per_km: f64) -> f64 {
    loss_db_per_km * std::f64::consts::LN_10 / 10.0
}

/// Linear interpolation in a table sorted by its first column; `None` outside it.
fn interpolate(table: &[(f64, f64)], x: f64) -> Option<f64> {
    let i = table.iter().position(|&(t, _)| t >= x)?;
    if i == 0 {
        return (x >= table[0].0).then_some(table[0].1);
    }
    let (x0, y0) = table[i - 1];
    let (x1, y1) = table[i];
    Some(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
}

/// Typical G.652.D attenuation at `wavelength_nm` (dB/km), clamped to the table's ends.
pub fn attenuation_db_per_km(wavelength_nm: f64) -> f64 {
    let (low, high) = WAVELENGTH_RANGE_NM;
    interpolate(&ATTENUATION, wavelength_nm.clamp(low, high)).unwrap_or(ATTENUATION[5].1)
}

/// The default effective Raman coefficient (1/(km·nm)) for quantum light at `quantum_nm`
/// scattered from classical light at `classical_nm`: the silica gain shape at the frequency
/// shift, times the thermal occupation `n + 1` on the Stokes side (quantum wavelength longer)
/// or `n` on the anti-Stokes side, at 300 K, scaled to the measured C-band values.
pub fn default_coefficient(classical_nm: f64, quantum_nm: f64) -> f64 {
    let shift_thz = C_NM_THZ / classical_nm - C_NM_THZ / quantum_nm;
    let magnitude = shift_thz.abs();
    let Some(gain) = interpolate(&GAIN_SHAPE, magnitude) else {
        return 0.0;
    };
    if magnitude == 0.0 {
        return 0.0;
    }
    let occupation = 1.0 / (H_OVER_K_K_PER_THZ * magnitude / FIBER_TEMPERATURE_K).exp_m1();
    let thermal = if shift_thz > 0.0 {
        occupation + 1.0
    } else {
        occupation
    };
    COEFFICIENT_SCALE * gain * thermal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(direction: Direction) -> ClassicalSpec {
        ClassicalSpec {
            direction,
            raman_coefficient: Some(3e-9),
            filter_nm: 0.16,
            loss_db_per_km: Some(0.2),
            ..ClassicalSpec::with_power(0.0)
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn co_propagating_noise_with_equal_attenuation_is_p_rho_dl_l_exp() {
        // The reference's worked scale: 1 mW, 10 km, 0.2 dB/km, ρ = 3e-9, 20 GHz ≈ 3 pW.
        let s = spec(Direction::Co);
        let alpha = 0.2 * std::f64::consts::LN_10 / 10.0;
        let expected = 1e-3 * 3e-9 * 0.16 * 10.0 * (-alpha * 10.0f64).exp();
        assert!(close(s.noise_power_w(10.0, 0.2), expected, 1e-9));
        assert!((2.9e-12..3.1e-12).contains(&expected));
        let photons = s.noise_photons_per_s(10.0, 0.2);
        assert!(close(photons, expected * 1550e-9 / HC_J_M, 1e-12));
        assert!((2.3e7..2.5e7).contains(&photons), "{photons}");
    }

    #[test]
    fn counter_propagating_noise_saturates_at_the_effective_length() {
        let s = spec(Direction::Counter);
        let alpha = 0.2 * std::f64::consts::LN_10 / 10.0;
        for km in [1.0, 10.0, 50.0, 200.0] {
            let expected = 1e-3 * 3e-9 * 0.16 * (1.0 - (-2.0 * alpha * km).exp()) / (2.0 * alpha);
            assert!(close(s.noise_power_w(km, 0.2), expected, 1e-12), "{km}");
        }
        // Long spans: P ρ Δλ / (2α), whatever the length.
        let limit = 1e-3 * 3e-9 * 0.16 / (2.0 * alpha);
        assert!(close(s.noise_power_w(1000.0, 0.2), limit, 1e-9));
        // Co-propagating noise peaks at L = 1/α and falls after; counter never falls.
        let co = spec(Direction::Co);
        assert!(co.noise_power_w(1.0 / alpha, 0.2) > co.noise_power_w(2.0 / alpha, 0.2));
        assert!(s.noise_power_w(100.0, 0.2) > s.noise_power_w(50.0, 0.2));
    }

    #[test]
    fn different_attenuations_follow_their_closed_forms() {
        // O-band quantum (0.33 dB/km) with C-band data (0.2 dB/km).
        let (aq, ac) = (nepers_per_km(0.33), nepers_per_km(0.2));
        let km = 30.0;
        let base = 1e-3 * 3e-9 * 0.16;
        let co = base * (-aq * km).exp() * (1.0 - (-(ac - aq) * km).exp()) / (ac - aq);
        let counter = base * (1.0 - (-(ac + aq) * km).exp()) / (ac + aq);
        assert!(close(
            spec(Direction::Co).noise_power_w(km, 0.33),
            co,
            1e-12
        ));
        assert!(close(
            spec(Direction::Counter).noise_power_w(km, 0.33),
            counter,
            1e-12
        ));
        // The unequal form tends to the equal one as the attenuations meet.
        let mut near = spec(Direction::Co);
        near.loss_db_per_km = Some(0.2 + 1e-12);
        assert!(close(
            near.noise_power_w(km, 0.2),
            spec(Direction::Co).noise_power_w(km, 0.2),
            1e-9
        ));
    }

    #[test]
    fn default_coefficients_span_the_measured_c_band_range_and_fall_far_out() {
        for classical in [1530.0, 1540.0, 1560.0, 1570.0] {
            let rho = default_coefficient(classical, 1550.0);
            assert!((1.5e-9..=3.3e-9).contains(&rho), "{classical}: {rho}");
        }
        // The Stokes side is stronger than the anti-Stokes side at the same spacing.
        assert!(default_coefficient(1530.0, 1550.0) > default_coefficient(1570.0, 1550.0));
        // O-band quantum under C-band data: orders of magnitude quieter.
        assert!(default_coefficient(1550.0, 1310.0) < 1e-11);
        assert!(default_coefficient(1550.0, 1550.0).abs() < 1e-30);
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = ClassicalSpec::with_power(0.0);
        s.quantum_wavelength_nm = s.wavelength_nm;
        let err = s
            .validate(Section("fiber.classical"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("fiber.classical.wavelength_nm"), "{err}");
        s = ClassicalSpec::with_power(f64::NAN);
        assert!(s.validate(Section("c")).is_err());
    }
}
