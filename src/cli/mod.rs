//! The admin subcommands of the `autoprov` binary (everything but `serve`).
//!
//! Each works on the data folder (`--data`) of a stopped server, or on a running server
//! with `--url` and `--token`. Both paths go through the admin API's handlers (in-process
//! on the data folder), so the rules and messages are the API's; errors are reworded to
//! name the CLI argument that carried the bad value. Exceptions that need no API:
//! `export`/`import` of a full store dump and `token` on a data folder (store only), and
//! `models` on a data folder (models folder only).

mod api;
pub mod tokens;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::admin::bulk::{self, RowError};
use crate::args::{
    AccountCommand, Cli, Command, ExportFormat, ImportFormat, MembersCommand, PhoneCommand,
    RenderArgs, TokenCommand,
};
use crate::config::Config;
use api::{Api, Reply, api_error, seg};

/// Runs one admin subcommand.
pub async fn run(cli: &Cli, config: &Config, cmd: Command) -> anyhow::Result<()> {
    let remote = cli.remote.url.as_deref();
    let connect = |create: bool| -> anyhow::Result<Api> {
        match remote {
            Some(url) => Api::remote(url, cli.remote.token.as_deref()),
            None => Api::local(config, create),
        }
    };
    match cmd {
        Command::Serve => bail!("internal: serve is not an admin subcommand"),
        Command::Token(t) => match remote {
            None => {
                let out = tokens::run_cli(config, &t)
                    .map_err(|e| api::locked_hint(anyhow::Error::new(e)))?;
                print!("{out}");
                Ok(())
            }
            Some(_) => token_remote(&connect(false)?, &t).await,
        },
        Command::Export { output, format } => export(cli, config, output.as_deref(), format).await,
        Command::Import {
            replace,
            format,
            file,
        } => import(cli, config, &file, format, replace).await,
        Command::Phone(p) => phone(&connect(matches!(p, PhoneCommand::Link { .. }))?, p).await,
        Command::Members(MembersCommand::Set { mac, json, member }) => {
            members_set(&connect(false)?, &mac, json.as_deref(), &member).await
        }
        Command::Account(a) => account(&connect(true)?, a).await,
        Command::Render(r) => render(&connect(false)?, &r).await,
        Command::Models(m) => models(cli, config, m.json).await,
    }
}

// ---------------------------------------------------------------- output helpers

fn out(text: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| anyhow!("writing to stdout: {e}"))
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    out(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ))
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let mut s = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                l.push_str(&format!("{c:<width$}  ", width = w[i]));
            } else {
                l.push_str(c);
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    s
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The phone routes' field names → CLI arguments.
fn phone_names(f: &str) -> Option<String> {
    Some(
        match f {
            "mac" => "<mac>",
            "device-models-model" => "--model",
            "domain" => "--domain",
            _ => return None,
        }
        .into(),
    )
}

fn check(reply: Reply, names: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Reply> {
    if reply.ok() {
        Ok(reply)
    } else {
        Err(api_error(&reply, names))
    }
}

/// Creates `domain` when it does not exist (and says so); true when it did.
async fn ensure_domain(api: &Api, domain: &str, arg: &str) -> anyhow::Result<bool> {
    let path = format!("/domains/{}", seg(domain));
    let r = api.call(Method::GET, &path, None).await?;
    if r.status == 404 {
        check(api.json(Method::PUT, &path, &json!({})).await?, &|f| {
            (f == "domain").then(|| arg.to_string())
        })?;
        return Ok(true);
    }
    check(r, &|f| (f == "domain").then(|| arg.to_string()))?;
    Ok(false)
}

/// After the write that needed it: a domain this command created is kept (and reported)
/// when the write succeeded, removed again when it failed, so a refused command changes
/// nothing.
async fn settle_domain<T>(
    api: &Api,
    domain: &str,
    created: bool,
    outcome: anyhow::Result<T>,
) -> anyhow::Result<T> {
    if created {
        match &outcome {
            Ok(_) => eprintln!("autoprov: created domain {domain}"),
            Err(_) => {
                let _ = api
                    .call(Method::DELETE, &format!("/domains/{}", seg(domain)), None)
                    .await;
            }
        }
    }
    outcome
}

// ---------------------------------------------------------------- phone

async fn phone(api: &Api, cmd: PhoneCommand) -> anyhow::Result<()> {
    match cmd {
        PhoneCommand::Link { mac, model, domain } => {
            phone_link(api, &mac, &model, domain.as_deref()).await
        }
        PhoneCommand::Show { mac, json } => phone_show(api, &mac, json).await,
        PhoneCommand::List {
            domain,
            model,
            json,
        } => phone_list(api, domain.as_deref(), model.as_deref(), json).await,
        PhoneCommand::Delete { mac } => phone_delete(api, &mac).await,
    }
}

/// `phone link`: creates the phone or updates its model and domain; a domain this command
/// created is removed again when the phone write is refused.
async fn phone_link(api: &Api, mac: &str, model: &str, domain: Option<&str>) -> anyhow::Result<()> {
    let mut body = json!({ "device-models-model": model });
    let mut created = false;
    if let Some(d) = domain {
        created = ensure_domain(api, d, "--domain").await?;
        body["domain"] = json!(d);
    }
    let put = async {
        check(
            api.json(Method::PUT, &format!("/phones/{}", seg(mac)), &body)
                .await?,
            &phone_names,
        )
    };
    let r = settle_domain(api, domain.unwrap_or(""), created, put.await).await?;
    let v = r.json()?;
    out(&format!(
        "{} {} ({}{})\n",
        if r.status == 201 {
            "created"
        } else {
            "updated"
        },
        text(&v["mac"]),
        text(&v["device-models-model"]),
        v["domain"]
            .as_str()
            .map(|d| format!(", domain {d}"))
            .unwrap_or_default()
    ))
}

/// `phone show`: one phone as the API's JSON, or as text.
async fn phone_show(api: &Api, mac: &str, json: bool) -> anyhow::Result<()> {
    let r = check(
        api.call(Method::GET, &format!("/phones/{}", seg(mac)), None)
            .await?,
        &phone_names,
    )?;
    let v = r.json()?;
    if json {
        return print_json(&v);
    }
    out(&phone_text(&v))
}

/// The text of `phone show`: the phone's fields, its overrides (when it has any) and a
/// table of its members.
fn phone_text(v: &Value) -> String {
    let mut s = String::new();
    for (label, key) in [
        ("mac", "mac"),
        ("model", "device-models-model"),
        ("domain", "domain"),
        ("server", crate::model::settings::CORE_SERVER),
        ("transport", crate::model::settings::TRANSPORT),
        ("revision", "revision"),
        ("last fetch", "last-fetch"),
    ] {
        s.push_str(&format!("{label:<11}{}\n", text(&v[key])));
    }
    if let Some(ov) = v["device-provisioning-overrides"].as_object()
        && !ov.is_empty()
    {
        s.push_str("overrides:\n");
        for (k, val) in ov {
            s.push_str(&format!("  {k} = {}\n", text(val)));
        }
    }
    let rows: Vec<Vec<String>> = v["members"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|m| {
                    vec![
                        text(&m["port"]),
                        text(&m["id"]),
                        text(&m["lineLabel"]),
                        if m["primaryOwner"] == json!(true) {
                            "yes".into()
                        } else {
                            "".into()
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    s.push_str("members:\n");
    s.push_str(&table(&["PORT", "ACCOUNT", "LABEL", "OWNER"], &rows));
    s
}

/// `phone list`: every matching phone (all pages), as JSON or a table.
async fn phone_list(
    api: &Api,
    domain: Option<&str>,
    model: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let all = all_phones(api, domain, model).await?;
    if json {
        return print_json(&json!({ "phones": all }));
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|p| {
            vec![
                text(&p["mac"]),
                text(&p["device-models-model"]),
                text(&p["domain"]),
                p["members"].as_array().map_or(0, Vec::len).to_string(),
                text(&p["revision"]),
            ]
        })
        .collect();
    out(&table(
        &["MAC", "MODEL", "DOMAIN", "LINES", "REVISION"],
        &rows,
    ))
}

/// Fetches the phones of the filters page by page, following `next` until the last page.
async fn all_phones(
    api: &Api,
    domain: Option<&str>,
    model: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec!["limit=1000".to_string()];
        if let Some(d) = domain {
            q.push(format!("domain={}", seg(d)));
        }
        if let Some(m) = model {
            q.push(format!("model={}", seg(m)));
        }
        if let Some(c) = &cursor {
            q.push(format!("cursor={}", seg(c)));
        }
        let r = check(
            api.call(Method::GET, &format!("/phones?{}", q.join("&")), None)
                .await?,
            &|f| Some(format!("--{f}")),
        )?;
        let mut v = r.json()?;
        if let Some(list) = v["phones"].as_array_mut() {
            all.append(list);
        }
        match v["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return Ok(all),
        }
    }
}

/// `phone delete`: removes the phone (its accounts stay).
async fn phone_delete(api: &Api, mac: &str) -> anyhow::Result<()> {
    check(
        api.call(Method::DELETE, &format!("/phones/{}", seg(mac)), None)
            .await?,
        &phone_names,
    )?;
    out(&format!("deleted {mac}\n"))
}

// ---------------------------------------------------------------- members

/// Parses one `--member port=1,id=…,label=…`.
fn parse_member(i: usize, spec: &str) -> anyhow::Result<Value> {
    let at = || format!("--member #{}", i + 1);
    let mut m = Map::new();
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("{}: {part:?} is not key=value", at()))?;
        let (k, v) = (k.trim(), v.trim());
        let boolean = |v: &str| match v {
            "true" | "yes" | "1" => Ok(json!(true)),
            "false" | "no" | "0" => Ok(json!(false)),
            _ => Err(anyhow!("{}: {k} must be true or false", at())),
        };
        let int = |v: &str| {
            v.parse::<u64>()
                .map(|n| json!(n))
                .map_err(|_| anyhow!("{}: {k} must be a number", at()))
        };
        let (key, val) = match k {
            "port" => ("port", int(v)?),
            "id" | "account" => ("id", json!(v)),
            "label" | "lineLabel" => ("lineLabel", json!(v)),
            "weight" | "lineWeight" => ("lineWeight", int(v)?),
            "owner" | "primaryOwner" => ("primaryOwner", boolean(v)?),
            "decline" | "allowCallDeclineEnabled" => ("allowCallDeclineEnabled", boolean(v)?),
            "t38" | "t38FaxCompressionEnabled" => ("t38FaxCompressionEnabled", boolean(v)?),
            "hotlineEnabled" => ("hotlineEnabled", boolean(v)?),
            "hotline" | "hotlineDestination" => {
                if k == "hotline" {
                    m.insert("hotlineEnabled".into(), json!(true));
                }
                ("hotlineDestination", json!(v))
            }
            "type" | "lineType" => (
                "lineType",
                json!(match v.to_ascii_lowercase().as_str() {
                    "primary" => "PRIMARY",
                    "shared" | "shared_call_appearance" | "sca" => "SHARED_CALL_APPEARANCE",
                    _ => bail!("{}: type must be primary or shared", at()),
                }),
            ),
            _ => bail!(
                "{}: unknown key {k:?}; keys: port, id, label, type, weight, owner, hotline, decline, t38",
                at()
            ),
        };
        m.insert(key.into(), val);
    }
    Ok(Value::Object(m))
}

fn read_input(file: &Path, arg: &str) -> anyhow::Result<Vec<u8>> {
    if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| anyhow!("{arg}: reading stdin: {e}"))?;
        Ok(b)
    } else {
        std::fs::read(file).map_err(|e| anyhow!("{arg}: {}: {e}", file.display()))
    }
}

async fn members_set(
    api: &Api,
    mac: &str,
    file: Option<&Path>,
    specs: &[String],
) -> anyhow::Result<()> {
    let (members, from_file) = match file {
        Some(f) => {
            let bytes = read_input(f, "--json")?;
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow!("--json: {}: not JSON: {e}", f.display()))?;
            match v {
                Value::Array(_) => (v, true),
                Value::Object(mut o) if o.contains_key("members") => {
                    (o.remove("members").unwrap_or(Value::Null), true)
                }
                _ => bail!(
                    "--json: {}: expected a list of members or {{\"members\": [...]}}",
                    f.display()
                ),
            }
        }
        None => (
            Value::Array(
                specs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| parse_member(i, s))
                    .collect::<anyhow::Result<_>>()?,
            ),
            false,
        ),
    };
    let r = check(
        api.json(
            Method::PUT,
            &format!("/phones/{}/members", seg(mac)),
            &json!({ "members": members }),
        )
        .await?,
        &|f| {
            if f == "mac" {
                return Some("<mac>".into());
            }
            // members[i].key → the argument that gave member i.
            let rest = f.strip_prefix("members[")?;
            let (i, key) = rest.split_once(']')?;
            let i: usize = i.parse().ok()?;
            Some(if from_file {
                format!("--json members[{i}]{key}")
            } else {
                format!("--member #{} {}", i + 1, key.trim_start_matches('.'))
            })
        },
    )?;
    let v = r.json()?;
    let n = v["members"].as_array().map_or(0, Vec::len);
    out(&format!("{mac}: {n} member(s) set\n"))
}

// ---------------------------------------------------------------- account

async fn account(api: &Api, cmd: AccountCommand) -> anyhow::Result<()> {
    let AccountCommand::Set {
        domain,
        user,
        device,
        password,
        mac,
        model,
        line,
        field,
        json,
    } = cmd;
    let password = read_password(password)?;
    let (mut body, named) = field_body(&field)?;
    for (key, v) in [
        (
            "device-sip-registration-password",
            password.map(|p| json!(p)),
        ),
        ("device-provisioning-mac-address", mac.map(|m| json!(m))),
        ("device-models-model", model.map(|m| json!(m))),
        ("device-provisioning-line", line.map(|l| json!(l))),
    ] {
        if let Some(v) = v {
            if body.contains_key(key) {
                bail!("--field: {key} has its own flag; give it once");
            }
            body.insert(key.into(), v);
        }
    }
    let created = ensure_domain(api, &domain, "<domain>").await?;
    let put = async {
        check(
            api.json(
                Method::PUT,
                &format!(
                    "/domains/{}/users/{}/devices/{}",
                    seg(&domain),
                    seg(&user),
                    seg(&device)
                ),
                &Value::Object(body),
            )
            .await?,
            &|f| account_names(f, &named),
        )
    };
    let r = settle_domain(api, &domain, created, put.await).await?;
    let v = r.json()?;
    if json {
        return print_json(&v);
    }
    out(&account_summary(r.status == 201, &v))
}

/// `--password -` reads the password from the first line of stdin (without its line
/// ending); any other value is the password itself.
fn read_password(password: Option<String>) -> anyhow::Result<Option<String>> {
    Ok(match password.as_deref() {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| anyhow!("--password: reading stdin: {e}"))?;
            Some(line.trim_end_matches(['\r', '\n']).to_string())
        }
        _ => password,
    })
}

/// The account body from the `--field KEY=VALUE` arguments (`null`, `true`, `false` and
/// integers as JSON, anything else a string; a key given twice is refused), with the keys
/// in the order given.
fn field_body(field: &[String]) -> anyhow::Result<(Map<String, Value>, Vec<String>)> {
    let mut body = Map::new();
    let mut named: Vec<String> = Vec::new();
    for f in field {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--field: {f:?} is not KEY=VALUE"))?;
        let k = k.trim();
        let val = match v {
            "null" => Value::Null,
            "true" => json!(true),
            "false" => json!(false),
            _ => v
                .parse::<i64>()
                .map(|n| json!(n))
                .unwrap_or_else(|_| json!(v)),
        };
        if body.insert(k.to_string(), val).is_some() {
            bail!("--field: {k} is given twice");
        }
        named.push(k.to_string());
    }
    Ok((body, named))
}

/// The account route's field names → CLI arguments; a field outside the flags names the
/// `--field` that carried it (`named`), and none when no argument did.
fn account_names(f: &str, named: &[String]) -> Option<String> {
    Some(match f {
        "domain" => "<domain>".into(),
        "user" => "<user>".into(),
        "device" => "<device>".into(),
        "device-sip-registration-password" => "--password".into(),
        "device-provisioning-mac-address" | "mac" => "--mac".into(),
        "device-models-model" => "--model".into(),
        "device-provisioning-line" => "--line".into(),
        other => {
            let base = other.split(['.', '[']).next().unwrap_or(other);
            if named.iter().any(|n| n == base) {
                format!("--field {other}")
            } else {
                return None;
            }
        }
    })
}

/// The one-line summary of a written account: created or updated, and the phone line it
/// is linked to, if any.
fn account_summary(created: bool, v: &Value) -> String {
    let link = match (
        v["device-provisioning-mac-address"].as_str(),
        &v["device-provisioning-line"],
    ) {
        (Some(m), l) => format!(
            ", line {} of {m} ({})",
            text(l),
            text(&v["device-models-model"])
        ),
        (None, _) => ", not linked to a phone".into(),
    };
    format!(
        "{} account {}{link}\n",
        if created { "created" } else { "updated" },
        text(&v["id"])
    )
}

// ---------------------------------------------------------------- render, models

async fn render(api: &Api, r: &RenderArgs) -> anyhow::Result<()> {
    let reply = api
        .call(
            Method::GET,
            &format!("/phones/{}/files/{}", seg(&r.mac), seg(&r.file)),
            None,
        )
        .await?;
    if reply.status == 404 {
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let m = v["error"]["message"].as_str().unwrap_or("not found");
        if m.starts_with("no phone") {
            bail!("<mac>: {m}");
        }
        bail!("<file>: {}: {m}", r.file);
    }
    let reply = check(reply, &|f| (f == "mac").then(|| "<mac>".into()))?;
    let mut o = std::io::stdout().lock();
    o.write_all(&reply.body)
        .and_then(|()| o.flush())
        .map_err(|e| anyhow!("writing to stdout: {e}"))
}

async fn models(cli: &Cli, config: &Config, as_json: bool) -> anyhow::Result<()> {
    let v = match cli.remote.url.as_deref() {
        Some(url) => {
            let api = Api::remote(url, cli.remote.token.as_deref())?;
            check(api.call(Method::GET, "/models", None).await?, &|_| None)?.json()?
        }
        None => {
            let cat = load_catalogue(config)?;
            let list: Vec<Value> = cat
                .models()
                .map(|m| {
                    json!({
                        "id": m.id, "vendor": m.vendor, "name": m.name, "ports": m.ports,
                        "lineKeys": m.line_keys, "ata": m.ata,
                        "userAgentModel": m.user_agent_model,
                        "files": m.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                        "defaults": m.settings,
                    })
                })
                .collect();
            json!({ "models": list })
        }
    };
    if as_json {
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = v["models"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|m| {
                    vec![
                        text(&m["id"]),
                        text(&m["vendor"]),
                        text(&m["name"]),
                        text(&m["ports"]),
                        m["files"]
                            .as_array()
                            .map(|f| f.iter().map(text).collect::<Vec<_>>().join(" "))
                            .unwrap_or_default(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out(&table(&["ID", "VENDOR", "NAME", "PORTS", "FILES"], &rows))
}

// ---------------------------------------------------------------- tokens over HTTP

async fn token_remote(api: &Api, cmd: &TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { domain } => {
            let r = check(
                api.json(Method::POST, "/tokens", &json!({ "domain": domain }))
                    .await?,
                &|f| (f == "domain").then(|| "--domain".into()),
            )?;
            let v = r.json()?;
            out(&format!(
                "id: {}\ndomain: {}\ncreated: {}\ntoken: {}\n\
                 (the token is shown only now; only its hash is stored)\n",
                text(&v["id"]),
                text(&v["domain"]),
                text(&v["created"]),
                text(&v["token"])
            ))
        }
        TokenCommand::List => {
            let v = check(api.call(Method::GET, "/tokens", None).await?, &|_| None)?.json()?;
            let mut s = String::from("id\tdomain\tcreated\n");
            for t in v["tokens"].as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "{}\t{}\t{}\n",
                    text(&t["id"]),
                    text(&t["domain"]),
                    text(&t["created"])
                ));
            }
            out(&s)
        }
        TokenCommand::Revoke { id } => {
            let r = api
                .call(Method::DELETE, &format!("/tokens/{}", seg(id)), None)
                .await?;
            if r.status == 404 {
                bail!("<id>: no token {id}");
            }
            check(r, &|_| None)?;
            out(&format!("revoked {id}\n"))
        }
    }
}

// ---------------------------------------------------------------- export

/// Writes `bytes` to `path` (0600, via a temporary file renamed into place) or stdout.
fn write_output(output: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    let Some(path) = output else {
        let mut o = std::io::stdout().lock();
        return o
            .write_all(bytes)
            .and_then(|()| o.flush())
            .map_err(|e| anyhow!("writing the export to stdout: {e}"));
    };
    let fail = |e: std::io::Error| anyhow!("--output: writing {}: {e}", path.display());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(fail)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    eprintln!(
        "autoprov: exported {} bytes to {}",
        bytes.len(),
        path.display()
    );
    Ok(())
}

/// Opens the data folder's existing store (no models or templates needed).
fn open_store(config: &Config, create: bool) -> anyhow::Result<crate::store::Store> {
    if !create && !api::store_exists(config) {
        return Err(api::no_store(config));
    }
    if create {
        std::fs::create_dir_all(&config.data)
            .map_err(|e| anyhow!("--data: cannot create {}: {e}", config.data.display()))?;
    }
    crate::store::Store::open(&config.data.join("store"), config.store_cache_bytes)
        .map_err(|e| api::locked_hint(anyhow::Error::new(e)))
}

async fn export(
    cli: &Cli,
    config: &Config,
    output: Option<&Path>,
    format: ExportFormat,
) -> anyhow::Result<()> {
    let bytes = match cli.remote.url.as_deref() {
        Some(url) => {
            let api = Api::remote(url, cli.remote.token.as_deref())?;
            let f = match format {
                ExportFormat::Json => "json",
                ExportFormat::Csv => "csv",
            };
            check(
                api.call(Method::GET, &format!("/export?format={f}"), None)
                    .await?,
                &|_| None,
            )?
            .body
        }
        None => {
            let store = open_store(config, false)?;
            match format {
                ExportFormat::Json => store.export()?,
                ExportFormat::Csv => bulk::export_csv(&store)?.into_bytes(),
            }
        }
    };
    write_output(output, &bytes)
}

// ---------------------------------------------------------------- import

/// What an import file is.
enum Kind {
    Dump,
    Rows(bulk::Format),
}

fn detect(file: &Path, bytes: &[u8], format: ImportFormat, replace: bool) -> Kind {
    match format {
        ImportFormat::Export => Kind::Dump,
        ImportFormat::Csv => Kind::Rows(bulk::Format::Csv),
        ImportFormat::Json => Kind::Rows(bulk::Format::Json),
        ImportFormat::Auto => {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
            let compact: String = head.chars().filter(|c| !c.is_whitespace()).collect();
            // An object with a `format` key is meant as a full export (a damaged or foreign
            // one then gets the export parser's precise error); `--replace` only means one.
            if replace || (compact.starts_with('{') && compact.contains("\"format\":")) {
                return Kind::Dump;
            }
            let csv_name = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            if csv_name || !(compact.starts_with('{') || compact.starts_with('[')) {
                Kind::Rows(bulk::Format::Csv)
            } else {
                Kind::Rows(bulk::Format::Json)
            }
        }
    }
}

fn report_rows(name: &str, rows: &[RowError]) -> anyhow::Error {
    let mut s = String::new();
    for r in rows {
        s.push_str(&format!(
            "{name}: line {}: {}: {}\n",
            r.line, r.field, r.message
        ));
    }
    eprint!("{s}");
    anyhow!("{name}: {} bad row(s); nothing was imported", rows.len())
}

fn summary_line(name: &str, v: &Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let c = |k: &str| v["created"][k].as_u64().unwrap_or(0);
    format!(
        "autoprov: imported {} row(s) from {name}: {} phone(s) ({} new), {} account(s) ({} new), {} domain(s) ({} created)",
        n("rows"),
        n("phones"),
        c("phones"),
        n("accounts"),
        c("accounts"),
        n("domains"),
        c("domains")
    )
}

async fn import(
    cli: &Cli,
    config: &Config,
    file: &Path,
    format: ImportFormat,
    replace: bool,
) -> anyhow::Result<()> {
    let bytes = read_input(file, "<file>")?;
    let name = if file.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        file.display().to_string()
    };
    match detect(file, &bytes, format, replace) {
        Kind::Dump => import_dump(cli, config, &bytes, &name, replace),
        Kind::Rows(fmt) => import_rows(cli, config, bytes, &name, fmt, replace).await,
    }
}

/// Restores a full export into the data folder; only on a stopped server's folder (never
/// over `--url`), and only once the whole export has passed every check.
fn import_dump(
    cli: &Cli,
    config: &Config,
    bytes: &[u8],
    name: &str,
    replace: bool,
) -> anyhow::Result<()> {
    if cli.remote.url.is_some() {
        bail!(
            "--url: {name} is a full export, which is restored on the data folder of a stopped server: `autoprov import --data DIR {name}`"
        );
    }
    // Everything is validated before the store is even opened.
    let dump = crate::store::parse_export(bytes)
        .map_err(|e| anyhow::Error::new(e).context(name.to_string()))?;
    check_dump(config, &dump).map_err(|e| e.context(name.to_string()))?;
    let store = open_store(config, true)?;
    store
        .import(&dump, replace)
        .map_err(|e| anyhow::Error::new(e).context(name.to_string()))?;
    eprintln!(
        "autoprov: imported {} entries ({} domains, {} accounts, {} phones) into {}",
        dump.entries(),
        dump.count("domains"),
        dump.count("accounts"),
        dump.count("phones"),
        config.data.display()
    );
    Ok(())
}

/// Adds and updates bulk rows (never `--replace`), remotely or on the data folder; a file
/// that does not parse is refused before anything is sent or opened.
async fn import_rows(
    cli: &Cli,
    config: &Config,
    bytes: Vec<u8>,
    name: &str,
    fmt: bulk::Format,
    replace: bool,
) -> anyhow::Result<()> {
    if replace {
        bail!("--replace: only for a full export; bulk rows add and update");
    }
    // Syntax first: a file that does not parse never opens the store.
    let rows = bulk::parse(&bytes, fmt).map_err(|e| report_rows(name, &e))?;
    let summary = match cli.remote.url.as_deref() {
        Some(url) => {
            let api = Api::remote(url, cli.remote.token.as_deref())?;
            import_rows_remote(&api, bytes, name, fmt, rows.len()).await?
        }
        None => import_rows_local(config, rows, name).await?,
    };
    eprintln!("{}", summary_line(name, &summary));
    Ok(())
}

/// Posts bulk rows to a running server's `/import`; its per-row errors are reported as a
/// local parse's would be. Returns the server's summary.
async fn import_rows_remote(
    api: &Api,
    bytes: Vec<u8>,
    name: &str,
    fmt: bulk::Format,
    count: usize,
) -> anyhow::Result<Value> {
    let ct = match fmt {
        bulk::Format::Csv => "text/csv",
        bulk::Format::Json => "application/json",
    };
    let pb = spinner(&format!("importing {count} row(s)"));
    let r = api.call(Method::POST, "/import", Some((ct, bytes))).await;
    pb.finish_and_clear();
    let r = r?;
    if r.status == 400 {
        let v = r.json().unwrap_or(Value::Null);
        if let Ok(list) = serde_json::from_value::<Vec<RowJson>>(v["rows"].clone())
            && !list.is_empty()
        {
            let rows: Vec<RowError> = list
                .into_iter()
                .map(|r| RowError {
                    line: r.line,
                    field: r.field,
                    message: r.message,
                })
                .collect();
            return Err(report_rows(name, &rows));
        }
    }
    check(r, &|_| None)?.json()
}

/// Applies parsed bulk rows to the data folder's store (created if missing), all or
/// nothing. Returns the import summary.
async fn import_rows_local(
    config: &Config,
    rows: Vec<bulk::Row>,
    name: &str,
) -> anyhow::Result<Value> {
    let (state, _) = api::open_local(config, true)?;
    let pb = progress(rows.len() as u64);
    let bar = pb.clone();
    let templates = state.templates().clone();
    let res = bulk::apply(&state, templates, rows, move |n| bar.set_position(n)).await;
    pb.finish_and_clear();
    match res {
        Ok(s) => Ok(json!(s)),
        Err(bulk::BulkError::Rows(e)) => Err(report_rows(name, &e)),
        Err(e) => Err(anyhow::Error::new(e).context(name.to_string())),
    }
}
/// The configured models, checked against the configured templates.
fn load_catalogue(config: &Config) -> anyhow::Result<crate::model::Catalogue> {
    let engine = crate::render::Engine::load(&config.templates)
        .map_err(|e| anyhow::Error::new(e).context("--templates"))?;
    crate::model::Catalogue::load(&config.models, &|t| engine.has(t))
        .map_err(|e| anyhow::Error::new(e).context("--models"))
}

/// Holds a full export to the rules the admin API enforces, against the configured
/// catalogue (a record naming a model it lacks is refused, as the API would). Without a
/// readable catalogue (a restore on a host without the model folders) every rule but the
/// model's own still holds: a model name is checked for its form, ports against the
/// highest any model may have, overrides against every format; a warning says so.
fn check_dump(config: &Config, dump: &crate::store::Dump) -> anyhow::Result<()> {
    use crate::model::rules::{self, Knowledge};
    use crate::render::overlay;
    let cat = load_catalogue(config)
        .inspect_err(|e| {
            eprintln!(
                "autoprov: warning: {e:#}; the export's model names are checked for their form only"
            );
        })
        .ok();
    let ports = |m: &str| match &cat {
        Some(cat) => cat.get(m).map(|m| m.ports),
        None => rules::check_name(m, 64).ok().map(|()| rules::PORT_MAX),
    };
    let override_ok =
        |model: Option<&str>, k: &str, v: &str| match model.and_then(|m| cat.as_ref()?.get(m)) {
            Some(m) => m
                .files
                .iter()
                .filter(|f| f.overrides)
                .try_for_each(|f| overlay::check_override(f.format, k, v)),
            None => overlay::check_override_unlinked(k, v),
        };
    dump.check(&Knowledge {
        ports: &ports,
        override_ok: &override_ok,
    })?;
    Ok(())
}

#[derive(serde::Deserialize)]
struct RowJson {
    line: usize,
    field: String,
    message: String,
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
fn progress(len: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} validating {pos}/{len} rows [{bar:40}] {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// A spinner on stderr when it is a terminal; hidden otherwise.
fn spinner(msg: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_specs() {
        let m = parse_member(0, "port=2,id=a@b,label=Front desk,owner=yes,type=shared").unwrap();
        assert_eq!(m["port"], 2);
        assert_eq!(m["lineLabel"], "Front desk");
        assert_eq!(m["primaryOwner"], true);
        assert_eq!(m["lineType"], "SHARED_CALL_APPEARANCE");
        let e = parse_member(1, "port=x").unwrap_err().to_string();
        assert!(e.starts_with("--member #2: port"), "{e}");
        let e = parse_member(0, "colour=red").unwrap_err().to_string();
        assert!(e.contains("unknown key \"colour\""), "{e}");
    }

    #[test]
    fn table_aligns() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }

    #[test]
    fn detects_formats() {
        assert!(matches!(
            detect(Path::new("x.csv"), b"mac,model", ImportFormat::Auto, true),
            Kind::Dump
        ));
        assert!(matches!(
            detect(
                Path::new("x.json"),
                b"{\"rows\": []}",
                ImportFormat::Auto,
                false
            ),
            Kind::Rows(bulk::Format::Json)
        ));
        let p = Path::new("x.json");
        assert!(matches!(
            detect(
                p,
                b"{\n  \"format\": \"autoprov-export\"",
                ImportFormat::Auto,
                false
            ),
            Kind::Dump
        ));
        assert!(matches!(
            detect(p, b"[{}]", ImportFormat::Auto, false),
            Kind::Rows(bulk::Format::Json)
        ));
        assert!(matches!(
            detect(Path::new("x.txt"), b"mac,model", ImportFormat::Auto, false),
            Kind::Rows(bulk::Format::Csv)
        ));
    }
}
