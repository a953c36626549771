//! Helpers shared by the fuzz targets in `fuzz_targets/`: how a target that
//! needs more than a byte string (read sizes, caps) takes them from the front
//! of the fuzz input, so that the rest stays plain protocol bytes that the
//! dictionaries and the session transcripts in `corpus/` can seed.
//!
//! Owns no protocol logic: every property is checked in the target itself.

/// A fuzz input cut into a list of read sizes and the payload.
///
/// Layout: byte 0 holds `n` in its low 4 bits; the next `n` bytes are read
/// sizes (`b + 1`, so 1 to 256 bytes), used in turn and cycled; the rest is
/// the payload. `n = 0` means one read of the whole payload. A missing header
/// (empty input) is an empty payload.
pub struct Reads<'a> {
    sizes: Vec<usize>,
    pub payload: &'a [u8],
}

impl<'a> Reads<'a> {
    pub fn parse(data: &'a [u8]) -> Reads<'a> {
        let Some((&first, rest)) = data.split_first() else {
            return Reads {
                sizes: Vec::new(),
                payload: &[],
            };
        };
        let n = usize::from(first & 0x0f).min(rest.len());
        let (sizes, payload) = rest.split_at(n);
        Reads {
            sizes: sizes.iter().map(|&b| usize::from(b) + 1).collect(),
            payload,
        }
    }

    /// The same read sizes over another payload (for a target that takes
    /// more header bytes from the front of this one).
    pub fn with_payload(&self, payload: &'a [u8]) -> Reads<'a> {
        Reads {
            sizes: self.sizes.clone(),
            payload,
        }
    }

    /// The payload cut into consecutive reads, in order; their concatenation
    /// is the payload. Empty for an empty payload.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        if self.sizes.is_empty() {
            if !self.payload.is_empty() {
                out.push(self.payload);
            }
            return out;
        }
        let mut rest = self.payload;
        let mut i = 0;
        while !rest.is_empty() {
            let n = self.sizes[i % self.sizes.len()].min(rest.len());
            let (head, tail) = rest.split_at(n);
            out.push(head);
            rest = tail;
            i += 1;
        }
        out
    }
}

/// Takes `N` header bytes from the front (zeros when the input is shorter).
pub fn header<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut h = [0u8; N];
    let n = N.min(data.len());
    h[..n].copy_from_slice(&data[..n]);
    (h, &data[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_layout() {
        // n = 2, sizes 1 and 3, payload "abcdefg".
        let r = Reads::parse(b"\x02\x00\x02abcdefg");
        assert_eq!(r.payload, b"abcdefg");
        assert_eq!(r.chunks(), vec![&b"a"[..], b"bcd", b"e", b"fg"]);
        let r = Reads::parse(b"\x00whole");
        assert_eq!(r.chunks(), vec![&b"whole"[..]]);
        // The high bits of byte 0 are ignored; a short header eats the payload.
        let r = Reads::parse(b"\xf5\x01");
        assert_eq!(r.payload, b"");
        assert!(r.chunks().is_empty());
        assert!(Reads::parse(b"").chunks().is_empty());
    }
}
