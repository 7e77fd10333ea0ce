//! Prometheus metrics: fixed arrays of atomic counters (no lock, no allocation, no label
//! lookup on a request) exposed at `GET /metrics` in the OpenMetrics text format through
//! `prometheus-client`. Labels come from small closed sets (request kind, status code,
//! vendor): never a MAC, a path or a User-Agent.
//!
//! Store size and phone count are read at scrape time, on a blocking thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::AppState;
use crate::auth;
use crate::error::AppError;
use crate::telemetry::RequestFacts;

/// What a request was, by its path: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A phone file (`/{file}`, GET/HEAD or a log upload PUT).
    Phone = 0,
    /// The admin API (`/api/…`).
    Admin = 1,
    /// Firmware (`/firmware/…`).
    Firmware = 2,
    /// Anything else (`/metrics`, unknown multi-segment paths).
    Other = 3,
}

/// `kind` label values, by [`Kind`] index.
pub const KINDS: [&str; 4] = ["phone", "admin", "firmware", "other"];

/// `vendor` label values: the vendors the User-Agent parser knows, then `unknown`.
pub const VENDORS: [&str; 10] = [
    "yealink",
    "polycom",
    "grandstream",
    "cisco",
    "snom",
    "fanvil",
    "htek",
    "gigaset",
    "panasonic",
    "unknown",
];

const UNKNOWN_VENDOR: usize = VENDORS.len() - 1;

/// Status codes counted: 100 to 599 (hyper answers nothing else).
const STATUS_FIRST: u16 = 100;
const STATUS_SLOTS: usize = 500;

/// Upper bounds (seconds) of the render-time histogram buckets; `+Inf` follows.
pub const RENDER_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The request's kind from its path (no allocation).
pub fn kind_of(path: &str) -> Kind {
    if path.starts_with("/api/") || path == "/api" {
        Kind::Admin
    } else if path.starts_with("/firmware/") {
        Kind::Firmware
    } else if path == "/metrics" {
        Kind::Other
    } else if path.len() > 1 && !path[1..].contains('/') {
        Kind::Phone
    } else {
        Kind::Other
    }
}

/// The `vendor` label index of a vendor name (`unknown` for any other).
pub fn vendor_index(vendor: Option<&str>) -> usize {
    vendor
        .and_then(|v| VENDORS[..UNKNOWN_VENDOR].iter().position(|k| *k == v))
        .unwrap_or(UNKNOWN_VENDOR)
}

/// All counters. Cheap to share: the state holds it in an `Arc`.
#[derive(Debug)]
pub struct Counters {
    /// `[kind][vendor][status - 100]`, flattened.
    requests: Box<[AtomicU64]>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Per bucket (not cumulative); the last is `+Inf`.
    render_buckets: [AtomicU64; RENDER_BUCKETS.len() + 1],
    render_count: AtomicU64,
    render_nanos: AtomicU64,
    unknown_mac: AtomicU64,
    /// `[phone, admin]`.
    auth_failures: [AtomicU64; 2],
    throttled: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: (0..KINDS.len() * VENDORS.len() * STATUS_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            render_buckets: Default::default(),
            render_count: AtomicU64::new(0),
            render_nanos: AtomicU64::new(0),
            unknown_mac: AtomicU64::new(0),
            auth_failures: Default::default(),
            throttled: AtomicU64::new(0),
        }
    }
}

/// The metrics and the token that guards them.
#[derive(Debug)]
pub struct Metrics {
    counters: Arc<Counters>,
    /// SHA-256 of `metrics-token`, when one is set.
    token_hash: Option<[u8; 32]>,
}

impl Metrics {
    /// Metrics guarded by `token` (open when `None`).
    pub fn new(token: Option<&str>) -> Self {
        Metrics {
            counters: Arc::default(),
            token_hash: token.map(auth::hash),
        }
    }

    /// Counts a finished request.
    pub fn request(&self, kind: Kind, vendor: usize, status: u16) {
        let Some(s) = status.checked_sub(STATUS_FIRST).map(usize::from) else {
            return;
        };
        if s >= STATUS_SLOTS || vendor >= VENDORS.len() {
            return;
        }
        let i = ((kind as usize) * VENDORS.len() + vendor) * STATUS_SLOTS + s;
        if let Some(c) = self.counters.requests.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// A file served from the render cache.
    pub fn cache_hit(&self) {
        self.counters.cache_hits.fetch_add(1, Relaxed);
    }

    /// A file rendered now (cache miss).
    pub fn cache_miss(&self) {
        self.counters.cache_misses.fetch_add(1, Relaxed);
    }

    /// One render's time.
    pub fn rendered(&self, took: Duration) {
        let c = &self.counters;
        let secs = took.as_secs_f64();
        let b = RENDER_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(RENDER_BUCKETS.len());
        c.render_buckets[b].fetch_add(1, Relaxed);
        c.render_count.fetch_add(1, Relaxed);
        c.render_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// A request naming a MAC that no phone has (with the server-default credentials).
    pub fn unknown_mac(&self) {
        self.counters.unknown_mac.fetch_add(1, Relaxed);
    }

    /// A failed authentication: a phone's presented credential that is wrong, or an admin
    /// request with a missing or wrong token.
    pub fn auth_failure(&self, kind: Kind) {
        let i = usize::from(kind == Kind::Admin);
        self.counters.auth_failures[i].fetch_add(1, Relaxed);
    }

    /// A phone request refused by the failure throttle (429).
    pub fn throttled(&self) {
        self.counters.throttled.fetch_add(1, Relaxed);
    }

    /// Whether `headers` may read the metrics.
    fn allowed(&self, headers: &HeaderMap) -> bool {
        let Some(hash) = &self.token_hash else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| auth::bearer(v.as_bytes()))
            .is_some_and(|t| auth::matches_hash(t, hash))
    }

    /// The exposition (OpenMetrics text, ending in `# EOF`).
    pub fn encode(&self, gauges: Gauges) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot {
            counters: self.counters.clone(),
            gauges,
        }));
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// Sizes read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Store size on disk.
    pub store_bytes: u64,
    /// Phones in the store.
    pub phones: u64,
    /// The fetch path's memory tiers: (`files` | `gates`, bytes weighed, entries).
    pub tiers: [(&'static str, u64, u64); 2],
    /// Rendered files not yet written to the store's render tree.
    pub unwritten: u64,
}

/// What one scrape reports.
#[derive(Debug)]
struct Snapshot {
    counters: Arc<Counters>,
    gauges: Gauges,
}

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// `autoprov_requests`: one sample per (kind, status, vendor) seen at least once.
fn requests(e: &mut DescriptorEncoder<'_>, c: &Counters) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(
        "autoprov_requests",
        "Requests answered, by kind (phone, admin, firmware, other), status and vendor (from the User-Agent)",
        None,
        MetricType::Counter,
    )?;
    for (i, n) in c.requests.iter().enumerate() {
        let v = n.load(Relaxed);
        if v == 0 {
            continue;
        }
        let status = (i % STATUS_SLOTS) as u16 + STATUS_FIRST;
        let vendor = VENDORS[(i / STATUS_SLOTS) % VENDORS.len()];
        let kind = KINDS[i / STATUS_SLOTS / VENDORS.len()];
        let status = status.to_string();
        let labels = [
            ("kind", kind),
            ("status", status.as_str()),
            ("vendor", vendor),
        ];
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `autoprov_render`: the time to render a phone file on a cache miss, as a histogram.
fn render_histogram(e: &mut DescriptorEncoder<'_>, c: &Counters) -> Result<(), std::fmt::Error> {
    let mut buckets: Vec<(f64, u64)> = RENDER_BUCKETS
        .iter()
        .zip(&c.render_buckets)
        .map(|(le, n)| (*le, n.load(Relaxed)))
        .collect();
    buckets.push((
        f64::MAX,
        c.render_buckets[RENDER_BUCKETS.len()].load(Relaxed),
    ));
    // The count is the buckets' sum, so the two always agree within one scrape.
    let count = buckets.iter().map(|(_, n)| n).sum();
    let sum = c.render_nanos.load(Relaxed) as f64 / 1e9;
    let mut m = e.encode_descriptor(
        "autoprov_render",
        "Time to render a phone file on a cache miss",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
}

/// `autoprov_auth_failures`: by kind, phone and admin (both always present).
fn auth_failures(e: &mut DescriptorEncoder<'_>, c: &Counters) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(
        "autoprov_auth_failures",
        "Failed authentications: a wrong phone credential, a missing or wrong admin token",
        None,
        MetricType::Counter,
    )?;
    for (kind, n) in [
        ("phone", &c.auth_failures[0]),
        ("admin", &c.auth_failures[1]),
    ] {
        ConstCounter::new(n.load(Relaxed)).encode(m.encode_family(&[("kind", kind)])?)?;
    }
    Ok(())
}

/// A gauge of `v`, capped at `i64::MAX`.
fn gauge(v: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// `autoprov_memory_tier_size` and `autoprov_memory_tier_entries`, one sample per tier.
fn memory_tiers(e: &mut DescriptorEncoder<'_>, g: &Gauges) -> Result<(), std::fmt::Error> {
    for (name, help, unit, pick) in [
        (
            "autoprov_memory_tier_size",
            "Bytes held by the fetch path's memory tiers (files: packed rendered files; gates: per-phone revision and credentials)",
            Some(&Unit::Bytes),
            (|t: &(&str, u64, u64)| t.1) as fn(&(&str, u64, u64)) -> u64,
        ),
        (
            "autoprov_memory_tier_entries",
            "Entries in the fetch path's memory tiers",
            None,
            |t: &(&str, u64, u64)| t.2,
        ),
    ] {
        let mut m = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for t in &g.tiers {
            gauge(pick(t)).encode(m.encode_family(&[("tier", t.0)])?)?;
        }
    }
    Ok(())
}

/// The store's gauges: size on disk, phones, and renders not yet written.
fn store_gauges(e: &mut DescriptorEncoder<'_>, g: &Gauges) -> Result<(), std::fmt::Error> {
    for (v, name, help, unit) in [
        (
            g.store_bytes,
            "autoprov_store_size",
            "Size of the store on disk",
            Some(&Unit::Bytes),
        ),
        (g.phones, "autoprov_phones", "Phones in the store", None),
        (
            g.unwritten,
            "autoprov_renders_unwritten",
            "Rendered files served from memory and not yet written to the store (written when renders pause)",
            None,
        ),
    ] {
        let g = gauge(v);
        g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        requests(&mut e, c)?;
        counter(
            &mut e,
            "autoprov_cache_hits",
            "Phone files served from the render cache",
            c.cache_hits.load(Relaxed),
        )?;
        counter(
            &mut e,
            "autoprov_cache_misses",
            "Phone files rendered because the cache had no valid entry",
            c.cache_misses.load(Relaxed),
        )?;
        render_histogram(&mut e, c)?;
        counter(
            &mut e,
            "autoprov_unknown_mac_requests",
            "Requests naming a MAC no phone has, made with the server-default credentials",
            c.unknown_mac.load(Relaxed),
        )?;
        auth_failures(&mut e, c)?;
        counter(
            &mut e,
            "autoprov_throttled_requests",
            "Phone requests refused with 429 by the failed-authentication throttle",
            c.throttled.load(Relaxed),
        )?;
        memory_tiers(&mut e, &self.gauges)?;
        store_gauges(&mut e, &self.gauges)
    }
}

/// Counts every request by kind, status and vendor (the phone handler names the vendor in
/// its [`RequestFacts`]), and admin 401s as authentication failures.
pub fn count_request(st: &AppState, kind: Kind, resp: &Response, facts: Option<&RequestFacts>) {
    let status = resp.status().as_u16();
    let vendor = vendor_index(facts.and_then(|f| f.vendor));
    st.metrics.request(kind, vendor, status);
    if kind == Kind::Admin && status == 401 {
        st.metrics.auth_failure(Kind::Admin);
    }
}

/// `GET /metrics`: the exposition; with `metrics-token` set, only for
/// `Authorization: Bearer <metrics-token>` (401 otherwise).
pub async fn scrape(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !st.metrics.allowed(&headers) {
        return AppError::Unauthorized.into_response();
    }
    let s = st.clone();
    let sizes =
        tokio::task::spawn_blocking(move || (s.store.size_on_disk(), s.store.phone_count() as u64))
            .await
            .unwrap_or((0, 0));
    let gauges = Gauges {
        store_bytes: sizes.0,
        phones: sizes.1,
        tiers: [st.cache.memory(), st.store.gate_memory()],
        unwritten: st.cache.behind().0,
    };
    match st.metrics.encode(gauges) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(_) => AppError::Io {
            what: "encoding the metrics",
            source: std::io::Error::other("formatting failed"),
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of("/api/v1/phones"), Kind::Admin);
        assert_eq!(kind_of("/001565aabbcc.cfg"), Kind::Phone);
        assert_eq!(kind_of("/metrics"), Kind::Other);
        assert_eq!(kind_of("/firmware/t46s.rom"), Kind::Firmware);
        assert_eq!(kind_of("/"), Kind::Other);
        assert_eq!(kind_of("/a/b"), Kind::Other);
        assert_eq!(vendor_index(Some("snom")), 4);
        assert_eq!(vendor_index(Some("acme")), UNKNOWN_VENDOR);
        assert_eq!(vendor_index(None), UNKNOWN_VENDOR);
    }

    #[test]
    fn exposition() {
        let m = Metrics::new(None);
        m.request(Kind::Phone, 0, 200);
        m.request(Kind::Phone, 0, 200);
        m.request(Kind::Admin, UNKNOWN_VENDOR, 401);
        m.request(Kind::Other, 0, 42); // out of range: ignored, no panic
        m.rendered(Duration::from_millis(3));
        let text = m
            .encode(Gauges {
                store_bytes: 1234,
                phones: 5,
                tiers: [("files", 300, 1), ("gates", 200, 1)],
                unwritten: 7,
            })
            .unwrap();
        assert!(text.contains(
            "autoprov_requests_total{kind=\"phone\",status=\"200\",vendor=\"yealink\"} 2\n"
        ));
        assert!(text.contains(
            "autoprov_requests_total{kind=\"admin\",status=\"401\",vendor=\"unknown\"} 1\n"
        ));
        assert!(text.contains("autoprov_render_seconds_count 1\n"));
        assert!(text.contains("autoprov_render_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("autoprov_render_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("autoprov_store_size_bytes 1234\n"));
        assert!(text.contains("autoprov_phones 5\n"));
        assert!(text.contains("autoprov_renders_unwritten 7\n"));
        assert!(text.contains("autoprov_memory_tier_size_bytes{tier=\"files\"} 300\n"));
        assert!(text.contains("autoprov_memory_tier_entries{tier=\"gates\"} 1\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
