//! The fetch journal: `<data>/fetches.journal`, an append-only file of the phones' last
//! fetches (the [`crate::activity`] audit). Each record is a phone's whole last fetch, so the
//! latest record of a MAC is its state and older ones are garbage; the file is rewritten
//! with one record per phone when garbage dominates. Appends are not synced: a crash loses
//! at most the last [`crate::activity::FLUSH_EVERY`] of audit, and a torn last record is
//! ignored when the file is read back.
//!
//! Format: the magic `APJ1`, then records
//! `mac[6] unix[8] status[2] ipkind[1]=4|6 ip[4|16] ua_len[2] ua file_len[2] file`
//! (big-endian).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::model::Mac;

const MAGIC: &[u8; 4] = b"APJ1";

/// One record: a phone's fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The phone.
    pub mac: Mac,
    /// Unix seconds.
    pub unix: u64,
    /// Status answered.
    pub status: u16,
    /// Client IP.
    pub ip: IpAddr,
    /// User-Agent (at most 65,535 bytes are kept).
    pub user_agent: Box<str>,
    /// File asked for (likewise).
    pub file: Box<str>,
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends the encoding of a record given by its fields (User-Agent, then file); what
/// [`decode`] reads back as a [`Record`].
pub fn encode_parts(
    out: &mut Vec<u8>,
    mac: Mac,
    unix: u64,
    status: u16,
    ip: IpAddr,
    texts: [&str; 2],
) {
    out.extend_from_slice(&mac.bytes());
    out.extend_from_slice(&unix.to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
    match ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    for s in texts {
        // Cut at a character boundary: a cut inside one would make the record
        // undecodable, and with it the rest of the file.
        let b = truncate_str(s, u16::MAX as usize).as_bytes();
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
}

/// Decodes records from `b` (after the magic) until the end or the first record that is
/// torn or invalid, giving each to `each`; returns how many and whether everything was read.
pub fn decode(b: &[u8], mut each: impl FnMut(Record)) -> (u64, bool) {
    let mut pos = 0;
    let mut n = 0;
    while pos < b.len() {
        match decode_one(b, &mut pos) {
            Some(r) => {
                each(r);
                n += 1;
            }
            None => return (n, false),
        }
    }
    (n, true)
}

fn decode_one(b: &[u8], pos: &mut usize) -> Option<Record> {
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(*pos..pos.checked_add(n)?)?;
        *pos += n;
        Some(s)
    };
    let mac = Mac::from_bytes(take(6)?.try_into().ok()?);
    let unix = u64::from_be_bytes(take(8)?.try_into().ok()?);
    let status = u16::from_be_bytes(take(2)?.try_into().ok()?);
    let ip = match take(1)?[0] {
        4 => IpAddr::from(<[u8; 4]>::try_from(take(4)?).ok()?),
        6 => IpAddr::from(<[u8; 16]>::try_from(take(16)?).ok()?),
        _ => return None,
    };
    let mut text = || -> Option<Box<str>> {
        let n = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(take(n)?).ok().map(Into::into)
    };
    let user_agent = text()?;
    let file = text()?;
    Some(Record {
        mac,
        unix,
        status,
        ip,
        user_agent,
        file,
    })
}

/// The open journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Records in the file (live and garbage).
    records: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, giving its records to `each`, oldest first;
    /// also returns whether the file read cleanly. A file that does not start with the
    /// magic, or ends in a torn record, is read as far as it goes; [`Journal::rewrite`]
    /// replaces it.
    pub fn open(path: &Path, each: impl FnMut(Record)) -> std::io::Result<(Self, bool)> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (records, clean) = match bytes.strip_prefix(MAGIC) {
            Some(body) => decode(body, each),
            None => (0, bytes.is_empty()),
        };
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        if bytes.is_empty() {
            file.write_all(MAGIC)?;
        }
        let j = Journal {
            path: path.to_path_buf(),
            file,
            records,
        };
        Ok((j, clean))
    }

    /// Records in the file, live and garbage.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file holds enough garbage beside `live` records to be rewritten: more
    /// than twice as many records, and at least 10,000 of garbage.
    pub fn wants_rewrite(&self, live: u64) -> bool {
        self.records > 2 * live + 10_000
    }

    /// Appends `n` encoded records.
    pub fn append(&mut self, encoded: &[u8], n: u64) -> std::io::Result<()> {
        if encoded.is_empty() {
            return Ok(());
        }
        self.file.write_all(encoded)?;
        self.records += n;
        Ok(())
    }

    /// Replaces the file with `n` encoded records (written beside it, synced, renamed
    /// over it: a crash leaves the old file or the new one).
    pub fn rewrite(&mut self, encoded: &[u8], n: u64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("journal.tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(encoded)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.records = n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends the encoding of one record.
    fn encode(out: &mut Vec<u8>, r: &Record) {
        encode_parts(out, r.mac, r.unix, r.status, r.ip, [&r.user_agent, &r.file]);
    }
    use proptest::prelude::*;

    fn record(i: u8, ua: &str) -> Record {
        Record {
            mac: Mac::from_bytes([0, 0x15, 0x65, 0, 0, i]),
            unix: 1_700_000_000 + u64::from(i),
            status: 200,
            ip: if i % 2 == 0 {
                IpAddr::from([10, 0, 0, i])
            } else {
                "2001:db8::1".parse().unwrap()
            },
            user_agent: ua.into(),
            file: format!("00156500000{i}.cfg").into(),
        }
    }

    fn open(path: &Path) -> (Journal, Vec<Record>, bool) {
        let mut got = Vec::new();
        let (j, clean) = Journal::open(path, |r| got.push(r)).unwrap();
        (j, got, clean)
    }

    fn decode_all(b: &[u8]) -> (Vec<Record>, bool) {
        let mut got = Vec::new();
        let (_, clean) = decode(b, |r| got.push(r));
        (got, clean)
    }

    #[test]
    fn a_long_text_is_cut_at_a_character_boundary() {
        // 65,535 bytes would end inside a two-byte character.
        let ua = "é".repeat(40_000);
        let mut b = Vec::new();
        encode(&mut b, &record(1, &ua));
        encode(&mut b, &record(2, "next"));
        let (got, clean) = decode_all(&b);
        assert!(clean);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].user_agent.len(), 65_534);
        assert_eq!(&*got[1].user_agent, "next");
    }

    #[test]
    fn appends_survive_a_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fetches.journal");
        let (mut j, got, clean) = open(&path);
        assert!(got.is_empty() && clean);
        let mut buf = Vec::new();
        encode(&mut buf, &record(1, "Yealink SIP-T46S 66.86.0.15"));
        encode(&mut buf, &record(2, ""));
        j.append(&buf, 2).unwrap();
        drop(j);
        let (j, got, clean) = open(&path);
        assert_eq!(
            got,
            vec![record(1, "Yealink SIP-T46S 66.86.0.15"), record(2, "")]
        );
        assert!(clean);
        assert_eq!(j.records(), 2);
        drop(j);
        // A crash in the middle of a record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&buf[..5]).unwrap();
        drop(f);
        let (mut j, got, clean) = open(&path);
        assert_eq!(got.len(), 2);
        assert!(!clean);
        let mut one = Vec::new();
        encode(&mut one, &record(3, "x"));
        j.rewrite(&one, 1).unwrap();
        let (_, got, clean) = open(&path);
        assert_eq!((got, clean), (vec![record(3, "x")], true));
    }

    #[test]
    fn a_foreign_file_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fetches.journal");
        std::fs::write(&path, b"not a journal").unwrap();
        let (_, got, clean) = open(&path);
        assert!(got.is_empty() && !clean);
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(
            junk in proptest::collection::vec(any::<u8>(), 0..200),
            ua in ".{0,40}",
            unix in any::<u64>(),
            status in any::<u16>(),
        ) {
            let _ = decode_all(&junk);
            let mut r = record(7, &ua);
            r.unix = unix;
            r.status = status;
            let mut buf = Vec::new();
            encode(&mut buf, &r);
            prop_assert_eq!(decode_all(&buf), (vec![r], true));
        }
    }
}
