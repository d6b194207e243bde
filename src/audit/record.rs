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

/// Appends one framed record for `entry` to `out`; an entry that is empty
/// or over [`MAX_ENTRY_LEN`] is refused (nothing is appended).
pub fn frame(entry: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
    if entry.is_empty() || entry.len() > MAX_ENTRY_LEN {
        return Err(RecordError::Length(entry.len()));
    }
    out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(entry).to_be_bytes());
    out.extend_from_slice(entry);
    Ok(())
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
    let Some(&[l0, l1, l2, l3, c0, c1, c2, c3]) = buf.first_chunk::<RECORD_HEADER_LEN>() else {
        return Err(RecordError::Short {
            needed: RECORD_HEADER_LEN,
            available: buf.len(),
        });
    };
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    let stored = u32::from_be_bytes([c0, c1, c2, c3]);
    if len == 0 || len > MAX_ENTRY_LEN {
        return Err(RecordError::Length(len));
    }
    // len <= MAX_ENTRY_LEN, so this cannot overflow.
    let total = RECORD_HEADER_LEN.saturating_add(len);
    let Some(entry) = buf.get(RECORD_HEADER_LEN..total) else {
        return Err(RecordError::Short {
            needed: total,
            available: buf.len(),
        });
    };
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
        frame(b"hello", &mut v).unwrap();
        assert_eq!(frame(b"", &mut v), Err(RecordError::Length(0)));
        let big = vec![1u8; MAX_ENTRY_LEN + 1];
        assert_eq!(
            frame(&big, &mut v),
            Err(RecordError::Length(MAX_ENTRY_LEN + 1))
        );
        assert_eq!(v.len(), 13, "a refused entry appends nothing");
        assert_eq!(check(&v), Ok((&b"hello"[..], 13)));
        v[10] ^= 1;
        assert!(matches!(check(&v), Err(RecordError::Checksum { .. })));
        assert!(matches!(check(&v[..5]), Err(RecordError::Short { .. })));
        assert!(matches!(check(&v[..12]), Err(RecordError::Short { .. })));
        assert_eq!(check(&[0; 8]), Err(RecordError::Length(0)));
    }
}
