//! `qkd plan`: the key rate to expect from given hardware at a given distance, asymptotically
//! (infinitely many decoys, GLLP) and for finite blocks (Lim et al. 2014 on expected counts),
//! next to the repeaterless bound that no rate may exceed. A deployed fiber's Raman noise, PMD
//! and extra loss ([`FiberFlags`]) enter through the same world functions the emulator uses;
//! `--coexistence` answers how much classical launch power the link tolerates.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use qkd_firmware_sim::world::{ClassicalSpec, Direction, LinkPreset, LinkSpec};
use qkd_postprocess::bits::binary_entropy;
use qkd_postprocess::estimate::{
    BasisCounts, Channel, asymptotic_rate, finite_key, gain_and_error, plob_bound,
};
use serde::Serialize;

use crate::flags::{FiberFlags, in_range};
use crate::link::decoy_settings;
use crate::plot::{Curve, LinePlot};

/// Gate used to turn free-running dark-count rates into a background per pulse (slot recovery's
/// default gate).
const GATE_S: f64 = 1e-9;

/// Flags of `qkd plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Hardware preset: gys, snspd, ingaas-free or ingaas-gated.
    #[arg(long, default_value = "snspd")]
    preset: String,
    /// Fiber length in km.
    #[arg(long, default_value_t = 50.0, allow_negative_numbers = true)]
    distance_km: f64,
    /// Error-correction inefficiency f assumed (1 is the Shannon limit). Default: the
    /// literature's 1.22 for `gys`, else 1.1 (Cascade measures 1.03–1.06 here; margin kept).
    #[arg(long, allow_negative_numbers = true)]
    ec_inefficiency: Option<f64>,
    /// Key-basis bits per block for the finite-key estimate.
    #[arg(long, default_value_t = 1_000_000)]
    block_bits: u64,
    /// Secrecy parameter ε_sec of the finite-key estimate.
    #[arg(long, default_value_t = 1e-10, allow_negative_numbers = true)]
    eps_sec: f64,
    /// Correctness parameter ε_cor of the finite-key estimate.
    #[arg(long, default_value_t = 1e-15, allow_negative_numbers = true)]
    eps_cor: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Report the largest classical launch power, per direction, that still gives a positive
    /// finite-key rate at this distance (with the other fiber flags as given).
    #[arg(long)]
    coexistence: bool,
    /// Also draw the finite-key rate against distance for several classical launch powers to
    /// this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    fiber: FiberFlags,
}

/// The finite-key expectation for one block.
#[derive(Debug, Clone, Serialize)]
struct FiniteKeyPlan {
    /// Key-basis bits per block.
    block_bits: u64,
    /// Signal mean photon number maximising the finite-key rate (decoys as in the preset).
    mu: f64,
    /// Expected secret bits per block (an expectation from mean counts, not a guarantee).
    expected_block_length: f64,
    /// Link time to gather one block.
    block_seconds: f64,
    /// Expected secret bits per pulse.
    secret_key_rate_per_pulse: f64,
    /// Expected secret bits per second.
    secret_key_rate_bps: f64,
}

/// What `qkd plan --json` prints.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    preset: &'static str,
    distance_km: f64,
    /// Overall transmittance including Bob's optics and detectors.
    transmittance: f64,
    /// Total loss of the fiber in dB (per-km loss plus extra loss).
    fiber_loss_db: f64,
    /// Background yield per pulse (dark counts and Raman noise, all detectors).
    background: f64,
    /// Detection window the background is counted in, s (a gated detector's gate, else slot
    /// recovery's gate).
    detection_window_s: f64,
    /// Raman noise photons per second at the receiver's input inside its filter.
    raman_photons_per_s: f64,
    /// Raman noise clicks per detection window, all detectors: η_Bob·η_det·photons/s·window.
    raman_clicks_per_window: f64,
    /// Mean differential group delay of the fiber in ps (PMD coefficient × √L).
    mean_dgd_ps: f64,
    /// Misalignment error, including PMD's depolarization.
    misalignment: f64,
    /// Signal mean photon number maximising the asymptotic rate.
    mu: f64,
    /// Gain of the signal at that mean photon number.
    gain: f64,
    /// Error rate of the signal.
    qber: f64,
    /// Asymptotic secret bits per pulse (infinitely many decoys, both bases sifted for key).
    secret_key_rate_per_pulse: f64,
    /// The same per second.
    secret_key_rate_bps: f64,
    /// Repeaterless bound −log2(1 − η) per pulse.
    plob_bound_per_pulse: f64,
    /// Finite-key expectation.
    finite_key: Option<FiniteKeyPlan>,
}

/// What the fiber and detectors add to the channel: background and depolarization.
#[derive(Debug, Clone, Copy)]
struct Noise {
    window_s: f64,
    raman_photons_per_s: f64,
    raman_clicks_per_window: f64,
}

impl Noise {
    /// Counted in the receiver's own window: a gated detector's gate, else slot recovery's.
    fn of(spec: &LinkSpec) -> Self {
        Self::in_window(spec, spec.receiver.detectors[0].dark.window_s(GATE_S))
    }

    fn in_window(spec: &LinkSpec, window_s: f64) -> Self {
        let detector = &spec.receiver.detectors[0];
        let raman_photons_per_s = spec.fiber.raman_photons_per_s();
        Noise {
            window_s,
            raman_photons_per_s,
            raman_clicks_per_window: raman_photons_per_s
                * spec.receiver.optics_transmission
                * detector.efficiency
                * window_s,
        }
    }
}

/// The channel a preset's hardware makes over its fiber.
fn channel(spec: &LinkSpec, ec_inefficiency: f64) -> Channel {
    channel_with(spec, ec_inefficiency, Noise::of(spec))
}

/// The same with the background counted as `noise` says.
fn channel_with(spec: &LinkSpec, ec_inefficiency: f64, noise: Noise) -> Channel {
    let detector = &spec.receiver.detectors[0];
    let background = 4.0 * detector.dark.per_gate(noise.window_s) + noise.raman_clicks_per_window;
    let pz = spec.source.basis_z_probability;
    Channel {
        transmittance: spec.fiber.transmission()
            * spec.receiver.optics_transmission
            * detector.efficiency,
        background,
        misalignment: (1.0 - spec.fiber.mean_visibility(spec.source.spectral_width_ghz)) / 2.0,
        ec_inefficiency,
        sifting: pz * spec.receiver.basis_z_probability
            + (1.0 - pz) * (1.0 - spec.receiver.basis_z_probability),
    }
}

/// Maximises `rate` over `(low, high]`: a scan of the whole range, then two finer scans
/// around the best point.
fn maximise(low: f64, high: f64, rate: impl Fn(f64) -> f64) -> (f64, f64) {
    let points = 400;
    let mut best = (high, rate(high));
    let (mut from, mut to) = (low, high);
    for _ in 0..3 {
        let step = (to - from) / f64::from(points);
        for i in 1..=points {
            let x = from + f64::from(i) * step;
            let r = rate(x);
            if r > best.1 {
                best = (x, r);
            }
        }
        from = (best.0 - 2.0 * step).max(low);
        to = (best.0 + 2.0 * step).min(high);
    }
    best
}

/// Expected secret length of one block at signal `mu`, and the pulses it takes.
fn finite_block(spec: &LinkSpec, c: &Channel, mu: f64, args: &PlanArgs) -> Option<(f64, f64)> {
    let mut classes = spec.source.intensities.clone();
    classes.first_mut()?.mean_photon_number = mu;
    let s = decoy_settings(&classes, args.eps_sec, args.eps_cor).ok()?;
    let (pa, pb) = (
        spec.source.basis_z_probability,
        spec.receiver.basis_z_probability,
    );
    let per_pulse_key: f64 = (0..3)
        .map(|k| s.p[k] * gain_and_error(s.mu[k], c).0)
        .sum::<f64>()
        * pa
        * pb;
    let pulses = args.block_bits as f64 / per_pulse_key;
    let counts = |fraction: f64| {
        let mut counts = BasisCounts::default();
        for k in 0..3 {
            let (q, e) = gain_and_error(s.mu[k], c);
            let n = pulses * fraction * s.p[k] * q;
            counts.n[k] = n as u64;
            counts.m[k] = (n * e) as u64;
        }
        counts
    };
    let key = counts(pa * pb);
    let test = counts((1.0 - pa) * (1.0 - pb));
    let bound = finite_key(&key, &test, &s).ok()?;
    let errors = key.m.iter().sum::<u64>() as f64 / key.n.iter().sum::<u64>().max(1) as f64;
    let length = bound.length_before_ec
        - c.ec_inefficiency * args.block_bits as f64 * binary_entropy(errors);
    Some((length.max(0.0), pulses))
}

/// Lowest and highest classical launch power searched by `--coexistence`, dBm (the flag's range).
const POWER_RANGE_DBM: (f64, f64) = (-100.0, 40.0);
/// Resolution of the coexistence search, dB.
const POWER_RESOLUTION_DB: f64 = 0.01;

/// The plan for `spec` with error-correction inefficiency `f`.
fn evaluate(preset: LinkPreset, spec: &LinkSpec, f: f64, args: &PlanArgs) -> Plan {
    let noise = Noise::of(spec);
    let c = channel_with(spec, f, noise);
    let rep_rate = spec.source.rep_rate_hz as f64;
    let (mu, rate) = maximise(0.0, 1.5, |mu| asymptotic_rate(mu, &c));
    let (gain, qber) = gain_and_error(mu, &c);
    let finite_key = finite_key_plan(spec, &c, args);
    Plan {
        preset: preset.name(),
        distance_km: spec.fiber.length_km,
        transmittance: c.transmittance,
        fiber_loss_db: spec.fiber.loss_db(),
        background: c.background,
        detection_window_s: noise.window_s,
        raman_photons_per_s: noise.raman_photons_per_s,
        raman_clicks_per_window: noise.raman_clicks_per_window,
        mean_dgd_ps: qkd_firmware_sim::world::pmd::mean_dgd_ps(
            spec.fiber.pmd_ps_per_sqrt_km,
            spec.fiber.length_km,
        ),
        misalignment: c.misalignment,
        mu,
        gain,
        qber,
        secret_key_rate_per_pulse: rate,
        secret_key_rate_bps: rate * rep_rate,
        plob_bound_per_pulse: plob_bound(c.transmittance),
        finite_key,
    }
}

/// The finite-key expectation over channel `c` at the best signal intensity (decoys as in the
/// preset), `None` without key.
fn finite_key_plan(spec: &LinkSpec, c: &Channel, args: &PlanArgs) -> Option<FiniteKeyPlan> {
    let rep_rate = spec.source.rep_rate_hz as f64;
    let decoy = spec
        .source
        .intensities
        .get(1)
        .map_or(0.0, |d| d.mean_photon_number);
    let (mu, rate) = maximise(decoy + 1e-3, 1.5, |mu| {
        finite_block(spec, c, mu, args).map_or(0.0, |(l, pulses)| l / pulses)
    });
    finite_block(spec, c, mu, args)
        .filter(|_| rate > 0.0)
        .map(|(length, pulses)| FiniteKeyPlan {
            block_bits: args.block_bits,
            mu,
            expected_block_length: length,
            block_seconds: pulses / rep_rate,
            secret_key_rate_per_pulse: rate,
            secret_key_rate_bps: rate * rep_rate,
        })
}

/// Expected finite-key secret bits per second of `spec`, 0 without key.
fn finite_rate_bps(spec: &LinkSpec, f: f64, args: &PlanArgs) -> f64 {
    finite_key_plan(spec, &channel(spec, f), args).map_or(0.0, |fk| fk.secret_key_rate_bps)
}

/// The largest launch power in one direction that still keys.
#[derive(Debug, Clone, Serialize)]
struct PowerLimit {
    direction: &'static str,
    /// Largest classical launch power with a positive finite-key rate, dBm (to 0.01 dB); null
    /// when the link gives no key even without classical light.
    max_power_dbm: Option<f64>,
    /// True when the link still keys at the top of the searched range (40 dBm).
    at_range_limit: bool,
    /// Expected finite-key rate at that power.
    secret_key_rate_bps: f64,
    /// Raman noise photons per second at that power.
    raman_photons_per_s: f64,
}

/// What `qkd plan --coexistence --json` prints.
#[derive(Debug, Clone, Serialize)]
struct Coexistence {
    preset: &'static str,
    distance_km: f64,
    block_bits: u64,
    classical_wavelength_nm: f64,
    quantum_wavelength_nm: f64,
    filter_nm: f64,
    /// Effective Raman coefficient in use, 1/(km·nm).
    raman_coefficient: f64,
    /// Finite-key rate without classical light.
    dark_fiber_secret_key_rate_bps: f64,
    /// One entry per direction: co, then counter.
    directions: Vec<PowerLimit>,
}

/// The classical settings the flags gave, or the defaults at `power_dbm` without any.
fn classical_settings(spec: &LinkSpec, power_dbm: f64) -> ClassicalSpec {
    spec.fiber
        .classical
        .unwrap_or_else(|| ClassicalSpec::with_power(power_dbm))
}

/// `spec` with classical light of `power_dbm` launched in `direction` (the other classical
/// settings as the flags gave them).
fn with_power(spec: &LinkSpec, direction: Direction, power_dbm: f64) -> LinkSpec {
    let mut spec = spec.clone();
    spec.fiber.classical = Some(ClassicalSpec {
        power_dbm,
        direction,
        ..classical_settings(&spec, power_dbm)
    });
    spec
}

/// The highest launch power in [`POWER_RANGE_DBM`] that still keys, to
/// [`POWER_RESOLUTION_DB`], as (power, at the top of the range, rate there); `None` if even
/// the lowest does not. The rate falls monotonically with the noise, so a bisection finds it.
fn highest_keying_power(rate_at: impl Fn(f64) -> f64) -> Option<(f64, bool, f64)> {
    let (low, high) = POWER_RANGE_DBM;
    let top = rate_at(high);
    if top > 0.0 {
        return Some((high, true, top));
    }
    let (mut keyed, mut keyed_rate, mut unkeyed) = (low, rate_at(low), high);
    if keyed_rate <= 0.0 {
        return None;
    }
    while unkeyed - keyed > POWER_RESOLUTION_DB {
        let mid = 0.5 * (keyed + unkeyed);
        let rate = rate_at(mid);
        if rate > 0.0 {
            (keyed, keyed_rate) = (mid, rate);
        } else {
            unkeyed = mid;
        }
    }
    Some((keyed, false, keyed_rate))
}

fn coexistence(preset: LinkPreset, spec: &LinkSpec, f: f64, args: &PlanArgs) -> Coexistence {
    let dark_rate = finite_rate_bps(&without_light(spec), f, args);
    let classical = classical_settings(spec, 0.0);
    let directions = Direction::ALL
        .iter()
        .map(|&direction| {
            // Classical light only adds noise: without key in the dark, none with light.
            let limit = if dark_rate > 0.0 {
                highest_keying_power(|p| finite_rate_bps(&with_power(spec, direction, p), f, args))
            } else {
                None
            };
            PowerLimit {
                direction: direction.name(),
                max_power_dbm: limit.map(|(p, _, _)| (p * 100.0).floor() / 100.0),
                at_range_limit: limit.is_some_and(|(_, top, _)| top),
                secret_key_rate_bps: limit.map_or(0.0, |(_, _, rate)| rate),
                raman_photons_per_s: limit.map_or(0.0, |(p, _, _)| {
                    with_power(spec, direction, p).fiber.raman_photons_per_s()
                }),
            }
        })
        .collect();
    Coexistence {
        preset: preset.name(),
        distance_km: spec.fiber.length_km,
        block_bits: args.block_bits,
        classical_wavelength_nm: classical.wavelength_nm,
        quantum_wavelength_nm: classical.quantum_wavelength_nm,
        filter_nm: classical.filter_nm,
        raman_coefficient: classical.coefficient(),
        dark_fiber_secret_key_rate_bps: dark_rate,
        directions,
    }
}

/// Launch powers drawn by `--plot`: without classical light, then around the flags' power (or
/// a decade ladder from −20 dBm).
fn plot_powers(spec: &LinkSpec) -> Vec<Option<f64>> {
    let centre = spec.fiber.classical.map(|c| c.power_dbm);
    let ladder = match centre {
        Some(p) => vec![p - 10.0, p, p + 10.0],
        None => vec![-20.0, -10.0, 0.0, 10.0],
    };
    std::iter::once(None)
        .chain(ladder.into_iter().map(Some))
        .collect()
}

/// `spec` over `km` of fiber, with classical light of `(direction, power_dbm)` (the other
/// classical settings as the flags gave them) or none.
fn at_distance(spec: &LinkSpec, km: f64, light: Option<(Direction, f64)>) -> LinkSpec {
    let mut at = match light {
        Some((direction, power_dbm)) => with_power(spec, direction, power_dbm),
        None => without_light(spec),
    };
    at.fiber.length_km = km;
    at
}

/// `spec` with no classical light in the fiber.
fn without_light(spec: &LinkSpec) -> LinkSpec {
    let mut dark = spec.clone();
    dark.fiber.classical = None;
    dark
}

/// Points per curve of `--plot`.
const PLOT_POINTS: u32 = 60;

fn plot(
    preset: LinkPreset,
    spec: &LinkSpec,
    f: f64,
    args: &PlanArgs,
    path: &PathBuf,
) -> Result<()> {
    let direction = spec.fiber.classical.map_or(Direction::Co, |c| c.direction);
    let max_km = (2.0 * spec.fiber.length_km).max(50.0);
    let curves = plot_powers(spec)
        .into_iter()
        .map(|power| {
            let points = (1..=PLOT_POINTS)
                .map(|i| {
                    let km = max_km * f64::from(i) / f64::from(PLOT_POINTS);
                    let at = at_distance(spec, km, power.map(|p| (direction, p)));
                    (km, finite_rate_bps(&at, f, args))
                })
                .collect();
            Curve {
                label: power.map_or("no classical light".into(), |p| {
                    format!("{p:+.0} dBm {}", direction.name())
                }),
                points,
            }
        })
        .collect();
    let svg = LinePlot {
        title: format!(
            "{}: finite-key rate, blocks of {} bits",
            preset.name(),
            args.block_bits
        ),
        x_label: "fiber length (km)".into(),
        y_label: "secret key rate (bit/s)".into(),
        log_y: true,
        curves,
    }
    .to_svg();
    std::fs::write(path, svg).with_context(|| format!("--plot: cannot write {}", path.display()))
}

pub fn run(args: &PlanArgs) -> Result<()> {
    let preset = LinkPreset::from_name(&args.preset)?;
    let distance_km = in_range("distance-km", args.distance_km, 0.0, 20_000.0, "km")?;
    let f = match args.ec_inefficiency {
        Some(f) => in_range("ec-inefficiency", f, 1.0, 3.0, "")?,
        None if preset == LinkPreset::Gys => 1.22,
        None => 1.1,
    };
    in_range("eps-sec", args.eps_sec, 1e-30, 0.1, "")?;
    in_range("eps-cor", args.eps_cor, 1e-30, 0.1, "")?;
    if args.block_bits < 1000 {
        bail!(
            "--block-bits: {} is below the smallest block, 1000",
            args.block_bits
        );
    }
    let mut spec = preset.spec(distance_km);
    if args.coexistence {
        args.fiber
            .apply_searching_power(&mut spec.fiber, POWER_RANGE_DBM.0)?;
    } else {
        args.fiber.apply(&mut spec.fiber)?;
    }
    if let Some(path) = &args.plot {
        plot(preset, &spec, f, args, path)?;
    }
    if args.coexistence {
        let answer = coexistence(preset, &spec, f, args);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            print_coexistence(&answer);
        }
        return Ok(());
    }
    let plan = evaluate(preset, &spec, f, args);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    println!(
        "`{}` at {} km ({:.2} dB): η = {:.3e}, Y0 = {:.2e}, e_d = {:.4}",
        plan.preset,
        plan.distance_km,
        plan.fiber_loss_db,
        plan.transmittance,
        plan.background,
        plan.misalignment
    );
    if plan.raman_photons_per_s > 0.0 {
        println!(
            "  Raman        {:.3e} photons/s at the receiver, {:.3e} clicks per {:.0} ps window",
            plan.raman_photons_per_s,
            plan.raman_clicks_per_window,
            plan.detection_window_s * 1e12
        );
    }
    println!(
        "  asymptotic   μ = {:.3}: gain {:.3e}, QBER {:.2} %, {:.3e} bit/pulse = {:.4e} bit/s",
        plan.mu,
        plan.gain,
        100.0 * plan.qber,
        plan.secret_key_rate_per_pulse,
        plan.secret_key_rate_bps
    );
    match &plan.finite_key {
        Some(fk) => println!(
            "  finite key   μ = {:.3}, blocks of {} bits every {:.3} s: {:.3e} bit/pulse = {:.4e} bit/s (expected)",
            fk.mu,
            fk.block_bits,
            fk.block_seconds,
            fk.secret_key_rate_per_pulse,
            fk.secret_key_rate_bps
        ),
        None => println!(
            "  finite key   no key with blocks of {} bits",
            args.block_bits
        ),
    }
    println!(
        "  bound        {:.3e} bit/pulse (repeaterless, PLOB)",
        plan.plob_bound_per_pulse
    );
    Ok(())
}

fn print_coexistence(c: &Coexistence) {
    println!(
        "`{}` at {} km, classical {} nm, quantum {} nm in {} nm, ρ = {:.2e} /(km·nm); dark fiber {:.4e} bit/s",
        c.preset,
        c.distance_km,
        c.classical_wavelength_nm,
        c.quantum_wavelength_nm,
        c.filter_nm,
        c.raman_coefficient,
        c.dark_fiber_secret_key_rate_bps
    );
    for d in &c.directions {
        match d.max_power_dbm {
            Some(p) => println!(
                "  {:<8} up to {p:+.2} dBm{} ({:.4e} bit/s there)",
                d.direction,
                if d.at_range_limit { " or more" } else { "" },
                d.secret_key_rate_bps
            ),
            None => println!("  {:<8} no key at any launch power", d.direction),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkd_firmware_sim::world::{Basis, LinkStats, NodeOutput, PrepareMeasureWorld};

    /// Within five standard deviations.
    fn assert_close(what: &str, measured: f64, expected: f64, sigma: f64) {
        assert!(
            (measured - expected).abs() <= 5.0 * sigma,
            "{what}: {measured} against {expected} ± {sigma}"
        );
    }

    #[test]
    fn plotted_powers_keep_the_flags_other_classical_settings() {
        let mut spec = LinkPreset::Snspd.spec(50.0);
        spec.fiber.classical = Some(ClassicalSpec {
            filter_nm: 1.0,
            raman_coefficient: Some(5e-9),
            ..ClassicalSpec::with_power(-10.0)
        });
        let at = at_distance(&spec, 80.0, Some((Direction::Counter, 0.0)));
        let classical = at.fiber.classical.unwrap();
        assert!((classical.filter_nm - 1.0).abs() < 1e-12);
        assert_eq!(classical.raman_coefficient, Some(5e-9));
        assert_eq!(classical.direction, Direction::Counter);
        assert!(classical.power_dbm.abs() < 1e-12 && (at.fiber.length_km - 80.0).abs() < 1e-12);
        assert!(at_distance(&spec, 80.0, None).fiber.classical.is_none());
    }

    #[test]
    fn the_emulated_link_with_raman_noise_matches_the_planned_channel() {
        // 100 km of SNSPD link under −20 dBm of counter-propagating data: Raman clicks are
        // about a sixth of the signal's, so they set most of the error rate. The emulator's
        // statistics give every noise click to the nearest slot, so the planner's background
        // is counted over one slot period here (the node's slot recovery keeps 1 ns).
        let mut spec = LinkPreset::Snspd.spec(100.0);
        spec.fiber.classical = Some(ClassicalSpec {
            direction: Direction::Counter,
            ..ClassicalSpec::with_power(-20.0)
        });
        let slot_s = 1.0 / spec.source.rep_rate_hz as f64;
        let c = channel_with(&spec, 1.1, Noise::in_window(&spec, slot_s));
        let mu = spec.source.intensities[0].mean_photon_number;
        let (gain, qber) = gain_and_error(mu, &c);
        assert!(qber > 0.04, "the noise must matter: {qber}");

        let mut world = PrepareMeasureWorld::new(&spec, 8).unwrap();
        let mut stats = LinkStats::new(spec.source.intensities.len(), 8);
        let mut out = NodeOutput::default();
        for step in 1..=5 {
            out.clear();
            world.run_until(step * 10_000_000_000, &mut out);
            stats.add(&out.clicks, world.source());
        }
        stats.finish(world.source());
        let n = world.pulses() as f64 * world.source().key_share(0);
        let measured_gain = stats.clicked_slots[0] as f64 / n;
        assert_close(
            "gain",
            measured_gain,
            gain,
            (gain * (1.0 - gain) / n).sqrt(),
        );
        let sifted = stats.sifted[0][0] as f64;
        let measured_qber = stats.qber(0, Basis::Z).unwrap();
        assert_close(
            "QBER Z",
            measured_qber,
            qber,
            (qber * (1.0 - qber) / sifted).sqrt(),
        );
    }
}
