//! The sealed object format of a file.
//!
//! The plaintext is cut into segments of `segment_size` bytes (64 KiB); the last one holds
//! the rest and may be shorter, or empty for an empty file, so every file has at least one.
//! Each segment is sealed on its own with AES-256-GCM under the file's data key
//! ([`ward_keys::seal`]: a fresh random nonce, layout `1 || nonce || ciphertext || tag`), and
//! the AAD is `ward:file-segment|<file id>|<index>|<final or more>`. So:
//!
//! * a changed byte fails that segment's tag;
//! * a segment moved to another position, or taken from another file, fails (index, id);
//! * a dropped last segment leaves a segment that was sealed as `more` where the reader
//!   expects `final`, and an object shorter than the record's size says.
//!
//! The object is the sealed segments back to back, so segment `i` starts at
//! `i * (segment_size + 29)` and a byte range is served by reading only the segments it
//! touches. One data key seals at most `max_bytes / 64 KiB` segments (262,144 at 16 GiB),
//! far below the 2^32 random-nonce bound of NIST SP 800-38D.

use uuid::Uuid;
use ward_keys::{DataKey, KeyError, SEALED_OVERHEAD};

/// Plaintext bytes per segment.
pub const SEGMENT_SIZE: u64 = 64 * 1024;
/// Where an opened segment's plaintext starts in its buffer.
pub const PLAIN_OFFSET: usize = ward_keys::PLAINTEXT_OFFSET;

fn aad(file_id: Uuid, index: u64, last: bool) -> Vec<u8> {
    format!("ward:file-segment|{file_id}|{index}|{}", if last { "final" } else { "more" }).into_bytes()
}

/// Seals segment `index` of a file.
pub fn seal(key: &DataKey, file_id: Uuid, index: u64, last: bool, plain: &[u8]) -> Result<Vec<u8>, KeyError> {
    ward_keys::seal(key, &aad(file_id, index, last), plain)
}

/// Opens segment `index` in place; the plaintext is the returned slice of `sealed`.
pub fn open<'a>(
    key: &DataKey,
    file_id: Uuid,
    index: u64,
    last: bool,
    sealed: &'a mut [u8],
) -> Result<&'a mut [u8], KeyError> {
    ward_keys::open_in_place(key, &aad(file_id, index, last), sealed)
}

/// Where each segment of a file of `size` bytes lies in its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub size: u64,
    pub segment_size: u64,
}

impl Layout {
    pub fn new(size: u64, segment_size: u64) -> Self {
        Self { size, segment_size: segment_size.max(1) }
    }

    /// How many segments the object holds (at least one).
    pub fn segments(&self) -> u64 {
        self.size.div_ceil(self.segment_size).max(1)
    }

    /// The index of the last segment.
    pub fn last(&self) -> u64 {
        self.segments() - 1
    }

    /// Plaintext bytes in segment `index`.
    pub fn plain_len(&self, index: u64) -> u64 {
        if index < self.last() { self.segment_size } else { self.size - self.last() * self.segment_size }
    }

    /// Sealed bytes of segment `index`.
    pub fn sealed_len(&self, index: u64) -> u64 {
        self.plain_len(index) + SEALED_OVERHEAD as u64
    }

    /// Where segment `index` starts in the object.
    pub fn sealed_offset(&self, index: u64) -> u64 {
        index * (self.segment_size + SEALED_OVERHEAD as u64)
    }

    /// The object's whole length.
    pub fn object_len(&self) -> u64 {
        self.size + self.segments() * SEALED_OVERHEAD as u64
    }

    /// The segment holding plaintext byte `offset` (which must be below `size`).
    pub fn segment_of(&self, offset: u64) -> u64 {
        offset / self.segment_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_all(key: &DataKey, id: Uuid, data: &[u8], layout: Layout) -> Vec<Vec<u8>> {
        (0..layout.segments())
            .map(|i| {
                let start = (i * layout.segment_size) as usize;
                let end = start + layout.plain_len(i) as usize;
                seal(key, id, i, i == layout.last(), &data[start..end]).expect("seal")
            })
            .collect()
    }

    #[test]
    fn layout_counts_segments_and_lengths() {
        let l = Layout::new(0, 4);
        assert_eq!((l.segments(), l.plain_len(0), l.object_len()), (1, 0, SEALED_OVERHEAD as u64));
        let l = Layout::new(8, 4);
        assert_eq!((l.segments(), l.plain_len(1)), (2, 4), "an exact multiple has no empty tail segment");
        let l = Layout::new(9, 4);
        assert_eq!((l.segments(), l.plain_len(2), l.sealed_offset(2)), (3, 1, 2 * (4 + SEALED_OVERHEAD as u64)));
        assert_eq!(l.object_len(), 9 + 3 * SEALED_OVERHEAD as u64);
        assert_eq!((l.segment_of(3), l.segment_of(4), l.segment_of(8)), (0, 1, 2));
    }

    #[test]
    fn segments_open_only_in_place_in_their_file() {
        let (key, id) = (DataKey::generate(), Uuid::now_v7());
        let data = b"abcdefghij";
        let layout = Layout::new(data.len() as u64, 4);
        let sealed = seal_all(&key, id, data, layout);
        let mut joined = Vec::new();
        for (i, s) in sealed.iter().enumerate() {
            let mut buf = s.clone();
            let len = open(&key, id, i as u64, i as u64 == layout.last(), &mut buf).expect("open").len();
            joined.extend_from_slice(&buf[PLAIN_OFFSET..PLAIN_OFFSET + len]);
        }
        assert_eq!(joined, data);

        // Reordered: segment 1 read as segment 0.
        let mut moved = sealed[1].clone();
        assert!(matches!(open(&key, id, 0, false, &mut moved), Err(KeyError::Integrity)));
        // Truncated: the middle segment read as the last one.
        let mut cut = sealed[1].clone();
        assert!(matches!(open(&key, id, 1, true, &mut cut), Err(KeyError::Integrity)));
        // Spliced from another file under the same key.
        let other = seal(&key, Uuid::now_v7(), 0, false, b"abcd").expect("seal");
        assert!(matches!(open(&key, id, 0, false, &mut other.clone()), Err(KeyError::Integrity)));
        // A flipped byte.
        let mut flipped = sealed[2].clone();
        flipped[SEALED_OVERHEAD - 1] ^= 0x40;
        assert!(matches!(open(&key, id, 2, true, &mut flipped), Err(KeyError::Integrity)));
    }
}
