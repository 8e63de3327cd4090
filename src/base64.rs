//! Base64, standard (RFC 4648 §4, padded) and URL-safe (§5, unpadded): the
//! Noise handshake header uses the first, JWTs (later) the second.

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_with(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn decode_with(text: &str, alphabet: &[u8; 64], padded: bool) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let body = if padded {
        if bytes.len() % 4 != 0 {
            return None;
        }
        let pad = bytes.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 {
            return None;
        }
        &bytes[..bytes.len() - pad]
    } else {
        bytes
    };
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body {
        let v = alphabet.iter().position(|a| *a == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero: one text, one meaning.
    (acc == 0).then_some(out)
}

pub fn encode(data: &[u8]) -> String {
    encode_with(data, STD, true)
}

pub fn decode(text: &str) -> Option<Vec<u8>> {
    decode_with(text, STD, true)
}

pub fn encode_url(data: &[u8]) -> String {
    encode_with(data, URL, false)
}

pub fn decode_url(text: &str) -> Option<Vec<u8>> {
    decode_with(text, URL, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        for (plain, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), b64);
            assert_eq!(decode(b64).unwrap(), plain.as_bytes());
            assert_eq!(decode_url(b64.trim_end_matches('=')).unwrap(), plain.as_bytes());
        }
        assert_eq!(encode_url(&[0xfb, 0xff]), "-_8");
        for bad in ["Zg=", "Z===", "Zm9v!", "Zh==", "=Zg="] {
            assert!(decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_handshake_header_of_the_vector() {
        let h = "AJEBAGBYaa/0UFSXMsuq7V5d+bMKbaMcsOV0K61a1KGnaPGme4IuhRTmOJFpvf0Qr+yuW97ZzaPwFXrB0DzTYgs7tzqGIq8UDSMe/GOW8cgFmNxyicUOgxNC1MhgXm1bzMQfumU=";
        let d = decode(h).unwrap();
        assert_eq!(d.len(), 101);
        assert_eq!(encode(&d), h);
    }
}
