//! Public keys as they travel in JSON: `nodekey:<hex>`, `mkey:<hex>`,
//! `discokey:<hex>`. The all-zero key means "absent" (clients send
//! `nodekey:000…` for "no old key"), and `null` decodes to it.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::keys::{decode_hex32, encode_hex};

macro_rules! public_key {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn is_zero(&self) -> bool {
                self.0 == [0u8; 32]
            }

            pub fn parse(s: &str) -> Option<Self> {
                let hex = s.strip_prefix($prefix)?;
                decode_hex32(hex).ok().map($name)
            }

            /// The short form Tailscale logs use: `[abcde]` of the first bytes.
            pub fn short(&self) -> String {
                encode_hex(&self.0[..3])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, encode_hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
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
    }
}
