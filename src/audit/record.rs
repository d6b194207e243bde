//! On-disk record framing.
//!
//! ```text
//! +----------------+----------------+------------------------+
//! | length: u32 BE | crc32: u32 BE  | entry: `length` bytes  |
//! +----------------+----------------+------------------------+
//! ```
//!
//! `crc32` is CRC-32 (IEEE, as in zlib) over the entry bytes. A record is
//! checked (header, bounds, checksum) before its entry is decoded.

/// Bytes before the entry.
pub const RECORD_HEADER_LEN: usize = 8;
/// Largest entry accepted (1 MiB): an envelope is bounded by the frame limit,
/// so anything bigger is corruption.
pub const MAX_ENTRY_LEN: usize = 1024 * 1024;

/// Why bytes at an offset are not a good record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes remain than the header or the announced entry needs.
    #[error("record is cut short: needs {needed} bytes, {available} remain")]
    Short {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left in the file.
        available: usize,
    },
    /// The length field is zero or over [`MAX_ENTRY_LEN`].
    #[error("record length {0} is out of range")]
    Length(usize),
    /// The checksum does not match the entry bytes.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// In the header.
        stored: u32,
        /// Over the bytes.
        computed: u32,
    },
}

/// Appends one framed record for `entry` to `out`.
pub fn frame(entry: &[u8], out: &mut Vec<u8>) {
    assert!(
        !entry.is_empty() && entry.len() <= MAX_ENTRY_LEN,
        "entry size"
    );
    out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(entry).to_be_bytes());
    out.extend_from_slice(entry);
}

/// Checks the record at the start of `buf`; returns the entry bytes and the
/// record's total length.
pub fn check(buf: &[u8]) -> Result<(&[u8], usize), RecordError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Short {
            needed: RECORD_HEADER_LEN,
            available: buf.len(),
        });
    }
    let len = u32::from_be_bytes(buf[0..4].try_into().expect("4")) as usize;
    let stored = u32::from_be_bytes(buf[4..8].try_into().expect("4"));
    if len == 0 || len > MAX_ENTRY_LEN {
        return Err(RecordError::Length(len));
    }
    let total = RECORD_HEADER_LEN + len;
    if buf.len() < total {
        return Err(RecordError::Short {
            needed: total,
            available: buf.len(),
        });
    }
    let entry = &buf[RECORD_HEADER_LEN..total];
    let computed = crc32fast::hash(entry);
    if computed != stored {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok((entry, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_check() {
        let mut v = vec![];
        frame(b"hello", &mut v);
        assert_eq!(check(&v), Ok((&b"hello"[..], 13)));
        v[10] ^= 1;
        assert!(matches!(check(&v), Err(RecordError::Checksum { .. })));
        assert!(matches!(check(&v[..5]), Err(RecordError::Short { .. })));
        assert!(matches!(check(&v[..12]), Err(RecordError::Short { .. })));
        assert_eq!(check(&[0; 8]), Err(RecordError::Length(0)));
    }
}
