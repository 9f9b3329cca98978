//! The blob's fixed header: one definition of its 24 bytes, read by the loader and written by
//! [`emit`](super::emit()) and the tests.
//!
//! ```text
//! bytes  0..4   magic "ICEF"
//! bytes  4..6   version      u16 (FORMAT_VERSION)
//! bytes  6..8   flags        u16 (0: no flag is defined)
//! bytes  8..12  meta_len     u32 (postcard info + layers, without padding)
//! bytes 12..16  weights_len  u32
//! bytes 16..20  crc32        u32 (CRC-32/ISO-HDLC of every byte after the header)
//! bytes 20..24  reserved     u32 (0)
//! ```
//! Every integer is little-endian.

use core::ops::Range;

/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;

/// Byte ranges of the header's fields.
pub mod field {
    use super::Range;
    /// The magic bytes.
    pub const MAGIC: Range<usize> = 0..4;
    /// The format version.
    pub const VERSION: Range<usize> = 4..6;
    /// Flags (none defined).
    pub const FLAGS: Range<usize> = 6..8;
    /// Length of the meta section.
    pub const META_LEN: Range<usize> = 8..12;
    /// Length of the weights section.
    pub const WEIGHTS_LEN: Range<usize> = 12..16;
    /// CRC-32 of the payload.
    pub const CRC: Range<usize> = 16..20;
    /// Reserved, zero.
    pub const RESERVED: Range<usize> = 20..24;
}

/// The header's fields as numbers, before any check: [`Header::parse`] and [`Header::write`] are
/// exact inverses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The first four bytes.
    pub magic: [u8; 4],
    /// Format version.
    pub version: u16,
    /// Flags (must be 0).
    pub flags: u16,
    /// Length of the meta section in bytes.
    pub meta_len: u32,
    /// Length of the weights section in bytes.
    pub weights_len: u32,
    /// CRC-32 of the payload.
    pub crc: u32,
    /// Reserved word (must be 0).
    pub reserved: u32,
}

fn bytes<const N: usize>(header: &[u8; HEADER_LEN], at: Range<usize>) -> [u8; N] {
    // The ranges above are in bounds and N long; the fallback is unreachable.
    header
        .get(at)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

fn put(header: &mut [u8; HEADER_LEN], at: Range<usize>, value: &[u8]) {
    if let Some(slot) = header.get_mut(at) {
        slot.iter_mut().zip(value).for_each(|(s, v)| *s = *v);
    }
}

impl Header {
    /// The fields of a header's bytes.
    pub fn parse(header: &[u8; HEADER_LEN]) -> Header {
        Header {
            magic: bytes(header, field::MAGIC),
            version: u16::from_le_bytes(bytes(header, field::VERSION)),
            flags: u16::from_le_bytes(bytes(header, field::FLAGS)),
            meta_len: u32::from_le_bytes(bytes(header, field::META_LEN)),
            weights_len: u32::from_le_bytes(bytes(header, field::WEIGHTS_LEN)),
            crc: u32::from_le_bytes(bytes(header, field::CRC)),
            reserved: u32::from_le_bytes(bytes(header, field::RESERVED)),
        }
    }

    /// The header's bytes.
    pub fn write(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        put(&mut out, field::MAGIC, &self.magic);
        put(&mut out, field::VERSION, &self.version.to_le_bytes());
        put(&mut out, field::FLAGS, &self.flags.to_le_bytes());
        put(&mut out, field::META_LEN, &self.meta_len.to_le_bytes());
        put(
            &mut out,
            field::WEIGHTS_LEN,
            &self.weights_len.to_le_bytes(),
        );
        put(&mut out, field::CRC, &self.crc.to_le_bytes());
        put(&mut out, field::RESERVED, &self.reserved.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_tile_the_header_and_round_trip() {
        let ranges = [
            field::MAGIC,
            field::VERSION,
            field::FLAGS,
            field::META_LEN,
            field::WEIGHTS_LEN,
            field::CRC,
            field::RESERVED,
        ];
        let mut next = 0;
        for r in ranges {
            assert_eq!(r.start, next, "fields are contiguous");
            next = r.end;
        }
        assert_eq!(next, HEADER_LEN);
        let h = Header {
            magic: *b"ICEF",
            version: 0x0102,
            flags: 0x0304,
            meta_len: 0x0506_0708,
            weights_len: 0x090A_0B0C,
            crc: 0x0D0E_0F10,
            reserved: 0x1112_1314,
        };
        let bytes = h.write();
        assert_eq!(
            bytes,
            [
                b'I', b'C', b'E', b'F', 2, 1, 4, 3, 8, 7, 6, 5, 0x0C, 0x0B, 0x0A, 9, 0x10, 0x0F,
                0x0E, 0x0D, 0x14, 0x13, 0x12, 0x11
            ]
        );
        assert_eq!(Header::parse(&bytes), h);
    }
}
