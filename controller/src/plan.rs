//! `qkd plan`: the key rate to expect from given hardware at a given distance, asymptotically
//! (infinitely many decoys, GLLP) and for finite blocks (Lim et al. 2014 on expected counts),
//! next to the repeaterless bound that no rate may exceed.

use anyhow::{Result, bail};
use qkd_firmware_sim::world::{LinkPreset, LinkSpec};
use qkd_postprocess::bits::binary_entropy;
use qkd_postprocess::estimate::{
    BasisCounts, Channel, asymptotic_rate, finite_key, gain_and_error, plob_bound,
};
use serde::Serialize;

use crate::flags::in_range;
use crate::link::decoy_settings;

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
    #[arg(long)]
    ec_inefficiency: Option<f64>,
    /// Key-basis bits per block for the finite-key estimate.
    #[arg(long, default_value_t = 1_000_000)]
    block_bits: u64,
    /// Secrecy parameter ε_sec of the finite-key estimate.
    #[arg(long, default_value_t = 1e-10)]
    eps_sec: f64,
    /// Correctness parameter ε_cor of the finite-key estimate.
    #[arg(long, default_value_t = 1e-15)]
    eps_cor: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
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
    /// Background yield per pulse.
    background: f64,
    /// Misalignment error.
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

/// The channel a preset's hardware makes at `distance_km`.
fn channel(spec: &LinkSpec, ec_inefficiency: f64) -> Channel {
    let fiber = spec.fiber.transmission();
    let detector = &spec.receiver.detectors[0];
    let background = 4.0 * detector.dark.per_gate(GATE_S);
    let pz = spec.source.basis_z_probability;
    Channel {
        transmittance: fiber * spec.receiver.optics_transmission * detector.efficiency,
        background,
        misalignment: spec.fiber.misalignment,
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
    let spec = preset.spec(distance_km);
    let c = channel(&spec, f);
    let rep_rate = spec.source.rep_rate_hz as f64;
    let (mu, rate) = maximise(0.0, 1.5, |mu| asymptotic_rate(mu, &c));
    let (gain, qber) = gain_and_error(mu, &c);
    let decoy = spec
        .source
        .intensities
        .get(1)
        .map_or(0.0, |d| d.mean_photon_number);
    let (finite_mu, finite_rate) = maximise(decoy + 1e-3, 1.5, |mu| {
        finite_block(&spec, &c, mu, args).map_or(0.0, |(l, pulses)| l / pulses)
    });
    let finite_key = finite_block(&spec, &c, finite_mu, args)
        .filter(|_| finite_rate > 0.0)
        .map(|(length, pulses)| FiniteKeyPlan {
            block_bits: args.block_bits,
            mu: finite_mu,
            expected_block_length: length,
            block_seconds: pulses / rep_rate,
            secret_key_rate_per_pulse: finite_rate,
            secret_key_rate_bps: finite_rate * rep_rate,
        });
    let plan = Plan {
        preset: preset.name(),
        distance_km,
        transmittance: c.transmittance,
        background: c.background,
        misalignment: c.misalignment,
        mu,
        gain,
        qber,
        secret_key_rate_per_pulse: rate,
        secret_key_rate_bps: rate * rep_rate,
        plob_bound_per_pulse: plob_bound(c.transmittance),
        finite_key,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    println!(
        "`{}` at {} km: η = {:.3e}, Y0 = {:.2e}, e_d = {}",
        plan.preset, plan.distance_km, plan.transmittance, plan.background, plan.misalignment
    );
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
