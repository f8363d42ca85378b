//! Plugin components made larger without changing what they do: a custom
//! section of padding appended, for measuring and testing uploads of a given
//! size. Shared by the core-path benchmark and the end-to-end tests (each
//! includes this file with `#[path]`).

/// `wasm` with a custom section named `padding` of `bytes` bytes appended,
/// unique per `n` (a new digest, so each upload is a new version).
pub fn padded(wasm: &[u8], n: u64, bytes: usize) -> Vec<u8> {
    let name = b"padding";
    let mut content = Vec::with_capacity(bytes + 16);
    leb128(&mut content, name.len() as u64);
    content.extend_from_slice(name);
    content.extend_from_slice(&n.to_le_bytes());
    content.resize(content.len() + bytes, 0x5a);
    let mut out = wasm.to_vec();
    out.push(0); // a custom section
    leb128(&mut out, content.len() as u64);
    out.extend_from_slice(&content);
    out
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
