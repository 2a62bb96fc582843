//! Large buffers backed by transparent huge pages, at once.
//!
//! A fresh buffer of megabytes is backed page by page as it is first
//! written: one page fault per 4 KiB. Backed so, a reco rank's pod window
//! (~10 MB) takes ~2,400 faults, and the direct-read windows of a cold file
//! (~21 MB each) ~15,000 on a 1000-event file: about 0.1 s of a 0.65 s
//! process on one core. [`reserve_huge`] asks the kernel to back a buffer
//! about to be filled with 2 MiB pages (`MADV_HUGEPAGE`; transparent huge
//! pages are enabled "madvise" on Debian), then backs it in one call
//! (`MADV_POPULATE_WRITE`), which also covers the parts of the allocation
//! that do not fill a 2 MiB page. Both are hints: the kernel may use 4 KiB
//! pages, a kernel without them leaves the buffer as it was, and elsewhere
//! than Linux they are not made.

/// Buffers at least this large are advised (smaller ones would hold a whole
/// 2 MiB page for less than its size).
pub const HUGE_MIN_BYTES: usize = 4 << 20;

/// Reserve room for `additional` more values in `v` (as [`Vec::reserve`]);
/// when that takes a new allocation of at least [`HUGE_MIN_BYTES`], back it
/// with huge pages at once. For a buffer about to be filled: its whole room
/// is backed, used or not.
pub fn reserve_huge<T>(v: &mut Vec<T>, additional: usize) {
    let before = (v.as_ptr(), v.capacity());
    v.reserve(additional);
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if (v.as_ptr(), v.capacity()) != before && bytes >= HUGE_MIN_BYTES {
        back_huge(v.as_ptr().cast::<u8>(), bytes);
    }
}

/// Advise the pages of `[ptr, ptr + len)` to be backed by huge pages, and
/// back them.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn back_huge(ptr: *const u8, len: usize) {
    // madvise takes a page-aligned start: the page holding `ptr` (which may
    // hold the allocator's header or a neighbour's bytes: the advice changes
    // how pages are backed, never their contents).
    let page = 4096;
    let start = ptr as usize / page * page;
    let len = ptr as usize + len - start;
    for advice in [libc::MADV_HUGEPAGE, libc::MADV_POPULATE_WRITE] {
        // SAFETY: the range lies in mapped, writable memory of this process
        // (an allocation and the page holding its start); neither advice
        // changes contents (populating writes nothing to a page already
        // backed, and backs the others with zeros, as a first touch would).
        // An error (an older kernel) leaves the buffer as it was.
        let _ = unsafe { libc::madvise(start as *mut libc::c_void, len, advice) };
    }
}

#[cfg(not(target_os = "linux"))]
fn back_huge(_ptr: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_at_least_what_is_asked_and_keeps_the_values() {
        let mut v: Vec<u64> = (0..1000).collect();
        reserve_huge(&mut v, HUGE_MIN_BYTES);
        assert!(v.capacity() >= 1000 + HUGE_MIN_BYTES);
        assert!(v.iter().copied().eq(0..1000));
        v.extend(1000..1000 + HUGE_MIN_BYTES as u64);
        assert_eq!(v[HUGE_MIN_BYTES + 999], HUGE_MIN_BYTES as u64 + 999);
        // Room already there: nothing moves.
        let p = v.as_ptr();
        v.truncate(10);
        reserve_huge(&mut v, 100);
        assert_eq!(v.as_ptr(), p);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_buffer_is_advised_for_huge_pages_and_backed_before_it_is_written() {
        // What /proc/self/smaps says of the mapping holding the buffer: its
        // resident kB and its flags (`hg`: advised for huge pages).
        let mut v: Vec<u8> = Vec::new();
        let bytes = 3 * HUGE_MIN_BYTES;
        reserve_huge(&mut v, bytes);
        let (lo, hi) = (v.as_ptr() as usize, v.as_ptr() as usize + bytes);
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let (mut inside, mut rss_kb, mut flags) = (false, 0usize, Vec::new());
        for line in smaps.lines() {
            let range = line.split_once(' ').and_then(|(r, _)| r.split_once('-'));
            if let Some((a, b)) = range {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a < hi && lo < b;
                    continue;
                }
            }
            if !inside {
                continue;
            }
            if let Some(kb) = line.strip_prefix("Rss:") {
                rss_kb += kb
                    .trim()
                    .trim_end_matches(" kB")
                    .parse::<usize>()
                    .expect("Rss");
            } else if let Some(f) = line.strip_prefix("VmFlags:") {
                flags.extend(f.split_whitespace().map(str::to_string));
            }
        }
        assert!(flags.iter().any(|f| f == "hg"), "VmFlags: {flags:?}");
        // Backed although nothing was written to it yet.
        assert!(
            rss_kb * 1024 >= bytes,
            "{rss_kb} kB resident for {bytes} bytes"
        );
        // A small buffer is left to the allocator.
        let mut small: Vec<u8> = Vec::new();
        reserve_huge(&mut small, 1000);
        assert!(small.capacity() >= 1000);
    }
}
