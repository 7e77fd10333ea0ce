//! Bulk import and CSV export: rows of `mac,model,domain,user,device,line,label,password,
//! transport,server` plus `override:<vendor key>` columns, as CSV or JSON.
//!
//! One function applies an import ([`apply`]), shared by `POST /api/v1/import` and the
//! `autoprov import` subcommand on a data folder: parse every row, validate every row
//! against the admin API's rules (the same helpers), collect *all* errors as
//! `{line, field, message}`, and change nothing if there is any; otherwise build one
//! [`Change`] and commit it (one sled transaction), then flush.
//!
//! Semantics (docs/OPERATIONS.md "Bulk import"): a row is one line (member) of a phone. Rows add or
//! update; an import never deletes. The phone is created or updated (model, domain,
//! overrides named in the row); the account `device@domain` is created or updated
//! (password, transport, server when given; a new account without a password gets a
//! random one); the account becomes the member on port `line` (or keeps its port, or takes
//! the first free one) with `label`. A row with only `mac` and `model` (and optionally
//! `domain`) provisions a phone without lines. Domains named in rows are created if
//! missing, with no settings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::auth;
use crate::model::json::StrictError;
use crate::model::records::account_id;
use crate::model::rules;
use crate::model::settings as st;
use crate::model::{Account, Domain, Mac, Member, Model, Phone};
use crate::reload::Templates;
use crate::render::overlay;
use crate::store::{Change, Store, StoreError};

/// The columns every row may have, in export order.
pub const COLUMNS: &[&str] = &[
    "mac",
    "model",
    "domain",
    "user",
    "device",
    "line",
    "label",
    "password",
    "transport",
    "server",
];

/// Prefix of an override column: `override:<vendor key>`.
pub const OVERRIDE_PREFIX: &str = "override:";

/// One bad row: where (line of the CSV file, counting the header as line 1; for JSON, the
/// row's 1-based position in the list), which column, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Line (CSV) or position (JSON).
    pub line: usize,
    /// Column name (`mac`, `override:P271`, …).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl RowError {
    fn new(line: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        RowError {
            line,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why an import changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// Rows failed validation (every one is listed).
    #[error("{} bad row(s); nothing was imported", .0.len())]
    Rows(Vec<RowError>),
    /// The store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// The request gave up (timed out) before the commit: nothing was written.
    #[error("the import was abandoned before its commit; nothing was imported")]
    Abandoned,
}

/// Input format of a bulk import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header row.
    Csv,
    /// A JSON list of row objects, or `{"rows": [...]}`.
    Json,
}

/// One input row, as text (validated by [`plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    /// Line (CSV) or position (JSON) for error reports.
    pub line: usize,
    /// Values of [`COLUMNS`], in that order (empty: not given).
    pub cols: [String; 10],
    /// `override:<key>` values given (non-empty) in this row.
    pub overrides: Vec<(String, String)>,
}

impl Row {
    /// A column's value; names and codes trimmed, free text (`label`, `password`) as given,
    /// so that the spaces the CSV export quotes survive a round trip.
    fn get(&self, col: &str) -> &str {
        let v = COLUMNS
            .iter()
            .position(|c| *c == col)
            .and_then(|i| self.cols.get(i))
            .map_or("", String::as_str);
        if matches!(col, "label" | "password") {
            v
        } else {
            v.trim()
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Rows read.
    pub rows: usize,
    /// Phones named (created or updated).
    pub phones: usize,
    /// Accounts named (created or updated).
    pub accounts: usize,
    /// Domains named.
    pub domains: usize,
    /// Of those, created by this import.
    pub created: Created,
}

/// Records an import created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Created {
    /// New phones.
    pub phones: usize,
    /// New accounts.
    pub accounts: usize,
    /// New domains.
    pub domains: usize,
}

// ---------------------------------------------------------------- parsing

/// Parses an import document into rows; a document that cannot be read at all gives one
/// error (line 1 for a bad header), bad rows give one error each.
pub fn parse(bytes: &[u8], format: Format) -> Result<Vec<Row>, Vec<RowError>> {
    match format {
        Format::Csv => parse_csv(bytes),
        Format::Json => parse_json(bytes),
    }
}

/// Splits CSV text into records with the line each starts on (RFC 4180: quoted fields may
/// hold commas, `""` and line breaks; CRLF or LF; blank lines skipped; a UTF-8 BOM ignored;
/// a quote inside an unquoted field is kept as text). Hand-written rather than the `csv`
/// crate: its reader (csv-core) is lenient with invalid CSV by design, so text after a
/// closing quote (`"a"b`) or an unterminated quote would be imported as some reading of
/// it, and an import must refuse both, naming the line.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, RowError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut start = 1;
    let mut field = String::new();
    let mut record: Vec<String> = Vec::new();
    let mut quoted = false;
    let mut after_quote = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    quoted = false;
                    after_quote = true;
                }
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                at_field_start = true;
                after_quote = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                push_record(&mut out, &mut record, start);
                line += 1;
                start = line;
                at_field_start = true;
                after_quote = false;
            }
            _ if after_quote => {
                return Err(RowError::new(
                    line,
                    "csv",
                    "a quoted field must end at a comma or the end of the line",
                ));
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err(RowError::new(
            start,
            "csv",
            "a quoted field is never closed",
        ));
    }
    if !field.is_empty() || !record.is_empty() || after_quote {
        record.push(field);
        push_record(&mut out, &mut record, start);
    }
    Ok(out)
}

/// Moves `record`, which starts on line `start`, into `out` and leaves it empty; a blank
/// line (one field of only whitespace) is dropped, not kept as a row.
fn push_record(out: &mut Vec<(usize, Vec<String>)>, record: &mut Vec<String>, start: usize) {
    let blank = record.len() == 1 && record[0].trim().is_empty();
    if !blank {
        out.push((start, std::mem::take(record)));
    } else {
        record.clear();
    }
}

/// Where a header column goes.
enum Column {
    Base(usize),
    Override(String),
}

fn column(name: &str) -> Option<Column> {
    let n = name.trim();
    if n.len() > OVERRIDE_PREFIX.len()
        && n.is_char_boundary(OVERRIDE_PREFIX.len())
        && n[..OVERRIDE_PREFIX.len()].eq_ignore_ascii_case(OVERRIDE_PREFIX)
    {
        return Some(Column::Override(n[OVERRIDE_PREFIX.len()..].to_string()));
    }
    let lower = n.to_ascii_lowercase();
    COLUMNS.iter().position(|c| *c == lower).map(Column::Base)
}

fn known_columns() -> String {
    format!("{}, {OVERRIDE_PREFIX}<key>", COLUMNS.join(", "))
}

fn parse_csv(bytes: &[u8]) -> Result<Vec<Row>, Vec<RowError>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| vec![RowError::new(1, "csv", format!("not UTF-8 text: {e}"))])?;
    let records = csv_records(text).map_err(|e| vec![e])?;
    let mut records = records.into_iter();
    let Some((hline, header)) = records.next() else {
        return Err(vec![RowError::new(
            1,
            "csv",
            format!(
                "empty file; the first line names the columns: {}",
                known_columns()
            ),
        )]);
    };
    let cols = header_columns(hline, &header)?;
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    for (line, fields) in records {
        if fields.len() != cols.len() {
            errors.push(RowError::new(
                line,
                "csv",
                format!("has {} fields, the header has {}", fields.len(), cols.len()),
            ));
            continue;
        }
        let mut row = Row {
            line,
            ..Default::default()
        };
        for (c, v) in cols.iter().zip(fields) {
            match c {
                Column::Base(i) => {
                    if let Some(slot) = row.cols.get_mut(*i) {
                        *slot = v;
                    }
                }
                Column::Override(k) if !v.is_empty() => row.overrides.push((k.clone(), v)),
                Column::Override(_) => {}
            }
        }
        rows.push(row);
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// Reads the header row (on line `hline`) into the column of each field: an unknown
/// column, a column given twice, or a missing `mac` or `model` column are all reported,
/// in that order.
fn header_columns(hline: usize, header: &[String]) -> Result<Vec<Column>, Vec<RowError>> {
    let mut errors = Vec::new();
    let mut cols = Vec::with_capacity(header.len());
    let mut seen = BTreeSet::new();
    for name in header {
        match column(name) {
            Some(c) => {
                let key = match &c {
                    Column::Base(i) => COLUMNS[*i].to_string(),
                    Column::Override(k) => format!("{OVERRIDE_PREFIX}{k}"),
                };
                if !seen.insert(key.clone()) {
                    errors.push(RowError::new(hline, key, "column is given twice"));
                }
                cols.push(c);
            }
            None => {
                errors.push(RowError::new(
                    hline,
                    name.trim(),
                    format!("unknown column; columns are {}", known_columns()),
                ));
                cols.push(Column::Base(usize::MAX));
            }
        }
    }
    for required in ["mac", "model"] {
        if !seen.contains(required) {
            errors.push(RowError::new(
                hline,
                required,
                "column is required in the header",
            ));
        }
    }
    if errors.is_empty() {
        Ok(cols)
    } else {
        Err(errors)
    }
}

fn parse_json(bytes: &[u8]) -> Result<Vec<Row>, Vec<RowError>> {
    // The admin API's strict parser: a key given twice is refused, not last-one-wins.
    let doc: Value = crate::model::json::parse_strict(bytes).map_err(|e| match e {
        StrictError::Duplicate(field) => vec![RowError::new(0, field, "is given more than once")],
        StrictError::Malformed(m) => vec![RowError::new(0, "json", format!("malformed JSON: {m}"))],
    })?;
    let list = match doc {
        Value::Array(l) => l,
        Value::Object(mut m) if m.len() == 1 && m.contains_key("rows") => match m.remove("rows") {
            Some(Value::Array(l)) => l,
            _ => return Err(vec![RowError::new(1, "rows", "must be a list of rows")]),
        },
        _ => {
            return Err(vec![RowError::new(
                1,
                "json",
                "expected a list of row objects, or {\"rows\": [...]}",
            )]);
        }
    };
    let mut errors = Vec::new();
    let mut rows = Vec::with_capacity(list.len());
    for (i, v) in list.into_iter().enumerate() {
        let line = i + 1;
        let Value::Object(map) = v else {
            errors.push(RowError::new(line, "row", "must be an object"));
            continue;
        };
        rows.push(json_row(line, map, &mut errors));
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// A JSON value as column text: strings as given, numbers as written, `null` as not given;
/// anything else (`None`) is not a column value.
fn json_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Reads one JSON row object (at position `line`): its fields by column name, overrides as
/// `"overrides": {key: value}` or `override:<key>` fields; every bad field is recorded in
/// `errors`, in the object's order.
fn json_row(line: usize, map: serde_json::Map<String, Value>, errors: &mut Vec<RowError>) -> Row {
    let mut row = Row {
        line,
        ..Default::default()
    };
    for (k, v) in map {
        if k == "overrides" {
            let Value::Object(ov) = v else {
                errors.push(RowError::new(line, k, "must be an object of key → value"));
                continue;
            };
            for (ok, ovv) in ov {
                match json_text(ovv) {
                    Some(s) if !s.is_empty() => row.overrides.push((ok, s)),
                    Some(_) => {}
                    None => errors.push(RowError::new(
                        line,
                        format!("{OVERRIDE_PREFIX}{ok}"),
                        "must be a string",
                    )),
                }
            }
            continue;
        }
        match (column(&k), json_text(v)) {
            (None, _) => errors.push(RowError::new(
                line,
                k,
                format!("unknown field; fields are {}, overrides", known_columns()),
            )),
            (Some(_), None) => errors.push(RowError::new(line, k, "must be a string")),
            (Some(Column::Base(i)), Some(s)) => {
                if let Some(slot) = row.cols.get_mut(i) {
                    *slot = s;
                }
            }
            (Some(Column::Override(ok)), Some(s)) if !s.is_empty() => {
                row.overrides.push((ok, s));
            }
            (Some(Column::Override(_)), Some(_)) => {}
        }
    }
    row
}

// ---------------------------------------------------------------- validation

/// A phone as this import leaves it.
struct StagedPhone {
    phone: Phone,
    original: Option<Phone>,
    /// The model and domain the first row gave, with its line.
    model_line: usize,
    domain: Option<(String, usize)>,
    last_line: usize,
    /// Ports placed by this import → (account id, line).
    placed: BTreeMap<u32, (String, usize)>,
    /// Override values given by this import → line.
    overrides: BTreeMap<String, (String, usize)>,
}

/// An account as this import leaves it.
struct StagedAccount {
    account: Account,
    original: Option<Account>,
    line: usize,
    /// Column values given by earlier rows, to catch rows that disagree.
    given: BTreeMap<&'static str, (String, usize)>,
}

/// What the rows staged so far leave behind: the phones, accounts and domains they name
/// (a domain maps to whether the store already has it), and every bad row found.
#[derive(Default)]
struct Staged {
    phones: BTreeMap<Mac, StagedPhone>,
    accounts: BTreeMap<String, StagedAccount>,
    domains: BTreeMap<String, bool>,
    errors: Vec<RowError>,
}

/// The values of a row whose every column is valid on its own.
struct Fields<'t> {
    mac: Mac,
    model: &'t Model,
    domain: String,
    user: String,
    device: String,
    /// The port the `line` column asks for, if any.
    port: Option<u32>,
    label: String,
    password: String,
    transport: String,
    server: String,
    /// The row names a line (user and device), not only a phone.
    has_account: bool,
}

/// Validates `rows` against the store (call under the store's writer lock) and builds the
/// change; every bad row is reported. `progress` is called with the rows done so far.
pub fn plan(
    store: &Store,
    t: &Templates,
    rows: &[Row],
    progress: &dyn Fn(u64),
) -> Result<(Change, Summary), BulkError> {
    let mut staged = Staged::default();
    for (i, row) in rows.iter().enumerate() {
        if i % 256 == 0 {
            progress(i as u64);
        }
        stage_row(store, t, row, &mut staged)?;
    }
    progress(rows.len() as u64);
    // Whole-phone rules, once every row is in: members fit the (possibly new) model and
    // belong to the phone's domain.
    for sp in staged.phones.values() {
        let Some(model) = t.catalogue.get(&sp.phone.model) else {
            continue;
        };
        check_phone(store, model, sp, &staged.accounts, &mut staged.errors)?;
    }
    if !staged.errors.is_empty() {
        let mut errors = std::mem::take(&mut staged.errors);
        errors.sort_by_key(|e| e.line);
        errors.dedup();
        return Err(BulkError::Rows(errors));
    }
    build_change(store, rows.len(), staged).map_err(BulkError::from)
}

/// The whole-phone rules for a staged phone of `model`: every member fits the model's
/// ports, uses T.38 only on an ATA and is an account of the phone's domain; a phone that
/// changes model keeps only overrides the new model's files take.
fn check_phone(
    store: &Store,
    model: &Model,
    sp: &StagedPhone,
    accounts: &BTreeMap<String, StagedAccount>,
    errors: &mut Vec<RowError>,
) -> Result<(), StoreError> {
    for m in &sp.phone.members {
        if m.ports().any(|p| p > model.ports) {
            errors.push(RowError::new(
                sp.model_line,
                "model",
                format!(
                    "member {} on port {} does not fit the {} ports of {}",
                    m.id, m.port, model.ports, model.id
                ),
            ));
        }
        if m.t38_fax_compression_enabled && !model.ata {
            errors.push(RowError::new(
                sp.model_line,
                "model",
                format!(
                    "member {} uses T.38, which {} does not support",
                    m.id, model.id
                ),
            ));
        }
        let domain = match accounts.get(&m.id) {
            Some(a) => Some(a.account.domain.clone()),
            None => store.account(&m.id)?.map(|a| a.domain),
        };
        if domain.is_none() || domain.as_ref() != sp.phone.domain.as_ref() {
            errors.push(RowError::new(
                sp.domain.as_ref().map_or(sp.last_line, |(_, l)| *l),
                "domain",
                format!(
                    "{} has member {}, an account of another domain",
                    sp.phone.mac.lower(),
                    m.id
                ),
            ));
        }
    }
    if sp
        .original
        .as_ref()
        .is_some_and(|o| o.model != sp.phone.model)
    {
        for (k, v) in &sp.phone.overrides {
            for f in model.files.iter().filter(|f| f.overrides) {
                if let Err(m) = overlay::check_override(f.format, k, v) {
                    errors.push(RowError::new(
                        sp.model_line,
                        "model",
                        format!("the phone's override {k} does not fit {}: {m}", model.id),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Turns a staging without errors into the change to commit and its summary: the new
/// domains (with no settings), the accounts and phones that differ from the store (members
/// in port order), and the other phones of a changed account, to render again.
fn build_change(
    store: &Store,
    rows: usize,
    staged: Staged,
) -> Result<(Change, Summary), StoreError> {
    let Staged {
        phones,
        accounts,
        domains,
        ..
    } = staged;
    let mut change = Change::default();
    let mut summary = Summary {
        rows,
        phones: phones.len(),
        accounts: accounts.len(),
        domains: domains.len(),
        created: Created::default(),
    };
    for (name, exists) in &domains {
        if !exists {
            summary.created.domains += 1;
            change.domains.push((
                name.clone(),
                Some(Domain {
                    name: name.clone(),
                    ..Default::default()
                }),
            ));
        }
    }
    let mut written = BTreeSet::new();
    for (id, sa) in accounts {
        if sa.original.is_none() {
            summary.created.accounts += 1;
        }
        if sa.original.as_ref() != Some(&sa.account) {
            // Other phones this account is a member of render it too.
            change.touch.extend(store.phones_of_account(&id)?);
            change.accounts.push((id, Some(sa.account)));
        }
    }
    for (mac, mut sp) in phones {
        if sp.original.is_none() {
            summary.created.phones += 1;
        }
        sp.phone.members.sort_by_key(|m| m.port);
        if sp.original.as_ref() != Some(&sp.phone) {
            written.insert(mac);
            change.phones.push((mac, Some(sp.phone)));
        }
    }
    change.touch.retain(|m| !written.contains(m));
    Ok((change, summary))
}

/// Reads the value of `col` in `row`, checked by `check` (errors are recorded).
fn checked(
    errors: &mut Vec<RowError>,
    row: &Row,
    col: &str,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Option<String> {
    let v = row.get(col);
    if v.is_empty() {
        return Some(String::new());
    }
    match check(v) {
        Ok(()) => Some(v.to_string()),
        Err(m) => {
            errors.push(RowError::new(row.line, col, m));
            None
        }
    }
}

/// Stages one row: its columns are checked on their own first (every bad one is
/// recorded), then against earlier rows and the store, the phone before its account and
/// the account before its member; the first disagreement ends the row.
fn stage_row(
    store: &Store,
    t: &Templates,
    row: &Row,
    staged: &mut Staged,
) -> Result<(), StoreError> {
    let Some(f) = row_fields(t, row, &mut staged.errors) else {
        return Ok(());
    };

    // Across rows and against the store.
    if !f.domain.is_empty() && !staged.domains.contains_key(&f.domain) {
        let exists = store.domain(&f.domain)?.is_some();
        staged.domains.insert(f.domain.clone(), exists);
    }
    let Some(sp) = stage_phone(store, row, &f, &mut staged.phones, &mut staged.errors)? else {
        return Ok(());
    };
    if !f.has_account {
        return Ok(());
    }
    let id = account_id(&f.domain, &f.device);
    let placed = stage_account(
        store,
        row.line,
        &f,
        &id,
        &mut staged.accounts,
        &mut staged.errors,
    )?;
    if placed {
        place_member(row.line, &f, id, sp, &mut staged.errors);
    }
    Ok(())
}

/// Checks every column of `row` on its own, in column order, recording every bad one;
/// gives the row's values only when all of them are valid.
fn row_fields<'t>(
    t: &'t crate::reload::Templates,
    row: &Row,
    errors: &mut Vec<RowError>,
) -> Option<Fields<'t>> {
    let before = errors.len();
    // Field by field: every bad column of the row is reported.
    let mac = row_mac(row, errors);
    let model = row_model(t, row, errors);
    let name_check = |max: usize| move |v: &str| rules::check_name(v, max);
    let domain = checked(errors, row, "domain", name_check(rules::DOMAIN_MAX));
    let user = checked(errors, row, "user", name_check(rules::USER_MAX));
    let device = checked(errors, row, "device", name_check(rules::DEVICE_MAX));
    let label = checked(errors, row, "label", st::check_text);
    let password = checked(errors, row, "password", st::check_text);
    let transport = checked(errors, row, "transport", |v| {
        st::check_value(st::TRANSPORT, v)
    });
    let server = checked(errors, row, "server", |v| {
        st::check_value(st::CORE_SERVER, v)
    });
    let port = row_port(row, model, errors);
    if let Some(model) = model {
        check_row_overrides(row, model, errors);
    }
    let has_account = check_line_columns(row, errors);
    let (Some(mac), Some(model), Some(domain), Some(user), Some(device), Some(port)) =
        (mac, model, domain, user, device, port)
    else {
        return None;
    };
    let (Some(label), Some(password), Some(transport), Some(server)) =
        (label, password, transport, server)
    else {
        return None;
    };
    if errors.len() > before {
        return None;
    }
    Some(Fields {
        mac,
        model,
        domain,
        user,
        device,
        port,
        label,
        password,
        transport,
        server,
        has_account,
    })
}

/// The `mac` column: required, and a MAC address.
fn row_mac(row: &Row, errors: &mut Vec<RowError>) -> Option<Mac> {
    match row.get("mac") {
        "" => {
            errors.push(RowError::new(row.line, "mac", "is required"));
            None
        }
        s => match Mac::parse(s) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(RowError::new(row.line, "mac", e.to_string()));
                None
            }
        },
    }
}

/// The `model` column: required, and a model of the catalogue.
fn row_model<'t>(
    t: &'t crate::reload::Templates,
    row: &Row,
    errors: &mut Vec<RowError>,
) -> Option<&'t Model> {
    match row.get("model") {
        "" => {
            errors.push(RowError::new(row.line, "model", "is required"));
            None
        }
        m => match t.catalogue.get(m) {
            Some(model) => Some(model),
            None => {
                errors.push(RowError::new(
                    row.line,
                    "model",
                    format!("unknown model {m:?}; see `autoprov models` (GET /api/v1/models)"),
                ));
                None
            }
        },
    }
}

/// The `line` column: empty (`Some(None)`: no port asked for), or a port of `model` (a
/// number from 1 while the model is not known).
fn row_port(row: &Row, model: Option<&Model>, errors: &mut Vec<RowError>) -> Option<Option<u32>> {
    match (row.get("line"), model) {
        ("", _) => Some(None),
        (s, model) => match s.parse::<u32>() {
            Ok(n) if n >= 1 && model.is_none_or(|m| n <= m.ports) => Some(Some(n)),
            _ => {
                let range = model.map_or_else(
                    || "a port number from 1".to_string(),
                    |m| format!("a port from 1 to {} ({} has {})", m.ports, m.id, m.ports),
                );
                errors.push(RowError::new(row.line, "line", format!("must be {range}")));
                None
            }
        },
    }
}

/// Every override of the row must suit each file of `model` that takes overrides; the
/// first file that refuses a value gives its error.
fn check_row_overrides(row: &Row, model: &Model, errors: &mut Vec<RowError>) {
    for (k, v) in &row.overrides {
        for f in model.files.iter().filter(|f| f.overrides) {
            if let Err(m) = overlay::check_override(f.format, k, v) {
                errors.push(RowError::new(row.line, format!("{OVERRIDE_PREFIX}{k}"), m));
                break;
            }
        }
    }
}

/// A line needs `user`, `device` and `domain` together, and the line's own columns
/// (`line`, `label`, `password`, `transport`, `server`) need a line. Returns whether the
/// row names a line.
fn check_line_columns(row: &Row, errors: &mut Vec<RowError>) -> bool {
    let line = row.line;
    let has_account = !row.get("user").is_empty() || !row.get("device").is_empty();
    if has_account {
        if row.get("user").is_empty() {
            errors.push(RowError::new(line, "user", "is required with device"));
        }
        if row.get("device").is_empty() {
            errors.push(RowError::new(line, "device", "is required with user"));
        }
        if row.get("domain").is_empty() {
            errors.push(RowError::new(
                line,
                "domain",
                "is required for a line (user and device)",
            ));
        }
    } else {
        for col in ["line", "label", "password", "transport", "server"] {
            if !row.get(col).is_empty() {
                errors.push(RowError::new(line, col, "needs user and device (a line)"));
            }
        }
    }
    has_account
}

/// Stages the phone of a valid row, from the store or new: its model and domain must be
/// the ones earlier rows and the store give (`None`: recorded, the row stops there); an
/// override another row gave another value is recorded, and the rest of the row counts.
fn stage_phone<'p>(
    store: &Store,
    row: &Row,
    f: &Fields<'_>,
    phones: &'p mut BTreeMap<Mac, StagedPhone>,
    errors: &mut Vec<RowError>,
) -> Result<Option<&'p mut StagedPhone>, StoreError> {
    let line = row.line;
    let mac = f.mac;
    let sp = phone_entry(store, phones, mac, f.model, line)?;
    sp.last_line = line;
    if sp.phone.model != f.model.id {
        errors.push(RowError::new(
            line,
            "model",
            format!(
                "{} is given as {} on line {}",
                mac.lower(),
                sp.phone.model,
                sp.model_line
            ),
        ));
        return Ok(None);
    }
    if !f.domain.is_empty() {
        let domain = &f.domain;
        match (&sp.domain, &sp.phone.domain) {
            (Some((d, l)), _) if d != domain => {
                errors.push(RowError::new(
                    line,
                    "domain",
                    format!("{} is given in domain {d} on line {l}", mac.lower()),
                ));
                return Ok(None);
            }
            (None, Some(d)) if d != domain => {
                errors.push(RowError::new(
                    line,
                    "domain",
                    format!(
                        "{} belongs to domain {d}; delete it there first (autoprov phone delete)",
                        mac.lower()
                    ),
                ));
                return Ok(None);
            }
            _ => {}
        }
        sp.domain = Some((domain.clone(), line));
        sp.phone.domain = Some(domain.clone());
    }
    for (k, v) in &row.overrides {
        if let Some((old, l)) = sp.overrides.get(k)
            && old != v
        {
            errors.push(RowError::new(
                line,
                format!("{OVERRIDE_PREFIX}{k}"),
                format!("{} has another value for it on line {l}", mac.lower()),
            ));
            continue;
        }
        sp.overrides.insert(k.clone(), (v.clone(), line));
        sp.phone.overrides.insert(k.clone(), v.clone());
    }
    Ok(Some(sp))
}

/// The staged phone `mac`: the one an earlier row staged, else the store's (or a new one)
/// set to `model`, first given on `line`.
fn phone_entry<'p>(
    store: &Store,
    phones: &'p mut BTreeMap<Mac, StagedPhone>,
    mac: Mac,
    model: &Model,
    line: usize,
) -> Result<&'p mut StagedPhone, StoreError> {
    Ok(match phones.entry(mac) {
        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::btree_map::Entry::Vacant(v) => {
            let original = store.phone(mac)?;
            let mut phone = original
                .clone()
                .unwrap_or_else(|| Phone::new(mac, model.id.clone()));
            phone.model = model.id.clone();
            v.insert(StagedPhone {
                phone,
                original,
                model_line: line,
                domain: None,
                last_line: line,
                placed: BTreeMap::new(),
                overrides: BTreeMap::new(),
            })
        }
    })
}

/// Stages the account `id` of a row with a line, from the store or new: the device must
/// belong to the row's user (`false`: recorded, the row stops there); password, transport
/// and server must agree with earlier rows; an account left without a password gets a
/// random one.
fn stage_account(
    store: &Store,
    line: usize,
    f: &Fields<'_>,
    id: &str,
    accounts: &mut BTreeMap<String, StagedAccount>,
    errors: &mut Vec<RowError>,
) -> Result<bool, StoreError> {
    let sa = match accounts.entry(id.to_string()) {
        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::btree_map::Entry::Vacant(v) => {
            let original = store.account(id)?;
            // A new account's password is generated below unless a row gives one.
            let account = original.clone().unwrap_or_else(|| Account {
                domain: f.domain.clone(),
                user: f.user.clone(),
                device: f.device.clone(),
                ..Default::default()
            });
            v.insert(StagedAccount {
                account,
                original,
                line,
                given: BTreeMap::new(),
            })
        }
    };
    if sa.account.user != f.user {
        let whence = if sa
            .original
            .as_ref()
            .is_some_and(|o| o.user == sa.account.user)
        {
            "in the store".to_string()
        } else {
            format!("on line {}", sa.line)
        };
        errors.push(RowError::new(
            line,
            "user",
            format!(
                "device {} belongs to user {} in {} ({whence})",
                f.device, sa.account.user, f.domain
            ),
        ));
        return Ok(false);
    }
    stage_account_columns(sa, line, f, id, errors);
    if sa.account.password.is_empty() {
        sa.account.password = auth::random_secret(16);
    }
    Ok(true)
}

/// Sets the account's password, transport and server from the row's non-empty columns; a
/// column an earlier row gave another value is recorded and left as it was.
fn stage_account_columns(
    sa: &mut StagedAccount,
    line: usize,
    f: &Fields<'_>,
    id: &str,
    errors: &mut Vec<RowError>,
) {
    for (col, v) in [
        ("password", &f.password),
        ("transport", &f.transport),
        ("server", &f.server),
    ] {
        if v.is_empty() {
            continue;
        }
        if let Some((old, l)) = sa.given.get(col)
            && old != v
        {
            errors.push(RowError::new(
                line,
                col,
                format!("{id} has another {col} on line {l}"),
            ));
            continue;
        }
        sa.given.insert(col, (v.clone(), line));
        match col {
            "password" => sa.account.password = v.clone(),
            "transport" => {
                sa.account.settings.insert(st::TRANSPORT.into(), v.clone());
            }
            _ => {
                sa.account
                    .settings
                    .insert(st::CORE_SERVER.into(), v.clone());
            }
        }
    }
}

/// Makes the account `id` a member of the phone with the row's label: on the row's port,
/// else the port it already has, else the first free one. No other account of this
/// import may hold the port, and the member must fit the phone ([`rules::place`]); a new
/// member is the primary owner when the phone has none.
fn place_member(
    line: usize,
    f: &Fields<'_>,
    id: String,
    sp: &mut StagedPhone,
    errors: &mut Vec<RowError>,
) {
    let (mac, model) = (f.mac, f.model);
    let already = sp.phone.members.iter().position(|m| m.id == id);
    let port = match (f.port, already) {
        (Some(p), _) => p,
        (None, Some(i)) => sp.phone.members[i].port,
        (None, None) => match sp.phone.first_free_port(model.ports) {
            Some(p) => p,
            None => {
                errors.push(RowError::new(
                    line,
                    "line",
                    format!("all {} ports of {} are taken", model.ports, mac.lower()),
                ));
                return;
            }
        },
    };
    if let Some((other, l)) = sp.placed.get(&port)
        && *other != id
    {
        errors.push(RowError::new(
            line,
            "line",
            format!(
                "port {port} of {} is given to {other} on line {l}",
                mac.lower()
            ),
        ));
        return;
    }
    let mut m = match already {
        Some(i) => sp.phone.members.remove(i),
        None => {
            let mut m = Member::new(port, id.clone());
            m.primary_owner = !sp.phone.members.iter().any(|m| m.primary_owner);
            m
        }
    };
    m.port = port;
    m.line_label = f.label.clone();
    if let Err(e) = rules::place(&sp.phone, &model.id, model.ports, &m) {
        errors.push(RowError::new(
            line,
            "line",
            format!("{} (change it with `autoprov members set`)", e.message()),
        ));
        return;
    }
    sp.placed.insert(port, (id, line));
    sp.phone.members.push(m);
}

/// Parses, validates and commits an import (under the writer lock), all or nothing, with
/// the model/template snapshot `t` for every row. The caller flushes ([`Store::flush`])
/// before reporting success.
pub fn apply_sync(
    store: &Store,
    t: &Templates,
    rows: &[Row],
    progress: &dyn Fn(u64),
    abandoned: &AtomicBool,
) -> Result<Summary, BulkError> {
    let _w = store.writer();
    let (change, summary) = plan(store, t, rows, progress)?;
    // A blocking task outlives a request that timed out: never commit for a client that
    // was already told the import failed.
    if abandoned.load(Ordering::SeqCst) {
        return Err(BulkError::Abandoned);
    }
    store.commit(&change)?;
    Ok(summary)
}

/// Marks the import abandoned when the request's future is dropped before it finished.
struct AbandonOnDrop(Arc<AtomicBool>, bool);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// [`apply_sync`] off the async workers, then a flush: what both the HTTP route and the
/// CLI call. `owner` holds the store (the server's state; cloned into the blocking task).
pub async fn apply<S>(
    owner: &S,
    t: Arc<Templates>,
    rows: Vec<Row>,
    progress: impl Fn(u64) + Send + 'static,
) -> Result<Summary, BulkError>
where
    S: AsRef<Store> + Clone + Send + 'static,
{
    let held = owner.clone();
    let abandoned = Arc::new(AtomicBool::new(false));
    let mut guard = AbandonOnDrop(abandoned.clone(), false);
    let summary = tokio::task::spawn_blocking(move || {
        apply_sync(held.as_ref(), &t, &rows, &progress, &abandoned)
    })
    .await
    .map_err(|e| StoreError::Flush(e.to_string()))??;
    guard.1 = true;
    owner.as_ref().flush().await?;
    Ok(summary)
}

// ---------------------------------------------------------------- CSV export

fn csv_field(out: &mut String, v: &str) {
    if v.contains([',', '"', '\n', '\r']) || v.trim() != v {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// Every phone as bulk CSV: one row per member (a phone without members gets one row with
/// no line), the same columns the import takes, override columns for every override key
/// in use. Importing it into an empty store gives the same phones, accounts and members
/// (see docs/OPERATIONS.md "Bulk import" for what CSV does not carry).
pub fn export_csv(store: &Store) -> Result<String, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.phones(after, 1000, &|_| true)?;
        let done = page.len() < 1000;
        after = page.last().map(|p| p.mac);
        all.extend(page);
        if done {
            break;
        }
    }
    let keys: BTreeSet<&str> = all
        .iter()
        .flat_map(|p| p.overrides.keys().map(String::as_str))
        .collect();
    let mut out = String::new();
    let header: Vec<String> = COLUMNS
        .iter()
        .map(|c| (*c).to_string())
        .chain(keys.iter().map(|k| format!("{OVERRIDE_PREFIX}{k}")))
        .collect();
    for (i, h) in header.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, h);
    }
    out.push('\n');
    for p in &all {
        let domain = p.domain.clone().unwrap_or_default();
        let mut lines: Vec<[String; 7]> = Vec::new();
        for m in &p.members {
            let Some(a) = store.account(&m.id)? else {
                continue;
            };
            lines.push([
                a.user.clone(),
                a.device.clone(),
                m.port.to_string(),
                m.line_label.clone(),
                a.password.clone(),
                a.settings.get(st::TRANSPORT).cloned().unwrap_or_default(),
                a.settings.get(st::CORE_SERVER).cloned().unwrap_or_default(),
            ]);
        }
        if lines.is_empty() {
            lines.push(Default::default());
        }
        for l in &lines {
            out.push_str(&p.mac.lower());
            for v in [&p.model, &domain].into_iter().chain(l.iter()) {
                out.push(',');
                csv_field(&mut out, v);
            }
            for k in &keys {
                out.push(',');
                csv_field(&mut out, p.overrides.get(*k).map_or("", String::as_str));
            }
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_line_without_its_line_break_is_a_row() {
        let r = csv_records("a\nz").unwrap();
        assert_eq!(
            r,
            vec![(1, vec!["a".to_string()]), (2, vec!["z".to_string()])]
        );
        // A line of one empty or all-space field is blank; two empty fields are a row.
        let r = csv_records("a\n  \n\"\"\nz,\n").unwrap();
        assert_eq!(
            r,
            vec![
                (1, vec!["a".to_string()]),
                (4, vec!["z".to_string(), String::new()])
            ]
        );
    }

    #[test]
    fn header_names_are_the_columns_or_override_keys() {
        let known = "mac, model, domain, user, device, line, label, password, transport, server, \
                     override:<key>";
        assert_eq!(known_columns(), known);
        for bad in ["nonsense-column", "override:", "overrides", "Ovérride:x"] {
            let csv = format!("mac,model,{bad}\n001565aabbcc,yealink-t46s,1\n");
            let e = parse(csv.as_bytes(), Format::Csv).unwrap_err();
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].field, bad.trim(), "{bad}: {e:?}");
            assert!(e[0].message.contains(known), "{bad}: {e:?}");
        }
        let rows = parse(
            b"MAC,Model,OVERRIDE:custom.x\n001565aabbcc,yealink-t46s,1\n",
            Format::Csv,
        )
        .unwrap();
        assert_eq!(
            rows[0].overrides,
            vec![("custom.x".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn json_null_is_not_given_and_empty_overrides_are_skipped() {
        let body = br#"[{"mac": "001565aabbcc", "model": "yealink-t46s", "label": null,
            "overrides": {"a": "1", "b": ""}, "override:c": "3", "override:d": ""}]"#;
        let rows = parse(body, Format::Json).unwrap();
        assert_eq!(rows[0].get("label"), "");
        assert_eq!(
            rows[0].overrides,
            vec![
                ("a".to_string(), "1".to_string()),
                ("c".to_string(), "3".to_string())
            ]
        );
    }

    fn csv_row(header: &str, values: &str) -> Row {
        let csv = format!("mac,model,{header}\n001565aabbcc,yealink-t46s,{values}\n");
        parse(csv.as_bytes(), Format::Csv).unwrap().remove(0)
    }

    #[test]
    fn a_line_needs_user_device_and_domain_and_its_columns_need_a_line() {
        let fields = |row: &Row| {
            let mut e = Vec::new();
            let has = check_line_columns(row, &mut e);
            (has, e.into_iter().map(|e| e.field).collect::<Vec<_>>())
        };
        let all = csv_row("user,device,domain", "100,100a,example.com");
        assert_eq!(fields(&all), (true, vec![]));
        let user = csv_row("user", "100");
        assert_eq!(
            fields(&user),
            (true, vec!["device".into(), "domain".into()])
        );
        let device = csv_row("device,domain", "100a,example.com");
        assert_eq!(fields(&device), (true, vec!["user".into()]));
        let label = csv_row("label,line", "Desk,1");
        assert_eq!(fields(&label), (false, vec!["line".into(), "label".into()]));
        let phone = csv_row("domain", "example.com");
        assert_eq!(fields(&phone), (false, vec![]));
    }

    #[test]
    fn a_line_is_a_port_of_the_model() {
        let text = std::fs::read_to_string("models/yealink-t46s.toml").unwrap();
        let t46s: Model = toml::from_str(&text).unwrap();
        let port = |v: &str, model: Option<&Model>| {
            let mut e = Vec::new();
            let p = row_port(&csv_row("line", v), model, &mut e);
            (p, e.into_iter().map(|e| e.message).collect::<Vec<_>>())
        };
        assert_eq!(port("", Some(&t46s)), (Some(None), vec![]));
        assert_eq!(port("1", Some(&t46s)), (Some(Some(1)), vec![]));
        assert_eq!(port("16", Some(&t46s)), (Some(Some(16)), vec![]));
        assert_eq!(port("99", None), (Some(Some(99)), vec![]));
        let t46s_range = "must be a port from 1 to 16 (yealink-t46s has 16)".to_string();
        assert_eq!(port("17", Some(&t46s)), (None, vec![t46s_range.clone()]));
        assert_eq!(port("0", Some(&t46s)), (None, vec![t46s_range]));
        let any = "must be a port number from 1".to_string();
        assert_eq!(port("0", None), (None, vec![any.clone()]));
        assert_eq!(port("x", None), (None, vec![any]));
    }

    #[test]
    fn json_rows_come_as_a_list_or_under_rows_alone() {
        let row = r#"{"mac":"001565aabbcc","model":"yealink-t46s"}"#;
        for body in [format!("[{row}]"), format!(r#"{{"rows": [{row}]}}"#)] {
            let rows = parse(body.as_bytes(), Format::Json).unwrap();
            assert_eq!(rows.len(), 1, "{body}");
            assert_eq!(rows[0].get("mac"), "001565aabbcc", "{body}");
        }
        for (body, field) in [
            (r#"{"rows": 5}"#.to_string(), "rows"),
            (r#"{"rows": {}}"#.to_string(), "rows"),
            (format!(r#"{{"rows": [{row}], "more": 1}}"#), "json"),
            (format!(r#"{{"lines": [{row}]}}"#), "json"),
            (row.to_string(), "json"),
        ] {
            let e = parse(body.as_bytes(), Format::Json).unwrap_err();
            assert_eq!(e.len(), 1, "{body}: {e:?}");
            assert_eq!(e[0].field, field, "{body}: {e:?}");
        }
    }

    #[test]
    fn free_text_keeps_its_spaces_and_json_keys_are_strict() {
        let rows = parse(
            b"mac,model,label,password\n 001565aabbcc ,yealink-t46s,\" Desk \",\" pw \"\n",
            Format::Csv,
        )
        .unwrap();
        assert_eq!(rows[0].get("mac"), "001565aabbcc");
        assert_eq!(rows[0].get("label"), " Desk ");
        assert_eq!(rows[0].get("password"), " pw ");
        let e = parse(
            br#"[{"mac":"001565aabbcc","mac":"001565aabbcd"}]"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(e.iter().any(|r| r.field.ends_with("mac")), "{e:?}");
    }

    #[test]
    fn csv_records_quotes_and_lines() {
        let r =
            csv_records("a,b\n\"x,1\",\"say \"\"hi\"\"\"\r\n\n\"multi\nline\",z\nlast,").unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0], (1, vec!["a".to_string(), "b".to_string()]));
        assert_eq!(r[1].1, vec!["x,1".to_string(), "say \"hi\"".to_string()]);
        assert_eq!(r[2], (4, vec!["multi\nline".to_string(), "z".to_string()]));
        assert_eq!(r[3], (6, vec!["last".to_string(), String::new()]));
        assert!(csv_records("a,\"open").is_err());
        // A CR that does not end a line is text (the value check refuses it later, naming
        // the field), never dropped.
        let r = csv_records("a,b\rc\r\n").unwrap();
        assert_eq!(r[0].1, vec!["a".to_string(), "b\rc".to_string()]);
        // A quote inside an unquoted field is text, not the start of a quoted field.
        let r = csv_records("a,Desk 5\" screen,c\n").unwrap();
        assert_eq!(
            r[0].1,
            vec![
                "a".to_string(),
                "Desk 5\" screen".to_string(),
                "c".to_string()
            ]
        );
        assert!(csv_records("\"a\"b,c").is_err());
    }

    #[test]
    fn header_errors_name_columns() {
        let e = parse_csv(b"mac,colour,mac\n").unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"colour"), "{e:?}");
        assert!(fields.contains(&"mac"), "{e:?}");
        assert!(fields.contains(&"model"), "{e:?}");
        assert!(e.iter().all(|e| e.line == 1));
    }

    #[test]
    fn rows_and_overrides() {
        let rows = parse_csv(
            b"MAC,model,override:P271,line\n0015651234ab,T46S,x,2\n0015651234ac,T46S,,\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].get("line"), "2");
        assert_eq!(rows[0].overrides, vec![("P271".into(), "x".into())]);
        assert!(rows[1].overrides.is_empty());
        let e = parse_csv(b"mac,model\na,b,c\n").unwrap_err();
        assert_eq!((e[0].line, e[0].field.as_str()), (2, "csv"));
    }

    #[test]
    fn json_rows() {
        let rows = parse_json(
            br#"{"rows":[{"mac":"0015651234ab","model":"T46S","line":2,"overrides":{"k":"v"}}]}"#,
        )
        .unwrap();
        assert_eq!(rows[0].get("line"), "2");
        assert_eq!(rows[0].overrides, vec![("k".into(), "v".into())]);
        let e = parse_json(br#"[{"mac":"x","colour":"red"}, 3]"#).unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].line, e[0].field.as_str()), (1, "colour"));
        assert_eq!((e[1].line, e[1].field.as_str()), (2, "row"));
    }

    #[test]
    fn csv_quoting() {
        let mut s = String::new();
        csv_field(&mut s, "a,\"b\"");
        assert_eq!(s, "\"a,\"\"b\"\"\"");
    }
}
