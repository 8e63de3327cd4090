//! Public keys as they travel in JSON: `nodekey:<hex>`, `mkey:<hex>`,
//! `discokey:<hex>`. The all-zero key means "absent" (clients send
//! `nodekey:000…` for "no old key"), and `null` decodes to it.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::keys::{decode_hex32, encode_hex, write_hex};

/// A key's text (`prefix` and 64 hex digits) on the stack: maps write
/// three keys per peer, and a change goes to every stream.
pub struct KeyText {
    buf: [u8; 9 + 64],
    len: usize,
}

impl KeyText {
    fn new(prefix: &str, key: &[u8; 32]) -> KeyText {
        let mut buf = [0u8; 9 + 64];
        let p = prefix.len();
        buf[..p].copy_from_slice(prefix.as_bytes());
        write_hex(&mut buf[p..], key);
        KeyText { buf, len: p + 64 }
    }

    pub fn as_str(&self) -> &str {
        // ASCII by construction: a prefix literal and hex digits.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

macro_rules! public_key {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            // The text fits `KeyText`.
            const _FITS: () = assert!($prefix.len() <= 9);

            pub fn is_zero(&self) -> bool {
                self.0 == [0u8; 32]
            }

            pub fn parse(s: &str) -> Option<Self> {
                let hex = s.strip_prefix($prefix)?;
                decode_hex32(hex).ok().map($name)
            }

            pub fn text(&self) -> KeyText {
                #[allow(clippy::let_unit_value)]
                let () = Self::_FITS;
                KeyText::new($prefix, &self.0)
            }

            /// The short form Tailscale logs use: `[abcde]` of the first bytes.
            pub fn short(&self) -> String {
                encode_hex(&self.0[..3])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.text().as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.text().as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a key like {}<64 hex digits>", $prefix)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::parse(v).ok_or_else(|| E::custom(format!("bad key {v:?}")))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                    fn visit_none<E: de::Error>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

public_key!(NodePublic, "nodekey:");
public_key!(MachinePublic, "mkey:");
public_key!(DiscoPublic, "discokey:");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms() {
        let k = NodePublic([0xab; 32]);
        let s = serde_json::to_string(&k).unwrap();
        assert_eq!(s, format!("\"nodekey:{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<NodePublic>(&s).unwrap(), k);
        assert_eq!(serde_json::from_str::<NodePublic>(&s.to_uppercase().replace("NODEKEY", "nodekey")).unwrap(), k);
        assert!(serde_json::from_str::<NodePublic>("null").unwrap().is_zero());
        assert!(serde_json::from_str::<NodePublic>(&format!("\"nodekey:{}\"", "0".repeat(64))).unwrap().is_zero());
        assert!(serde_json::from_str::<NodePublic>("\"mkey:00\"").is_err());
        assert!(serde_json::from_str::<NodePublic>("\"\"").is_err());
        assert!(serde_json::from_str::<MachinePublic>(&format!("\"nodekey:{}\"", "ab".repeat(32))).is_err());
        assert_eq!(DiscoPublic([1; 32]).to_string().len(), 9 + 64);
        let k = MachinePublic(std::array::from_fn(|i| (i as u8).wrapping_mul(37)));
        assert_eq!(k.to_string(), format!("mkey:{}", encode_hex(&k.0)));
    }
}
