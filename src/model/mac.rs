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
            "0015.657a0bbcc",
            "0015.657a.bb.cc",
            "00.15.65.aa.bb.cc",
            "00:15:65:aa:bb:cc:",
            ":00:15:65:aa:bb:cc",
            "0x001565aabbcc",
            "001565aabbc\u{FF10}",
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

    /// The oracle: when `s` is `aabbccddeeff`, `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` or
    /// `aabb.ccdd.eeff` (ASCII hex digits in any case), its 12 digits in lowercase.
    fn spelling_of(s: &str) -> Option<String> {
        let digits: String = s
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let pairs: Vec<&str> = (0..6).map(|i| &digits[2 * i..2 * i + 2]).collect();
        let quads: Vec<&str> = (0..3).map(|i| &digits[4 * i..4 * i + 4]).collect();
        let forms = [
            digits.clone(),
            pairs.join(":"),
            pairs.join("-"),
            quads.join("."),
        ];
        forms
            .iter()
            .any(|f| f == s)
            .then(|| digits.to_ascii_lowercase())
    }

    /// Characters that are not hex digits, among them ones that look like one or like a
    /// separator.
    const NOT_HEX: &[char] = &[
        'g', 'G', 'z', 'Z', 'x', 'O', 'l', '-', ':', '.', ' ', '+', '_', '\0', '\n', 'é', 'É',
        '\u{FF10}', '\u{FF41}', '\u{0660}', '\u{00B2}',
    ];

    /// A real spelling of random bytes, in one of `styles` (numbered as [`spell`] numbers
    /// them), lower or upper case.
    fn spelled(styles: std::ops::Range<u8>) -> impl Strategy<Value = String> + Clone {
        (any::<[u8; 6]>(), styles, any::<bool>()).prop_map(|(b, st, up)| spell(b, st, up))
    }

    /// `s` with a character replaced by `c`: the `i`-th of all, or with `seps_only` the
    /// `i`-th separator.
    fn replace_char(s: &str, i: prop::sample::Index, c: char, seps_only: bool) -> String {
        let mut v: Vec<char> = s.chars().collect();
        let at: Vec<usize> = (0..v.len())
            .filter(|&k| !seps_only || !v[k].is_ascii_hexdigit())
            .collect();
        if !at.is_empty() {
            v[at[i.index(at.len())]] = c;
        }
        v.into_iter().collect()
    }

    /// `s` with its `i`-th separator taken out and put back at position `j`.
    fn move_sep(s: &str, i: prop::sample::Index, j: prop::sample::Index) -> String {
        let mut v: Vec<char> = s.chars().collect();
        let seps: Vec<usize> = (0..v.len())
            .filter(|&k| !v[k].is_ascii_hexdigit())
            .collect();
        if !seps.is_empty() {
            let c = v.remove(seps[i.index(seps.len())]);
            v.insert(j.index(v.len() + 1), c);
        }
        v.into_iter().collect()
    }

    /// `prefix`, then `hex` in groups of `n` joined by `sep`.
    fn grouped(prefix: &str, hex: &str, n: usize, sep: &str) -> String {
        let groups: Vec<&str> = (0..hex.len())
            .step_by(n)
            .map(|i| &hex[i..(i + n).min(hex.len())])
            .collect();
        format!("{prefix}{}", groups.join(sep))
    }

    /// Strings near a MAC: real spellings (about two in five draws), and ones a single
    /// slip away: a character replaced by a non-hex one, a separator swapped for another
    /// (mixed separators) or for a digit, every separator the wrong one, a separator
    /// moved, a character dropped or added, a `0x` (or other) prefix, 11 or 13 digits,
    /// groups of the wrong size.
    fn near_mac() -> impl Strategy<Value = String> {
        use prop::sample::{Index, select};
        let seps: &[char] = &[':', '-', '.', '0', 'a'];
        let prefixes: &[&str] = &["0x", "0X", "x", "#", " "];
        let joins: &[&str] = &["", ":", "-", "."];
        prop_oneof![
            4 => spelled(0..4),
            1 => "[0-9a-fA-F]{12}",
            2 => (spelled(0..4), any::<Index>(), select(NOT_HEX))
                .prop_map(|(s, i, c)| replace_char(&s, i, c, false)),
            5 => (spelled(1..4), any::<Index>(), select(seps))
                .prop_map(|(s, i, c)| replace_char(&s, i, c, true)),
            1 => (spelled(1..3), select(&['.', ' ', '_', '+'][..]))
                .prop_map(|(s, c)| s.replace([':', '-'], &c.to_string())),
            2 => (spelled(1..4), any::<Index>(), any::<Index>())
                .prop_map(|(s, i, j)| move_sep(&s, i, j)),
            1 => (spelled(0..4), any::<Index>()).prop_map(|(mut s, i)| {
                s.remove(i.index(s.len()));
                s
            }),
            1 => (spelled(0..4), any::<Index>(), "[0-9a-fA-F:.-]")
                .prop_map(|(mut s, i, c)| {
                    s.insert_str(i.index(s.len() + 1), &c);
                    s
                }),
            1 => (select(prefixes), "[0-9a-f]{10,12}", select(joins))
                .prop_map(|(p, h, sep)| grouped(p, &h, 2, sep)),
            1 => ("[0-9a-fA-F]{11,13}", select(&[2usize, 3, 4, 6][..]), select(&joins[1..]))
                .prop_map(|(h, n, sep)| grouped("", &h, n, sep)),
        ]
    }

    /// The near-MAC generator reaches both verdicts: in 4,000 draws at least a fifth are
    /// accepted and at least half refused, and each kind of near miss is among them.
    #[test]
    fn near_macs_reach_both_verdicts() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let n = 4000;
        let draws: Vec<String> = (0..n)
            .map(|_| near_mac().new_tree(&mut runner).unwrap().current())
            .collect();
        let ok = draws.iter().filter(|s| Mac::parse(s).is_ok()).count();
        assert!(ok * 5 >= n && ok * 2 <= n, "{ok} of {n} accepted");
        for (what, hit) in [
            (
                "a non-hex letter",
                draws
                    .iter()
                    .any(|s| s.len() == 12 && s.contains(['g', 'G', 'z'])),
            ),
            (
                "a fullwidth digit",
                draws.iter().any(|s| s.contains('\u{FF10}')),
            ),
            ("a non-ASCII letter", draws.iter().any(|s| s.contains('é'))),
            ("11 digits", draws.iter().any(|s| s.len() == 11)),
            ("13 digits", draws.iter().any(|s| s.len() == 13)),
            (
                "16 and 18 characters",
                draws.iter().any(|s| s.len() == 16) && draws.iter().any(|s| s.len() == 18),
            ),
            (
                "mixed separators",
                draws.iter().any(|s| s.contains(':') && s.contains('-')),
            ),
            ("a 0x prefix", draws.iter().any(|s| s.starts_with("0x"))),
            ("a space", draws.iter().any(|s| s.contains(' '))),
        ] {
            assert!(hit, "no draw with {what}");
        }
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

        /// Near-MACs and arbitrary text: never a panic, and accepted exactly when the
        /// string is one of the four spellings of its own hex digits (any case per digit),
        /// the MAC then being those 12 digits in lowercase.
        #[test]
        fn never_panics_and_only_accepts_hex(s in prop_oneof![7 => near_mac(), 1 => "\\PC{0,20}"]) {
            let parsed = Mac::parse(&s);
            if let Ok(m) = &parsed {
                let digits: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
                prop_assert_eq!(digits.to_ascii_lowercase(), m.lower());
                prop_assert!(m.lower().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            }
            let want = spelling_of(&s);
            prop_assert_eq!(parsed.map(|m| m.lower()).ok(), want, "{:?}", s);
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
