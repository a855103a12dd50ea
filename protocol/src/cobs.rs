//! Consistent-overhead byte stuffing: removes every `0x00` from a packet at a cost of one byte
//! per 254, so `0x00` can delimit frames.

/// Why a COBS buffer could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CobsError {
    /// The output buffer is too small.
    NoRoom,
    /// The input contains a `0x00` or a code byte that runs past its end.
    Malformed,
}

/// Worst-case encoded length of `len` bytes (without the delimiter).
pub const fn max_encoded_len(len: usize) -> usize {
    len + len / 254 + 1
}

/// Encodes `data` into `out`, returning the encoded length (no delimiter is written).
pub fn encode(data: &[u8], out: &mut [u8]) -> Result<usize, CobsError> {
    let mut code_at = 0;
    let mut write = 1;
    let mut code: u8 = 1;
    for &byte in data {
        if byte == 0 {
            *out.get_mut(code_at).ok_or(CobsError::NoRoom)? = code;
            code_at = write;
            write += 1;
            code = 1;
        } else {
            *out.get_mut(write).ok_or(CobsError::NoRoom)? = byte;
            write += 1;
            code += 1;
            if code == 0xFF {
                *out.get_mut(code_at).ok_or(CobsError::NoRoom)? = code;
                code_at = write;
                write += 1;
                code = 1;
            }
        }
    }
    *out.get_mut(code_at).ok_or(CobsError::NoRoom)? = code;
    Ok(write)
}

/// Decodes `encoded` (without its delimiter) into `out`, returning the decoded length.
pub fn decode(encoded: &[u8], out: &mut [u8]) -> Result<usize, CobsError> {
    let mut read = 0;
    let mut write = 0;
    while read < encoded.len() {
        let code = encoded[read];
        if code == 0 {
            return Err(CobsError::Malformed);
        }
        let run_end = read + usize::from(code);
        if run_end > encoded.len() {
            return Err(CobsError::Malformed);
        }
        for &byte in &encoded[read + 1..run_end] {
            if byte == 0 {
                return Err(CobsError::Malformed);
            }
            *out.get_mut(write).ok_or(CobsError::NoRoom)? = byte;
            write += 1;
        }
        read = run_end;
        // A short run stands for a zero that was removed, unless the packet ends here.
        if code != 0xFF && read < encoded.len() {
            *out.get_mut(write).ok_or(CobsError::NoRoom)? = 0;
            write += 1;
        }
    }
    Ok(write)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn known_vectors() {
        let cases: [(&[u8], &[u8]); 5] = [
            (&[], &[0x01]),
            (&[0x00], &[0x01, 0x01]),
            (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
            (&[0x11, 0x00, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x01]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
        ];
        for (data, expected) in cases {
            let mut out = [0u8; 16];
            let n = encode(data, &mut out).unwrap();
            assert_eq!(&out[..n], expected, "encoding {data:02x?}");
            let mut back = [0u8; 16];
            let m = decode(expected, &mut back).unwrap();
            assert_eq!(&back[..m], data);
        }
    }

    #[test]
    fn long_runs_split_at_254_bytes() {
        let data: Vec<u8> = (1..=254u8).collect();
        let mut out = vec![0u8; max_encoded_len(data.len())];
        let n = encode(&data, &mut out).unwrap();
        assert_eq!(n, 256);
        assert_eq!(out[0], 0xFF);
        assert_eq!(out[255], 0x01);
    }

    #[test]
    fn small_buffers_are_reported_not_overrun() {
        let mut out = [0u8; 3];
        assert_eq!(encode(&[1, 2, 3], &mut out), Err(CobsError::NoRoom));
        assert_eq!(decode(&[0x05, 1, 2], &mut out), Err(CobsError::Malformed));
        assert_eq!(decode(&[0x02, 0, 1], &mut out), Err(CobsError::Malformed));
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(data in proptest::collection::vec(any::<u8>(), 0..700)) {
            let mut out = vec![0u8; max_encoded_len(data.len())];
            let n = encode(&data, &mut out).unwrap();
            prop_assert!(!out[..n].contains(&0));
            let mut back = vec![0u8; data.len()];
            let m = decode(&out[..n], &mut back).unwrap();
            prop_assert_eq!(&back[..m], &data[..]);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = [0u8; 64];
            let _ = decode(&data, &mut out);
        }
    }
}
