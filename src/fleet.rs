//! What phones did: the last fetch of every known phone, and the MACs that asked with the
//! server-default credentials but are not linked (`GET /api/v1/unprovisioned`).
//!
//! The fetch path only inserts a compact record (time, IP, status, User-Agent, file) into an
//! in-memory map under a short lock; a background task writes them to sled every
//! [`FLUSH_EVERY`], in batches of [`WRITE_CHUNK`] so that neither memory nor sled's batch
//! lock grows with the fleet (a reboot storm of 100,000 phones is 100,000 new records).
//! Audit records live in their own trees, so they never bump a revision or invalidate a
//! cached file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::Mac;
use crate::model::agent::Agent;
use crate::store::{Store, StoreError};

/// How often pending audit records are written to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// A fetch that repeats the stored one except for its time is written to the store at most
/// this often per phone (memory always has the exact time). Keeps a reboot storm or a fleet
/// polling every minute from turning into one store write per request.
pub const TOUCH_PERSIST_EVERY: u64 = 300;

/// Audit records written per sled batch (each batch holds sled's write lock briefly).
pub const WRITE_CHUNK: usize = 1000;

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

/// What was last written for a phone: a signature of everything but the time, and the time.
#[derive(Debug, Clone, Copy)]
struct Persisted {
    sig: u64,
    unix: u64,
}

/// A fetch as the request path records it: what [`Fetch`] shows, without the text the
/// User-Agent and the time can give back when it is read or written.
#[derive(Debug, Clone)]
struct Seen {
    unix: u64,
    ip: std::net::IpAddr,
    status: u16,
    user_agent: Box<str>,
    file: Box<str>,
}

impl Seen {
    fn signature(&self) -> u64 {
        signature(&self.ip, &self.user_agent, &self.file, self.status)
    }

    fn to_fetch(&self) -> Fetch {
        let agent = crate::model::agent::parse(&self.user_agent);
        Fetch {
            time: rfc3339(self.unix),
            ip: self.ip.to_string(),
            user_agent: self.user_agent.to_string(),
            file: self.file.to_string(),
            status: self.status,
            vendor: agent.as_ref().map(|a| a.vendor.to_string()),
            model: agent.as_ref().map(|a| a.model.clone()),
            firmware: agent.map(|a| a.firmware),
        }
    }
}

/// Fetch records not yet in the store.
#[derive(Debug, Default)]
struct Pending {
    /// Records whose content differs from the stored one.
    full: HashMap<Mac, Seen>,
    /// Phones whose latest fetch repeats the stored record: only the time (unix s) is new.
    touched: HashMap<Mac, u64>,
    /// What the store holds, as far as this process wrote it.
    persisted: HashMap<Mac, Persisted>,
}

/// In-memory audit state.
#[derive(Debug, Default)]
pub struct Fleet {
    pending_fetches: Mutex<Pending>,
    unprovisioned: Mutex<HashMap<Mac, Unprovisioned>>,
    dirty_unprovisioned: Mutex<Vec<(Mac, bool)>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Unix seconds of a stored RFC 3339 time.
fn unix_of(time: &str) -> Option<u64> {
    humantime::parse_rfc3339(time)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// Unix seconds of an RFC 3339 time (`2026-01-31T08:00:00Z`, `…+02:00`, fractional seconds
/// dropped); a space where the offset's `+` should be is read as `+` (an unencoded `+` in a
/// query string arrives as a space).
pub fn parse_time(s: &str) -> Option<u64> {
    let (base, offset) = if let Some(b) = s.strip_suffix(['Z', 'z']) {
        (b, 0i64)
    } else {
        let cut = s.len().checked_sub(6).filter(|c| s.is_char_boundary(*c))?;
        let (base, tail) = s.split_at(cut);
        let t = tail.as_bytes();
        let sign = match t[0] {
            b'+' | b' ' => 1,
            b'-' => -1,
            _ => return None,
        };
        if t[3] != b':' || !t[1..3].iter().chain(&t[4..]).all(u8::is_ascii_digit) {
            return None;
        }
        let h = i64::from((t[1] - b'0') * 10 + (t[2] - b'0'));
        let m = i64::from((t[4] - b'0') * 10 + (t[5] - b'0'));
        if h > 23 || m > 59 {
            return None;
        }
        (base, sign * (h * 3600 + m * 60))
    };
    if base.len() < 19 || !base.is_ascii() {
        return None;
    }
    let t = humantime::parse_rfc3339(&format!("{}Z", base.to_ascii_uppercase())).ok()?;
    let local = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    u64::try_from(local - offset).ok()
}

/// Signature of a fetch without its time.
fn signature(ip: &std::net::IpAddr, user_agent: &str, file: &str, status: u16) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ip, user_agent, file, status).hash(&mut h);
    h.finish()
}

fn truncate_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

    /// Records a known phone's request. A request that repeats the phone's stored record
    /// (same IP, User-Agent, file, status) only moves its time, without allocating.
    pub fn fetched(
        &self,
        mac: Mac,
        ip: std::net::IpAddr,
        user_agent: &str,
        file: &str,
        status: u16,
    ) {
        let user_agent = truncate_str(user_agent, 256);
        let file = truncate_str(file, 128);
        let sig = signature(&ip, user_agent, file, status);
        let mut p = self
            .pending_fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if p.persisted.get(&mac).is_some_and(|s| s.sig == sig) {
            p.full.remove(&mac);
            p.touched.insert(mac, unix_now());
            return;
        }
        let f = Seen {
            unix: unix_now(),
            ip,
            status,
            user_agent: user_agent.into(),
            file: file.into(),
        };
        p.touched.remove(&mac);
        p.full.insert(mac, f);
    }

    /// Records a request of an unlinked MAC that passed the server-default credentials.
    pub fn unprovisioned_seen(&self, mac: Mac, ip: &str, agent: Option<&Agent>, file: &str) {
        let unix = unix_now();
        let time = rfc3339(unix);
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
        e.file = truncate_str(file, 128).to_string();
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
        let touched = {
            let p = self
                .pending_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(f) = p.full.get(&mac) {
                return Ok(Some(f.to_fetch()));
            }
            p.touched.get(&mac).copied()
        };
        let stored: Option<Fetch> = store
            .last_fetch(mac)?
            .and_then(|v| serde_json::from_slice(&v).ok());
        Ok(stored.map(|mut f| {
            if let Some(t) = touched {
                f.time = rfc3339(t);
            }
            f
        }))
    }

    /// When a phone last fetched (unix seconds): pending first, else stored. Reads no more
    /// than [`Fleet::last_fetch`] does, for list filters.
    pub fn last_fetch_unix(&self, store: &Store, mac: Mac) -> Result<Option<u64>, StoreError> {
        {
            let p = self
                .pending_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(f) = p.full.get(&mac) {
                return Ok(Some(f.unix));
            }
            if let Some(t) = p.touched.get(&mac) {
                return Ok(Some(*t));
            }
        }
        Ok(store
            .last_fetch(mac)?
            .and_then(|v| serde_json::from_slice::<Fetch>(&v).ok())
            .and_then(|f| unix_of(&f.time)))
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

    /// Writes pending records to the store, [`WRITE_CHUNK`] at a time. The request path's
    /// lock is held only to take the pending map and to note what was written, never while
    /// records are read, serialised or written. A record that repeats the stored one (a
    /// phone fetching as it did before this process started) and whose stored time is
    /// recent enough is not written again: only its time moves, as for any repeat.
    pub fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let lock = || {
            self.pending_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        let full: Vec<(Mac, Seen)> = std::mem::take(&mut lock().full).into_iter().collect();
        for chunk in full.chunks(WRITE_CHUNK) {
            let mut records = Vec::with_capacity(chunk.len());
            let mut noted = Vec::with_capacity(chunk.len());
            for (m, f) in chunk {
                let sig = f.signature();
                let stored = store
                    .last_fetch(*m)?
                    .and_then(|v| serde_json::from_slice::<Fetch>(&v).ok())
                    .and_then(|s| {
                        let ip = s.ip.parse().ok()?;
                        let same = signature(&ip, &s.user_agent, &s.file, s.status) == sig;
                        same.then(|| unix_of(&s.time)).flatten()
                    })
                    .filter(|t| f.unix.saturating_sub(*t) < TOUCH_PERSIST_EVERY);
                match stored {
                    Some(t) => noted.push((*m, sig, t, Some(f.unix))),
                    None => {
                        if let Ok(v) = serde_json::to_vec(&f.to_fetch()) {
                            records.push((*m, v));
                        }
                        noted.push((*m, sig, f.unix, None));
                    }
                }
            }
            if !records.is_empty() {
                store.audit_write(records, Vec::new())?;
            }
            let mut p = lock();
            for (m, sig, unix, touched) in noted {
                p.persisted.insert(m, Persisted { sig, unix });
                if let Some(t) = touched
                    && !p.full.contains_key(&m)
                {
                    let at = p.touched.entry(m).or_insert(t);
                    *at = (*at).max(t);
                }
            }
        }
        drop(full);
        let due = {
            let mut p = lock();
            let mut due = Vec::new();
            let Pending {
                touched, persisted, ..
            } = &mut *p;
            touched.retain(|m, t| {
                let last = persisted.get(m).map_or(0, |s| s.unix);
                if t.saturating_sub(last) >= TOUCH_PERSIST_EVERY {
                    due.push((*m, *t));
                    false
                } else {
                    true
                }
            });
            for (m, t) in &due {
                if let Some(s) = persisted.get_mut(m) {
                    s.unix = *t;
                }
            }
            due
        };
        let mut fetches: Vec<(Mac, Vec<u8>)> = Vec::new();
        for (m, t) in due {
            let stored: Option<Fetch> = store
                .last_fetch(m)?
                .and_then(|v| serde_json::from_slice(&v).ok());
            if let Some(mut f) = stored {
                f.time = rfc3339(t);
                if let Ok(v) = serde_json::to_vec(&f) {
                    fetches.push((m, v));
                }
            }
            if fetches.len() >= WRITE_CHUNK {
                store.audit_write(std::mem::take(&mut fetches), Vec::new())?;
            }
        }
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
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_time("1970-01-01t00:01:00.75z"), Some(60));
        assert_eq!(parse_time("1970-01-01T02:01:00+02:00"), Some(60));
        assert_eq!(parse_time("1970-01-01T02:01:00 02:00"), Some(60));
        assert_eq!(parse_time("1970-01-01T00:00:00-01:30"), Some(5400));
        for bad in [
            "",
            "yesterday",
            "1970-01-01",
            "1970-01-01T00:00:00",
            "1970-01-01T00:00:00+2:00",
            "1970-01-01T00:00:00+24:00",
            "1970-01-01T00:00:00Z+01:00",
            "1970-01-01T00:00:00+01:00Z",
            "1970-01-01T00:00:00+01:00+01:00",
            "1970-01-01T00:00:00+0é:00",
            "1970-01-01T00:00:00+01:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        assert_eq!(parse_time(&t), unix_of(&t));
    }

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
        let ip = std::net::IpAddr::from([10, 0, 0, 2]);
        f.fetched(
            mac,
            ip,
            "Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:01",
            "001565aabbcc.cfg",
            200,
        );
        assert_eq!(f.last_fetch(&store, mac).unwrap().unwrap().status, 200);
        f.flush(&store).unwrap();
        let stored = f.last_fetch(&store, mac).unwrap().unwrap();
        assert_eq!(stored.model.as_deref(), Some("SIP-T46S"));
    }

    #[test]
    fn after_a_restart_a_repeated_fetch_is_not_written_again() {
        let store = Store::temporary().unwrap();
        let mac = Mac::parse_plain("001565aabbcc").unwrap();
        let ip = std::net::IpAddr::from([10, 0, 0, 2]);
        let before = Fleet::default();
        before.fetched(mac, ip, "ua", "001565aabbcc.cfg", 200);
        before.flush(&store).unwrap();
        let stored = store.last_fetch(mac).unwrap().unwrap();
        // A new process: nothing noted in memory yet.
        let after = Fleet::default();
        after.fetched(mac, ip, "ua", "001565aabbcc.cfg", 200);
        after.flush(&store).unwrap();
        assert_eq!(store.last_fetch(mac).unwrap().unwrap(), stored);
        assert!(
            after
                .pending_fetches
                .lock()
                .unwrap()
                .touched
                .contains_key(&mac)
        );
        // The next repeat is a touch at once; anything else is written.
        after.fetched(mac, ip, "ua", "001565aabbcc.cfg", 200);
        assert!(after.pending_fetches.lock().unwrap().full.is_empty());
        after.fetched(mac, ip, "ua", "001565aabbcc.cfg", 404);
        after.flush(&store).unwrap();
        let v: Fetch = serde_json::from_slice(&store.last_fetch(mac).unwrap().unwrap()).unwrap();
        assert_eq!(v.status, 404);
        // A stored record older than TOUCH_PERSIST_EVERY is written again.
        let old = Fleet::default();
        {
            let mut p = old.pending_fetches.lock().unwrap();
            p.full.insert(
                mac,
                Seen {
                    unix: unix_now() + TOUCH_PERSIST_EVERY + 5,
                    ip,
                    status: 404,
                    user_agent: "ua".into(),
                    file: "001565aabbcc.cfg".into(),
                },
            );
        }
        old.flush(&store).unwrap();
        assert_ne!(
            store.last_fetch(mac).unwrap().unwrap(),
            serde_json::to_vec(&v).unwrap()
        );
    }

    #[test]
    fn repeated_fetches_only_move_the_time_and_are_written_rarely() {
        let store = Store::temporary().unwrap();
        let f = Fleet::default();
        let mac = Mac::parse_plain("001565aabbcc").unwrap();
        let ip = std::net::IpAddr::from([10, 0, 0, 2]);
        f.fetched(mac, ip, "ua", "001565aabbcc.cfg", 200);
        f.flush(&store).unwrap();
        let first = store.last_fetch(mac).unwrap().unwrap();
        // The same request again: memory only (nothing pending in full), the store keeps
        // its record until TOUCH_PERSIST_EVERY has passed.
        f.fetched(mac, ip, "ua", "001565aabbcc.cfg", 200);
        {
            let p = f.pending_fetches.lock().unwrap();
            assert!(p.full.is_empty());
            assert!(p.touched.contains_key(&mac));
        }
        f.flush(&store).unwrap();
        assert_eq!(store.last_fetch(mac).unwrap().unwrap(), first);
        // Pretend the stored record is old: the touch is then written, with the new time.
        f.pending_fetches
            .lock()
            .unwrap()
            .persisted
            .get_mut(&mac)
            .unwrap()
            .unix = 0;
        f.flush(&store).unwrap();
        assert!(f.pending_fetches.lock().unwrap().touched.is_empty());
        let shown = f.last_fetch(&store, mac).unwrap().unwrap();
        assert_eq!(shown.file, "001565aabbcc.cfg");
        // Anything else changing is a full record at once.
        f.fetched(mac, ip, "ua", "y000000000066.cfg", 200);
        assert_eq!(
            f.last_fetch(&store, mac).unwrap().unwrap().file,
            "y000000000066.cfg"
        );
        f.flush(&store).unwrap();
        let v: Fetch = serde_json::from_slice(&store.last_fetch(mac).unwrap().unwrap()).unwrap();
        assert_eq!(v.file, "y000000000066.cfg");
    }
}
