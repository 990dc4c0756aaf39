//! The value cache's budget. The cached values themselves live in the keydir, beside the
//! positions of their records ([`Location`](super::engine::Location)); this counts their bytes
//! against `value_cache_bytes_max`. See "Value cache" in the module documentation.

/// Bytes of cached values, and the bound on them.
#[derive(Debug)]
pub(super) struct CacheBudget {
    /// Bytes of values cached now.
    bytes: u64,
    /// Bytes of values cached at most; 0 caches nothing, not even empty values.
    bytes_max: u64,
}

impl CacheBudget {
    /// An empty cache of at most `bytes_max` bytes.
    pub(super) fn new(bytes_max: u64) -> CacheBudget {
        CacheBudget { bytes: 0, bytes_max }
    }

    /// Bytes of values cached now.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when a value of `len` bytes would fit now.
    pub(super) fn fits(&self, len: usize) -> bool {
        self.bytes_max > 0 && self.bytes + len as u64 <= self.bytes_max
    }

    /// Counts a value of `len` bytes as cached if it fits, and says whether it did. A full
    /// cache evicts nothing: it takes no more until a cached value leaves.
    pub(super) fn admit(&mut self, len: usize) -> bool {
        let fits = self.fits(len);
        if fits {
            self.bytes += len as u64;
        }
        fits
    }

    /// Uncounts a cached value of `len` bytes that leaves the cache.
    pub(super) fn release(&mut self, len: usize) {
        let len = len as u64;
        assert!(len <= self.bytes, "releasing {len} cached bytes of {}", self.bytes);
        self.bytes -= len;
    }
}
