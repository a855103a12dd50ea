//! Coincidences between two free-running taggers (entanglement-based links).
//!
//! The partner of a photon tagged at `t_a` by node A is tagged by node B near
//! `t_a + offset(t_a)`, where the offset is unknown at first (fiber lengths, clock offsets) and
//! drifts (clock rate mismatch). [`find_offset`] finds it without prior knowledge: an FFT
//! cross-correlation of binned tags over a stretch short enough that drift cannot smear the
//! peak, then histograms of tag differences at finer and finer bins, then the same fine
//! measurement further along the streams to fit the drift. [`CoincidenceTracker`] then pairs
//! tags within a window while following the drift.

use crate::xcorr::{bin_events, correlate};

/// How hard to look for the offset.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetSearch {
    /// Largest offset magnitude to consider, ps.
    pub max_offset_ps: i64,
    /// Bin width of the FFT stage, ps.
    pub coarse_bin_ps: i64,
    /// Bin width at which refinement stops, ps (about the timing jitter).
    pub fine_bin_ps: i64,
    /// Largest clock-rate mismatch between the taggers, ppm.
    pub max_drift_ppm: f64,
    /// Peak height above the background, in standard deviations, to accept a stage.
    pub min_significance: f64,
}

impl Default for OffsetSearch {
    fn default() -> Self {
        OffsetSearch {
            max_offset_ps: 1_000_000_000,
            coarse_bin_ps: 1_000_000,
            fine_bin_ps: 50,
            max_drift_ppm: 20.0,
            min_significance: 8.0,
        }
    }
}

/// The offset between two streams: `t_b ≈ t_a + offset_ps + drift·(t_a - reference_ps)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OffsetModel {
    /// Offset at `reference_ps`, ps.
    pub offset_ps: f64,
    /// Rate mismatch: change of the offset per unit of A's time (1e-6 is 1 ppm).
    pub drift: f64,
    /// A's time at which `offset_ps` holds.
    pub reference_ps: i64,
}

impl OffsetModel {
    /// The predicted offset at A's time `t_a`.
    #[inline]
    pub fn at(&self, t_a: i64) -> f64 {
        self.offset_ps + self.drift * (t_a - self.reference_ps) as f64
    }
}

/// The outcome of an offset search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OffsetEstimate {
    /// The fitted model.
    pub model: OffsetModel,
    /// Significance of the coarse correlation peak, in standard deviations.
    pub significance: f64,
    /// Coincidences in the finest histogram peak of the first segment.
    pub peak_counts: u64,
}

/// Why no offset could be found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OffsetError {
    /// The parameters make no sense.
    #[error("offset search: {0}")]
    Config(String),
    /// Too few tags to search.
    #[error("offset search needs tags on both sides (A has {a}, B has {b})")]
    NoData {
        /// Tags of A.
        a: usize,
        /// Tags of B.
        b: usize,
    },
    /// No peak stands out of the accidental background.
    #[error(
        "no correlation peak: the best is {significance:.1} σ above background (need {needed}); record longer or check the offset range"
    )]
    NoPeak {
        /// Significance of the best peak.
        significance: f64,
        /// Significance required.
        needed: f64,
    },
}

/// Histogram of the residual `t_b - t_a - model(t_a)` over `[-half, half)` in bins of `bin`,
/// for the A tags in `a` against all of `b` (both sorted).
fn residual_histogram(a: &[i64], b: &[i64], model: &OffsetModel, half: i64, bin: i64) -> Vec<u64> {
    let bins = (2 * half / bin).max(1) as usize;
    let mut hist = vec![0u64; bins];
    let mut start = 0;
    for &ta in a {
        let low = ta as f64 + model.at(ta) - half as f64;
        while start < b.len() && (b[start] as f64) < low {
            start += 1;
        }
        for &tb in &b[start..] {
            let index = ((tb as f64 - low) / bin as f64) as usize;
            if index >= bins {
                break;
            }
            hist[index] += 1;
        }
    }
    hist
}

/// Index of the largest value and its significance against the rest (mean and standard
/// deviation of all bins).
fn peak(values: &[f64]) -> (usize, f64) {
    let (index, max) = values
        .iter()
        .copied()
        .enumerate()
        .fold(
            (0, f64::MIN),
            |best, (i, v)| if v > best.1 { (i, v) } else { best },
        );
    (index, significance(max, values.iter().copied()))
}

/// How many standard deviations `value` stands above the mean of `background`.
fn significance(value: f64, background: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = background.clone().count().max(1) as f64;
    let mean = background.clone().sum::<f64>() / n;
    let sd = (background.map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    (value - mean) / sd.max(1e-12)
}

/// Lags on each side of the peak that estimate its background.
const NEIGHBOURHOOD: usize = 256;

/// The largest value and its significance against its neighbourhood (excluding the two lags
/// either side, where a peak split across bins lies): robust to the slow changes of background
/// where one stream starts or ends inside the searched range.
fn local_peak(values: &[f64]) -> (usize, f64) {
    let (index, global) = peak(values);
    let lo = index.saturating_sub(NEIGHBOURHOOD);
    let hi = (index + NEIGHBOURHOOD + 1).min(values.len());
    let around = (lo..hi)
        .filter(|&i| i.abs_diff(index) > 2)
        .map(|i| values[i]);
    if around.clone().count() < 8 {
        return (index, global);
    }
    (index, significance(values[index], around))
}

/// Narrows the residual peak from `±half` down to bins of `stop_bin`; returns the correction to
/// the model's offset and the counts in the final peak.
fn refine(a: &[i64], b: &[i64], model: &OffsetModel, mut half: i64, stop_bin: i64) -> (f64, u64) {
    let mut shift = 0.0;
    loop {
        let bin = (half / 50).max(stop_bin);
        let centred = OffsetModel {
            offset_ps: model.offset_ps + shift,
            ..*model
        };
        let hist = residual_histogram(a, b, &centred, half, bin);
        let values: Vec<f64> = hist.iter().map(|&c| c as f64).collect();
        let (i, _) = peak(&values);
        // Centroid over the peak bin and its neighbours: sub-bin precision.
        let lo = i.saturating_sub(1);
        let hi = (i + 2).min(hist.len());
        let weight: u64 = hist[lo..hi].iter().sum();
        let centroid = if weight > 0 {
            hist[lo..hi]
                .iter()
                .enumerate()
                .map(|(k, &c)| (lo + k) as f64 * c as f64)
                .sum::<f64>()
                / weight as f64
        } else {
            i as f64
        };
        shift += (centroid + 0.5) * bin as f64 - half as f64;
        if bin <= stop_bin {
            return (shift, weight);
        }
        half = (3 * bin).max(2 * stop_bin);
    }
}

/// Tags per coarse bin the offset search aims at (λ in the significance estimate).
const MAX_TAGS_PER_BIN: f64 = 0.2;

/// Finds the offset (and drift) between two sorted tag streams without prior knowledge.
pub fn find_offset(
    a: &[i64],
    b: &[i64],
    search: &OffsetSearch,
) -> Result<OffsetEstimate, OffsetError> {
    if search.max_offset_ps <= 0
        || search.coarse_bin_ps <= 0
        || search.fine_bin_ps <= 0
        || search.fine_bin_ps > search.coarse_bin_ps
        || !(search.max_drift_ppm > 0.0 && search.max_drift_ppm <= 1000.0)
    {
        return Err(OffsetError::Config(format!(
            "invalid parameters {search:?}"
        )));
    }
    let (Some(&a_first), Some(&a_end)) = (a.first(), a.last()) else {
        return Err(OffsetError::NoData {
            a: a.len(),
            b: b.len(),
        });
    };
    let Some(&b_first) = b.first() else {
        return Err(OffsetError::NoData { a: a.len(), b: 0 });
    };
    // Measure from where every offset in range finds B running: when B started later, A's tags
    // before then have no partner, and a first stretch made of them shows no peak.
    let a0 = match b_first.saturating_add(search.max_offset_ps) {
        later if later > a_first && later < a_end => later,
        _ => a_first,
    };
    // Stage 1: FFT cross-correlation over a stretch short enough that drift moves the peak by
    // at most half a coarse bin. The peak stands out by about (coincidence/singles ratio) ·
    // sqrt(1/(2·drift)) / sqrt(1 + 2λ) standard deviations, λ the tags per bin: busy streams
    // get narrower bins so that λ stays small.
    let max_drift = search.max_drift_ppm * 1e-6;
    let span = a_end - a0;
    let rate = |tags: &[i64]| tags.len() as f64 / (tags[tags.len() - 1] - tags[0]).max(1) as f64;
    let busiest = rate(a).max(rate(b)).max(f64::MIN_POSITIVE);
    // At least 50 fine bins wide, and never wider than the configured coarse bin (which wins
    // when the two conflict).
    let coarse_bin = ((MAX_TAGS_PER_BIN / busiest) as i64)
        .max(50 * search.fine_bin_ps)
        .min(search.coarse_bin_ps);
    let segment =
        ((coarse_bin as f64 / (2.0 * max_drift)) as i64).clamp(coarse_bin, span.max(coarse_bin));
    let bins_a = (segment / coarse_bin) as usize + 1;
    let lags = (2 * search.max_offset_ps / coarse_bin) as usize + 1;
    let b_start = a0 - search.max_offset_ps;
    let a_bins = bin_events(a, a0, coarse_bin, bins_a);
    let b_bins = bin_events(b, b_start, coarse_bin, bins_a + lags);
    let (lag, significance) = local_peak(&correlate(&a_bins, &b_bins, lags));
    if significance < search.min_significance {
        return Err(OffsetError::NoPeak {
            significance,
            needed: search.min_significance,
        });
    }
    let mut model = OffsetModel {
        offset_ps: (b_start - a0) as f64 + (lag as f64 + 0.5) * coarse_bin as f64,
        drift: 0.0,
        reference_ps: a0 + segment / 2,
    };

    // Stage 2: segments at growing distances, each measured only as finely as an unknown drift
    // allows (its smear over one segment), predicted from the drift fitted so far.
    let segment_at = |from: i64| {
        let lo = a.partition_point(|&t| t < from);
        let hi = a.partition_point(|&t| t < from + segment);
        &a[lo..hi]
    };
    let smear = ((max_drift * segment as f64) as i64).max(search.fine_bin_ps);
    let mut starts = vec![a0];
    let mut step = segment;
    while a0 + step + segment <= a_end {
        starts.push(a0 + step);
        step *= 2;
    }
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(starts.len());
    for (k, &from) in starts.iter().enumerate() {
        let centre = (from + segment / 2) as f64;
        let distance = (from - a0) as f64;
        let half = if k == 0 {
            2 * coarse_bin
        } else {
            (max_drift * distance) as i64 / (k as i64) + 4 * smear
        };
        let (shift, counts) = refine(segment_at(from), b, &model, half.max(2 * smear), smear);
        if counts > 0 {
            points.push((centre, model.at(centre as i64) + shift));
            model = fit_line(&points, model.reference_ps);
        }
    }

    // Stage 3: with the drift known, re-measure every segment at full resolution, in passes that
    // each sharpen the drift the next removes. Stage 2's line can be off by several of its bins
    // (`smear`), several nanoseconds where it extrapolates: the passes start wide and narrow.
    let mut peak_counts = 0;
    for half in [8 * smear, 4 * smear, 2 * smear, 2 * smear] {
        let mut fine = Vec::with_capacity(starts.len());
        for &from in &starts {
            let centre = (from + segment / 2) as f64;
            let (shift, counts) = refine(segment_at(from), b, &model, half, search.fine_bin_ps);
            if counts > 0 {
                fine.push((centre, model.at(centre as i64) + shift));
                if from == a0 {
                    peak_counts = counts;
                }
            }
        }
        if !fine.is_empty() {
            model = fit_line(&fine, model.reference_ps);
        }
    }
    Ok(OffsetEstimate {
        model,
        significance,
        peak_counts,
    })
}

/// Least-squares line through `(t, offset)` points, as a model referred to `reference`.
fn fit_line(points: &[(f64, f64)], reference: i64) -> OffsetModel {
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mo = points.iter().map(|p| p.1).sum::<f64>() / n;
    let stt: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    let sto: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mo)).sum();
    let drift = if stt > 0.0 { sto / stt } else { 0.0 };
    OffsetModel {
        offset_ps: mo + drift * (reference as f64 - mt),
        drift,
        reference_ps: reference,
    }
}

/// Coincident pairs, as parallel arrays in A's time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs {
    /// Position of A's tag in everything fed to the tracker for A.
    pub a_index: Vec<u64>,
    /// Position of B's tag in everything fed to the tracker for B.
    pub b_index: Vec<u64>,
    /// A's timestamp.
    pub a_time_ps: Vec<i64>,
    /// A's channel.
    pub a_channel: Vec<u8>,
    /// B's channel.
    pub b_channel: Vec<u8>,
    /// `t_b - t_a` minus the predicted offset, ps (the residual).
    pub residual_ps: Vec<i64>,
}

impl Pairs {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.a_time_ps.len()
    }

    /// `true` without pairs.
    pub fn is_empty(&self) -> bool {
        self.a_time_ps.is_empty()
    }

    /// Forgets all pairs, keeping the allocations.
    pub fn clear(&mut self) {
        self.a_index.clear();
        self.b_index.clear();
        self.a_time_ps.clear();
        self.a_channel.clear();
        self.b_channel.clear();
        self.residual_ps.clear();
    }
}

/// Residual averaging block of the drift tracker.
const TRACK_BLOCK: u32 = 256;

/// Streaming coincidence finder that follows the offset as the clocks drift.
#[derive(Debug, Clone)]
pub struct CoincidenceTracker {
    model: OffsetModel,
    half_window: i64,
    a: Vec<(i64, u8)>,
    b: Vec<(i64, u8)>,
    /// Stream positions of `a[0]` and `b[0]`.
    a_first: u64,
    b_first: u64,
    b_seen: i64,
    residual_sum: f64,
    residual_count: u32,
    last_correction: Option<(i64, f64)>,
}

impl CoincidenceTracker {
    /// Pairs tags whose times differ from the model by at most `window_ps / 2`.
    pub fn new(model: OffsetModel, window_ps: i64) -> Self {
        CoincidenceTracker {
            model,
            half_window: (window_ps / 2).max(1),
            a: Vec::new(),
            b: Vec::new(),
            a_first: 0,
            b_first: 0,
            b_seen: i64::MIN,
            residual_sum: 0.0,
            residual_count: 0,
            last_correction: None,
        }
    }

    /// Numbers the tags of A from `a_first` and of B from `b_first` on: those before were
    /// dropped unpaired (they had no partner in the other stream).
    #[must_use]
    pub fn numbered_from(mut self, a_first: u64, b_first: u64) -> Self {
        self.a_first = a_first;
        self.b_first = b_first;
        self
    }

    /// The current offset model.
    pub fn model(&self) -> &OffsetModel {
        &self.model
    }

    /// Adds tags of both nodes (each batch time-ordered, in any interleaving) and appends the
    /// pairs that are decided.
    pub fn process(
        &mut self,
        a_times: &[i64],
        a_channels: &[u8],
        b_times: &[i64],
        b_channels: &[u8],
        out: &mut Pairs,
    ) {
        self.a
            .extend(a_times.iter().copied().zip(a_channels.iter().copied()));
        self.b
            .extend(b_times.iter().copied().zip(b_channels.iter().copied()));
        if let Some(&(t, _)) = self.b.last() {
            self.b_seen = self.b_seen.max(t);
        }
        self.pair(out, false);
    }

    /// Pairs everything still held; call at the end of both streams.
    pub fn finish(&mut self, out: &mut Pairs) {
        self.pair(out, true);
    }

    fn pair(&mut self, out: &mut Pairs, all: bool) {
        let (mut i, mut j) = (0, 0);
        while i < self.a.len() {
            let (ta, ca) = self.a[i];
            let expected = ta as f64 + self.model.at(ta);
            // Undecided until B has tags past this A tag's window.
            if !all && expected + self.half_window as f64 >= self.b_seen as f64 {
                break;
            }
            while j < self.b.len() && (self.b[j].0 as f64) < expected - self.half_window as f64 {
                j += 1;
            }
            if j < self.b.len() && (self.b[j].0 as f64) <= expected + self.half_window as f64 {
                let residual = self.b[j].0 as f64 - expected;
                out.a_index.push(self.a_first + i as u64);
                out.b_index.push(self.b_first + j as u64);
                out.a_time_ps.push(ta);
                out.a_channel.push(ca);
                out.b_channel.push(self.b[j].1);
                out.residual_ps.push(residual.round() as i64);
                self.track(ta, residual);
                j += 1;
            }
            i += 1;
        }
        self.a.drain(..i);
        self.b.drain(..j);
        self.a_first += i as u64;
        self.b_first += j as u64;
    }

    /// Follows the drift: each block of residuals moves the offset by their mean, and the change
    /// of those corrections over time adjusts the drift.
    fn track(&mut self, ta: i64, residual: f64) {
        self.residual_sum += residual;
        self.residual_count += 1;
        if self.residual_count < TRACK_BLOCK {
            return;
        }
        let mean = self.residual_sum / f64::from(self.residual_count);
        self.residual_sum = 0.0;
        self.residual_count = 0;
        let offset_now = self.model.at(ta) + mean;
        if let Some((t_prev, _)) = self.last_correction {
            let dt = (ta - t_prev) as f64;
            if dt > 0.0 {
                // Half of the rate implied by this correction, for a smooth, stable loop.
                self.model.drift += 0.5 * mean / dt;
            }
        }
        self.model = OffsetModel {
            offset_ps: offset_now,
            drift: self.model.drift,
            reference_ps: ta,
        };
        self.last_correction = Some((ta, offset_now));
    }
}
