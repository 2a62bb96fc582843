//! Hits: runs of samples of one channel above threshold, extended a few
//! samples left and right so that the whole photoelectron pulse is inside.
//!
//! ```text
//! threshold [ADC] = max(k * max(rms_pod, noise_nominal), floor_phd * phd_area_adc(channel))
//! hit             = maximal run with (baseline - x_i) > threshold,
//!                   extended by [left, right] samples, clipped to the pod,
//!                   merged with the previous hit of the pod when they touch
//!                 = a maximal run of the above-threshold mask dilated by [left, right]
//! ```
//!
//! One pass over the pod's samples marks those above threshold
//! ([`crate::threshold_scan`], SIMD chosen at run time), bit scans find the
//! mask's runs, each run is extended as it is found (extended runs that
//! touch become one hit). A hit's area ([`hit_area_phd`]) is one exact
//! integer sum over its samples, so noise far from any signal does not
//! enter areas; the pulse builder takes it as it adds the hit to its
//! pulse's waveform, from the same loaded samples. On
//! AVX2 a pod's baseline and mask are taken from 64-sample windows of the
//! event's samples in place (`pod_baseline_avx2`, `pod_hits_avx2`), the pod
//! loop compiled for AVX2 around them: pods are short (a median of 54
//! samples), so what a pod costs between its steps matters as much as the
//! steps.

use crate::baseline::{flipped_sum, PodBaseline};
use crate::threshold_scan::{below_mask_in, range_sum, ScanPath};

/// One hit: where it is, not its area ([`hit_area_phd`]), so that the sort
/// by start moves 16 bytes a hit.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Hit {
    /// First sample of the extended hit, counted from the window start [samples].
    pub start: u32,
    /// Length of the extended hit [samples].
    pub length: u32,
    /// Channel.
    pub channel: u16,
    /// Index of the pod within the event.
    pub pod: u32,
}

impl Hit {
    /// One past the last sample [samples].
    pub fn end(&self) -> u32 {
        self.start + self.length
    }
}

/// Where and how to look for hits in one pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitSearch {
    /// Pod baseline.
    pub baseline: PodBaseline,
    /// Threshold above the baseline [ADC counts].
    pub threshold_adc: f32,
    /// Calibration [phd per ADC count x sample].
    pub phd_per_adc: f32,
    /// Left extension [samples].
    pub left: u32,
    /// Right extension [samples].
    pub right: u32,
    /// First sample of the pod in the window [samples].
    pub pod_start: u32,
    /// Channel.
    pub channel: u16,
    /// Index of the pod within the event.
    pub pod: u32,
}

/// Reusable buffers of the hit finder and the scan path it uses (results
/// never depend on either).
#[derive(Debug, Clone, Default)]
pub struct HitScratch {
    /// How samples are compared with the threshold.
    pub path: ScanPath,
    pub(crate) below: Vec<u64>,
}

impl HitScratch {
    /// Scratch that scans with `path` (a path this CPU cannot run falls
    /// back to the portable one).
    pub fn with_path(path: ScanPath) -> Self {
        Self {
            path,
            below: Vec::new(),
        }
    }
}

/// Area of a hit whose samples are `samples` [phd]: `(n b - sum x) *
/// phd_per_adc`, the sum exact (the same on every `path`).
///
/// ```
/// use tpcflow_reco::hits::hit_area_phd;
/// use tpcflow_reco::threshold_scan::ScanPath;
///
/// for path in ScanPath::available() {
///     assert_eq!(hit_area_phd(&[1000, 980, 990], 1000.0, 0.1, path), 3.0);
/// }
/// ```
#[inline]
pub fn hit_area_phd(samples: &[i16], baseline_adc: f32, phd_per_adc: f32, path: ScanPath) -> f32 {
    let total = if samples.is_empty() {
        0
    } else {
        range_sum(samples, 0, samples.len(), path)
    };
    flipped_sum(total, samples.len(), baseline_adc) * phd_per_adc
}

/// Append the hits of one pod to `out` (in time order). Cost: one
/// vectorised pass over `samples` that marks the samples above threshold
/// (one bit each) and bit scans from run to run.
pub fn find_hits(samples: &[i16], s: &HitSearch, scratch: &mut HitScratch, out: &mut Vec<Hit>) {
    find_hits_in(samples, 0..samples.len(), s, scratch, out);
}

/// [`find_hits`] of the pod `all[pod]`, where the samples after the pod
/// (the event's next pods) may be read by the threshold scan but never
/// count.
///
/// # Panics
/// When `pod` is not inside `all`.
pub fn find_hits_in(
    all: &[i16],
    pod: std::ops::Range<usize>,
    s: &HitSearch,
    scratch: &mut HitScratch,
    out: &mut Vec<Hit>,
) {
    let n = pod.len();
    let r = s.runs();
    below_mask_in(all, pod, r.level, scratch.path, &mut scratch.below);
    for_each_extended_run(
        &scratch.below,
        n,
        r.left as usize,
        r.right as usize,
        #[inline(always)]
        |a, b| out.push(r.hit(a, b)),
    );
}

/// What the hit finder needs of a [`HitSearch`]: the integer level below
/// which a sample is in a hit, the extensions and the hits' labels (a few
/// integers, which the pod loop carries in registers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PodRuns {
    /// A sample is in a hit when it is below this [ADC counts].
    pub level: i32,
    pub left: u32,
    pub right: u32,
    pub pod_start: u32,
    pub channel: u16,
    pub pod: u32,
}

/// The level of a pod: a sample is in a hit when (baseline - x) >
/// threshold, i.e. x < baseline - threshold; for integer x that is x <
/// ceil(baseline - threshold) (saturated to i32).
#[inline(always)]
pub(crate) fn hit_level(baseline_adc: f32, threshold_adc: f32) -> i32 {
    i32::try_from(ceil_to_i64(baseline_adc - threshold_adc)).unwrap_or(i32::MIN)
}

impl HitSearch {
    /// [`PodRuns`] of this search.
    #[inline(always)]
    pub(crate) fn runs(&self) -> PodRuns {
        PodRuns {
            level: hit_level(self.baseline.baseline_adc, self.threshold_adc),
            left: self.left,
            right: self.right,
            pod_start: self.pod_start,
            channel: self.channel,
            pod: self.pod,
        }
    }
}

impl PodRuns {
    /// The hit of samples `a..b` of the pod.
    #[inline(always)]
    fn hit(&self, a: usize, b: usize) -> Hit {
        Hit {
            start: self.pod_start + a as u32,
            length: (b - a) as u32,
            channel: self.channel,
            pod: self.pod,
        }
    }
}

/// Whether [`pod_baseline_avx2`] and [`pod_hits_avx2`] take the pod
/// `at..at + len` of an event of `n_all` samples, with a baseline of
/// `n_pre` samples: the baseline fits in one 64-sample window (`n_pre <=
/// 64`) and the event holds the pod rounded up to whole windows of 64
/// samples (every pod but, at times, the event's last few).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn fused_fits(n_all: usize, at: usize, len: usize, n_pre: usize) -> bool {
    n_pre <= 64 && at + 64 * len.div_ceil(64).max(1) <= n_all
}

/// The pod `all[at..at + len]` rounded up to whole windows of 64 samples
/// (one at least; the samples past the pod, the event's next pods, are
/// read but never count).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn padded(all: &[i16], at: usize, len: usize) -> &[i16] {
    &all[at..at + 64 * len.div_ceil(64).max(1)]
}

/// The 64 samples of `padded` from sample `k`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn window(padded: &[i16], k: usize) -> &[i16; 64] {
    padded[k..k + 64].try_into().expect("64 samples")
}

/// [`crate::baseline::estimate_baseline_with`] of the pod `all[at..at +
/// len]` on AVX2 ([`fused_fits`] must hold): each of its sums is one
/// 16-lane pass over a 64-sample window in place, the lanes outside the
/// range masked. Bit-identical: the same exact integer sums.
///
/// # Panics
/// When [`fused_fits`] does not hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn pod_baseline_avx2(
    all: &[i16],
    at: usize,
    len: usize,
    n_pre: usize,
    max_rms_adc: f32,
) -> PodBaseline {
    assert!(n_pre <= 64);
    let padded = padded(all, at, len);
    crate::baseline::estimate_from_sums(len, n_pre, max_rms_adc, |a, b| {
        // a..b is at most n_pre <= 64 samples: one window, starting at a
        // or, near the end, at the last whole window.
        let ws = a.min(padded.len() - 64);
        crate::threshold_scan::x86::sums_64_avx2(window(padded, ws), a - ws, b - ws)
    })
}

/// [`find_hits_in`] of the pod `all[at..at + len]` on AVX2 ([`fused_fits`]
/// must hold): its mask is taken from 64-sample windows in place into
/// `words` and the rest is the same code, inlined. Bit-identical.
///
/// # Panics
/// When [`fused_fits`] does not hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn pod_hits_avx2(
    all: &[i16],
    at: usize,
    len: usize,
    s: &PodRuns,
    words: &mut Vec<u64>,
    out: &mut Vec<Hit>,
) {
    if len == 0 {
        return;
    }
    let padded = padded(all, at, len);
    let level = s.level;
    if level <= i32::from(i16::MIN) {
        return;
    }
    if len <= 64 {
        // One word (most pods): kept in a register, not in `words`.
        let mut word = if level > i32::from(i16::MAX) {
            u64::MAX
        } else {
            crate::threshold_scan::x86::below_64_avx2(window(padded, 0), level as i16)
        };
        word &= u64::MAX >> (64 - len);
        push_pod_hits(std::slice::from_ref(&word), len, s, out);
        return;
    }
    let n_words = len.div_ceil(64);
    words.clear();
    if level > i32::from(i16::MAX) {
        words.resize(n_words, u64::MAX);
    } else {
        words.extend((0..n_words).map(|j| {
            crate::threshold_scan::x86::below_64_avx2(window(padded, 64 * j), level as i16)
        }));
    }
    if !len.is_multiple_of(64) {
        words[n_words - 1] &= (1u64 << (len % 64)) - 1;
    }
    push_pod_hits(words, len, s, out);
}

/// [`pod_hits_avx2`]'s hits from the pod's mask `words` (inlined into each
/// caller: with a one-word slice the run loop is specialised to one word).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn push_pod_hits(words: &[u64], len: usize, s: &PodRuns, out: &mut Vec<Hit>) {
    let (left, right) = (s.left as usize, s.right as usize);
    for_each_extended_run(
        words,
        len,
        left,
        right,
        #[inline(always)]
        |a, b| out.push(s.hit(a, b)),
    );
}

/// Call `f(a, b)` for each maximal run `a..b` of set bits of `words` (bit k
/// of word k / 64 is sample k), in order. Each word's run starts and ends
/// are found at once (a bit set whose neighbour below, or above, is clear),
/// then taken lowest first with bit scans: one step per run, and a run
/// that crosses words is carried over.
#[inline(always)]
pub fn for_each_run(words: &[u64], mut f: impl FnMut(usize, usize)) {
    let mut open = 0usize;
    let mut below = 0u64;
    for (w, &bits) in words.iter().enumerate() {
        let above = words.get(w + 1).map_or(0, |&x| x & 1);
        let mut starts = bits & !((bits << 1) | below);
        let mut ends = bits & !((bits >> 1) | (above << 63));
        below = bits >> 63;
        while ends != 0 {
            let e = ends.trailing_zeros();
            // The run's start: in this word at or below its end, or carried.
            let a = if starts != 0 && starts.trailing_zeros() <= e {
                let a = 64 * w + starts.trailing_zeros() as usize;
                starts &= starts - 1;
                a
            } else {
                open
            };
            f(a, 64 * w + e as usize + 1);
            ends &= ends - 1;
        }
        if starts != 0 {
            open = 64 * w + starts.trailing_zeros() as usize;
        }
    }
}

/// Call `f(a, b)` for each hit of a pod of `n` samples whose samples above
/// threshold are the set bits of `words` (bit k of word k / 64 is sample
/// k, none past `n`), in order: each maximal run `a..b` extended to `a -
/// left..b + right`, clipped to `0..n`, and runs that come to overlap or
/// touch merged into one. These are the maximal runs of the mask dilated
/// by [left, right] (sample j set when a sample of `j - right..=j + left`
/// is), found run by run: a few operations per run rather than shifts of
/// every word.
#[inline(always)]
pub fn for_each_extended_run(
    words: &[u64],
    n: usize,
    left: usize,
    right: usize,
    mut f: impl FnMut(usize, usize),
) {
    // The extended run not yet handed to `f` (a later one may touch it).
    let mut open: Option<(usize, usize)> = None;
    for_each_run(
        words,
        #[inline(always)]
        |a, b| {
            let (x, y) = (a.saturating_sub(left), b.saturating_add(right).min(n));
            open = match open {
                Some((px, py)) if x <= py => Some((px, y.max(py))),
                Some((px, py)) => {
                    f(px, py);
                    Some((x, y))
                }
                None => Some((x, y)),
            };
        },
    );
    if let Some((px, py)) = open {
        f(px, py);
    }
}

/// Sort hits by start sample, stably (hits of equal start keep their
/// order), using `tmp` as scratch. Two counting passes over 11-bit digits
/// when every start is below 2^22 samples (a 42 ms window at 10 ns; the
/// detector's is 4.5 ms): an even number of passes ends in `hits` with no
/// copy back, and the scratch is kept across events (radsort, used
/// otherwise, takes 3 passes over the bytes of a 19-bit start, allocates its
/// scratch and copies back each call).
///
/// ```
/// use tpcflow_reco::hits::{sort_by_start, Hit};
///
/// let hit = |start, channel| Hit { start, channel, ..Hit::default() };
/// let mut hits = vec![hit(5000, 1), hit(7, 2), hit(5000, 0), hit(3, 9)];
/// sort_by_start(&mut hits, &mut Vec::new());
/// let order: Vec<_> = hits.iter().map(|h| (h.start, h.channel)).collect();
/// assert_eq!(order, [(3, 9), (7, 2), (5000, 1), (5000, 0)]);
/// ```
pub fn sort_by_start(hits: &mut [Hit], tmp: &mut Vec<Hit>) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    const MASK: u32 = (1 << BITS) - 1;
    let n = hits.len();
    if n < 2 {
        return;
    }
    let mut lo = [0u32; BUCKETS];
    let mut hi = [0u32; BUCKETS];
    let mut top = 0u32;
    for h in hits.iter() {
        lo[(h.start & MASK) as usize] += 1;
        let d = h.start >> BITS;
        top = top.max(d);
        hi[d.min(MASK) as usize] += 1;
    }
    if top > MASK {
        radsort::sort_by_key(hits, |h| h.start);
        return;
    }
    let offsets = |counts: &mut [u32]| {
        let mut acc = 0;
        for c in counts.iter_mut() {
            let k = *c;
            *c = acc;
            acc += k;
        }
    };
    offsets(&mut lo);
    // The high digit stops at `top` (~220 buckets in a 4.5 ms window).
    offsets(&mut hi[..=top as usize]);
    tmp.resize(n, Hit::default());
    for h in hits.iter() {
        let slot = &mut lo[(h.start & MASK) as usize];
        tmp[*slot as usize] = *h;
        *slot += 1;
    }
    for h in &tmp[..n] {
        let slot = &mut hi[(h.start >> BITS) as usize];
        hits[*slot as usize] = *h;
        *slot += 1;
    }
}

/// `v.ceil() as i64` without a call: x86-64's baseline has no rounding
/// instruction, so `ceil` is a libm call (1 % of the reconstruction, once
/// per pod). Exact: below 2^23 in magnitude truncation is exact and at most
/// one below the ceiling; above, every f32 is an integer. NaN gives 0 and
/// the infinities saturate, as `as` does.
#[inline]
fn ceil_to_i64(v: f32) -> i64 {
    let t = v as i64;
    if (t as f32) < v {
        t.saturating_add(1)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search() -> HitSearch {
        HitSearch {
            baseline: PodBaseline {
                baseline_adc: 1000.0,
                rms_adc: 1.0,
            },
            threshold_adc: 5.0,
            phd_per_adc: 0.1,
            left: 2,
            right: 3,
            pod_start: 100,
            channel: 7,
            pod: 3,
        }
    }

    #[test]
    fn sort_by_start_is_radsorts_stable_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(30);
        let mut tmp = Vec::new();
        for (n, max_start) in [
            (0usize, 10u32),
            (1, 10),
            (2, 1),
            (100, 50),
            (5000, 450_000),
            (3000, 1 << 22),
            (3000, u32::MAX),
        ] {
            let hits: Vec<Hit> = (0..n)
                .map(|i| Hit {
                    start: rng.random_range(0..=max_start),
                    channel: (i % 500) as u16,
                    pod: i as u32,
                    ..Hit::default()
                })
                .collect();
            let mut want = hits.clone();
            radsort::sort_by_key(&mut want, |h| h.start);
            let mut got = hits;
            sort_by_start(&mut got, &mut tmp);
            assert_eq!(got, want, "{n} hits, starts up to {max_start}");
        }
    }

    #[test]
    fn ceil_without_libm_is_ceil() {
        let mut values = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            14_995.25,
            -14_995.25,
            8_388_607.5,
            8_388_608.0,
            1e20,
            -1e20,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        values.extend((0..2000).map(|i| (i as f32 - 1000.0) * 0.37));
        for v in values {
            assert_eq!(ceil_to_i64(v), v.ceil() as i64, "{v}");
        }
    }

    #[test]
    fn extended_runs_are_the_maximal_runs_of_the_dilated_mask() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
        for _ in 0..3000 {
            let n = rng.random_range(0..300usize);
            let reach = [0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 130, 200, 10_000];
            let left = reach[rng.random_range(0..reach.len())];
            let right = reach[rng.random_range(0..reach.len())];
            let density = rng.random_range(0.0..0.3);
            let bits: Vec<bool> = (0..n).map(|_| rng.random_bool(density)).collect();
            let mut words = vec![0u64; n.div_ceil(64)];
            for (k, _) in bits.iter().enumerate().filter(|(_, &b)| b) {
                words[k / 64] |= 1 << (k % 64);
            }
            // The dilated mask, sample by sample, and its maximal runs.
            let dilated: Vec<bool> = (0..n)
                .map(|j| (j.saturating_sub(right)..=(j + left).min(n - 1)).any(|k| bits[k]))
                .collect();
            let mut want = Vec::new();
            let mut j = 0;
            while j < n {
                if dilated[j] {
                    let a = j;
                    while j < n && dilated[j] {
                        j += 1;
                    }
                    want.push((a, j));
                } else {
                    j += 1;
                }
            }
            let mut got = Vec::new();
            for_each_extended_run(&words, n, left, right, |a, b| got.push((a, b)));
            assert_eq!(got, want, "n {n} left {left} right {right}");
        }
    }

    #[test]
    fn runs_are_the_maximal_runs_of_set_bits() {
        use crate::threshold_scan::{next_clear, next_set};
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(32);
        for _ in 0..3000 {
            let n = rng.random_range(0..400usize);
            let density = rng.random_range(0.0..1.0);
            let mut words = vec![0u64; n.div_ceil(64)];
            for k in 0..n {
                if rng.random_bool(density) {
                    words[k / 64] |= 1 << (k % 64);
                }
            }
            let mut want = Vec::new();
            let mut i = 0;
            while let Some(a) = next_set(&words, i, n) {
                let b = next_clear(&words, a + 1, n);
                want.push((a, b));
                i = b;
            }
            let mut got = Vec::new();
            for_each_run(&words, |a, b| got.push((a, b)));
            assert_eq!(got, want, "n {n} density {density}");
        }
    }

    /// The fused AVX2 pass over a pod (baseline, then hits) against
    /// `estimate_baseline_with` and `find_hits_in` on the portable path, on
    /// random events: pods of 0 to 300 samples, some ending within 64
    /// samples of the event's end (where `fused_fits` sends them to the
    /// generic path), light in the head (the tail baseline), baselines of 1
    /// to 64 samples, extensions of 0 to 70 samples and levels outside the
    /// i16 range.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn the_fused_avx2_pass_is_bit_identical_to_the_generic_one() {
        use crate::baseline::estimate_baseline_with;
        use rand::{Rng, SeedableRng};
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: the fused pass is never taken here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(33);
        let (mut fused_pods, mut fused_hits, mut tails) = (0, 0, 0);
        for _ in 0..400 {
            let n_pods = rng.random_range(1..12usize);
            let lens: Vec<usize> = (0..n_pods)
                .map(|_| match rng.random_range(0..10) {
                    0 => rng.random_range(0..4),
                    1..=5 => rng.random_range(50..70),
                    _ => rng.random_range(64..300),
                })
                .collect();
            let total: usize = lens.iter().sum();
            let base = rng.random_range(14_000..16_000i16);
            let mut all: Vec<i16> = (0..total)
                .map(|_| base + rng.random_range(-3..=3))
                .collect();
            for _ in 0..rng.random_range(0..total / 4 + 1) {
                let k = rng.random_range(0..total);
                all[k] -= rng.random_range(5..400);
            }
            let n_pre = [1usize, 5, 20, 64][rng.random_range(0..4)];
            let (left, right) = (rng.random_range(0..70u32), rng.random_range(0..70u32));
            let mut at = 0;
            for (k, &len) in lens.iter().enumerate() {
                // Light in the head of some pods: the tail baseline.
                if rng.random_bool(0.2) {
                    for x in &mut all[at..at + len.min(n_pre)] {
                        *x -= rng.random_range(0..60);
                    }
                }
                let threshold = match rng.random_range(0..10) {
                    0 => 1e6,
                    1 => -1e6,
                    _ => rng.random_range(2.0..30.0),
                };
                let search = |baseline| HitSearch {
                    baseline,
                    threshold_adc: threshold,
                    phd_per_adc: 0.037,
                    left,
                    right,
                    pod_start: 1000 + at as u32,
                    channel: k as u16,
                    pod: k as u32,
                };
                let want_b =
                    estimate_baseline_with(&all[at..at + len], n_pre, 6.0, ScanPath::Portable);
                let mut want = Vec::new();
                find_hits_in(
                    &all,
                    at..at + len,
                    &search(want_b),
                    &mut HitScratch::with_path(ScanPath::Portable),
                    &mut want,
                );
                if fused_fits(all.len(), at, len, n_pre) {
                    // SAFETY: AVX2 was detected above.
                    let got_b = unsafe { pod_baseline_avx2(&all, at, len, n_pre, 6.0) };
                    assert_eq!(
                        (got_b.baseline_adc.to_bits(), got_b.rms_adc.to_bits()),
                        (want_b.baseline_adc.to_bits(), want_b.rms_adc.to_bits()),
                        "baseline of {at}+{len}, n_pre {n_pre}"
                    );
                    let mut got = vec![Hit::default()];
                    let mut words = vec![7];
                    // SAFETY: as above.
                    unsafe {
                        pod_hits_avx2(&all, at, len, &search(got_b).runs(), &mut words, &mut got)
                    };
                    assert_eq!(got[0], Hit::default(), "hits are appended");
                    assert_eq!(
                        got[1..],
                        want[..],
                        "hits of {at}+{len}, extensions {left}/{right}"
                    );
                    fused_pods += 1;
                    fused_hits += want.len();
                    let head = &all[at..at + len.min(n_pre)];
                    tails += usize::from(
                        len >= 2 * n_pre
                            && estimate_baseline_with(head, n_pre, 6.0, ScanPath::Portable)
                                != want_b,
                    );
                } else {
                    assert!(
                        at + len + 64 > all.len(),
                        "{at}+{len} of {} not fused",
                        all.len()
                    );
                }
                at += len;
            }
        }
        assert!(
            fused_pods > 1000 && fused_hits > 1000 && tails > 20,
            "{fused_pods} {fused_hits} {tails}"
        );
    }

    #[test]
    fn hit_table() {
        // (pulse samples below baseline at positions, expected (start, length, area))
        type Case = (Vec<(usize, i16)>, Vec<(u32, u32, f32)>);
        let cases: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![(10, 4)], vec![]),
            (vec![(10, 20)], vec![(108, 6, 2.0)]),
            (vec![(10, 20), (11, 10)], vec![(108, 7, 3.0)]),
            // Two pulses far apart: two hits.
            (vec![(5, 20), (30, 10)], vec![(103, 6, 2.0), (128, 6, 1.0)]),
            // Close pulses: extended ranges touch, one hit.
            (vec![(5, 20), (10, 10)], vec![(103, 11, 3.0)]),
            // At the pod edges: clipped.
            (vec![(0, 20), (39, 20)], vec![(100, 4, 2.0), (137, 3, 2.0)]),
        ];
        for (pulses, expected) in cases {
            let mut samples = vec![1000i16; 40];
            for &(at, depth) in &pulses {
                samples[at] -= depth;
            }
            let mut hits = Vec::new();
            find_hits(&samples, &search(), &mut HitScratch::default(), &mut hits);
            let got: Vec<(u32, u32, f32)> = hits
                .iter()
                .map(|h| {
                    let a = (h.start - 100) as usize;
                    let raw = &samples[a..a + h.length as usize];
                    let area = hit_area_phd(raw, 1000.0, 0.1, ScanPath::detect());
                    (h.start, h.length, area)
                })
                .collect();
            assert_eq!(got.len(), expected.len(), "{pulses:?}: {got:?}");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!((g.0, g.1), (e.0, e.1), "{pulses:?}");
                assert!((g.2 - e.2).abs() < 1e-5, "{pulses:?}: {g:?}");
            }
            assert!(hits.iter().all(|h| h.channel == 7 && h.pod == 3));
        }
    }
}
