//! The MAC address newtype: one canonical form (12 lowercase hex digits), strict parsing
//! of the common spellings, nothing else accepted.

use std::fmt;
use std::str::FromStr;

/// A MAC address in canonical form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a MAC address: expected 12 hex digits, optionally grouped as aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabb.ccdd.eeff"
)]
pub struct MacError;

impl Mac {
    /// Builds a MAC from its six bytes.
    pub const fn from_bytes(bytes: [u8; 6]) -> Self {
        Mac(bytes)
    }

    /// The six bytes.
    pub const fn bytes(&self) -> [u8; 6] {
        self.0
    }

    /// Strict parse of the spellings phones and operators use:
    /// `aabbccddeeff`, `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` (either case) and Cisco's
    /// `aabb.ccdd.eeff`. Mixed separators, wrong group sizes, signs and spaces are refused.
    pub fn parse(s: &str) -> Result<Self, MacError> {
        let b = s.as_bytes();
        let hex: [u8; 12] = match b.len() {
            12 => b.try_into().map_err(|_| MacError)?,
            17 => {
                let sep = b[2];
                if sep != b':' && sep != b'-' {
                    return Err(MacError);
                }
                let mut out = [0u8; 12];
                for (i, chunk) in b.chunks(3).enumerate() {
                    if chunk.len() == 3 && chunk[2] != sep {
                        return Err(MacError);
                    }
                    out[i * 2] = chunk[0];
                    out[i * 2 + 1] = chunk[1];
                }
                out
            }
            14 => {
                if b[4] != b'.' || b[9] != b'.' {
                    return Err(MacError);
                }
                let mut out = [0u8; 12];
                let mut j = 0;
                for (i, c) in b.iter().enumerate() {
                    if i == 4 || i == 9 {
                        continue;
                    }
                    out[j] = *c;
                    j += 1;
                }
                out
            }
            _ => return Err(MacError),
        };
        let mut bytes = [0u8; 6];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (hex_val(hex[i * 2])? << 4) | hex_val(hex[i * 2 + 1])?;
        }
        Ok(Mac(bytes))
    }

    /// Parses exactly 12 hex digits with no separators (the form phones put in file names).
    pub fn parse_plain(s: &str) -> Result<Self, MacError> {
        if s.len() != 12 {
            return Err(MacError);
        }
        Self::parse(s)
    }

    /// `aabbccddeeff`
    pub fn lower(&self) -> String {
        let mut buf = [0u8; 12];
        self.write_lower(&mut buf).to_string()
    }

    /// `aabbccddeeff`, written into `buf` (no allocation).
    pub fn write_lower<'b>(&self, buf: &'b mut [u8; 12]) -> &'b str {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.0.iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        std::str::from_utf8(buf).unwrap_or_default()
    }

    /// `AABBCCDDEEFF`
    pub fn upper(&self) -> String {
        self.lower().to_ascii_uppercase()
    }

    /// `aa:bb:cc:dd:ee:ff`
    pub fn colon(&self) -> String {
        let b = self.0;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

fn hex_val(c: u8) -> Result<u8, MacError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(MacError),
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write_lower(&mut [0u8; 12]))
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

impl From<Mac> for mac_address::MacAddress {
    fn from(m: Mac) -> Self {
        mac_address::MacAddress::new(m.0)
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.lower())
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mac::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_common_spellings() {
        for s in [
            "0015657aBbCc",
            "00:15:65:7a:bb:cc",
            "00-15-65-7A-BB-CC",
            "0015.657a.bbcc",
            "00:15:65:7A:bb:CC",
        ] {
            assert_eq!(
                Mac::parse(s).map(|m| m.lower()),
                Ok("0015657abbcc".into()),
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_lenient_forms() {
        for s in [
            "",
            "0015657abbc",
            "0015657abbccd",
            "00:15:65-aa:bb-cc",
            "+0:15:65:aa:bb:cc",
            "+0+5+5+a+b+c",
            "0000aa:bb:cc:dd:e",
            "a:b:cc:dd:ee:ff:0",
            "00 15 65 aa bb cc",
            "0015657abbcg",
            "001565AABBCC.xml",
            "0015.65aa.bbc:",
            "00156.5aabbcc",
            "éé15657abbcc",
        ] {
            assert_eq!(Mac::parse(s), Err(MacError), "{s:?}");
        }
    }

    #[test]
    fn formats() {
        let m = Mac::parse("00:15:65:aa:bb:cc").unwrap();
        assert_eq!(m.upper(), "001565AABBCC");
        assert_eq!(m.colon(), "00:15:65:aa:bb:cc");
        assert_eq!(mac_address::MacAddress::from(m).bytes(), m.bytes());
    }

    fn spell(bytes: [u8; 6], style: u8, upper: bool) -> String {
        let h: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let s = match style % 4 {
            0 => h.concat(),
            1 => h.join(":"),
            2 => h.join("-"),
            _ => format!("{}{}.{}{}.{}{}", h[0], h[1], h[2], h[3], h[4], h[5]),
        };
        if upper { s.to_uppercase() } else { s }
    }

    proptest! {
        #[test]
        fn every_spelling_normalises_and_round_trips(bytes in any::<[u8; 6]>(), style in 0u8..4, upper in any::<bool>()) {
            let m = Mac::parse(&spell(bytes, style, upper)).unwrap();
            prop_assert_eq!(m.bytes(), bytes);
            prop_assert_eq!(Mac::parse(&m.lower()).unwrap(), m);
            prop_assert_eq!(Mac::parse(&m.colon()).unwrap(), m);
            prop_assert_eq!(m.lower().len(), 12);
        }

        #[test]
        fn never_panics_and_only_accepts_hex(s in "\\PC{0,20}") {
            if let Ok(m) = Mac::parse(&s) {
                let digits: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
                prop_assert_eq!(digits.to_ascii_lowercase(), m.lower());
            }
        }

        #[test]
        fn near_misses_fail(bytes in any::<[u8; 6]>(), style in 0u8..4, cut in 0usize..17) {
            let s = spell(bytes, style, false);
            let mut broken = s.clone();
            if cut < broken.len() { broken.remove(cut); }
            prop_assert!(Mac::parse(&broken).is_err() || broken == s);
        }
    }
}
