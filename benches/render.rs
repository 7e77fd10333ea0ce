//! Criterion benchmarks for the hot paths of a phone fetch: MAC parsing, path matching, the
//! layered merge, the key=value overlay, template rendering per shipped model, and a whole
//! in-process fetch through the real router (warm and cold render cache).
//!
//! Run with `cargo bench --bench render`; `-- --test` runs each benchmark once.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoprov::model::settings::{self as st, Settings};
use autoprov::model::{Account, Catalogue, Domain, Format, Layer, Mac, Merged, Overrides, Phone};
use autoprov::render::{Engine, LineInput, PhoneInput, RenderContext};
use autoprov::store::Change;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn load() -> (Engine, Catalogue) {
    let engine = Engine::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/templates")))
        .expect("templates load");
    let catalogue = Catalogue::load(&repo("models"), &|t| engine.has(t)).expect("models load");
    (engine, catalogue)
}

/// Modest settings so the whole file runs in a few minutes on a small machine.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.sample_size(30);
    g
}

fn settings(pairs: &[(&str, &str)]) -> Settings {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Five overrides for a Yealink `{mac}.cfg`: three replace generated keys, two are appended.
fn overrides() -> Overrides {
    settings(&[
        ("account.1.label", "Reception"),
        ("account.1.sip_server.1.expires", "300"),
        ("local_time.ntp_server1", "ntp.example.com"),
        ("features.dnd.enable", "1"),
        ("phone_setting.backlight_time", "60"),
    ])
}

/// `1..=ports.min(2)` accounts on consecutive ports, the first the primary owner (as in
/// `autoprov::reload::check_samples`), plus a domain with a SIP server.
struct SamplePhone {
    domain: Domain,
    phone: Phone,
    accounts: Vec<Account>,
}

impl SamplePhone {
    fn new(model: &autoprov::model::Model) -> Self {
        let domain = Domain {
            name: "example.com".into(),
            settings: settings(&[(st::CORE_SERVER, "sip.example.com"), (st::TRANSPORT, "tls")]),
            ..Default::default()
        };
        let (phone, accounts) = autoprov::model::sample_phone(model, &domain.name);
        SamplePhone {
            domain,
            phone,
            accounts,
        }
    }

    fn input<'a>(
        &'a self,
        model: &'a autoprov::model::Model,
        server: &'a Settings,
    ) -> PhoneInput<'a> {
        PhoneInput {
            model,
            server,
            domain: Some(&self.domain),
            phone: Some(&self.phone),
            lines: self
                .phone
                .members
                .iter()
                .zip(&self.accounts)
                .map(|(member, account)| LineInput { member, account })
                .collect(),
        }
    }
}

fn mac_parse(c: &mut Criterion) {
    let hostile = "0".repeat(4096);
    let inputs = [
        ("plain", "001565aabbcc"),
        ("colon", "00:15:65:AA:BB:CC"),
        ("cisco", "0015.65aa.bbcc"),
        ("hostile-4KiB", hostile.as_str()),
    ];
    let mut g = group(c, "mac_parse");
    for (name, s) in inputs {
        g.bench_with_input(BenchmarkId::from_parameter(name), s, |b, s| {
            b.iter(|| Mac::parse(black_box(s)))
        });
    }
    g.finish();
}

fn path_match(c: &mut Criterion) {
    let (_engine, catalogue) = load();
    let inputs = [
        ("phone", "001565aabbcc.cfg"),
        ("common", "y000000000066.cfg"),
        ("miss", "../../etc/passwd"),
    ];
    let mut g = group(c, "path_match");
    for (name, path) in inputs {
        g.bench_with_input(BenchmarkId::from_parameter(name), path, |b, path| {
            b.iter(|| catalogue.match_path(black_box(path)))
        });
    }
    g.finish();
}

fn merge(c: &mut Criterion) {
    let builtin = st::builtin();
    let model = settings(&[
        ("ntp-server", "pool.ntp.org"),
        ("time-zone", "0"),
        ("provisioning-repeat-minutes", "1440"),
        (st::EXPIRY, "3600"),
        ("backlight-time", "30"),
        ("ringtone", "Ring1.wav"),
        ("language", "English"),
        ("lldp-enabled", "1"),
        ("vlan-id", "0"),
        ("screensaver-wait", "600"),
    ]);
    let server = settings(&[
        ("ntp-server", "ntp.provider.net"),
        (st::CORE_SERVER, "sip.provider.net"),
        (st::TRANSPORT, "tcp"),
        (st::SRTP, "opportunistic"),
        ("time-zone", "+1"),
        ("syslog-server", "log.provider.net"),
        ("firmware-url", "https://fw.provider.net/"),
        ("admin-password", "server-secret"),
        ("dst-enabled", "1"),
        ("lldp-enabled", "0"),
    ]);
    let domain = settings(&[
        (st::CORE_SERVER, "sip.example.com:5061"),
        (st::TRANSPORT, "tls"),
        (st::SRTP, "yes"),
        ("time-zone", "-5"),
        ("language", "French"),
        ("ringtone", "Ring3.wav"),
        ("dial-plan", "[2-9]xxxxxxxxx"),
        ("voicemail-number", "*97"),
        ("directory-url", "https://dir.example.com/"),
        (st::RECORDING, "yes"),
    ]);
    let phone = settings(&[
        (st::NAT, "never"),
        ("backlight-time", "0"),
        ("vlan-id", "20"),
        ("screensaver-wait", "300"),
        ("time-zone", "-6"),
        ("ringtone", "Ring5.wav"),
        ("language", "German"),
        ("wallpaper", "logo.png"),
        ("contrast", "6"),
        ("volume", "8"),
    ]);
    let line = settings(&[
        (st::EXPIRY, "120"),
        (st::EMERGENCY_CID, "+15551234567"),
        ("device-push-enabled", "no"),
        ("auto-answer-enabled", "yes"),
        (st::ALLOWED_UA, "Yealink"),
        (st::TRANSPORT, "udp"),
        (st::SIP_PORT, "5080"),
        ("ringtone", "Ring8.wav"),
        ("voicemail-number", "*98"),
        ("dial-plan", "xx."),
    ]);
    let mut g = group(c, "merge");
    g.bench_function("fold-6-layers", |b| {
        b.iter(|| {
            Merged::fold([
                (Layer::Builtin, black_box(&builtin)),
                (Layer::Model, black_box(&model)),
                (Layer::Server, black_box(&server)),
                (Layer::Domain, black_box(&domain)),
                (Layer::Phone, black_box(&phone)),
                (Layer::Line(1), black_box(&line)),
            ])
        })
    });
    g.finish();
}

fn overlay(c: &mut Criterion) {
    let (engine, catalogue) = load();
    let model = catalogue
        .get("yealink-t46s")
        .expect("yealink-t46s is shipped");
    let spec = catalogue
        .file_spec(&model.id, "{mac}.cfg")
        .expect("t46s requests {mac}.cfg");
    let sample = SamplePhone::new(model);
    let server = Settings::new();
    let ctx = RenderContext::build(&sample.input(model, &server));
    let bytes = engine
        .render(spec, &ctx, &Overrides::new())
        .expect("renders");
    let text = String::from_utf8(bytes).expect("utf-8");
    let ov = overrides();
    let mut g = group(c, "overlay");
    g.bench_function(
        BenchmarkId::new("key-value", format!("{}-lines", text.lines().count())),
        |b| {
            b.iter(|| {
                autoprov::render::overlay::apply(
                    Format::KeyValue,
                    black_box(&text),
                    black_box(&ov).iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
            })
        },
    );
    g.finish();
}

/// Context build + template render + overlay, i.e. the cache-miss work of one phone's
/// file minus the store reads: every shipped model (so every vendor), its `{mac}.cfg` where
/// it has one, else its first per-phone file (`cfg{mac}.xml`, `{mac}.xml`,
/// `snomD735-{MAC}.htm`, ...).
fn render(c: &mut Criterion) {
    let (engine, catalogue) = load();
    let server = Settings::new();
    let ov = overrides();
    let mut g = group(c, "render");
    for model in catalogue.models() {
        let per_phone = || model.files.iter().filter(|f| f.per_phone());
        let spec = per_phone()
            .find(|f| f.pattern() == "{mac}.cfg")
            .or_else(|| per_phone().next())
            .expect("every shipped model has a per-phone file");
        let sample = SamplePhone::new(model);
        let input = sample.input(model, &server);
        g.bench_function(BenchmarkId::from_parameter(&model.id), |b| {
            b.iter(|| {
                let ctx = RenderContext::build(black_box(&input));
                engine.render(spec, &ctx, &ov).expect("renders")
            })
        });
    }
    g.finish();
}

/// A running app without a socket: state, router, secrets.
struct App {
    _dir: tempfile::TempDir,
    state: autoprov::AppState,
    router: axum::Router,
    token: String,
    basic: String,
}

impl App {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = autoprov::config::Config::for_test(
            dir.path().join("data"),
            repo("models"),
            repo("templates"),
        );
        let (state, startup) = autoprov::init(&config).expect("init");
        let token = startup.new_admin_token.expect("fresh store makes a token");
        let (user, pass) = startup
            .new_provisioning_credentials
            .expect("fresh store makes credentials");
        let basic = http_auth_basic::Credentials::new(&user, &pass).as_http_header();
        let router = autoprov::http::router(state.clone());
        App {
            _dir: dir,
            state,
            router,
            token,
            basic,
        }
    }

    async fn admin_put(&self, path: &str, body: serde_json::Value) {
        let req = Request::put(format!("/api/v1{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let text = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        assert!(
            status.is_success(),
            "PUT {path}: {status} {}",
            String::from_utf8_lossy(&text)
        );
    }

    /// One phone fetch through the whole router, body drained.
    async fn fetch(&self, file: &str) -> (StatusCode, usize) {
        let req = Request::get(format!("/{file}"))
            .header(header::AUTHORIZATION, &self.basic)
            .header(
                header::USER_AGENT,
                "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc",
            )
            .body(Body::empty())
            .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, body.len())
    }

    /// Bumps the phone's revision so its cached render is no longer valid.
    fn invalidate(&self, mac: Mac) {
        let change = Change {
            touch: [mac].into(),
            ..Default::default()
        };
        self.state.store.commit(&change).expect("commit");
    }
}

fn fetch(c: &mut Criterion) {
    const FILE: &str = "001565aabbcc.cfg";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = App::start();
    let mac = Mac::parse("001565aabbcc").expect("mac");
    rt.block_on(async {
        app.admin_put(
            "/domains/example.com",
            serde_json::json!({"defaults": {"device-provisioning-registration-core-server": "sip.example.com"}}),
        )
        .await;
        app.admin_put(
            "/domains/example.com/users/1004/devices/1004a",
            serde_json::json!({
                "device-sip-registration-password": "Secret-1004a",
                "device-models-model": "yealink-t46s",
                "device-provisioning-mac-address": "00:15:65:AA:BB:CC",
            }),
        )
        .await;
        // Sanity (untimed): the first fetch renders, the second is served from the cache,
        // and an invalidated one renders again.
        let renders = app.state.cache.render_count();
        assert_eq!(app.fetch(FILE).await.0, StatusCode::OK);
        assert_eq!(app.state.cache.render_count(), renders + 1);
        assert_eq!(app.fetch(FILE).await.0, StatusCode::OK);
        assert_eq!(app.state.cache.render_count(), renders + 1);
        app.invalidate(mac);
        assert_eq!(app.fetch(FILE).await.0, StatusCode::OK);
        assert_eq!(app.state.cache.render_count(), renders + 2);
    });

    let mut g = group(c, "fetch");
    g.bench_function("warm", |b| {
        b.iter(|| rt.block_on(app.fetch(black_box(FILE))))
    });
    // Each iteration first commits a revision bump (untimed), then times one fetch, which
    // must render and write the cache entry. `iter_batched` would run a whole batch of
    // setups before the routines, leaving all but the first fetch warm, so time by hand.
    g.bench_function("cold", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                app.invalidate(mac);
                let start = Instant::now();
                black_box(rt.block_on(app.fetch(black_box(FILE))));
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(
    benches, mac_parse, path_match, merge, overlay, render, fetch
);
criterion_main!(benches);
