//! What phones did: the last fetch of every known phone, and the MACs that asked with the
//! server-default credentials but are not linked (`GET /api/v1/unprovisioned`).
//!
//! Last fetches live in memory (one compact record per phone) and in the append-only
//! [`journal`] beside the store, not in sled: a reboot storm is one record per phone and
//! request, and sled's write path held far more memory than the records themselves
//! (about 100 MB for a 100,000-phone storm) and slowed its readers. A request that repeats
//! the one recorded through the phone's gate (same IP, User-Agent, file and status) within
//! [`TOUCH_PERSIST_EVERY`] only moves a time in the gate ([`Seen`]), which the fetch path
//! holds anyway: no lock, no lookup in the table of every phone's record (random reads a
//! cached fetch should not pay; docs/PERFORMANCE.md). Readers take the later of the two
//! times; a gate leaving the memo hands its time back ([`Folds`]). Anything else takes
//! the table's short lock. A thread writes
//! what changed every [`FLUSH_EVERY`], [`WRITE_CHUNK`] records at a time. Unprovisioned
//! MACs (at most [`UNPROVISIONED_CAP`]) stay in their sled tree. Neither ever bumps a
//! revision or invalidates a cached file.

pub mod journal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use self::journal::{Journal, Record, truncate_str};
use crate::model::agent::Agent;
use crate::model::{Gate, Mac};
use crate::store::{Store, StoreError};

/// How often changed audit records are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// A fetch that repeats the phone's last one except for its time is written to the journal
/// at most this often per phone (memory always has the exact time). Keeps a fleet polling
/// every minute from turning into one write per request.
pub const TOUCH_PERSIST_EVERY: u64 = 300;

/// Records written per chunk (the fetch path's lock is taken once per chunk).
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

/// One phone's last fetch in memory: 56 bytes and one allocation (User-Agent and file
/// name together), 64 with its key in the table; 100,000 phones in 8.4 MB of table where
/// a [`Record`] and its two strings took 13.6 MB.
#[derive(Debug, Clone)]
struct Last {
    /// [`signature`] of the request: a repeat is recognised without reading the strings.
    sig: u64,
    /// The User-Agent, then the file name.
    text: Box<str>,
    /// When (unix seconds, 32 bits: until 2106).
    unix: u32,
    /// Time of the version written to the journal (0: none yet).
    journaled: u32,
    /// Bytes of `text` that are the User-Agent.
    ua_len: u16,
    /// Status answered.
    status: u16,
    /// Queued in `Fetches::dirty` for the next write.
    dirty: bool,
    /// Client IP.
    ip: std::net::IpAddr,
}

/// A 64-bit hash of what makes a request a repeat of the last one (address, status,
/// User-Agent, file). Equal signatures are taken as the same request: a collision would
/// leave the previous User-Agent or file shown until the phone's next different request.
fn signature(ip: std::net::IpAddr, status: u16, user_agent: &str, file: &str) -> u64 {
    use std::hash::BuildHasher;
    // Never 0: a [`Seen`] with signature 0 has recorded nothing.
    foldhash::fast::FixedState::default().hash_one((ip, status, user_agent, file)) | 1
}

/// A phone's request as the audit records it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// Client IP.
    pub ip: std::net::IpAddr,
    /// The User-Agent as sent.
    pub user_agent: &'a str,
    /// File asked for.
    pub file: &'a str,
    /// Status answered.
    pub status: u16,
}

impl Asked<'_> {
    /// What is kept: at most 256 bytes of User-Agent and 128 of file name.
    fn kept(self) -> Self {
        Asked {
            user_agent: truncate_str(self.user_agent, 256),
            file: truncate_str(self.file, 128),
            ..self
        }
    }

    fn signature(&self) -> u64 {
        signature(self.ip, self.status, self.user_agent, self.file)
    }
}

/// `(recorded, latest)` of a [`Seen`]'s packed times.
fn split_times(t: u64) -> (u64, u64) {
    (t >> 32, t & u64::from(u32::MAX))
}

/// Times a [`Seen`] keeps: unix seconds in 32 bits (until 2106; past it every request
/// goes to the table).
fn seconds32(unix: u64) -> u64 {
    unix.min(u64::from(u32::MAX))
}

/// What a phone's gate knows of its last request: the signature of the request last
/// recorded in the fleet's table through this gate, when, and the latest repeat of it
/// since. Lives in the gate so that a repeat (the usual fetch) touches nothing but memory
/// the fetch path has just read. Times are whole seconds; two requests of one phone racing
/// on two workers may leave either one's time, as the table's lock would.
#[derive(Debug)]
pub struct Seen {
    /// [`signature`] of the recorded request (0: none yet).
    sig: AtomicU64,
    /// `(recorded << 32) | latest`, unix seconds.
    times: AtomicU64,
    /// Where a time newer than the table's goes when the gate is dropped.
    folds: Arc<Folds>,
}

/// Repeats' times handed back by gates leaving the memo (evicted, or replaced by an admin
/// change), applied to the table by its next reader or writer: (MAC, signature, time).
#[derive(Debug, Default)]
pub struct Folds(Mutex<Vec<(Mac, u64, u64)>>);

impl Folds {
    fn take(&self) -> Vec<(Mac, u64, u64)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Seen {
    /// Bytes a `Seen` adds to its gate.
    pub const WEIGHT: usize = std::mem::size_of::<Seen>();

    /// Nothing seen yet; times handed back go to `folds`.
    pub fn new(folds: Arc<Folds>) -> Self {
        Seen {
            sig: AtomicU64::new(0),
            times: AtomicU64::new(0),
            folds,
        }
    }

    /// Takes a request with signature `sig` at `now` if it repeats the one recorded within
    /// [`TOUCH_PERSIST_EVERY`] of its recording (so the journal still gets a repeat's time
    /// that often); false when the table must record it.
    fn repeat(&self, sig: u64, now: u64) -> bool {
        if self.sig.load(Ordering::Relaxed) != sig {
            return false;
        }
        if now > u64::from(u32::MAX) {
            return false;
        }
        let (recorded, latest) = split_times(self.times.load(Ordering::Relaxed));
        if now < recorded || now - recorded >= TOUCH_PERSIST_EVERY {
            return false;
        }
        if now > latest {
            self.times.store((recorded << 32) | now, Ordering::Relaxed);
        }
        true
    }

    /// The table recorded `sig` at `now`.
    fn recorded(&self, sig: u64, now: u64) {
        let now = seconds32(now);
        self.times.store((now << 32) | now, Ordering::Relaxed);
        self.sig.store(sig, Ordering::Relaxed);
    }

    /// The latest repeat of `sig` this gate took, if it is the request recorded through it.
    fn latest(&self, sig: u64) -> Option<u64> {
        (self.sig.load(Ordering::Relaxed) == sig)
            .then(|| split_times(self.times.load(Ordering::Relaxed)).1)
    }

    /// Hands a repeat newer than its recording back to the table (the gate is going).
    pub fn fold(&self, mac: Mac) {
        let (recorded, latest) = split_times(self.times.load(Ordering::Relaxed));
        if latest > recorded {
            let sig = self.sig.load(Ordering::Relaxed);
            self.folds
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((mac, sig, latest));
        }
    }
}

/// Phones by MAC (a fast hash: MACs here are linked phones, chosen by admins).
type ByMac<V> = HashMap<Mac, V, foldhash::fast::RandomState>;

impl Last {
    /// The request `asked` at `unix`; `journaled`: the time the journal has for the phone.
    fn new(asked: Asked<'_>, unix: u64, journaled: u64, dirty: bool) -> Self {
        // At most 65,535 bytes of User-Agent, as the journal keeps.
        let ua = truncate_str(asked.user_agent, u16::MAX as usize);
        Last {
            sig: signature(asked.ip, asked.status, ua, asked.file),
            text: [ua, asked.file].concat().into_boxed_str(),
            unix: seconds32(unix) as u32,
            journaled: seconds32(journaled) as u32,
            ua_len: ua.len() as u16,
            status: asked.status,
            dirty,
            ip: asked.ip,
        }
    }

    /// A record read from the journal (or an older store), as written at its time.
    fn of(rec: &Record) -> Self {
        let asked = Asked {
            ip: rec.ip,
            user_agent: &rec.user_agent,
            file: &rec.file,
            status: rec.status,
        };
        Last::new(asked, rec.unix, rec.unix, false)
    }

    /// Moves the time to `unix` (a repeat of this request); true when that makes the
    /// record due for the journal (its written time [`TOUCH_PERSIST_EVERY`] old) and it
    /// was not queued yet: the caller queues it.
    fn touch(&mut self, unix: u64) -> bool {
        self.unix = self.unix.max(seconds32(unix) as u32);
        let due = !self.dirty
            && self.unix().saturating_sub(u64::from(self.journaled)) >= TOUCH_PERSIST_EVERY;
        self.dirty |= due;
        due
    }

    fn user_agent(&self) -> &str {
        self.text.get(..self.ua_len as usize).unwrap_or("")
    }

    fn file(&self) -> &str {
        self.text.get(self.ua_len as usize..).unwrap_or("")
    }

    fn unix(&self) -> u64 {
        u64::from(self.unix)
    }

    /// Appends the journal's encoding of this record for `mac`.
    fn encode(&self, mac: Mac, out: &mut Vec<u8>) {
        journal::encode_parts(
            out,
            mac,
            self.unix(),
            self.status,
            self.ip,
            [self.user_agent(), self.file()],
        );
    }

    /// As the API shows it, at `unix` (the record's time or a later repeat's).
    fn to_fetch(&self, unix: u64) -> Fetch {
        let agent = crate::model::agent::parse(self.user_agent());
        Fetch {
            time: rfc3339(unix),
            ip: self.ip.to_string(),
            user_agent: self.user_agent().to_string(),
            file: self.file().to_string(),
            status: self.status,
            vendor: agent.as_ref().map(|a| a.vendor.to_string()),
            model: agent.as_ref().map(|a| a.model.clone()),
            firmware: agent.map(|a| a.firmware),
        }
    }
}

/// Every phone's last fetch, and which changed since the last write.
#[derive(Debug, Default)]
struct Fetches {
    last: ByMac<Last>,
    dirty: Vec<Mac>,
}

impl Fetches {
    /// Applies the times gates handed back (those of a request since replaced are dropped).
    fn fold(&mut self, folds: &Folds) {
        for (mac, sig, unix) in folds.take() {
            if let Some(l) = self.last.get_mut(&mac).filter(|l| l.sig == sig) {
                if l.touch(unix) {
                    self.dirty.push(mac);
                }
            }
        }
    }
}

/// In-memory audit state.
#[derive(Debug, Default)]
pub struct Fleet {
    fetches: Mutex<Fetches>,
    /// The store's: times of gates that left its memo.
    folds: Arc<Folds>,
    /// `None`: memory only (tests).
    journal: Option<Mutex<Journal>>,
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
    if base.len() < 19 || !base.is_ascii() || !base.ends_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut base = base.to_ascii_uppercase();
    // A valid time before 1970 is before every recorded fetch: it reads as 0. humantime
    // refuses those years, so the rest of the time is checked in a year of the same kind
    // (leap or not).
    let year: Option<u32> = base.get(..4).and_then(|y| y.parse().ok());
    let early = year.is_some_and(|y| y < 1970);
    if let Some(y) = year.filter(|_| early) {
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        base.replace_range(..4, if leap { "2000" } else { "2001" });
    }
    let t = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    if early {
        return Some(0);
    }
    let local = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    Some(u64::try_from(local - offset).unwrap_or(0))
}

impl Fleet {
    /// Loads the stored unprovisioned MACs and, with a data folder, the fetch journal in it
    /// (moving any last fetches an older autoprov kept in the store into it).
    pub fn load(store: &Store, data: Option<&std::path::Path>) -> Result<Self, StoreError> {
        let mut f = Fleet {
            folds: store.folds(),
            ..Fleet::default()
        };
        {
            let mut map = f.lock_unprovisioned();
            for (mac, v) in store.unprovisioned()? {
                if let Ok(u) = serde_json::from_slice::<Unprovisioned>(&v) {
                    map.insert(mac, u);
                }
            }
        }
        let Some(data) = data else {
            return Ok(f);
        };
        let path = data.join("fetches.journal");
        let journal_err = |source| StoreError::Journal {
            path: path.display().to_string(),
            source,
        };
        let mut last: ByMac<Last> = ByMac::default();
        let (mut journal, clean) = Journal::open(&path, |rec| {
            last.insert(rec.mac, Last::of(&rec));
        })
        .map_err(journal_err)?;
        // Last fetches as an earlier autoprov kept them (JSON in the store's `fetches` tree).
        let legacy = store.legacy_fetches()?;
        let migrated = !legacy.is_empty();
        for (mac, v) in legacy {
            let Ok(old) = serde_json::from_slice::<Fetch>(&v) else {
                continue;
            };
            let unix = unix_of(&old.time).unwrap_or(0);
            if last.get(&mac).is_some_and(|l| l.unix() >= unix) {
                continue;
            }
            let asked = Asked {
                ip: old
                    .ip
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                user_agent: &old.user_agent,
                file: &old.file,
                status: old.status,
            };
            last.insert(mac, Last::new(asked, unix, unix, false));
        }
        if migrated || !clean || journal.wants_rewrite(last.len() as u64) {
            let mut buf = Vec::new();
            for (mac, l) in &last {
                l.encode(*mac, &mut buf);
            }
            journal
                .rewrite(&buf, last.len() as u64)
                .map_err(journal_err)?;
            if migrated {
                store.clear_legacy_fetches()?;
            }
        }
        f.fetches = Mutex::new(Fetches {
            last,
            dirty: Vec::new(),
        });
        f.journal = Some(Mutex::new(journal));
        Ok(f)
    }

    fn lock_fetches(&self) -> std::sync::MutexGuard<'_, Fetches> {
        self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_unprovisioned(&self) -> std::sync::MutexGuard<'_, HashMap<Mac, Unprovisioned>> {
        self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a request of the phone behind `gate`: a repeat of the request recorded
    /// through it only moves the gate's time ([`Seen`]); anything else goes to the table.
    pub fn fetched_by(&self, gate: &Gate, asked: Asked<'_>) {
        self.fetched_at(gate, asked, unix_now());
    }

    fn fetched_at(&self, gate: &Gate, asked: Asked<'_>, now: u64) {
        let asked = asked.kept();
        let sig = asked.signature();
        if gate.seen.repeat(sig, now) {
            return;
        }
        self.record(gate.mac, asked, sig, now);
        gate.seen.recorded(sig, now);
    }

    /// Records a known phone's request in the table, as a gate outside the memo would
    /// (tests of the table and journal alone).
    #[cfg(test)]
    fn fetched(&self, mac: Mac, asked: Asked<'_>) {
        let asked = asked.kept();
        self.record(mac, asked, asked.signature(), unix_now());
    }

    fn record(&self, mac: Mac, asked: Asked<'_>, sig: u64, now: u64) {
        use std::collections::hash_map::Entry;
        let mut f = self.lock_fetches();
        f.fold(&self.folds);
        let Fetches { last, dirty } = &mut *f;
        // One lookup: a repeat only moves the time, anything else replaces the record.
        let queue = match last.entry(mac) {
            Entry::Occupied(mut e) => {
                let l = e.get_mut();
                if l.sig == sig {
                    l.touch(now)
                } else {
                    let queued = l.dirty;
                    *l = Last::new(asked, now, u64::from(l.journaled), true);
                    !queued
                }
            }
            Entry::Vacant(e) => {
                e.insert(Last::new(asked, now, 0, true));
                true
            }
        };
        if queue {
            dirty.push(mac);
        }
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

    /// `read(record, time)` of a phone's last fetch, its time the later of the table's and
    /// that of its gate in `store`'s memo.
    fn read_last<R>(
        &self,
        store: &Store,
        mac: Mac,
        read: impl FnOnce(&Last, u64) -> R,
    ) -> Option<R> {
        let gate = store.peek_gate(mac);
        let mut f = self.lock_fetches();
        f.fold(&self.folds);
        let l = f.last.get(&mac)?;
        let unix = gate
            .and_then(|g| g.seen.latest(l.sig))
            .map_or(l.unix(), |t| t.max(l.unix()));
        Some(read(l, unix))
    }

    /// A phone's last fetch.
    pub fn last_fetch(&self, store: &Store, mac: Mac) -> Option<Fetch> {
        self.read_last(store, mac, |l, unix| l.to_fetch(unix))
    }

    /// When a phone last fetched (unix seconds), for list filters.
    pub fn last_fetch_unix(&self, store: &Store, mac: Mac) -> Option<u64> {
        self.read_last(store, mac, |_, unix| unix)
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

    /// Writes what changed: last fetches to the journal, [`WRITE_CHUNK`] at a time (the
    /// fetch path's lock is held only to copy a chunk), rewriting the journal when it holds
    /// more than twice the live records; unprovisioned MACs to the store.
    pub fn flush(&self, store: &Store) -> Result<(), StoreError> {
        if let Some(j) = &self.journal {
            self.flush_journal(j)?;
        } else {
            self.lock_fetches().dirty.clear();
        }
        self.flush_unprovisioned(store)
    }

    /// Appends the last fetches changed since the previous flush to the journal,
    /// [`WRITE_CHUNK`] at a time (the fetch path's lock is held only to copy a chunk), then
    /// rewrites it when it holds more than twice the live records.
    fn flush_journal(&self, j: &Mutex<Journal>) -> Result<(), StoreError> {
        let path = j
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .path()
            .display()
            .to_string();
        let journal_err = |source| StoreError::Journal {
            path: path.clone(),
            source,
        };
        let dirty = {
            let mut f = self.lock_fetches();
            f.fold(&self.folds);
            std::mem::take(&mut f.dirty)
        };
        let mut buf = Vec::new();
        for chunk in dirty.chunks(WRITE_CHUNK) {
            buf.clear();
            let mut n = 0;
            {
                let mut f = self.lock_fetches();
                for mac in chunk {
                    if let Some(l) = f.last.get_mut(mac)
                        && l.dirty
                    {
                        l.dirty = false;
                        l.journaled = l.unix;
                        l.encode(*mac, &mut buf);
                        n += 1;
                    }
                }
            }
            j.lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&buf, n)
                .map_err(journal_err)?;
        }
        let live = self.lock_fetches().last.len() as u64;
        let mut jl = j.lock().unwrap_or_else(|p| p.into_inner());
        if jl.wants_rewrite(live) {
            let macs: Vec<Mac> = self.lock_fetches().last.keys().copied().collect();
            buf.clear();
            for chunk in macs.chunks(WRITE_CHUNK) {
                let f = self.lock_fetches();
                for mac in chunk {
                    if let Some(l) = f.last.get(mac) {
                        l.encode(*mac, &mut buf);
                    }
                }
            }
            jl.rewrite(&buf, macs.len() as u64).map_err(journal_err)?;
        }
        Ok(())
    }

    /// Writes the unprovisioned MACs changed since the previous flush to the store: each
    /// MAC once, as its latest change (its record, or its removal when it was dropped).
    fn flush_unprovisioned(&self, store: &Store) -> Result<(), StoreError> {
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
        if unprov.is_empty() {
            return Ok(());
        }
        store.audit_write(unprov)
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
            "1900-02-29T00:00:00Z",
            "1969-13-01T00:00:00Z",
            "0518-08-17T24:00:00Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        // Valid times before the epoch are before every fetch.
        for early in [
            "1970-01-01T00:00:00+01:00",
            "1969-12-31T23:59:59Z",
            "1904-02-29T00:00:00Z",
            "0518-08-17T14:28:48.999253Z",
        ] {
            assert_eq!(parse_time(early), Some(0), "{early}");
        }
        let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        assert_eq!(parse_time(&t), unix_of(&t));
    }

    #[test]
    fn unprovisioned_bounded_and_flushed() {
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
        let again = Fleet::load(&store, None).unwrap();
        assert_eq!(again.lock_unprovisioned().len(), UNPROVISIONED_CAP);
    }

    /// A fleet journaling into a fresh folder, over a fresh store.
    fn journaled() -> (tempfile::TempDir, Store, Fleet) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::temporary().unwrap();
        let f = Fleet::load(&store, Some(dir.path())).unwrap();
        (dir, store, f)
    }

    fn asked<'a>(
        ip: std::net::IpAddr,
        user_agent: &'a str,
        file: &'a str,
        status: u16,
    ) -> Asked<'a> {
        Asked {
            ip,
            user_agent,
            file,
            status,
        }
    }

    /// The tests' phone and its address.
    fn phone() -> (Mac, std::net::IpAddr) {
        (
            Mac::parse_plain("001565aabbcc").unwrap(),
            std::net::IpAddr::from([10, 0, 0, 2]),
        )
    }

    fn journal_records(dir: &std::path::Path) -> Vec<Record> {
        let mut got = Vec::new();
        Journal::open(&dir.join("fetches.journal"), |r| got.push(r)).unwrap();
        got
    }

    #[test]
    fn last_fetches_survive_a_restart_through_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::temporary().unwrap();
        let mac = Mac::parse_plain("001565aabbcc").unwrap();
        let ip = std::net::IpAddr::from([10, 0, 0, 2]);
        let ua = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
        let f = Fleet::load(&store, Some(dir.path())).unwrap();
        f.fetched(mac, asked(ip, ua, "001565aabbcc.cfg", 200));
        let shown = f.last_fetch(&store, mac).unwrap();
        assert_eq!(
            (shown.status, shown.model.as_deref(), shown.ip.as_str()),
            (200, Some("SIP-T46S"), "10.0.0.2")
        );
        assert!(
            journal_records(dir.path()).is_empty(),
            "written by flush only"
        );
        f.flush(&store).unwrap();
        assert_eq!(journal_records(dir.path()).len(), 1);
        drop(f);
        let f = Fleet::load(&store, Some(dir.path())).unwrap();
        assert_eq!(f.last_fetch(&store, mac), Some(shown.clone()));
        assert_eq!(f.last_fetch_unix(&store, mac), unix_of(&shown.time));
        // A repeat after the restart is a touch: nothing new to write.
        f.fetched(mac, asked(ip, ua, "001565aabbcc.cfg", 200));
        f.flush(&store).unwrap();
        assert_eq!(journal_records(dir.path()).len(), 1);
    }

    #[test]
    fn repeated_fetches_only_move_the_time_and_are_written_rarely() {
        let (dir, store, f) = journaled();
        let (mac, ip) = phone();
        f.fetched(mac, asked(ip, "ua", "001565aabbcc.cfg", 200));
        f.flush(&store).unwrap();
        for _ in 0..100 {
            f.fetched(mac, asked(ip, "ua", "001565aabbcc.cfg", 200));
        }
        assert!(f.lock_fetches().dirty.is_empty());
        f.flush(&store).unwrap();
        assert_eq!(journal_records(dir.path()).len(), 1);
        // Pretend the written record is old: the next touch is written, with its time.
        f.lock_fetches().last.get_mut(&mac).unwrap().journaled = 0;
        f.fetched(mac, asked(ip, "ua", "001565aabbcc.cfg", 200));
        f.flush(&store).unwrap();
        assert_eq!(journal_records(dir.path()).len(), 2);
        // Anything else changing is written at the next flush.
        f.fetched(mac, asked(ip, "ua", "y000000000066.cfg", 200));
        assert_eq!(f.last_fetch(&store, mac).unwrap().file, "y000000000066.cfg");
        f.flush(&store).unwrap();
        let recs = journal_records(dir.path());
        assert_eq!(&*recs.last().unwrap().file, "y000000000066.cfg");
        // Each field of the request counts: the User-Agent, the status, the address.
        let other = std::net::IpAddr::from([10, 0, 0, 3]);
        for (ip, ua, status) in [(ip, "ua2", 200), (ip, "ua2", 401), (other, "ua2", 401)] {
            f.fetched(mac, asked(ip, ua, "y000000000066.cfg", status));
            assert!(!f.lock_fetches().dirty.is_empty(), "{ip} {ua} {status}");
            f.flush(&store).unwrap();
            let shown = f.last_fetch(&store, mac).unwrap();
            assert_eq!(
                (shown.ip, shown.user_agent, shown.status),
                (ip.to_string(), ua.to_string(), status)
            );
        }
    }

    #[test]
    fn the_journal_is_compacted_and_older_store_records_move_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::temporary().unwrap();
        let ip = std::net::IpAddr::from([10, 0, 0, 2]);
        let mac = |i: u64| Mac::parse_plain(&format!("{:012x}", 0x001565000000u64 + i)).unwrap();
        let f = Fleet::load(&store, Some(dir.path())).unwrap();
        // 3 phones × 5000 different files: 15,000 records, 3 live.
        for round in 0..5000 {
            for i in 0..3 {
                f.fetched(mac(i), asked(ip, "ua", &format!("{round}.cfg"), 200));
            }
            if round % 1000 == 999 {
                f.flush(&store).unwrap();
            }
        }
        f.flush(&store).unwrap();
        assert!(journal_records(dir.path()).len() <= 10_006);
        drop(f);
        // A last fetch the store held (JSON, as an earlier autoprov wrote it).
        let old = Fetch {
            time: "2026-01-02T03:04:05Z".into(),
            ip: "10.9.9.9".into(),
            user_agent: "ua".into(),
            file: "old.cfg".into(),
            status: 200,
            vendor: None,
            model: None,
            firmware: None,
        };
        store
            .put_legacy_fetch(mac(7), serde_json::to_vec(&old).unwrap())
            .unwrap();
        let f = Fleet::load(&store, Some(dir.path())).unwrap();
        assert_eq!(f.last_fetch(&store, mac(7)), Some(old));
        assert_eq!(f.last_fetch(&store, mac(2)).unwrap().file, "4999.cfg");
        assert!(store.legacy_fetches().unwrap().is_empty());
        assert_eq!(journal_records(dir.path()).len(), 4);
    }

    /// Commits `p` to `store`, as an admin change does.
    fn put(store: &Store, p: crate::model::Phone) {
        let mut change = crate::store::Change::default();
        change.phones.push((p.mac, Some(p)));
        store.commit(&change).unwrap();
    }

    /// A phone linked in `store`, its gate in the memo.
    fn linked(store: &Store, mac: Mac) -> Arc<Gate> {
        put(store, crate::model::Phone::new(mac, "yealink-t46s".into()));
        store.gate(mac).unwrap().unwrap()
    }

    #[test]
    fn a_repeat_through_the_gate_moves_only_the_gates_time_and_readers_see_it() {
        let (dir, store, f) = journaled();
        let (mac, ip) = phone();
        let gate = linked(&store, mac);
        let t0 = 1_800_000_000;
        f.fetched_at(&gate, asked(ip, "ua", "001565aabbcc.cfg", 200), t0);
        assert_eq!(f.lock_fetches().last[&mac].unix(), t0);
        f.flush(&store).unwrap();
        assert_eq!(journal_records(dir.path()).len(), 1);
        // Repeats: the table is not touched, the readers take the gate's time.
        for dt in 1..=10 {
            f.fetched_at(&gate, asked(ip, "ua", "001565aabbcc.cfg", 200), t0 + dt);
        }
        assert_eq!(f.lock_fetches().last[&mac].unix(), t0);
        assert_eq!(f.last_fetch_unix(&store, mac), Some(t0 + 10));
        assert_eq!(f.last_fetch(&store, mac).unwrap().time, rfc3339(t0 + 10));
        f.flush(&store).unwrap();
        assert_eq!(
            journal_records(dir.path()).len(),
            1,
            "a touch is not written"
        );
        // A repeat past TOUCH_PERSIST_EVERY goes through the table, which writes it.
        let cfg = asked(ip, "ua", "001565aabbcc.cfg", 200);
        f.fetched_at(&gate, cfg, t0 + TOUCH_PERSIST_EVERY);
        assert_eq!(f.lock_fetches().last[&mac].unix(), t0 + TOUCH_PERSIST_EVERY);
        f.flush(&store).unwrap();
        let recs = journal_records(dir.path());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].unix, t0 + TOUCH_PERSIST_EVERY);
        // A different request (another file, as a firmware download) is recorded at once,
        // and going back to the first one is a different request again.
        let t1 = t0 + TOUCH_PERSIST_EVERY + 1;
        f.fetched_at(&gate, asked(ip, "ua", "fw.rom", 200), t1);
        assert_eq!(f.last_fetch(&store, mac).unwrap().file, "fw.rom");
        f.fetched_at(&gate, asked(ip, "ua", "001565aabbcc.cfg", 200), t1 + 1);
        let shown = f.last_fetch(&store, mac).unwrap();
        assert_eq!(
            (shown.file.as_str(), shown.time),
            ("001565aabbcc.cfg", rfc3339(t1 + 1))
        );
    }

    #[test]
    fn a_gate_leaving_the_memo_hands_its_time_back() {
        let (_dir, store, f) = journaled();
        let (mac, ip) = phone();
        let gate = linked(&store, mac);
        let t0 = 1_800_000_000;
        f.fetched_at(&gate, asked(ip, "ua", "001565aabbcc.cfg", 200), t0);
        f.fetched_at(&gate, asked(ip, "ua", "001565aabbcc.cfg", 200), t0 + 7);
        // An admin change replaces the gate; the old one goes with its last holder.
        let mut p = store.phone(mac).unwrap().unwrap();
        p.model = "yealink-t48s".into();
        put(&store, p.clone());
        drop(gate);
        assert!(store.peek_gate(mac).is_none());
        assert_eq!(f.last_fetch_unix(&store, mac), Some(t0 + 7));
        assert_eq!(f.lock_fetches().last[&mac].unix(), t0 + 7);
        // A time handed back for a request since replaced is dropped.
        let gate = linked(&store, mac);
        f.fetched_at(&gate, asked(ip, "ua", "001565aabbcc.cfg", 200), t0 + 8);
        f.fetched_at(&gate, asked(ip, "ua", "001565aabbcc.cfg", 200), t0 + 9);
        f.fetched(mac, asked(ip, "ua", "other.cfg", 200));
        drop(gate);
        put(&store, p);
        assert_eq!(f.last_fetch(&store, mac).unwrap().file, "other.cfg");
    }

    #[test]
    fn a_record_is_small() {
        assert!(std::mem::size_of::<Last>() <= 56);
        assert!(std::mem::size_of::<(Mac, Last)>() <= 64);
        let (mac, ip) = phone();
        let long = "é".repeat(40_000);
        let l = Last::new(asked(ip, &long, "f.cfg", 200), 5, 0, true);
        // Cut at a character boundary within the journal's 65,535 bytes.
        assert_eq!(l.user_agent().len(), 65_534);
        assert_eq!((l.file(), l.unix()), ("f.cfg", 5));
        let mut buf = Vec::new();
        l.encode(mac, &mut buf);
        let mut got = Vec::new();
        assert_eq!(journal::decode(&buf, |r| got.push(r)), (1, true));
        assert_eq!((&*got[0].file, got[0].user_agent.len()), ("f.cfg", 65_534));
    }

    #[test]
    fn a_fresh_gate_records_through_the_table() {
        // A gate built for one request (not kept in the memo) records every request.
        let (_dir, store, f) = journaled();
        let (mac, ip) = phone();
        let phone = crate::model::Phone::new(mac, "yealink-t46s".into());
        for t in [1_800_000_000, 1_800_000_005] {
            let gate = Gate::of(&phone, |n| n.into(), &store.folds());
            f.fetched_at(&gate, asked(ip, "ua", "001565aabbcc.cfg", 200), t);
            assert_eq!(f.lock_fetches().last[&mac].unix(), t);
        }
    }
}
