//! Which samples of a pod lie below a level: one bit per sample, so that the
//! hit finder jumps from run to run with bit scans instead of testing samples
//! one by one.
//!
//! ```text
//! bit k of word k / 64  =  samples[k] < level        (bits past the pod are 0)
//! ```
//!
//! The comparison is exact integer arithmetic, so every path gives the same
//! bits; the path is chosen at run time ([`ScanPath::detect`]), never at build
//! time, so one binary runs on any x86-64 CPU and the same source builds on
//! other architectures (there only [`ScanPath::Portable`] exists):
//!
//! ```text
//! Portable   plain Rust, any CPU
//! Sse2       x86-64 baseline: 8 samples per compare
//! Avx2       16 samples per compare (Haswell, Zen and later)
//! Avx512     32 samples per compare into a mask register (AVX-512BW)
//! ```
//!
//! ```
//! use tpcflow_reco::threshold_scan::{below_mask, ScanPath};
//!
//! let samples = [100i16, 90, 100, 80, 100];
//! let mut bits = Vec::new();
//! for path in ScanPath::available() {
//!     below_mask(&samples, 95, path, &mut bits);
//!     assert_eq!(bits, vec![0b01010]);
//! }
//! ```

/// How [`below_mask`] compares samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanPath {
    /// Plain Rust, one sample at a time (any CPU).
    Portable,
    /// x86-64 SSE2 (every x86-64 CPU).
    Sse2,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512BW.
    Avx512,
}

impl ScanPath {
    /// Every path, widest last.
    pub const ALL: [ScanPath; 4] = [
        ScanPath::Portable,
        ScanPath::Sse2,
        ScanPath::Avx2,
        ScanPath::Avx512,
    ];

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            ScanPath::Portable => true,
            #[cfg(target_arch = "x86_64")]
            ScanPath::Sse2 => true,
            #[cfg(target_arch = "x86_64")]
            ScanPath::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            ScanPath::Avx512 => std::arch::is_x86_feature_detected!("avx512bw"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The paths this CPU can run, widest last.
    pub fn available() -> Vec<ScanPath> {
        Self::ALL.into_iter().filter(|p| p.is_available()).collect()
    }

    /// Whether this path runs the kernels compiled for AVX2 (the AVX2 and
    /// AVX-512 paths, on a CPU that has AVX2).
    pub fn runs_avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return matches!(self, ScanPath::Avx2 | ScanPath::Avx512)
            && self.is_available()
            && std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// The widest path this CPU can run.
    pub fn detect() -> ScanPath {
        Self::ALL
            .into_iter()
            .rev()
            .find(|p| p.is_available())
            .unwrap_or(ScanPath::Portable)
    }
}

impl Default for ScanPath {
    /// [`ScanPath::detect`].
    fn default() -> Self {
        Self::detect()
    }
}

/// Set bit `k % 64` of `out[k / 64]` exactly when `samples[k] < level`
/// (`out` is resized to `ceil(len / 64)` words; bits past the end are 0).
/// A `path` this CPU cannot run ([`ScanPath::is_available`]) falls back to
/// [`ScanPath::Portable`]; every path gives the same bits.
pub fn below_mask(samples: &[i16], level: i32, path: ScanPath, out: &mut Vec<u64>) {
    below_mask_in(samples, 0..samples.len(), level, path, out);
}

/// [`below_mask`] of `all[pod]`, where the samples after the pod (the next
/// pods of the event) may be read but never count: a pod shorter than 64
/// samples (most pods) is then one vector step on the samples in place
/// instead of a padded copy.
///
/// # Panics
/// When `pod` is not inside `all`.
pub fn below_mask_in(
    all: &[i16],
    pod: std::ops::Range<usize>,
    level: i32,
    path: ScanPath,
    out: &mut Vec<u64>,
) {
    let samples = &all[pod.clone()];
    out.clear();
    out.resize(samples.len().div_ceil(64), 0);
    if level <= i32::from(i16::MIN) {
        return;
    }
    if level > i32::from(i16::MAX) {
        // Every sample is below: whole words, then the partial last one.
        out.fill(u64::MAX);
        if !samples.len().is_multiple_of(64) {
            if let Some(last) = out.last_mut() {
                *last = (1u64 << (samples.len() % 64)) - 1;
            }
        }
        return;
    }
    let level = level as i16;
    let chunks = samples.chunks_exact(64);
    let tail = chunks.remainder();
    let n_full = samples.len() / 64;
    match path {
        #[cfg(target_arch = "x86_64")]
        ScanPath::Sse2 => x86::words_sse2(samples, level, &mut out[..n_full]),
        #[cfg(target_arch = "x86_64")]
        ScanPath::Avx2 if path.is_available() => {
            x86::words_avx2(samples, level, &mut out[..n_full]);
        }
        #[cfg(target_arch = "x86_64")]
        ScanPath::Avx512 if path.is_available() => {
            x86::words_avx512(samples, level, &mut out[..n_full]);
        }
        _ => {
            for (w, chunk) in out.iter_mut().zip(chunks) {
                *w = portable_word(chunk, level);
            }
        }
    }
    if !tail.is_empty() {
        let at = pod.start + 64 * n_full;
        out[n_full] = match all.get(at..at + 64) {
            Some(window) if path != ScanPath::Portable => {
                simd_word(window, level, path) & ((1u64 << tail.len()) - 1)
            }
            _ => tail_word(tail, level, path),
        };
    }
}

/// Bits of exactly 64 samples by a SIMD path (never Portable).
#[inline]
fn simd_word(window: &[i16], level: i16, path: ScanPath) -> u64 {
    let mut word = [0u64];
    #[cfg(target_arch = "x86_64")]
    match path {
        ScanPath::Avx2 if path.is_available() => x86::words_avx2(window, level, &mut word),
        ScanPath::Avx512 if path.is_available() => x86::words_avx512(window, level, &mut word),
        _ => x86::words_sse2(window, level, &mut word),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = path;
        word[0] = portable_word(window, level);
    }
    word[0]
}

/// Bits of the last `tail.len() < 64` samples (most pods are shorter than
/// 64 samples: this is their only word). The SIMD paths compare a copy
/// padded with `i16::MAX`, which is never below a level that fits an i16.
#[inline]
fn tail_word(tail: &[i16], level: i16, path: ScanPath) -> u64 {
    if path != ScanPath::Portable {
        let mut padded = [i16::MAX; 64];
        padded[..tail.len()].copy_from_slice(tail);
        return simd_word(&padded, level, path);
    }
    portable_word(tail, level)
}

/// Sum of `samples[a..b]` (exact; 0 for an empty range). The SIMD path
/// reads whole 8-sample windows inside `samples` and masks the lanes outside
/// the range, so a short hit costs one or two vector steps instead of a
/// scalar loop; every path gives the same result.
///
/// ```
/// use tpcflow_reco::threshold_scan::{range_sum, ScanPath};
///
/// let samples = [5i16, -3, 7, 2, 9, 1, 4, 4, 8, 0];
/// for path in ScanPath::available() {
///     assert_eq!(range_sum(&samples, 2, 9, path), 35);
/// }
/// ```
///
/// # Panics
/// When `a..b` is not inside `samples`.
#[inline]
pub fn range_sum(samples: &[i16], a: usize, b: usize, path: ScanPath) -> i64 {
    let range = &samples[a..b];
    #[cfg(target_arch = "x86_64")]
    if path != ScanPath::Portable && samples.len() >= 8 && !range.is_empty() {
        return x86::sum_sse2(samples, a, b);
    }
    let _ = path;
    portable_sum(range)
}

/// Sum and sum of squares of `samples[a..b]` (exact), as [`range_sum`]
/// reads them.
///
/// ```
/// use tpcflow_reco::threshold_scan::{range_sums, ScanPath};
///
/// let samples = [5i16, -3, 7, 2, 9, 1, 4, 4, 8, 0];
/// for path in ScanPath::available() {
///     assert_eq!(range_sums(&samples, 1, 10, path), (32, 240));
/// }
/// ```
///
/// # Panics
/// When `a..b` is not inside `samples`.
#[inline]
pub fn range_sums(samples: &[i16], a: usize, b: usize, path: ScanPath) -> (i64, i64) {
    let range = &samples[a..b];
    #[cfg(target_arch = "x86_64")]
    if path != ScanPath::Portable && samples.len() >= 8 && !range.is_empty() {
        return x86::sums_sse2(samples, a, b);
    }
    let _ = path;
    range.iter().fold((0i64, 0i64), |(s, s2), &x| {
        let x = i64::from(x);
        (s + x, s2 + x * x)
    })
}

/// `out[i] += (baseline - samples[i]) * scale` for every `i` (`out` at
/// least as long as `samples`): the calibrated signal of a hit added to a
/// pulse's waveform. The SIMD path takes 4 samples per step in windows
/// like [`range_sum`]'s and keeps `out` as it was outside the range; the
/// arithmetic of each element is the same on every path (no fused
/// multiply-add), so the sums are bit-identical.
///
/// ```
/// use tpcflow_reco::threshold_scan::{add_calibrated_with, ScanPath};
///
/// for path in ScanPath::available() {
///     let mut out = [1.0f32; 6];
///     add_calibrated_with(&[100, 96, 98, 100, 92], 100.0, 0.25, &mut out, path);
///     assert_eq!(out, [1.0, 2.0, 1.5, 1.0, 3.0, 1.0]);
/// }
/// ```
///
/// # Panics
/// When `out` is shorter than `samples`.
#[inline]
pub fn add_calibrated_with(
    samples: &[i16],
    baseline: f32,
    scale: f32,
    out: &mut [f32],
    path: ScanPath,
) {
    let out = &mut out[..samples.len()];
    #[cfg(target_arch = "x86_64")]
    if path != ScanPath::Portable && samples.len() >= 4 {
        x86::add_calibrated_sse2(samples, baseline, scale, out);
        return;
    }
    let _ = path;
    for (o, &s) in out.iter_mut().zip(samples) {
        *o += (baseline - f32::from(s)) * scale;
    }
}

/// [`add_calibrated_with`] of the hit `all[at..at + len]` into
/// `out[..len]`, where `out` may be longer: a hit of at most 16 samples
/// whose next 16 samples lie inside `all` and whose `out` holds 16 values
/// is added as 4 vector steps of 4 lanes with the lanes past `len` adding
/// +0.0, which leaves every sum of calibrated samples as it was (such a
/// sum is never -0.0), with no loop (its exit, after a varying number of
/// steps, is a branch the CPU mispredicts at most hits). Bit-identical to
/// [`add_calibrated_with`] on every path.
///
/// ```
/// use tpcflow_reco::threshold_scan::{add_calibrated_in, ScanPath};
///
/// let all = [100i16, 96, 98, 100, 92, 90, 80, 70, 60, 50, 40, 30, 20, 10, 0, 0, 0, 0];
/// for path in ScanPath::available() {
///     let mut out = [1.0f32; 20];
///     add_calibrated_in(&all, 1, 3, 100.0, 0.25, &mut out, path);
///     assert_eq!(out[..4], [2.0, 1.5, 1.0, 1.0]);
///     assert!(out[4..].iter().all(|&v| v == 1.0));
/// }
/// ```
///
/// # Panics
/// When `at..at + len` is not inside `all` or `out` is shorter than `len`.
#[inline]
pub fn add_calibrated_in(
    all: &[i16],
    at: usize,
    len: usize,
    baseline: f32,
    scale: f32,
    out: &mut [f32],
    path: ScanPath,
) {
    #[cfg(target_arch = "x86_64")]
    if path != ScanPath::Portable && len <= 16 && at + 16 <= all.len() && out.len() >= 16 {
        x86::add_calibrated_16(&all[at..at + 16], len, baseline, scale, &mut out[..16]);
        return;
    }
    add_calibrated_with(&all[at..at + len], baseline, scale, out, path);
}

/// [`range_sum`] one sample at a time (i32 per block of 4096 samples,
/// which cannot overflow, then i64).
fn portable_sum(range: &[i16]) -> i64 {
    range
        .chunks(4096)
        .map(|block| i64::from(block.iter().map(|&s| i32::from(s)).sum::<i32>()))
        .sum()
}

/// Bits of up to 64 samples, one at a time.
#[inline]
fn portable_word(chunk: &[i16], level: i16) -> u64 {
    chunk
        .iter()
        .enumerate()
        .fold(0u64, |m, (k, &x)| m | (u64::from(x < level) << k))
}

/// Index of the first set bit at or after `from` (None: none below `n`).
#[inline]
pub fn next_set(words: &[u64], from: usize, n: usize) -> Option<usize> {
    let mut w = from / 64;
    let mut bits = *words.get(w)? & (u64::MAX << (from % 64));
    while bits == 0 {
        w += 1;
        bits = *words.get(w)?;
    }
    let k = w * 64 + bits.trailing_zeros() as usize;
    (k < n).then_some(k)
}

/// Index of the first clear bit at or after `from`, or `n` when every bit
/// from there to `n` is set.
#[inline]
pub fn next_clear(words: &[u64], from: usize, n: usize) -> usize {
    let mut w = from / 64;
    let Some(&first) = words.get(w) else {
        return n;
    };
    let mut bits = !first & (u64::MAX << (from % 64));
    while bits == 0 {
        w += 1;
        match words.get(w) {
            Some(&x) => bits = !x,
            None => return n,
        }
    }
    (w * 64 + bits.trailing_zeros() as usize).min(n)
}

/// The x86-64 paths. Each fills `out[j]` from `samples[64 j..64 j + 64]`
/// for every `j < out.len()` (the caller guarantees `64 out.len() <=
/// samples.len()`); loads are unaligned and stay inside that range.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    pub(super) fn words_sse2(samples: &[i16], level: i16, out: &mut [u64]) {
        assert!(out.len() * 64 <= samples.len());
        // SAFETY: SSE2 is part of x86-64; loads read samples[64 j..64 j + 64].
        unsafe {
            let lv = _mm_set1_epi16(level);
            for (j, w) in out.iter_mut().enumerate() {
                let p = samples.as_ptr().add(64 * j).cast::<__m128i>();
                let mut bits = 0u64;
                for q in 0..4 {
                    let a = _mm_loadu_si128(p.add(2 * q));
                    let b = _mm_loadu_si128(p.add(2 * q + 1));
                    // level > x  <=>  x < level; packs keeps -1 / 0 per sample.
                    let m = _mm_packs_epi16(_mm_cmpgt_epi16(lv, a), _mm_cmpgt_epi16(lv, b));
                    bits |= u64::from(_mm_movemask_epi8(m) as u16) << (16 * q);
                }
                *w = bits;
            }
        }
    }

    pub(super) fn words_avx2(samples: &[i16], level: i16, out: &mut [u64]) {
        assert!(out.len() * 64 <= samples.len());
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        // SAFETY: AVX2 was detected just above.
        unsafe { avx2(samples, level, out) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn avx2(samples: &[i16], level: i16, out: &mut [u64]) {
        for (j, w) in out.iter_mut().enumerate() {
            // SAFETY: samples[64 j..64 j + 64] exists (asserted by the caller).
            let window = unsafe { &*samples.as_ptr().add(64 * j).cast::<[i16; 64]>() };
            *w = below_64_avx2(window, level);
        }
    }

    /// Bit k set exactly when `window[k] < level`: 4 compares of 16 lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) fn below_64_avx2(window: &[i16; 64], level: i16) -> u64 {
        let lv = _mm256_set1_epi16(level);
        let p = window.as_ptr().cast::<__m256i>();
        let mut bits = 0u64;
        for h in 0..2 {
            // SAFETY: reads window[32 h..32 h + 32].
            let (a, b) = unsafe {
                (
                    _mm256_loadu_si256(p.add(2 * h)),
                    _mm256_loadu_si256(p.add(2 * h + 1)),
                )
            };
            // packs works per 128-bit lane: a0-7 b0-7 a8-15 b8-15; the
            // permute puts the quarters back in sample order.
            let m = _mm256_packs_epi16(_mm256_cmpgt_epi16(lv, a), _mm256_cmpgt_epi16(lv, b));
            let m = _mm256_permute4x64_epi64::<0b11_01_10_00>(m);
            bits |= u64::from(_mm256_movemask_epi8(m) as u32) << (32 * h);
        }
        bits
    }

    /// Sum and sum of squares of `window[lo..hi]` (exact; `lo <= hi <=
    /// 64`), 16 lanes per step over the steps that meet the range, the
    /// lanes outside it masked to 0. Squares are summed in pairs into
    /// 32-bit lanes read as unsigned (a pair is at most 2^31) and widened to
    /// 64 bits each step; sums of pairs (at most 2^16) stay in 32 bits.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) fn sums_64_avx2(window: &[i16; 64], lo: usize, hi: usize) -> (i64, i64) {
        debug_assert!(lo <= hi && hi <= 64);
        let p = window.as_ptr().cast::<__m256i>();
        let ones = _mm256_set1_epi16(1);
        let lo_v = _mm256_set1_epi16(lo as i16);
        let hi_v = _mm256_set1_epi16(hi as i16);
        let mut lane = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let sixteen = _mm256_set1_epi16(16);
        for _ in 0..lo / 16 {
            lane = _mm256_add_epi16(lane, sixteen);
        }
        let mut acc = _mm256_setzero_si256();
        let mut acc2 = _mm256_setzero_si256();
        for q in lo / 16..hi.div_ceil(16) {
            // SAFETY: reads window[16 q..16 q + 16], q < 4.
            let v = unsafe { _mm256_loadu_si256(p.add(q)) };
            // lo <= lane < hi
            let keep = _mm256_andnot_si256(
                _mm256_cmpgt_epi16(lo_v, lane),
                _mm256_cmpgt_epi16(hi_v, lane),
            );
            let kept = _mm256_and_si256(keep, v);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(kept, ones));
            let sq = _mm256_madd_epi16(kept, kept);
            acc2 = _mm256_add_epi64(acc2, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(sq)));
            acc2 = _mm256_add_epi64(
                acc2,
                _mm256_cvtepu32_epi64(_mm256_extracti128_si256::<1>(sq)),
            );
            lane = _mm256_add_epi16(lane, sixteen);
        }
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        let s2 = _mm_add_epi64(
            _mm256_castsi256_si128(acc2),
            _mm256_extracti128_si256::<1>(acc2),
        );
        let s2 = _mm_add_epi64(s2, _mm_unpackhi_epi64(s2, s2));
        (i64::from(_mm_cvtsi128_si32(s)), _mm_cvtsi128_si64(s2))
    }

    pub(super) fn words_avx512(samples: &[i16], level: i16, out: &mut [u64]) {
        assert!(out.len() * 64 <= samples.len());
        assert!(std::arch::is_x86_feature_detected!("avx512bw"));
        // SAFETY: AVX-512BW (and with it AVX-512F) was detected just above.
        unsafe { avx512(samples, level, out) }
    }

    /// The exact sum of `samples[a..b]`, 8 lanes per step, calling
    /// `step(kept, keep)` at each step for what else the caller gathers: each
    /// step loads the window `samples[ws..ws + 8]`, `ws = min(k, len - 8)`,
    /// and keeps the lanes in `[k, min(k + 8, b))` (`keep` all ones there,
    /// `kept` the samples there and 0 elsewhere).
    #[inline(always)]
    fn masked_windows(
        samples: &[i16],
        a: usize,
        b: usize,
        mut step: impl FnMut(__m128i, __m128i),
    ) -> i64 {
        let n = samples.len();
        assert!(n >= 8 && a < b && b <= n);
        // SAFETY: SSE2 is part of x86-64; every load reads samples[ws..ws + 8]
        // with ws + 8 <= n.
        unsafe {
            let lane = _mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7);
            let ones = _mm_set1_epi16(1);
            let mut acc = _mm_setzero_si128();
            let mut total = 0i64;
            let flush = |acc: __m128i| -> i64 {
                let mut l = [0i32; 4];
                _mm_storeu_si128(l.as_mut_ptr().cast(), acc);
                l.iter().map(|&x| i64::from(x)).sum()
            };
            let mut k = a;
            let mut steps = 0u32;
            while k < b {
                let ws = k.min(n - 8);
                let v = _mm_loadu_si128(samples.as_ptr().add(ws).cast());
                let lo = _mm_set1_epi16((k - ws) as i16);
                let hi = _mm_set1_epi16((b.min(k + 8) - ws) as i16);
                // lo <= lane < hi
                let keep = _mm_andnot_si128(_mm_cmpgt_epi16(lo, lane), _mm_cmpgt_epi16(hi, lane));
                let kept = _mm_and_si128(keep, v);
                step(kept, keep);
                // Pairs summed into i32 lanes: at most 2^16 per step, so 4096
                // steps cannot overflow before the flush.
                acc = _mm_add_epi32(acc, _mm_madd_epi16(kept, ones));
                k += 8;
                steps += 1;
                if steps == 4096 {
                    total += flush(acc);
                    acc = _mm_setzero_si128();
                    steps = 0;
                }
            }
            total + flush(acc)
        }
    }

    /// Sum of `samples[a..b]` ([`masked_windows`]). A range of at most 16
    /// samples (most hits) is two windows with no loop: the loop's exit,
    /// after one or two steps, is a branch the CPU cannot predict.
    #[inline]
    pub(super) fn sum_sse2(samples: &[i16], a: usize, b: usize) -> i64 {
        let n = samples.len();
        if b - a <= 16 && n >= 16 {
            let ws = a.min(n - 16);
            // SAFETY: SSE2 is part of x86-64; the loads read
            // samples[ws..ws + 16] with ws + 16 <= n.
            unsafe {
                let p = samples.as_ptr().add(ws).cast::<__m128i>();
                let (v0, v1) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
                let lo = _mm_set1_epi16((a - ws) as i16);
                let hi = _mm_set1_epi16((b - ws) as i16);
                let keep = |lane: __m128i| {
                    _mm_andnot_si128(_mm_cmpgt_epi16(lo, lane), _mm_cmpgt_epi16(hi, lane))
                };
                let k0 = keep(_mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7));
                let k1 = keep(_mm_setr_epi16(8, 9, 10, 11, 12, 13, 14, 15));
                let ones = _mm_set1_epi16(1);
                // Pairs into i32 lanes (at most 2^16 each, 2^19 in all).
                let s = _mm_add_epi32(
                    _mm_madd_epi16(_mm_and_si128(k0, v0), ones),
                    _mm_madd_epi16(_mm_and_si128(k1, v1), ones),
                );
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
                return i64::from(_mm_cvtsi128_si32(s));
            }
        }
        masked_windows(samples, a, b, |_, _| {})
    }

    /// Sum and sum of squares of `samples[a..b]` ([`masked_windows`]).
    /// Squares are summed in pairs into 32-bit lanes read as unsigned (a pair
    /// is at most 2^31) and widened to 64 bits each step.
    #[inline]
    pub(super) fn sums_sse2(samples: &[i16], a: usize, b: usize) -> (i64, i64) {
        // SAFETY (every block below): SSE2 is part of x86-64.
        let zero = unsafe { _mm_setzero_si128() };
        let mut acc2 = zero;
        let total = masked_windows(samples, a, b, |kept, _| unsafe {
            let sq = _mm_madd_epi16(kept, kept);
            acc2 = _mm_add_epi64(acc2, _mm_unpacklo_epi32(sq, zero));
            acc2 = _mm_add_epi64(acc2, _mm_unpackhi_epi32(sq, zero));
        });
        let mut l = [0u64; 2];
        unsafe { _mm_storeu_si128(l.as_mut_ptr().cast(), acc2) };
        (total, (l[0] + l[1]) as i64)
    }

    /// `out[i] += (baseline - samples[i]) * scale`, 4 lanes per step over
    /// the whole blocks of 4, then one at a time (no window overlaps the
    /// step before: a store read back in part stalls).
    pub(super) fn add_calibrated_sse2(samples: &[i16], baseline: f32, scale: f32, out: &mut [f32]) {
        let n = samples.len();
        assert!(out.len() == n);
        let whole = n / 4 * 4;
        // SAFETY: SSE2 is part of x86-64; each step reads samples[k..k + 4]
        // and reads and writes out[k..k + 4], with k + 4 <= n.
        unsafe {
            let b = _mm_set1_ps(baseline);
            let k_scale = _mm_set1_ps(scale);
            for k in (0..whole).step_by(4) {
                let raw = _mm_loadl_epi64(samples.as_ptr().add(k).cast());
                let x = _mm_cvtepi32_ps(_mm_srai_epi32::<16>(_mm_unpacklo_epi16(raw, raw)));
                let o = out.as_mut_ptr().add(k);
                _mm_storeu_ps(
                    o,
                    _mm_add_ps(_mm_loadu_ps(o), _mm_mul_ps(_mm_sub_ps(b, x), k_scale)),
                );
            }
        }
        for (o, &s) in out[whole..].iter_mut().zip(&samples[whole..]) {
            *o += (baseline - f32::from(s)) * scale;
        }
    }

    /// `out[i] += (baseline - samples[i]) * scale` for `i < len <= 16`
    /// and `out[i] += 0.0` for `len <= i < 16`, as 4 steps of 4 lanes.
    pub(super) fn add_calibrated_16(
        samples: &[i16],
        len: usize,
        baseline: f32,
        scale: f32,
        out: &mut [f32],
    ) {
        assert!(samples.len() == 16 && out.len() == 16 && len <= 16);
        // SAFETY: SSE2 is part of x86-64; reads samples[0..16], reads and
        // writes out[0..16].
        unsafe {
            let b = _mm_set1_ps(baseline);
            let k_scale = _mm_set1_ps(scale);
            let n = _mm_set1_epi32(len as i32);
            let mut lane = _mm_setr_epi32(0, 1, 2, 3);
            let four = _mm_set1_epi32(4);
            for q in 0..4 {
                let raw = _mm_loadl_epi64(samples.as_ptr().add(4 * q).cast());
                let x = _mm_cvtepi32_ps(_mm_srai_epi32::<16>(_mm_unpacklo_epi16(raw, raw)));
                let keep = _mm_castsi128_ps(_mm_cmpgt_epi32(n, lane));
                let v = _mm_and_ps(keep, _mm_mul_ps(_mm_sub_ps(b, x), k_scale));
                let o = out.as_mut_ptr().add(4 * q);
                _mm_storeu_ps(o, _mm_add_ps(_mm_loadu_ps(o), v));
                lane = _mm_add_epi32(lane, four);
            }
        }
    }

    /// [`add_calibrated_16`] as 2 steps of 8 lanes; returns the exact sum
    /// of `samples[..len]` (the hit's area, from the samples already
    /// widened to 32 bits for the waveform).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) fn add_calibrated_16_avx2(
        samples: &[i16; 16],
        len: usize,
        baseline: f32,
        scale: f32,
        out: &mut [f32; 16],
    ) -> i64 {
        let b = _mm256_set1_ps(baseline);
        let k_scale = _mm256_set1_ps(scale);
        let n = _mm256_set1_epi32(len as i32);
        let mut lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let eight = _mm256_set1_epi32(8);
        let mut acc = _mm256_setzero_si256();
        for h in 0..2 {
            // SAFETY: reads samples[8 h..8 h + 8], reads and writes
            // out[8 h..8 h + 8].
            unsafe {
                let raw = _mm_loadu_si128(samples.as_ptr().add(8 * h).cast());
                let xi = _mm256_cvtepi16_epi32(raw);
                let x = _mm256_cvtepi32_ps(xi);
                let keep_i = _mm256_cmpgt_epi32(n, lane);
                let keep = _mm256_castsi256_ps(keep_i);
                let v = _mm256_and_ps(keep, _mm256_mul_ps(_mm256_sub_ps(b, x), k_scale));
                let o = out.as_mut_ptr().add(8 * h);
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), v));
                // 16 samples of at most 2^15 each: no overflow in i32.
                acc = _mm256_add_epi32(acc, _mm256_and_si256(keep_i, xi));
            }
            lane = _mm256_add_epi32(lane, eight);
        }
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        i64::from(_mm_cvtsi128_si32(s))
    }

    #[target_feature(enable = "avx512bw")]
    unsafe fn avx512(samples: &[i16], level: i16, out: &mut [u64]) {
        let lv = _mm512_set1_epi16(level);
        for (j, w) in out.iter_mut().enumerate() {
            // SAFETY: reads samples[64 j..64 j + 64] (asserted by the caller).
            let (a, b) = unsafe {
                let p = samples.as_ptr().add(64 * j);
                (
                    _mm512_loadu_si512(p.cast()),
                    _mm512_loadu_si512(p.add(32).cast()),
                )
            };
            let lo = _mm512_cmplt_epi16_mask(a, lv);
            let hi = _mm512_cmplt_epi16_mask(b, lv);
            *w = u64::from(lo) | (u64::from(hi) << 32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn reference(samples: &[i16], level: i32) -> Vec<bool> {
        samples.iter().map(|&x| i32::from(x) < level).collect()
    }

    fn bits_of(words: &[u64], n: usize) -> Vec<bool> {
        (0..n).map(|k| words[k / 64] >> (k % 64) & 1 == 1).collect()
    }

    #[test]
    fn every_path_gives_the_reference_bits() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(25);
        let mut out = Vec::new();
        for len in [0usize, 1, 15, 63, 64, 65, 127, 128, 200, 1000, 4097] {
            let samples: Vec<i16> = (0..len)
                .map(|_| match rng.random_range(0..10) {
                    0 => i16::MIN,
                    1 => i16::MAX,
                    _ => rng.random_range(14_980..15_020),
                })
                .collect();
            for level in [
                i32::MIN,
                -32_769,
                -32_768,
                -32_767,
                14_990,
                15_000,
                15_010,
                32_767,
                32_768,
                i32::MAX,
            ] {
                let want = reference(&samples, level);
                for path in ScanPath::ALL {
                    below_mask(&samples, level, path, &mut out);
                    assert_eq!(out.len(), len.div_ceil(64));
                    assert_eq!(bits_of(&out, len), want, "{path:?} len {len} level {level}");
                    if !len.is_multiple_of(64) {
                        assert_eq!(
                            out[len / 64] >> (len % 64),
                            0,
                            "{path:?}: bits past the end"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn samples_after_the_pod_never_count() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(27);
        let all: Vec<i16> = (0..600).map(|_| rng.random_range(14_980..15_020)).collect();
        let mut out = Vec::new();
        for (start, len) in [
            (0, 0),
            (0, 1),
            (3, 54),
            (10, 63),
            (100, 64),
            (7, 130),
            (530, 60),
            (590, 10),
        ] {
            let want = reference(&all[start..start + len], 15_000);
            for path in ScanPath::ALL {
                below_mask_in(&all, start..start + len, 15_000, path, &mut out);
                assert_eq!(out.len(), len.div_ceil(64));
                assert_eq!(bits_of(&out, len), want, "{path:?} {start}+{len}");
                if !len.is_multiple_of(64) {
                    assert_eq!(
                        out[len / 64] >> (len % 64),
                        0,
                        "{path:?}: bits past the pod"
                    );
                }
            }
        }
    }

    #[test]
    fn every_path_gives_the_exact_range_sum() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(26);
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 54, 64, 100, 40_000] {
            let samples: Vec<i16> = (0..len)
                .map(|_| match rng.random_range(0..20) {
                    0 => i16::MIN,
                    1 => i16::MAX,
                    _ => rng.random_range(14_000..15_020),
                })
                .collect();
            let mut ranges = vec![(0, len)];
            for _ in 0..200.min(len * len) {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..=len);
                ranges.push((a, b));
            }
            // Every short range (the two-window path and its edges) of the
            // shorter sample arrays.
            if len <= 100 {
                ranges.extend((0..len).flat_map(|a| (a..=(a + 18).min(len)).map(move |b| (a, b))));
            }
            for (a, b) in ranges {
                let want = samples[a..b].iter().map(|&x| i64::from(x)).sum::<i64>();
                for path in ScanPath::available() {
                    assert_eq!(
                        range_sum(&samples, a, b, path),
                        want,
                        "{path:?} {a}..{b} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_path_gives_the_exact_sums_of_squares() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(28);
        for len in [1usize, 7, 8, 9, 20, 23, 24, 25, 54, 1000, 70_000] {
            let samples: Vec<i16> = (0..len)
                .map(|_| match rng.random_range(0..10) {
                    0 => i16::MIN,
                    1 => i16::MAX,
                    _ => rng.random_range(14_000..15_020),
                })
                .collect();
            let mut ranges = vec![(0, len), (0, len.min(20))];
            for _ in 0..100 {
                let a = rng.random_range(0..len);
                ranges.push((a, rng.random_range(a + 1..=len)));
            }
            // Every range of up to 26 samples of the shorter arrays.
            if len <= 54 {
                ranges.extend(
                    (0..len).flat_map(|a| (a + 1..=(a + 26).min(len)).map(move |b| (a, b))),
                );
            }
            for (a, b) in ranges {
                let r = &samples[a..b];
                let want = (
                    r.iter().map(|&x| i64::from(x)).sum::<i64>(),
                    r.iter().map(|&x| i64::from(x) * i64::from(x)).sum::<i64>(),
                );
                for path in ScanPath::available() {
                    assert_eq!(
                        range_sums(&samples, a, b, path),
                        want,
                        "{path:?} {a}..{b} of {len}"
                    );
                }
            }
        }
        let all_min = vec![i16::MIN; 40_000];
        for path in ScanPath::available() {
            assert_eq!(
                range_sums(&all_min, 0, all_min.len(), path),
                (-32_768 * 40_000, 32_768 * 32_768 * 40_000)
            );
        }
    }

    #[test]
    fn every_path_adds_the_same_calibrated_bits() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(29);
        for len in [0usize, 1, 3, 4, 5, 7, 8, 9, 13, 54, 1001] {
            let samples: Vec<i16> = (0..len)
                .map(|_| match rng.random_range(0..20) {
                    0 => i16::MIN,
                    1 => i16::MAX,
                    _ => rng.random_range(14_900..15_020),
                })
                .collect();
            let start: Vec<f32> = (0..len + 3).map(|_| rng.random_range(-5.0..50.0)).collect();
            let (baseline, scale) = (
                rng.random_range(14_990.0..15_010.0),
                rng.random_range(0.01..0.05),
            );
            let mut want = start.clone();
            add_calibrated_with(&samples, baseline, scale, &mut want, ScanPath::Portable);
            for path in ScanPath::available() {
                let mut got = start.clone();
                add_calibrated_with(&samples, baseline, scale, &mut got, path);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{path:?} len {len}");
            }
        }
    }

    #[test]
    fn a_short_hit_adds_the_same_bits_in_place() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(32);
        for _ in 0..2000 {
            let n = rng.random_range(1..60usize);
            let all: Vec<i16> = (0..n).map(|_| rng.random_range(14_900..15_020)).collect();
            let at = rng.random_range(0..n);
            let len = rng.random_range(0..=(n - at).min(20));
            let extra = rng.random_range(0..20usize);
            let start: Vec<f32> = (0..len + extra)
                .map(|_| match rng.random_range(0..4) {
                    0 => 0.0,
                    _ => rng.random_range(-5.0..50.0),
                })
                .collect();
            let (baseline, scale) = (
                rng.random_range(14_990.0..15_010.0),
                rng.random_range(0.01..0.05),
            );
            let mut want = start.clone();
            add_calibrated_with(
                &all[at..at + len],
                baseline,
                scale,
                &mut want,
                ScanPath::Portable,
            );
            for path in ScanPath::available() {
                let mut got = start.clone();
                add_calibrated_in(&all, at, len, baseline, scale, &mut got, path);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{path:?} {at}+{len} of {n}, out {}",
                    start.len()
                );
            }
        }
    }

    /// The pulse builder's 8-lane step (AVX2) against the portable sums.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn a_short_hit_adds_the_same_bits_in_8_lane_steps() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: the 8-lane step is never taken here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(35);
        for _ in 0..4000 {
            let samples: [i16; 16] = std::array::from_fn(|_| match rng.random_range(0..20) {
                0 => i16::MIN,
                1 => i16::MAX,
                _ => rng.random_range(14_900..15_020),
            });
            let len = rng.random_range(0..=16usize);
            let start: [f32; 16] = std::array::from_fn(|_| match rng.random_range(0..4) {
                0 => 0.0,
                _ => rng.random_range(-5.0..50.0),
            });
            let (baseline, scale) = (
                rng.random_range(14_990.0..15_010.0),
                rng.random_range(0.01..0.05),
            );
            let mut want = start;
            add_calibrated_with(
                &samples[..len],
                baseline,
                scale,
                &mut want,
                ScanPath::Portable,
            );
            let mut got = start;
            // SAFETY: AVX2 was detected above.
            unsafe { x86::add_calibrated_16_avx2(&samples, len, baseline, scale, &mut got) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "len {len}");
        }
    }

    #[test]
    fn this_x86_64_cpu_has_the_simd_paths_it_claims() {
        let paths = ScanPath::available();
        assert_eq!(paths[0], ScanPath::Portable);
        if cfg!(target_arch = "x86_64") {
            assert!(paths.contains(&ScanPath::Sse2));
        }
        assert_eq!(*paths.last().unwrap(), ScanPath::detect());
    }

    #[test]
    fn bit_scans_find_runs() {
        // Samples 3..5 and 64..70 set, n = 130.
        let words = [0b11000u64, 0b11_1111];
        assert_eq!(next_set(&words, 0, 130), Some(3));
        assert_eq!(next_clear(&words, 3, 130), 5);
        assert_eq!(next_set(&words, 5, 130), Some(64));
        assert_eq!(next_clear(&words, 64, 130), 70);
        assert_eq!(next_set(&words, 70, 130), None);
        let full = [u64::MAX, 0b11];
        assert_eq!(next_clear(&full, 10, 66), 66);
        assert_eq!(next_set(&[], 0, 0), None);
        assert_eq!(next_clear(&[], 0, 0), 0);
    }
}
