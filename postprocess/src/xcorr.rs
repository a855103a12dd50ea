//! Cross-correlation of binned event streams with real FFTs.

use realfft::RealFftPlanner;

/// Counts of events per bin of width `width_ps` starting at `start_ps`; `bins` bins.
pub fn bin_events(times: &[i64], start_ps: i64, width_ps: i64, bins: usize) -> Vec<f64> {
    let mut counts = vec![0.0; bins];
    let first = times.partition_point(|&t| t < start_ps);
    for &t in &times[first..] {
        let index = ((t - start_ps) / width_ps) as usize;
        if index >= bins {
            break;
        }
        counts[index] += 1.0;
    }
    counts
}

/// `c[lag] = Σ_i a[i]·b[i + lag]` for `lag` in `0..lags`, computed with zero padding so that no
/// lag wraps around. `b` must be at least as long as `a` plus `lags - 1` for the sums to be full.
pub fn correlate(a: &[f64], b: &[f64], lags: usize) -> Vec<f64> {
    let n = (a.len() + b.len()).next_power_of_two().max(2);
    let mut planner = RealFftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let spectrum = |x: &[f64]| {
        let mut input = vec![0.0; n];
        input[..x.len()].copy_from_slice(x);
        let mut out = forward.make_output_vec();
        // Lengths come from the plan itself, so the transform cannot fail.
        let _ = forward.process(&mut input, &mut out);
        out
    };
    let fa = spectrum(a);
    let mut fb = spectrum(b);
    for (y, x) in fb.iter_mut().zip(&fa) {
        *y *= x.conj();
    }
    // The inverse of a real signal's spectrum has purely real DC and Nyquist terms.
    if let Some(first) = fb.first_mut() {
        first.im = 0.0;
    }
    if let Some(last) = fb.last_mut() {
        last.im = 0.0;
    }
    let mut c = inverse.make_output_vec();
    let _ = inverse.process(&mut fb, &mut c);
    c.truncate(lags.min(n));
    for v in &mut c {
        *v /= n as f64;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], lags: usize) -> Vec<f64> {
        (0..lags)
            .map(|lag| {
                a.iter()
                    .enumerate()
                    .filter_map(|(i, x)| b.get(i + lag).map(|y| x * y))
                    .sum()
            })
            .collect()
    }

    #[test]
    fn matches_the_direct_sum() {
        let a: Vec<f64> = (0..37).map(|i| f64::from((i * 7 + 3) % 5)).collect();
        let b: Vec<f64> = (0..60).map(|i| f64::from((i * 11 + 1) % 4)).collect();
        let fast = correlate(&a, &b, 24);
        let slow = naive(&a, &b, 24);
        for (x, y) in fast.iter().zip(&slow) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
    }

    #[test]
    fn binning_counts_only_inside_the_range() {
        let bins = bin_events(&[-5, 0, 9, 10, 25, 30, 31], 0, 10, 3);
        assert_eq!(bins, vec![2.0, 1.0, 1.0]);
    }
}
