//! What phones did: the last fetch of every known phone, and the MACs that asked with the
//! server-default credentials but are not linked (`GET /api/v1/unprovisioned`).
//!
//! The fetch path only inserts into an in-memory map under a short lock; a background task
//! writes the batch to sled every [`FLUSH_EVERY`]. Audit records live in their own trees, so
//! they never bump a revision or invalidate a cached file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::Mac;
use crate::model::agent::Agent;
use crate::store::{Store, StoreError};

/// How often pending audit records are written to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Most unprovisioned MACs kept; past it the least recently seen is dropped.
pub const UNPROVISIONED_CAP: usize = 10_000;

/// A phone's last request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Fetch {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// Client IP.
    pub ip: String,
    /// The User-Agent as sent (truncated to 256 bytes).
    pub user_agent: String,
    /// File asked for.
    pub file: String,
    /// Status answered.
    pub status: u16,
    /// Vendor from the User-Agent.
    pub vendor: Option<String>,
    /// Model token from the User-Agent.
    pub model: Option<String>,
    /// Firmware from the User-Agent.
    pub firmware: Option<String>,
}

/// A MAC that asked but is not linked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Unprovisioned {
    /// The MAC.
    pub mac: String,
    /// Vendor from the User-Agent.
    pub vendor: Option<String>,
    /// Model token from the User-Agent.
    pub model: Option<String>,
    /// Firmware from the User-Agent.
    pub firmware: Option<String>,
    /// Client IP of the last request.
    pub ip: String,
    /// Last file asked for.
    pub file: String,
    /// First request (RFC 3339).
    pub first_seen: String,
    /// Last request (RFC 3339).
    pub last_seen: String,
    /// Requests counted.
    pub requests: u64,
    /// Unix seconds of the last request (for the bound; not shown).
    #[serde(default, skip_serializing)]
    pub last_unix: u64,
}

/// In-memory audit state.
#[derive(Debug, Default)]
pub struct Fleet {
    pending_fetches: Mutex<HashMap<Mac, Fetch>>,
    unprovisioned: Mutex<HashMap<Mac, Unprovisioned>>,
    dirty_unprovisioned: Mutex<Vec<(Mac, bool)>>,
}

fn now() -> (String, u64) {
    let t = SystemTime::now();
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (humantime::format_rfc3339_seconds(t).to_string(), secs)
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Fleet {
    /// Loads the stored unprovisioned MACs.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let f = Fleet::default();
        {
            let mut map = f.lock_unprovisioned();
            for (mac, v) in store.unprovisioned()? {
                if let Ok(u) = serde_json::from_slice::<Unprovisioned>(&v) {
                    map.insert(mac, u);
                }
            }
        }
        Ok(f)
    }

    fn lock_unprovisioned(&self) -> std::sync::MutexGuard<'_, HashMap<Mac, Unprovisioned>> {
        self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a known phone's request.
    pub fn fetched(
        &self,
        mac: Mac,
        ip: &str,
        user_agent: &str,
        agent: Option<&Agent>,
        file: &str,
        status: u16,
    ) {
        let (time, _) = now();
        let f = Fetch {
            time,
            ip: ip.to_string(),
            user_agent: truncate(user_agent, 256),
            file: truncate(file, 128),
            status,
            vendor: agent.map(|a| a.vendor.to_string()),
            model: agent.map(|a| a.model.clone()),
            firmware: agent.map(|a| a.firmware.clone()),
        };
        self.pending_fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(mac, f);
    }

    /// Records a request of an unlinked MAC that passed the server-default credentials.
    pub fn unprovisioned_seen(&self, mac: Mac, ip: &str, agent: Option<&Agent>, file: &str) {
        let (time, unix) = now();
        let mut map = self.lock_unprovisioned();
        let mut dropped = None;
        if !map.contains_key(&mac)
            && map.len() >= UNPROVISIONED_CAP
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(m, u)| (u.last_unix, m.lower()))
                .map(|(m, _)| *m)
        {
            map.remove(&oldest);
            dropped = Some(oldest);
        }
        let e = map.entry(mac).or_insert_with(|| Unprovisioned {
            mac: mac.lower(),
            vendor: None,
            model: None,
            firmware: None,
            ip: String::new(),
            file: String::new(),
            first_seen: time.clone(),
            last_seen: String::new(),
            requests: 0,
            last_unix: unix,
        });
        if let Some(a) = agent {
            e.vendor = Some(a.vendor.to_string());
            e.model = Some(a.model.clone());
            e.firmware = Some(a.firmware.clone());
        }
        e.ip = ip.to_string();
        e.file = truncate(file, 128);
        e.last_seen = time;
        e.last_unix = unix;
        e.requests += 1;
        drop(map);
        let mut dirty = self
            .dirty_unprovisioned
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dropped {
            dirty.push((d, false));
        }
        dirty.push((mac, true));
    }

    /// A phone's last fetch: pending first, else stored.
    pub fn last_fetch(&self, store: &Store, mac: Mac) -> Result<Option<Fetch>, StoreError> {
        if let Some(f) = self
            .pending_fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&mac)
        {
            return Ok(Some(f.clone()));
        }
        Ok(store
            .last_fetch(mac)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Unprovisioned MACs, most recently seen first, leaving out those linked since.
    pub fn unprovisioned(&self, store: &Store) -> Result<Vec<Unprovisioned>, StoreError> {
        let mut list: Vec<Unprovisioned> = self.lock_unprovisioned().values().cloned().collect();
        let mut out = Vec::with_capacity(list.len());
        list.sort_by(|a, b| b.last_unix.cmp(&a.last_unix).then(a.mac.cmp(&b.mac)));
        for u in list {
            let linked = match Mac::parse_plain(&u.mac) {
                Ok(m) => store.phone(m)?.is_some(),
                Err(_) => true,
            };
            if !linked {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Writes pending records to the store (one batch per tree).
    pub fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let fetches: Vec<(Mac, Vec<u8>)> = std::mem::take(
            &mut *self
                .pending_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
        .into_iter()
        .filter_map(|(m, f)| serde_json::to_vec(&f).ok().map(|v| (m, v)))
        .collect();
        let dirty = std::mem::take(
            &mut *self
                .dirty_unprovisioned
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let unprov: Vec<(Mac, Option<Vec<u8>>)> = {
            let map = self.lock_unprovisioned();
            let mut seen = std::collections::HashSet::new();
            dirty
                .into_iter()
                .rev()
                .filter(|(m, _)| seen.insert(*m))
                .map(|(m, keep)| {
                    let v = if keep {
                        map.get(&m).and_then(|u| serde_json::to_vec(u).ok())
                    } else {
                        None
                    };
                    (m, v)
                })
                .collect()
        };
        if fetches.is_empty() && unprov.is_empty() {
            return Ok(());
        }
        store.audit_write(fetches, unprov)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_flushed() {
        let store = Store::temporary().unwrap();
        let f = Fleet::default();
        let a = crate::model::agent::parse("Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01");
        for i in 0..(UNPROVISIONED_CAP as u64 + 5) {
            let mac = Mac::parse_plain(&format!("{:012x}", 0x001565000000u64 + i)).unwrap();
            f.unprovisioned_seen(mac, "10.0.0.1", a.as_ref(), "y000000000066.cfg");
        }
        assert_eq!(f.lock_unprovisioned().len(), UNPROVISIONED_CAP);
        f.flush(&store).unwrap();
        assert_eq!(store.unprovisioned().unwrap().len(), UNPROVISIONED_CAP);
        let again = Fleet::load(&store).unwrap();
        assert_eq!(again.lock_unprovisioned().len(), UNPROVISIONED_CAP);
        let mac = Mac::parse_plain("001565aabbcc").unwrap();
        f.fetched(mac, "10.0.0.2", "ua", a.as_ref(), "001565aabbcc.cfg", 200);
        assert_eq!(f.last_fetch(&store, mac).unwrap().unwrap().status, 200);
        f.flush(&store).unwrap();
        let stored = f.last_fetch(&store, mac).unwrap().unwrap();
        assert_eq!(stored.model.as_deref(), Some("SIP-T46S"));
    }
}
