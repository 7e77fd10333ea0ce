//! The rules a stored record obeys whatever brought it in: names, one-line text, settings
//! values, credentials, members and overrides. The admin API and bulk rows check each field
//! as they read it; a full export (a backup anyone could have edited) arrives as whole
//! records and is checked here, so nothing reaches the store that the API would refuse.

use super::records::{Account, Domain, Member, Phone, PreviousCredentials};
use super::settings::{self, Settings};

/// Longest domain and device names, and user names (the seed API's limits).
pub const DOMAIN_MAX: usize = 64;
/// Longest user (extension) name.
pub const USER_MAX: usize = 16;
/// Longest device name.
pub const DEVICE_MAX: usize = 64;
/// Highest port number a member may name.
pub const PORT_MAX: u32 = 1024;
/// Most ports one member may span.
pub const WEIGHT_MAX: u32 = 64;

/// A broken rule: the record field (as it is spelled in an export) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, e.g. `members[0].lineLabel` or `settings.<key>`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks an override key and value for a model (`None`: not linked to one yet).
pub type OverrideCheck<'a> = &'a dyn Fn(Option<&str>, &str, &str) -> Result<(), String>;

/// What the rules need to know beyond a record: whether a model exists (and its ports),
/// and whether an override fits the formats of the files it would land in.
pub struct Knowledge<'a> {
    /// The number of ports of a model, or `None` when the catalogue has no such model.
    pub ports: &'a dyn Fn(&str) -> Option<u32>,
    /// Checks an override key and value for a model (`None`: not linked to one yet).
    pub override_ok: OverrideCheck<'a>,
}

/// A name (domain, user, device): 1 to `max` of `A-Z a-z 0-9 . _ -`.
pub fn check_name(v: &str, max: usize) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("must be 1 to {max} of A-Z a-z 0-9 . _ -"))
    }
}

fn at(field: impl Into<String>) -> impl FnOnce(String) -> Violation {
    let field = field.into();
    move |message| Violation { field, message }
}

fn text(field: &str, v: &str) -> Result<(), Violation> {
    settings::check_text(v).map_err(at(field))
}

/// A credential: one line, not empty.
fn secret(field: &str, v: &str) -> Result<(), Violation> {
    if v.is_empty() {
        return Err(at(field)("must not be empty".into()));
    }
    text(field, v)
}

fn credentials(
    prefix: &str,
    user: Option<&String>,
    pass: Option<&String>,
) -> Result<(), Violation> {
    let (uf, pf) = (format!("{prefix}username"), format!("{prefix}password"));
    if user.is_some() != pass.is_some() {
        return Err(at(pf)("username and password are set together".into()));
    }
    user.map_or(Ok(()), |u| secret(&uf, u))?;
    pass.map_or(Ok(()), |p| secret(&pf, p))
}

fn previous(p: Option<&PreviousCredentials>) -> Result<(), Violation> {
    let Some(p) = p else { return Ok(()) };
    secret("previousCredentials.username", &p.username)?;
    secret("previousCredentials.password", &p.password)
}

fn settings_ok(s: &Settings) -> Result<(), Violation> {
    for (k, v) in s {
        let field = format!("settings.{k}");
        if !settings::valid_key(k) {
            return Err(at(field)("is not a setting key".into()));
        }
        settings::check_value(k, v).map_err(at(field))?;
    }
    Ok(())
}

fn overrides_ok<'o>(
    k: &Knowledge<'_>,
    model: Option<&str>,
    ov: impl IntoIterator<Item = (&'o String, &'o String)>,
) -> Result<(), Violation> {
    for (key, v) in ov {
        (k.override_ok)(model, key, v).map_err(at(format!("overrides.{key}")))?;
    }
    Ok(())
}

/// A domain record.
pub fn check_domain(d: &Domain) -> Result<(), Violation> {
    check_name(&d.name, DOMAIN_MAX).map_err(at("name"))?;
    settings_ok(&d.settings)?;
    credentials(
        "provisioning_",
        d.provisioning_username.as_ref(),
        d.provisioning_password.as_ref(),
    )?;
    credentials(
        "bootstrap_",
        d.bootstrap_username.as_ref(),
        d.bootstrap_password.as_ref(),
    )?;
    previous(d.previous_credentials.as_ref())?;
    for (i, c) in d.allowed_cidrs.iter().enumerate() {
        if c.parse::<ipnet::IpNet>().is_err() {
            return Err(at(format!("allowed_cidrs[{i}]"))(format!(
                "{c:?} is not a CIDR block"
            )));
        }
    }
    Ok(())
}

/// An account record (its overrides checked for no model: the phone's model is checked
/// when the phone is).
pub fn check_account(a: &Account, k: &Knowledge<'_>) -> Result<(), Violation> {
    check_name(&a.domain, DOMAIN_MAX).map_err(at("domain"))?;
    check_name(&a.user, USER_MAX).map_err(at("user"))?;
    check_name(&a.device, DEVICE_MAX).map_err(at("device"))?;
    secret("password", &a.password)?;
    settings_ok(&a.settings)?;
    if let Some(e) = &a.emergency_address_id {
        text("emergency_address_id", e)?;
    }
    credentials(
        "provisioning_",
        a.provisioning_username.as_ref(),
        a.provisioning_password.as_ref(),
    )?;
    overrides_ok(k, None, a.overrides.iter().flatten())
}

fn member_ok(i: usize, m: &Member, ports: u32, members: &[Member]) -> Result<(), Violation> {
    let f = |name: &str| format!("members[{i}].{name}");
    if m.port == 0 || m.port > ports.min(PORT_MAX) {
        return Err(at(f("port"))(format!("must be from 1 to {ports}")));
    }
    if members[..i].iter().any(|o| o.port == m.port) {
        return Err(at(f("port"))(format!("port {} is used twice", m.port)));
    }
    if m.line_weight == 0 || m.line_weight > WEIGHT_MAX {
        return Err(at(f("lineWeight"))(format!(
            "must be from 1 to {WEIGHT_MAX}"
        )));
    }
    if m.ports().any(|p| p > ports) {
        return Err(at(f("lineWeight"))(format!(
            "ports {} to {} run past the model's {ports}",
            m.port,
            m.port.saturating_add(m.line_weight.saturating_sub(1))
        )));
    }
    if m.id.is_empty() {
        return Err(at(f("id"))("is required".into()));
    }
    text(&f("id"), &m.id)?;
    text(&f("lineLabel"), &m.line_label)?;
    text(&f("hotlineDestination"), &m.hotline_destination)
}

/// Why a member cannot take its place on a phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misplaced {
    /// Its ports run outside the model's.
    DoesNotFit(String),
    /// Another member holds one of its ports.
    Taken(String),
}

impl Misplaced {
    /// What is wrong, in words.
    pub fn message(&self) -> &str {
        match self {
            Misplaced::DoesNotFit(m) | Misplaced::Taken(m) => m,
        }
    }
}

/// Whether `m` fits on `phone` of model `model` (`ports` ports): inside the model's ports,
/// and on no port another member (another account) holds.
pub fn place(phone: &Phone, model: &str, ports: u32, m: &Member) -> Result<(), Misplaced> {
    let last = m.port.saturating_add(m.line_weight.max(1) - 1);
    if m.port == 0 || last > ports {
        return Err(Misplaced::DoesNotFit(format!(
            "port {} with lineWeight {} does not fit the {ports} ports of {model}",
            m.port, m.line_weight
        )));
    }
    match phone
        .members
        .iter()
        .find(|o| o.id != m.id && o.ports().any(|p| m.ports().contains(&p)))
    {
        Some(o) => Err(Misplaced::Taken(format!(
            "port {} is taken by {}",
            m.port, o.id
        ))),
        None => Ok(()),
    }
}

/// A phone record: its model must exist, its members fit the model's ports.
pub fn check_phone(p: &Phone, k: &Knowledge<'_>) -> Result<(), Violation> {
    let ports = match (k.ports)(&p.model) {
        Some(n) => n,
        None => {
            return Err(at("model")(format!(
                "unknown model {:?}; see `autoprov models`",
                p.model
            )));
        }
    };
    if let Some(d) = &p.domain {
        check_name(d, DOMAIN_MAX).map_err(at("domain"))?;
    }
    credentials(
        "provisioning_",
        p.provisioning_username.as_ref(),
        p.provisioning_password.as_ref(),
    )?;
    previous(p.previous_credentials.as_ref())?;
    settings_ok(&p.settings)?;
    overrides_ok(k, Some(&p.model), &p.overrides)?;
    for (i, m) in p.members.iter().enumerate() {
        member_ok(i, m, ports, &p.members)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knows() -> Knowledge<'static> {
        Knowledge {
            ports: &|m| match m {
                "yealink-t46s" => Some(16),
                "big" => Some(100),
                _ => None,
            },
            override_ok: &|_, k, v| {
                settings::check_text(v)?;
                if k.contains('=') {
                    Err("bad key".into())
                } else {
                    Ok(())
                }
            },
        }
    }

    fn phone() -> Phone {
        let mut p = Phone::new("001565aabbcc".parse().unwrap(), "yealink-t46s".into());
        p.members.push(Member::new(1, "1004a@example.com".into()));
        p
    }

    #[test]
    fn names() {
        assert!(check_name("a.b_c-1", 8).is_ok());
        for bad in ["", "a b", "a/b", "..x/", "é", "123456789", "a\n"] {
            assert!(check_name(bad, 8).is_err(), "{bad:?}");
        }
        assert!(check_name("12345678", 8).is_ok(), "exactly the maximum");
    }

    #[test]
    fn a_clean_phone_passes_and_each_hostile_field_is_named() {
        let k = knows();
        assert_eq!(check_phone(&phone(), &k), Ok(()));
        for (field, edit) in hostile_edits() {
            let mut p = phone();
            edit(&mut p);
            let v = check_phone(&p, &k).expect_err(field);
            assert_eq!(v.field, field, "{v}");
        }
    }

    /// The limits themselves are allowed: the last port, the widest line, and a message
    /// that names its field.
    #[test]
    fn limits_are_inclusive() {
        let k = knows();
        let with = |model: &str, port: u32, weight: u32| {
            let mut p = phone();
            p.model = model.into();
            p.members[0].port = port;
            p.members[0].line_weight = weight;
            check_phone(&p, &k).map_err(|v| v.field)
        };
        assert_eq!(with("yealink-t46s", 16, 1), Ok(()));
        assert_eq!(with("yealink-t46s", 15, 2), Ok(()));
        assert_eq!(
            with("yealink-t46s", 15, 3),
            Err("members[0].lineWeight".into())
        );
        assert_eq!(with("yealink-t46s", 17, 1), Err("members[0].port".into()));
        assert_eq!(with("big", 1, WEIGHT_MAX), Ok(()));
        assert_eq!(
            with("big", 1, WEIGHT_MAX + 1),
            Err("members[0].lineWeight".into())
        );
        assert_eq!(with("big", 1, 0), Err("members[0].lineWeight".into()));
        let mut p = phone();
        p.members[0].line_label = "a\rb".into();
        let v = check_phone(&p, &k).unwrap_err();
        assert_eq!(
            v.to_string(),
            format!("members[0].lineLabel: {}", v.message)
        );
        assert!(v.message.contains("control characters"), "{v}");
    }

    #[test]
    fn replaced_credentials_obey_the_rules_too() {
        let k = knows();
        let prev = |u: &str, pw: &str| {
            let mut p = phone();
            p.previous_credentials = Some(PreviousCredentials {
                username: u.into(),
                password: pw.into(),
                until: 1,
            });
            check_phone(&p, &k).map_err(|v| v.field)
        };
        assert_eq!(prev("u", "p"), Ok(()));
        assert_eq!(prev("u", ""), Err("previousCredentials.password".into()));
        assert_eq!(prev("u\n", "p"), Err("previousCredentials.username".into()));
        let d = Domain {
            name: "example.com".into(),
            previous_credentials: Some(PreviousCredentials::default()),
            ..Default::default()
        };
        assert_eq!(
            check_domain(&d).map_err(|v| v.field),
            Err("previousCredentials.username".into())
        );
    }

    #[test]
    fn placing_a_member() {
        let p = phone();
        let mut m = Member::new(2, "1005a@example.com".into());
        assert_eq!(place(&p, "t", 16, &m), Ok(()));
        m.line_weight = 15;
        assert_eq!(place(&p, "t", 16, &m), Ok(()), "ports 2 to 16");
        m.line_weight = 16;
        let e = place(&p, "t", 16, &m).unwrap_err();
        assert!(matches!(e, Misplaced::DoesNotFit(_)), "{e:?}");
        assert_eq!(
            e.message(),
            "port 2 with lineWeight 16 does not fit the 16 ports of t"
        );
        m.port = 0;
        m.line_weight = 1;
        assert!(matches!(
            place(&p, "t", 16, &m),
            Err(Misplaced::DoesNotFit(_))
        ));
        m.port = 1;
        let e = place(&p, "t", 16, &m).unwrap_err();
        assert_eq!(
            e,
            Misplaced::Taken("port 1 is taken by 1004a@example.com".into())
        );
        m.id = "1004a@example.com".into();
        assert_eq!(place(&p, "t", 16, &m), Ok(()), "its own port is not taken");
    }

    type Edit = Box<dyn Fn(&mut Phone)>;

    /// One edit of a clean phone per rule, with the field its refusal names.
    fn hostile_edits() -> Vec<(&'static str, Edit)> {
        vec![
            (
                "members[0].lineLabel",
                Box::new(|p| p.members[0].line_label = "x\ny".into()),
            ),
            (
                "members[0].id",
                Box::new(|p| p.members[0].id = String::new()),
            ),
            (
                "members[0].hotlineDestination",
                Box::new(|p| p.members[0].hotline_destination = "\u{85}".into()),
            ),
            ("members[0].port", Box::new(|p| p.members[0].port = 17)),
            ("members[0].port", Box::new(|p| p.members[0].port = 0)),
            (
                "members[0].lineWeight",
                Box::new(|p| p.members[0].line_weight = 17),
            ),
            (
                "members[1].port",
                Box::new(|p| p.members.push(Member::new(1, "b".into()))),
            ),
            ("model", Box::new(|p| p.model = "yealink-t99".into())),
            ("domain", Box::new(|p| p.domain = Some("a\rb".into()))),
            (
                "provisioning_password",
                Box::new(|p| p.provisioning_username = Some("u".into())),
            ),
            (
                "provisioning_password",
                Box::new(|p| {
                    p.provisioning_username = Some("u".into());
                    p.provisioning_password = Some("p\u{2028}\0".into());
                }),
            ),
            (
                "settings.x y",
                Box::new(|p| {
                    p.settings.insert("x y".into(), "1".into());
                }),
            ),
            (
                "settings.device-provisioning-sip-transport-protocol",
                Box::new(|p| {
                    p.settings.insert(
                        "device-provisioning-sip-transport-protocol".into(),
                        "carrier-pigeon".into(),
                    );
                }),
            ),
            (
                "overrides.a=b",
                Box::new(|p| {
                    p.overrides.insert("a=b".into(), "1".into());
                }),
            ),
            (
                "overrides.k",
                Box::new(|p| {
                    p.overrides.insert("k".into(), "1\n2".into());
                }),
            ),
        ]
    }

    #[test]
    fn accounts() {
        let k = knows();
        let a = Account {
            domain: "example.com".into(),
            user: "1004".into(),
            device: "1004a".into(),
            password: "pw".into(),
            ..Default::default()
        };
        assert_eq!(check_account(&a, &k), Ok(()));
        let bad = [
            (
                "password",
                Account {
                    password: String::new(),
                    ..a.clone()
                },
            ),
            (
                "password",
                Account {
                    password: "a\u{7f}".into(),
                    ..a.clone()
                },
            ),
            (
                "user",
                Account {
                    user: "12345678901234567".into(),
                    ..a.clone()
                },
            ),
            (
                "device",
                Account {
                    device: "a b".into(),
                    ..a.clone()
                },
            ),
            (
                "domain",
                Account {
                    domain: String::new(),
                    ..a.clone()
                },
            ),
            (
                "emergency_address_id",
                Account {
                    emergency_address_id: Some("\t".into()),
                    ..a.clone()
                },
            ),
        ];
        for (field, acc) in bad {
            assert_eq!(
                check_account(&acc, &k).map_err(|v| v.field),
                Err(field.into())
            );
        }
    }

    #[test]
    fn domains() {
        let d = Domain {
            name: "example.com".into(),
            ..Default::default()
        };
        assert_eq!(check_domain(&d), Ok(()));
        let bad = [
            (
                "name",
                Domain {
                    name: "a\nb".into(),
                    ..d.clone()
                },
            ),
            (
                "allowed_cidrs[0]",
                Domain {
                    allowed_cidrs: vec!["10.0.0.0/33".into()],
                    ..d.clone()
                },
            ),
            (
                "bootstrap_password",
                Domain {
                    bootstrap_username: Some("b".into()),
                    ..d.clone()
                },
            ),
        ];
        for (field, dom) in bad {
            assert_eq!(check_domain(&dom).map_err(|v| v.field), Err(field.into()));
        }
    }
}
