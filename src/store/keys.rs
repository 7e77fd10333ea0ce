//! Key encoding for every tree; the only place keys are built.

use super::StoreError;
use crate::model::Mac;

/// `name\0` — the prefix of index entries for a domain or account id.
pub fn prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

/// `name\0<6 MAC bytes>`.
pub fn index(name: &str, mac: Mac) -> Vec<u8> {
    let mut k = prefix(name);
    k.extend_from_slice(&mac.bytes());
    k
}

/// MACs from the tails of index keys.
pub fn macs(iter: sled::Iter) -> Result<Vec<Mac>, StoreError> {
    let mut out = Vec::new();
    for kv in iter.keys() {
        let k = kv?;
        if k.len() >= 6 {
            let mut b = [0u8; 6];
            b.copy_from_slice(&k[k.len() - 6..]);
            out.push(Mac::from_bytes(b));
        }
    }
    Ok(out)
}

/// Prefix of a phone's rendered files: `p<6 MAC bytes>`.
pub fn render_prefix(mac: Mac) -> Vec<u8> {
    let mut k = vec![b'p'];
    k.extend_from_slice(&mac.bytes());
    k
}

/// Key of a cached render: per phone `p<MAC><file>`, common files `c<model>\0<file>`.
pub fn render_key(mac: Option<Mac>, model: &str, file: &str) -> Vec<u8> {
    match mac {
        Some(m) => {
            let mut k = render_prefix(m);
            k.extend_from_slice(file.as_bytes());
            k
        }
        None => {
            let mut k = vec![b'c'];
            k.extend_from_slice(model.as_bytes());
            k.push(0);
            k.extend_from_slice(file.as_bytes());
            k
        }
    }
}

/// Big-endian u64 from up to 8 bytes.
pub fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}
