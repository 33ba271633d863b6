//! Payload masking (RFC 6455 §5.3), word-wide.
//!
//! The loop works on 8-byte words so that the compiler can vectorise it; the
//! benchmark `unmask` in `benches/proto.rs` shows it runs at memory speed
//! without `unsafe` or target-specific code.

/// Payloads shorter than this are masked a byte at a time (measured faster
/// for 20-byte payloads: see BENCHMARKS.md).
const SHORT: usize = 32;

/// XORs `buf` in place with the repeating 4-byte `key`, as if `buf` started
/// `offset` bytes into the masked payload (only `offset % 4` matters).
///
/// Masking is its own inverse: the same call masks and unmasks. When a
/// payload arrives in pieces, call this once per piece with the running
/// offset.
///
/// ```
/// let mut data = *b"Hello";
/// hubbub_proto::apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// ```
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < SHORT {
        // Setting up the wide key costs more than it saves on short payloads.
        apply_mask_bytewise(buf, key, offset);
        return;
    }
    let key = key_at(key, offset);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut blocks = buf.chunks_exact_mut(32);
    for block in &mut blocks {
        for word in block.chunks_exact_mut(8) {
            let value = u64::from_ne_bytes(word.try_into().expect("8-byte chunk")) ^ wide;
            word.copy_from_slice(&value.to_ne_bytes());
        }
    }
    let rest = blocks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        let value = u64::from_ne_bytes(word.try_into().expect("8-byte chunk")) ^ wide;
        word.copy_from_slice(&value.to_ne_bytes());
    }
    // Every block and word above is a multiple of 4 bytes long, so the tail
    // starts at key position 0.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// A masked copy of `payload` (as if it started at key position 0), made in
/// one pass: each 8-byte word is read, XORed and written once, into memory
/// that is not zeroed first. [`apply_mask`] on a copy would read and write
/// the payload twice; for a large client frame that second pass is what
/// this saves.
pub(crate) fn masked_copy(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let words = payload.chunks_exact(8);
    // The tail, padded to a word (the padding is cut off below); it starts
    // at key position 0, as every word does.
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    let tail = (u64::from_ne_bytes(tail) ^ wide).to_ne_bytes();
    // Both iterators know their exact length: `collect` allocates once and
    // writes each word in place.
    let mut out = words
        .map(|word| {
            (u64::from_ne_bytes(word.try_into().expect("8-byte chunk")) ^ wide).to_ne_bytes()
        })
        .chain(std::iter::once(tail))
        .collect::<Vec<[u8; 8]>>()
        .into_flattened();
    out.truncate(payload.len());
    out
}

/// The byte-at-a-time definition, kept as the reference for the tests.
pub(crate) fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(i + offset) & 3];
    }
}

/// The key rotated so that index 0 applies to a byte at `offset`.
fn key_at(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut rotated = key;
    rotated.rotate_left(offset & 3);
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_copy_equals_masking_in_place_at_every_length() {
        let key = [0x9a, 0x01, 0xfe, 0x42];
        let source: Vec<u8> = (0..200u32).map(|i| (i * 17 + 3) as u8).collect();
        for len in 0..=source.len() {
            let mut expected = source[..len].to_vec();
            apply_mask_bytewise(&mut expected, key, 0);
            let copy = masked_copy(&source[..len], key);
            assert_eq!(copy, expected, "length {len}");
            assert_eq!(copy.len(), len);
        }
    }

    #[test]
    fn word_wide_mask_equals_bytewise_at_every_alignment_length_and_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let source: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for align in 0..8 {
            for len in (0..=64).chain([SHORT - 1, SHORT, SHORT + 1, 100, 131]) {
                for offset in 0..4 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    apply_mask(&mut fast[align..align + len], key, offset);
                    apply_mask_bytewise(&mut slow[align..align + len], key, offset);
                    assert_eq!(fast, slow, "align {align} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}
