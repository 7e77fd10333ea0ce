//! Format-aware overlay of per-MAC overrides onto a rendered file.
//!
//! Invariant (property-tested): the result never holds a key twice, and every override's
//! key carries the override's value. An override replaces the generated value in place, or
//! is appended when the template did not generate the key.

use crate::model::Format;

use super::xml::{self, Doc, Elem, Node, XmlError};

/// Applies `overrides` to `text` in the given format. XML that does not parse is an error
/// (a template bug: the goldens parse every XML file).
pub fn apply<'a>(
    format: Format,
    text: &str,
    overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, XmlError> {
    match format {
        Format::KeyValue => Ok(key_value(text, overrides)),
        Format::XmlElement => xml_element(text, overrides),
        Format::XmlAttribute => xml_attribute(text, overrides),
    }
}

/// Every (key, value) a file sets, in document order (values unescaped).
pub fn pairs(format: Format, text: &str) -> Result<Vec<(String, String)>, XmlError> {
    match format {
        Format::KeyValue => Ok(text
            .lines()
            .filter_map(|l| {
                let k = kv_key(l)?;
                let v = l.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
                Some((k.to_string(), v.to_string()))
            })
            .collect()),
        Format::XmlElement => {
            let doc = Doc::parse(text)?;
            let mut out = Vec::new();
            if let Some(root) = doc.root() {
                for_each_leaf(root, &mut |key, _, e| out.push((key.to_string(), e.text())));
            }
            Ok(out)
        }
        Format::XmlAttribute => {
            let doc = Doc::parse(text)?;
            let mut out = Vec::new();
            if let Some(root) = doc.root() {
                walk_attrs(root, &mut |k, v| {
                    out.push((k.to_string(), xml::unescape(v)))
                });
            }
            Ok(out)
        }
    }
}

fn walk_attrs(e: &Elem, f: &mut dyn FnMut(&str, &str)) {
    for (k, v) in &e.attrs {
        if !is_namespace_attr(k) {
            f(k, v);
        }
    }
    for c in &e.children {
        if let Node::Elem(c) = c {
            walk_attrs(c, f);
        }
    }
}

fn is_namespace_attr(k: &str) -> bool {
    k == "xmlns" || k.starts_with("xmlns:") || k.starts_with("xsi:")
}

/// The index attribute of an element (`idx` for Snom, `index` for Fanvil).
fn index_of(e: &Elem) -> Option<(&'static str, &str)> {
    e.attr("idx")
        .map(|v| ("idx", v))
        .or_else(|| e.attr("index").map(|v| ("index", v)))
}

/// The key segment of an element: `name` or `name[n]`.
fn segment(e: &Elem) -> String {
    let mut s = String::new();
    push_segment(&mut s, e);
    s
}

/// Appends `e`'s key segment ([`segment`]) to `key`.
fn push_segment(key: &mut String, e: &Elem) {
    key.push_str(&e.name);
    if let Some((_, n)) = index_of(e) {
        key.push('[');
        key.push_str(&xml::unescape(n));
        key.push(']');
    }
}

/// Calls `f(key, path, leaf)` for every leaf below `root` in document order (the root
/// itself is never a key; `path`: child indexes from the root); returns the index
/// attribute of the first indexed element, if any. One key string and one path are
/// reused throughout.
fn for_each_leaf(root: &Elem, f: &mut dyn FnMut(&str, &[usize], &Elem)) -> Option<&'static str> {
    fn go(
        e: &Elem,
        key: &mut String,
        path: &mut Vec<usize>,
        f: &mut dyn FnMut(&str, &[usize], &Elem),
        idx_attr: &mut Option<&'static str>,
    ) {
        for (i, c) in e.children.iter().enumerate() {
            let Node::Elem(c) = c else { continue };
            let indexed = index_of(c);
            if let Some((a, _)) = indexed {
                idx_attr.get_or_insert(a);
            }
            path.push(i);
            let len = key.len();
            if c.is_leaf() {
                push_segment(key, c);
                f(key, path, c);
            } else {
                if indexed.is_some() {
                    push_segment(key, c);
                    key.push('/');
                }
                go(c, key, path, f, idx_attr);
            }
            key.truncate(len);
            path.pop();
        }
    }
    let mut idx_attr = None;
    go(root, &mut String::new(), &mut Vec::new(), f, &mut idx_attr);
    idx_attr
}

/// Every leaf's key and path (child indexes from the root), in document order. The paths
/// sit end to end in one arena (`Leaves::path`), so a large file costs a few allocations,
/// not several per leaf.
struct Leaves {
    /// (key, range of its path in `paths`).
    keys: Vec<(String, std::ops::Range<usize>)>,
    paths: Vec<usize>,
    /// The index attribute of the first indexed element, if any.
    idx_attr: Option<&'static str>,
}

impl Leaves {
    fn path(&self, range: &std::ops::Range<usize>) -> &[usize] {
        &self.paths[range.clone()]
    }
}

/// Paths (child indexes from the root) of every leaf, with its key.
fn leaf_paths(root: &Elem) -> Leaves {
    let (mut keys, mut paths) = (Vec::new(), Vec::new());
    let idx_attr = for_each_leaf(root, &mut |key, path, _| {
        let start = paths.len();
        paths.extend_from_slice(path);
        keys.push((key.to_string(), start..paths.len()));
    });
    Leaves {
        keys,
        paths,
        idx_attr,
    }
}

fn at_mut<'e>(root: &'e mut Elem, path: &[usize]) -> Option<&'e mut Elem> {
    let mut cur = root;
    for &i in path {
        cur = match cur.children.get_mut(i)? {
            Node::Elem(e) => e,
            Node::Raw(_) => return None,
        };
    }
    Some(cur)
}

/// Removes the child at `path` together with the whitespace before it.
fn remove_at(root: &mut Elem, path: &[usize]) {
    let Some((&last, parent)) = path.split_last() else {
        return;
    };
    if let Some(p) = at_mut(root, parent) {
        p.children.remove(last);
        if last > 0 && matches!(&p.children[last - 1], Node::Raw(r) if r.trim().is_empty()) {
            p.children.remove(last - 1);
        }
    }
}

/// Splits `a[1]/b[2]/name[3]` into (name, index) segments.
/// Segments of an xml-element key. Only indexed ancestors appear in keys, so every segment
/// but the last must carry an index (`line[1]/Reg`; `A/B` names nothing).
fn parse_key(key: &str) -> Option<Vec<(&str, Option<&str>)>> {
    let segs: Vec<(&str, Option<&str>)> = key
        .split('/')
        .map(|seg| {
            let (name, idx) = match seg.split_once('[') {
                Some((n, rest)) => (n, Some(rest.strip_suffix(']')?)),
                None => (seg, None),
            };
            let idx_ok = idx.is_none_or(|i| {
                !i.is_empty()
                    && i.len() <= 16
                    && i.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            (xml::valid_name(name) && idx_ok).then_some((name, idx))
        })
        .collect::<Option<_>>()?;
    let (_, parents) = segs.split_last()?;
    parents.iter().all(|(_, i)| i.is_some()).then_some(segs)
}

/// A template key's first position in the document (`&[]` for a key added by an override).
type FirstAt<'k> = std::collections::HashMap<&'k str, &'k [usize], foldhash::fast::FixedState>;

fn xml_element<'a>(
    text: &str,
    overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, XmlError> {
    let mut doc = Doc::parse(text)?;
    let Some(root) = doc.root_mut() else {
        return Ok(text.to_string());
    };
    let leaves = leaf_paths(root);
    let idx_attr = leaves.idx_attr.unwrap_or("idx");
    let (mut first, mut removals) = collapse_generated_duplicates(root, &leaves);
    let container = plain_container(root, &leaves);
    let mut appends: Vec<(Vec<usize>, Elem)> = Vec::new();
    for (k, v) in last_value_wins(overrides) {
        if let Some(p) = first.get(k) {
            if let Some(e) = at_mut(root, p) {
                e.set_text(v);
            }
            continue;
        }
        if let Some(append) = new_element(root, k, v, idx_attr, &container) {
            appends.push(append);
            first.insert(k, &[]);
        }
    }
    // Appends go after the last element child of their container, so they shift no path
    // taken above; then removals, from the end so earlier paths stay valid.
    for (target, elem) in appends {
        match at_mut(root, &target) {
            Some(c) => c.append(elem),
            None => root.append(elem),
        }
    }
    removals.sort_unstable();
    for p in removals.iter().rev() {
        remove_at(root, p);
        // A container whose every element was a duplicate goes too; left empty it would
        // read as a leaf, a key of its own (`fkey[1]` beside `fkey[1]/Type`).
        let mut q = &p[..p.len().saturating_sub(1)];
        while !q.is_empty() && at_mut(root, q).is_some_and(|e| e.is_leaf()) {
            remove_at(root, q);
            q = &q[..q.len() - 1];
        }
    }
    Ok(doc.write_sized(text.len() + 256))
}

/// A key generated twice: the later value wins, at the first position. Returns each key's
/// first position and the later positions to remove. Keys are the template's own (a fast
/// hash; an override key is only looked up, or added once).
fn collapse_generated_duplicates<'k>(
    root: &mut Elem,
    leaves: &'k Leaves,
) -> (FirstAt<'k>, Vec<&'k [usize]>) {
    let mut first: FirstAt<'k> =
        std::collections::HashMap::with_capacity_and_hasher(leaves.keys.len(), Default::default());
    let mut removals: Vec<&[usize]> = Vec::new();
    for (key, range) in &leaves.keys {
        let path = leaves.path(range);
        match first.get(key.as_str()) {
            Some(&p0) => {
                let text = at_mut(root, path).map(|e| e.children.clone());
                if let (Some(children), Some(e0)) = (text, at_mut(root, p0)) {
                    e0.replace_children(children);
                }
                removals.push(path);
            }
            None => {
                first.insert(key.as_str(), path);
            }
        }
    }
    (first, removals)
}

/// The container for new plain keys: the element holding the most plain leaves (the
/// settings block: `<config>`, `<flat-profile>`, `<phone-settings>`), the first on a
/// tie; else the element holding the first indexed element; else the root.
fn plain_container(root: &mut Elem, leaves: &Leaves) -> Vec<usize> {
    let mut counts: Vec<(&[usize], usize)> = Vec::new();
    for (k, range) in &leaves.keys {
        if k.contains('/') {
            continue;
        }
        let p = leaves.path(range);
        let parent = &p[..p.len() - 1];
        match counts.iter_mut().find(|(q, _)| *q == parent) {
            Some((_, n)) => *n += 1,
            None => counts.push((parent, 1)),
        }
    }
    let best = counts
        .iter()
        .map(|(_, n)| *n)
        .max()
        .and_then(|m| counts.iter().find(|(_, n)| *n == m))
        .map(|(p, _)| p.to_vec());
    best.or_else(|| {
        let (_, range) = leaves.keys.first()?;
        let p = leaves.path(range);
        (1..=p.len()).find_map(|n| {
            let e = at_mut(root, &p[..n])?;
            index_of(e).is_some().then(|| p[..n - 1].to_vec())
        })
    })
    .unwrap_or_default()
}

/// The same key twice in `overrides`: the later value wins, as in a map, at the first
/// key's place (a second new key would otherwise find the empty path recorded for the
/// first, the root's).
fn last_value_wins<'a>(
    overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, &'a str)> {
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = Default::default();
    for (k, v) in overrides {
        match at.get(k) {
            Some(&i) => order[i].1 = v,
            None => {
                at.insert(k, order.len());
                order.push((k, v));
            }
        }
    }
    order
}

/// The element an override key the template lacks adds, and the path of its parent:
/// beside the deepest existing indexed parent the key names (`line[2]` next to
/// `line[1]`), the missing parents built around it; `None` for a key that does not parse.
fn new_element(
    root: &Elem,
    k: &str,
    v: &str,
    idx_attr: &str,
    container: &[usize],
) -> Option<(Vec<usize>, Elem)> {
    let segs = parse_key(k)?;
    let ((name, idx), parents) = segs.split_last()?;
    let leaf_attrs = idx
        .map(|i| vec![(idx_attr.to_string(), xml::escape(i))])
        .unwrap_or_default();
    let mut elem = Elem::new(name, leaf_attrs, v);
    let home = match parents.first() {
        Some((n, _)) => sibling_home(root, n),
        None if idx.is_some() => sibling_home(root, name),
        None => None,
    };
    let mut target = home.unwrap_or_else(|| container.to_vec());
    let mut found = 0;
    for depth in (1..=parents.len()).rev() {
        let prefix: String = parents[..depth]
            .iter()
            .map(|(n, i)| format!("{n}[{}]/", i.unwrap_or_default()))
            .collect();
        if let Some(path) = indexed_parent(root, &prefix) {
            target = path;
            found = depth;
            break;
        }
    }
    for (n, i) in parents[found..].iter().rev() {
        let attrs = i
            .map(|i| vec![(idx_attr.to_string(), xml::escape(i))])
            .unwrap_or_default();
        let mut wrap = Elem::new(n, attrs, "");
        wrap.children.clear();
        wrap.append(elem);
        elem = wrap;
    }
    Some((target, elem))
}

/// The path of the parent of the first indexed element called `name`.
fn sibling_home(root: &Elem, name: &str) -> Option<Vec<usize>> {
    fn go(e: &Elem, name: &str, path: &mut Vec<usize>) -> Option<Vec<usize>> {
        for (i, c) in e.children.iter().enumerate() {
            let Node::Elem(c) = c else { continue };
            if c.name == name && index_of(c).is_some() {
                return Some(path.clone());
            }
            path.push(i);
            if let Some(found) = go(c, name, path) {
                return Some(found);
            }
            path.pop();
        }
        None
    }
    go(root, name, &mut Vec::new())
}

/// The path of the non-leaf element whose key prefix is `prefix` (`line[1]/`).
fn indexed_parent(root: &Elem, prefix: &str) -> Option<Vec<usize>> {
    fn go(e: &Elem, cur: &str, want: &str, path: &mut Vec<usize>) -> Option<Vec<usize>> {
        for (i, c) in e.children.iter().enumerate() {
            let Node::Elem(c) = c else { continue };
            // A leaf holds no keys, except an empty indexed element (`<line idx="1"/>`):
            // a key under it opens it rather than adding a second `line[1]`.
            if c.is_leaf() && !(index_of(c).is_some() && c.text().trim().is_empty()) {
                continue;
            }
            path.push(i);
            let p = match index_of(c) {
                Some(_) => format!("{cur}{}/", segment(c)),
                None => cur.to_string(),
            };
            if index_of(c).is_some() && p == want {
                return Some(path.clone());
            }
            if want.starts_with(&p)
                && let Some(found) = go(c, &p, want, path)
            {
                return Some(found);
            }
            path.pop();
        }
        None
    }
    go(root, "", prefix, &mut Vec::new())
}

fn xml_attribute<'a>(
    text: &str,
    overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, XmlError> {
    let mut doc = Doc::parse(text)?;
    let Some(root) = doc.root_mut() else {
        return Ok(text.to_string());
    };
    // Collect (path, attribute position) of every key.
    fn go(e: &Elem, path: &mut Vec<usize>, out: &mut Vec<(String, Vec<usize>)>) {
        for (k, _) in &e.attrs {
            if !is_namespace_attr(k) {
                out.push((k.clone(), path.clone()));
            }
        }
        for (i, c) in e.children.iter().enumerate() {
            if let Node::Elem(c) = c {
                path.push(i);
                go(c, path, out);
                path.pop();
            }
        }
    }
    let mut keys = Vec::new();
    go(root, &mut Vec::new(), &mut keys);
    let mut first: std::collections::HashMap<String, Vec<usize>> = Default::default();
    let mut last_holder: Option<Vec<usize>> = None;
    for (k, path) in &keys {
        last_holder = Some(path.clone());
        match first.get(k) {
            Some(p0) => {
                // Later value wins at the first position; the later attribute goes.
                let v = at_mut(root, path).and_then(|e| e.remove_attr(k));
                if let (Some(v), Some(e0)) = (v, at_mut(root, p0)) {
                    e0.set_attr(k, &v);
                }
            }
            None => {
                first.insert(k.clone(), path.clone());
            }
        }
    }
    let holder = last_holder.unwrap_or_default();
    for (k, v) in overrides {
        let path = first.get(k).cloned().unwrap_or_else(|| holder.clone());
        if let Some(e) = at_mut(root, &path) {
            e.set_attr(k, &xml::escape(v));
            first.insert(k.to_string(), path);
        }
    }
    Ok(doc.write())
}

/// Why an override key or value cannot be used in a format.
pub fn check_override(format: Format, key: &str, value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err("value must not contain line breaks or control characters".into());
    }
    if value.chars().count() > 1024 {
        return Err("value must be at most 1024 characters".into());
    }
    // Not characters XML 1.0 can hold, escaped or not (found by the property tests).
    if format.is_xml() && value.contains(['\u{FFFE}', '\u{FFFF}']) {
        return Err("value must not contain U+FFFE or U+FFFF (not XML characters)".into());
    }
    match format {
        Format::XmlAttribute => {
            if key.chars().count() > 256 || !xml::valid_name(key) || is_namespace_attr(key) {
                return Err(
                    "key must be an XML attribute name (letters, digits, `_`, `.`, \
                            `-`; not starting with a digit or `xml`)"
                        .into(),
                );
            }
            Ok(())
        }
        Format::XmlElement => {
            if key.chars().count() > 256 || parse_key(key).is_none() {
                return Err("key must be an element name, optionally with an index \
                            (`P271`, `user_host[1]`, `line[1]/RegisterAddr`)"
                    .into());
            }
            Ok(())
        }
        Format::KeyValue => {
            if key.is_empty() || key.chars().count() > 256 {
                return Err("key must be 1 to 256 characters".into());
            }
            // `#` and `;` start comment lines, and kv_key trims whitespace: such a key
            // would be written as a line that sets nothing, or sets another key.
            if key.starts_with(['#', ';'])
                || key.contains('=')
                || key.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(
                    "key must not start with # or ; or contain =, spaces or control characters"
                        .into(),
                );
            }
            Ok(())
        }
    }
}

/// Checks an override before any model is known (an account not yet linked): the key must
/// fit at least one format; the linked model's formats are checked when it is linked.
pub fn check_override_unlinked(key: &str, value: &str) -> Result<(), String> {
    let formats = [Format::KeyValue, Format::XmlAttribute, Format::XmlElement];
    let mut first_err = None;
    for f in formats {
        match check_override(f, key, value) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_default())
}

/// The key of a `key = value` line, if it is one (comments and blank lines are not).
pub fn kv_key(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, _) = t.split_once('=')?;
    let k = k.trim_end();
    if k.is_empty() { None } else { Some(k) }
}

fn key_value<'a>(text: &str, overrides: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    use std::borrow::Cow;
    use std::collections::hash_map::Entry;
    // Lines borrow the rendered text; only an overridden line is a new string. This runs
    // for every render, overrides or not (a key generated twice is resolved here too).
    // A rendered file is a few dozen to a few hundred short lines: one fast hash each
    // (foldhash; keys are the template's own, not an attacker's choice), sized up front.
    let n = text.len() / 24 + 8;
    let mut lines: Vec<Cow<'_, str>> = Vec::with_capacity(n);
    let mut index: std::collections::HashMap<&str, usize, foldhash::fast::FixedState> =
        std::collections::HashMap::with_capacity_and_hasher(n, Default::default());
    for line in text.lines() {
        match kv_key(line) {
            Some(k) => match index.entry(k) {
                // A key generated twice: the later value wins, at the first position.
                Entry::Occupied(e) => lines[*e.get()] = Cow::Borrowed(line),
                Entry::Vacant(e) => {
                    e.insert(lines.len());
                    lines.push(Cow::Borrowed(line));
                }
            },
            None => lines.push(Cow::Borrowed(line)),
        }
    }
    for (k, v) in overrides {
        let line = Cow::Owned(format!("{k} = {v}"));
        match index.entry(k) {
            // A generated key, or the same new key twice in `overrides`: the later value
            // wins, at the first position.
            Entry::Occupied(e) => lines[*e.get()] = line,
            Entry::Vacant(e) => {
                e.insert(lines.len());
                lines.push(line);
            }
        }
    }
    let mut out = String::with_capacity(text.len() + 64);
    for l in &lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::xml::hostile;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn parse(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| {
                let k = kv_key(l)?;
                let v = l.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    }

    #[test]
    fn replaces_in_place_and_appends() {
        let text = "#!version:1.0.0.1\na = 1\n# c = 9\nb = 2\n";
        let out = apply(Format::KeyValue, text, [("b", "x"), ("z", "y")]).unwrap();
        assert_eq!(out, "#!version:1.0.0.1\na = 1\n# c = 9\nb = x\nz = y\n");
    }

    /// Found by the `overlay_key_value` fuzz target: keys the check let through that the
    /// written file does not set (a `;` comment line; a key trimmed to another key).
    #[test]
    fn accepted_key_value_keys_are_set() {
        for bad in [";x", "\u{2003}a", "a\u{a0}", "a\u{2028}b"] {
            assert!(
                check_override(Format::KeyValue, bad, "v").is_err(),
                "{bad:?}"
            );
        }
        for good in ["a", "account.1.sip_server.1.address", "x;y", "a#b"] {
            assert!(
                check_override(Format::KeyValue, good, "v").is_ok(),
                "{good:?}"
            );
            let out = apply(Format::KeyValue, "a = 1\n", [(good, "v")]).unwrap();
            let got = pairs(Format::KeyValue, &out).unwrap();
            assert!(got.contains(&(good.to_string(), "v".to_string())), "{out}");
        }
    }

    /// Found by the `overlay_key_value` fuzz target: the same new key twice in the
    /// overrides indexed past the template's lines.
    #[test]
    fn a_new_key_twice_in_the_overrides() {
        let out = apply(
            Format::KeyValue,
            "a = 1\n",
            [("z", "1"), ("a", "2"), ("z", "3")],
        );
        assert_eq!(out.unwrap(), "a = 2\nz = 3\n");
    }

    #[test]
    fn generated_duplicates_collapse() {
        let out = apply(Format::KeyValue, "a = 1\nb = 2\na = 3\n", []).unwrap();
        assert_eq!(out, "a = 3\nb = 2\n");
    }

    proptest! {
        #[test]
        fn never_a_key_twice_and_overrides_win(
            generated in proptest::collection::vec(("[a-e]{1,2}", "[a-z0-9 ]{0,4}"), 0..12),
            comments in proptest::collection::vec("#[ -~]{0,8}", 0..3),
            overrides in proptest::collection::btree_map("[a-g]{1,2}", "[ -~&&[^\\n]]{0,6}", 0..6),
        ) {
            let mut text = String::from("#!version:1.0.0.1\n");
            for c in &comments { text.push_str(c); text.push('\n'); }
            for (k, v) in &generated { text.push_str(&format!("{k} = {v}\n")); }
            let ov: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = apply(Format::KeyValue, &text, ov.iter().copied()).unwrap();
            let pairs = parse(&out);
            let mut seen = std::collections::HashSet::new();
            for (k, _) in &pairs { prop_assert!(seen.insert(k.clone()), "{} twice in {}", k, out); }
            let got: BTreeMap<_, _> = pairs.into_iter().collect();
            for (k, v) in &overrides { prop_assert_eq!(got.get(k).map(String::as_str), Some(v.trim())); }
            for (k, v) in &generated {
                if !overrides.contains_key(k) {
                    let last = generated.iter().rev().find(|(k2, _)| k2 == k).map(|(_, v)| v.trim());
                    prop_assert_eq!(got.get(k).map(String::as_str), last, "{} {}", k, v);
                }
            }
            prop_assert!(out.starts_with("#!version:1.0.0.1\n"));
        }

        /// What the check lets through is written as one `key = value` line: no line added
        /// (as a phone splits lines, on LF and CR), no control character written, and the
        /// file reads back the key and the value as typed (trimmed, as every `key = value`
        /// reader trims). Keys and values mix hostile fragments (every control character,
        /// U+2028, `]]>`, `--`, quotes, non-ASCII) with arbitrary text and lengths at the
        /// limits; what the check refuses is asserted exactly after.
        #[test]
        fn checked_user_text_never_adds_a_line(key in kv_key_text(), value in hostile::text(8, 1024)) {
            let verdict = check_override(Format::KeyValue, &key, &value);
            if verdict.is_ok() {
                let out = apply(Format::KeyValue, "a = 1\n", [(key.as_str(), value.as_str())]).unwrap();
                prop_assert!(out.lines().count() <= 2, "{:?}", out);
                prop_assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "a control character in {:?}", out);
                let mut want = vec![(key.clone(), value.trim().to_string())];
                if key != "a" {
                    want.insert(0, ("a".to_string(), "1".to_string()));
                }
                prop_assert_eq!(pairs(Format::KeyValue, &out).unwrap(), want, "{:?}", out);
            }
            // Refused: a control character or more than 1024 characters in the value; an empty or
            // over-long key, a comment marker first, `=`, whitespace or a control character.
            let bad_value = value.chars().any(char::is_control) || value.chars().count() > 1024;
            let bad_key = key.is_empty()
                || key.chars().count() > 256
                || key.starts_with(['#', ';'])
                || key.contains('=')
                || key.chars().any(|c| c.is_whitespace() || c.is_control());
            prop_assert_eq!(verdict.is_ok(), !bad_key && !bad_value, "{:?} = {:?}: {:?}", key, value, verdict);
        }
    }

    /// Override keys for `key = value` files: mostly plausible keys, hostile fragments, and
    /// keys at the 256-character limit.
    fn kv_key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-z0-9._#;\\[\\]-]{1,16}",
            3 => proptest::collection::vec(hostile::fragment(), 0..4).prop_map(|v| v.concat()),
            1 => hostile::at_length(256),
        ]
    }

    /// The generators reach what their names promise: both verdicts of the check in a fair
    /// share of draws, every kind of hostile fragment, and both sides of each length limit.
    #[test]
    fn hostile_generators_reach_both_verdicts() {
        let n = 4000;
        let values = hostile::draws(hostile::text(8, 1024), n);
        let keys = hostile::draws(kv_key_text(), n);
        let ok_values = values
            .iter()
            .filter(|v| check_override(Format::KeyValue, "k", v).is_ok())
            .count();
        let ok_keys = keys
            .iter()
            .filter(|k| check_override(Format::KeyValue, k, "v").is_ok())
            .count();
        for (what, ok) in [("values", ok_values), ("keys", ok_keys)] {
            assert!(
                ok * 5 >= n && ok * 5 <= 4 * n,
                "{what}: {ok} of {n} accepted"
            );
        }
        for needle in [
            "\r", "\n", "\0", "\t", "\u{b}", "\u{c}", "\u{7f}", "\u{85}", "\u{9f}", "\u{2028}",
            "\u{2029}", "]]>", "--", "]", "<!--", "\"", "'", "&", "<", ">", "é", "中", "😀",
            "\u{fffe}",
        ] {
            assert!(
                values.iter().any(|v| v.contains(needle)),
                "no value holds {needle:?}"
            );
        }
        for len in [1024, 1025] {
            assert!(
                values.iter().any(|v| v.len() == len),
                "no value of {len} bytes"
            );
        }
        for len in [256, 257] {
            assert!(keys.iter().any(|k| k.len() == len), "no key of {len} bytes");
        }
    }

    const GS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gs_provision version=\"1\">\n  <config version=\"1\">\n    <P271>1</P271>\n    <P47>sip.example.com</P47>\n  </config>\n</gs_provision>\n";
    const FANVIL: &str = "<sysConf>\n  <sip>\n    <line index=\"1\">\n      <RegisterAddr>a</RegisterAddr>\n    </line>\n  </sip>\n  <web><Port>80</Port></web>\n</sysConf>\n";
    const POLY: &str = "<?xml version=\"1.0\"?>\n<polycomConfig>\n  <reg reg.1.address=\"1004\" reg.1.label=\"A\"/>\n  <call call.autoOffHook.1.enabled=\"0\"/>\n</polycomConfig>\n";

    #[test]
    fn xml_element_replaces_and_appends() {
        let out = apply(Format::XmlElement, GS, [("P47", "x&y"), ("P9", "<v>")]).unwrap();
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gs_provision version=\"1\">\n  <config version=\"1\">\n    <P271>1</P271>\n    <P47>x&amp;y</P47>\n    <P9>&lt;v&gt;</P9>\n  </config>\n</gs_provision>\n"
        );
        let out = apply(
            Format::XmlElement,
            FANVIL,
            [
                ("line[1]/RegisterAddr", "b"),
                ("line[1]/RegisterPort", "5061"),
                ("line[2]/EnableReg", "0"),
                ("Port", "8080"),
            ],
        )
        .unwrap();
        let p = pairs(Format::XmlElement, &out).unwrap();
        let want: Vec<(String, String)> = [
            ("line[1]/RegisterAddr", "b"),
            ("line[1]/RegisterPort", "5061"),
            ("Port", "8080"),
            ("line[2]/EnableReg", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut got = p.clone();
        got.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{out}");
    }

    /// An index may hold letters, digits, `_` and `-` (vendors name lines `line[ext_1]`);
    /// anything else is not a key and adds nothing.
    #[test]
    fn xml_element_index_characters() {
        let out = apply(
            Format::XmlElement,
            FANVIL,
            [("line[a_1]/EnableReg", "1"), ("line[b-2]/EnableReg", "0")],
        )
        .unwrap();
        let keys: Vec<String> = pairs(Format::XmlElement, &out)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(keys.contains(&"line[a_1]/EnableReg".to_string()), "{out}");
        assert!(keys.contains(&"line[b-2]/EnableReg".to_string()), "{out}");
        let out = apply(Format::XmlElement, FANVIL, [("line[a.1]/EnableReg", "1")]).unwrap();
        assert_eq!(out, apply(Format::XmlElement, FANVIL, []).unwrap());
    }

    /// With no plain leaf anywhere, a new plain key goes to the element holding the first
    /// indexed element (not into the indexed element itself).
    #[test]
    fn a_new_plain_key_without_a_settings_block() {
        let text = "<r><s><line idx=\"1\"><a>1</a></line></s></r>";
        let out = apply(Format::XmlElement, text, [("b", "2")]).unwrap();
        assert_eq!(out, "<r><s><line idx=\"1\"><a>1</a></line><b>2</b></s></r>");
    }

    /// A new indexed key without parents goes beside the elements of its name; a new plain
    /// key goes to the settings block, even when indexed elements share its name.
    #[test]
    fn new_keys_find_their_place() {
        let text = "<r><c><x>1</x><y>2</y></c><s><k idx=\"1\">a</k></s></r>";
        let out = apply(Format::XmlElement, text, [("k[2]", "b")]).unwrap();
        assert_eq!(
            out,
            "<r><c><x>1</x><y>2</y></c><s><k idx=\"1\">a</k><k idx=\"2\">b</k></s></r>"
        );
        let out = apply(Format::XmlElement, text, [("k", "v")]).unwrap();
        assert_eq!(
            out,
            "<r><c><x>1</x><y>2</y><k>v</k></c><s><k idx=\"1\">a</k></s></r>"
        );
    }

    /// Removing a container emptied of duplicates leaves its siblings alone.
    #[test]
    fn an_emptied_container_takes_no_sibling_with_it() {
        let text = "<r><s idx=\"1\"><k idx=\"1\"><a>1</a></k><k idx=\"1\"><a>2</a></k><z>9</z></s><c><b>1</b></c></r>";
        let out = apply(Format::XmlElement, text, []).unwrap();
        let p = pairs(Format::XmlElement, &out).unwrap();
        assert!(
            p.contains(&("s[1]/z".to_string(), "9".to_string())),
            "{out}"
        );
        assert!(
            p.contains(&("s[1]/k[1]/a".to_string(), "2".to_string())),
            "{out}"
        );
    }

    /// A key generated twice where the first is an empty element (`<a/>`): the later value
    /// wins, written inside the first's place.
    #[test]
    fn a_duplicate_over_an_empty_element() {
        let out = apply(Format::XmlElement, "<r><a/><a>x</a><b>1</b></r>", []).unwrap();
        assert_eq!(out, "<r><a>x</a><b>1</b></r>");
    }

    /// A new key under an indexed element that was empty (`<line idx="1"/>`) opens it.
    #[test]
    fn a_new_key_under_an_empty_indexed_element() {
        let out = apply(
            Format::XmlElement,
            "<r><line idx=\"1\"/><c>1</c></r>",
            [("line[1]/a", "2")],
        )
        .unwrap();
        assert_eq!(out, "<r><line idx=\"1\"><a>2</a></line><c>1</c></r>");
    }

    /// An indexed element holding a value stays a value: a key under it goes to a new
    /// element, and both keys read back.
    #[test]
    fn a_key_under_an_indexed_value_keeps_the_value() {
        let out = apply(
            Format::XmlElement,
            "<r><line idx=\"1\">x</line><c>1</c></r>",
            [("line[1]/a", "2")],
        )
        .unwrap();
        let p = pairs(Format::XmlElement, &out).unwrap();
        assert!(
            p.contains(&("line[1]".to_string(), "x".to_string())),
            "{out}"
        );
        assert!(
            p.contains(&("line[1]/a".to_string(), "2".to_string())),
            "{out}"
        );
    }

    /// Before any model is known, a key must fit at least one format.
    #[test]
    fn unlinked_overrides_fit_some_format() {
        assert_eq!(check_override_unlinked("a.b", "1"), Ok(()));
        assert_eq!(check_override_unlinked("line[1]/a", "1"), Ok(()));
        assert!(check_override_unlinked("a b", "1").is_err());
        assert!(check_override_unlinked("a", "1\n2").is_err());
    }

    /// Keys of up to 256 characters are accepted, longer ones refused, in every format;
    /// values up to 1024 characters (characters, as the API document's lengths count them).
    #[test]
    fn key_and_value_length_limits() {
        for format in [Format::XmlAttribute, Format::XmlElement] {
            assert_eq!(check_override(format, &"a".repeat(256), "v"), Ok(()));
            assert!(check_override(format, &"a".repeat(257), "v").is_err());
        }
        let kv = Format::KeyValue;
        assert_eq!(check_override(kv, &"é".repeat(256), "v"), Ok(()));
        assert!(check_override(kv, &"é".repeat(257), "v").is_err());
        assert_eq!(check_override(kv, "k", &"é".repeat(1024)), Ok(()));
        assert!(check_override(kv, "k", &"é".repeat(1025)).is_err());
    }

    /// Found by the `overlay_xml_element` fuzz target: a container generated twice
    /// (`<k idx="1">` twice) was emptied of its duplicate leaves and then read as a leaf,
    /// so the output held the key `s[1]/k[1]` twice.
    #[test]
    fn an_emptied_duplicate_container_goes() {
        let text = "<r><s idx=\"1\">\n  <k idx=\"1\"><a>1</a></k>\n  <k idx=\"1\"><a>2</a></k>\n  <k idx=\"1\"><a>3</a></k>\n</s><c><b>1</b></c><d><b>2</b></d></r>";
        let out = apply(Format::XmlElement, text, []).unwrap();
        assert_eq!(
            out,
            "<r><s idx=\"1\">\n  <k idx=\"1\"><a>3</a></k>\n</s><c><b>2</b></c></r>"
        );
        let keys: Vec<String> = pairs(Format::XmlElement, &out)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["s[1]/k[1]/a", "b"]);
    }

    /// Found by the `overlay_xml_element` fuzz target: a new key twice in the overrides
    /// set the root's text the second time (and a later removal then panicked).
    #[test]
    fn xml_element_new_key_twice_in_the_overrides() {
        let out = apply(
            Format::XmlElement,
            "<r><c><a>1</a><a>2</a></c></r>",
            [("b", "1"), ("a", "3"), ("b", "2")],
        );
        assert_eq!(out.unwrap(), "<r><c><a>3</a><b>2</b></c></r>");
    }

    #[test]
    fn new_keys_go_to_the_settings_block() {
        let gs = "<gs_provision version=\"1\">\n  <mac>001565a1b2c3</mac>\n  <config version=\"1\">\n    <P271>1</P271>\n    <P47>x</P47>\n  </config>\n</gs_provision>\n";
        let out = apply(Format::XmlElement, gs, [("P144", "0")]).unwrap();
        assert!(
            out.contains("<P47>x</P47>\n    <P144>0</P144>\n  </config>"),
            "{out}"
        );
    }

    #[test]
    fn xml_element_generated_duplicates_collapse() {
        let out = apply(
            Format::XmlElement,
            "<r><c><a>1</a><b>2</b><a>3</a></c></r>",
            [],
        )
        .unwrap();
        assert_eq!(out, "<r><c><a>3</a><b>2</b></c></r>");
    }

    #[test]
    fn xml_attribute_replaces_and_appends() {
        let out = apply(
            Format::XmlAttribute,
            POLY,
            [("reg.1.label", "B\"&"), ("new.key", "1")],
        )
        .unwrap();
        assert_eq!(
            out,
            "<?xml version=\"1.0\"?>\n<polycomConfig>\n  <reg reg.1.address=\"1004\" reg.1.label=\"B&quot;&amp;\"/>\n  <call call.autoOffHook.1.enabled=\"0\" new.key=\"1\"/>\n</polycomConfig>\n"
        );
        let out = apply(
            Format::XmlAttribute,
            "<r><a x=\"1\"/><b x=\"2\" y=\"3\"/></r>",
            [],
        )
        .unwrap();
        assert_eq!(out, "<r><a x=\"2\"/><b y=\"3\"/></r>");
    }

    #[test]
    fn xml_keys_are_checked() {
        assert!(check_override(Format::XmlElement, "P271", "1").is_ok());
        assert!(check_override(Format::XmlElement, "line[1]/RegisterAddr", "x").is_ok());
        for bad in [
            "", "1abc", "a b", "a[", "a[]", "a/", "<a>", "a[1]]", "xmlfoo",
        ] {
            assert!(
                check_override(Format::XmlElement, bad, "v").is_err(),
                "{bad}"
            );
        }
        assert!(check_override(Format::XmlAttribute, "reg.1.label", "x").is_ok());
        for bad in ["", "a b", "a=b", "a\"", "xmlns", "1a"] {
            assert!(
                check_override(Format::XmlAttribute, bad, "v").is_err(),
                "{bad}"
            );
        }
        assert!(check_override(Format::XmlAttribute, "a", "x\ny").is_err());
        // Found by the property test: an unindexed parent names no generated key.
        assert!(check_override(Format::XmlElement, "A/A", "").is_err());
        assert!(check_override(Format::XmlElement, "line[1]/Reg", "").is_ok());
    }

    /// Found by the XML property tests once a conforming parser checked them: a `:` in a
    /// key (a namespace prefix never declared) and U+FFFE or U+FFFF in a value (not XML
    /// characters) were accepted and made files a conforming parser refuses. Markup, `]]>`,
    /// `--`, `]` and non-ASCII are accepted and read back as typed.
    #[test]
    fn xml_overrides_stay_strictly_well_formed() {
        let v = "]]> -- ] <!-- --> <![CDATA[ &amp; \"'<> é 中 😀 \u{2028}";
        for f in [Format::XmlElement, Format::XmlAttribute] {
            assert!(check_override(f, "a:b", "1").is_err());
            assert!(check_override(f, "P1", "a\u{FFFE}").is_err());
            assert!(check_override(f, "P1", "a\u{FFFF}").is_err());
            assert!(check_override(f, "P1", v).is_ok());
        }
        assert!(check_override(Format::KeyValue, "a:b", "\u{FFFF}").is_ok());
        let out = apply(Format::XmlElement, GS, [("P47", v), ("P9", v)]).unwrap();
        let doc = roxmltree::Document::parse(&out).unwrap();
        for name in ["P47", "P9"] {
            let e = doc.descendants().find(|n| n.has_tag_name(name)).unwrap();
            assert_eq!(e.text(), Some(v), "{out}");
        }
        let out = apply(
            Format::XmlAttribute,
            POLY,
            [("reg.1.label", v), ("new.key", v)],
        )
        .unwrap();
        let doc = roxmltree::Document::parse(&out).unwrap();
        for name in ["reg.1.label", "new.key"] {
            let e = doc.descendants().find(|n| n.has_attribute(name)).unwrap();
            assert_eq!(e.attribute(name), Some(v), "{out}");
        }
    }

    fn no_dup_keys(format: Format, out: &str) -> Result<BTreeMap<String, String>, TestCaseError> {
        let p = pairs(format, out).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
        let mut seen = BTreeMap::new();
        for (k, v) in p {
            prop_assert!(
                seen.insert(k.clone(), v).is_none(),
                "{} twice in {}",
                k,
                out
            );
        }
        Ok(seen)
    }

    /// Override keys for XML files: plausible ones, hostile fragments (`:` among them, a
    /// namespace prefix), and names either side of the 256-character limit.
    fn xml_key() -> impl Strategy<Value = String> {
        prop_oneof![
            "P[0-9]{1,3}",
            "(line|fkey)\\[[1-3]\\]/(Reg|Port|[A-Z][a-z]{0,3})",
            "user_(host|name)\\[[1-3]\\]",
            "\\PC{0,6}",
            hostile::text(3, 256),
            "[a-z]{1,3}:[a-z]{1,3}",
            "[a-z][a-z0-9_]{252,257}",
        ]
    }

    /// Template values with what XML forbids unescaped in text and comments (escaped here,
    /// as the templates escape them).
    const TEMPLATE_VALUE: &str = "([a-z<&>\"'\\]-]|]]>|--|<!--){0,4}";

    /// What a conforming parser (roxmltree: namespaces, `--` in comments, `]]>` in text,
    /// characters XML cannot hold) reads from `out`, keyed as [`pairs`] keys it; a failure
    /// where `out` is not well-formed.
    fn strict_pairs(format: Format, out: &str) -> Result<Vec<(String, String)>, TestCaseError> {
        fn leaves(e: roxmltree::Node<'_, '_>, prefix: &str, out: &mut Vec<(String, String)>) {
            for c in e.children().filter(roxmltree::Node::is_element) {
                let idx = c.attribute("idx").or_else(|| c.attribute("index"));
                let name = c.tag_name().name();
                let seg = idx.map_or_else(|| name.to_string(), |i| format!("{name}[{i}]"));
                if !c.children().any(|x| x.is_element()) {
                    let text = c.children().filter_map(|x| x.text()).collect();
                    out.push((format!("{prefix}{seg}"), text));
                } else if idx.is_some() {
                    leaves(c, &format!("{prefix}{seg}/"), out);
                } else {
                    leaves(c, prefix, out);
                }
            }
        }
        let doc = roxmltree::Document::parse(out)
            .map_err(|e| TestCaseError::fail(format!("not well-formed XML: {e}\n{out}")))?;
        let mut got = Vec::new();
        match format {
            Format::XmlElement => leaves(doc.root_element(), "", &mut got),
            Format::XmlAttribute => {
                for e in doc.descendants().filter(roxmltree::Node::is_element) {
                    got.extend(
                        e.attributes()
                            .map(|a| (a.name().to_string(), a.value().to_string())),
                    );
                }
            }
            Format::KeyValue => return Err(TestCaseError::fail("not an XML format")),
        }
        Ok(got)
    }

    /// Checks an XML overlay's output: well-formed to a conforming parser, which reads the
    /// same keys and values as [`pairs`]; no key twice; every accepted override's value
    /// exactly as typed. And what the check refuses, for a value: exactly a control
    /// character, a character XML cannot hold (U+FFFE, U+FFFF), or more than 1024
    /// characters.
    fn check_xml_overlay(
        format: Format,
        text: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), TestCaseError> {
        let ok: Vec<(&str, &str)> = overrides
            .iter()
            .filter(|(k, v)| check_override(format, k, v).is_ok())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let out = apply(format, text, ok.iter().copied()).unwrap();
        let got = no_dup_keys(format, &out)?;
        for (k, v) in &ok {
            prop_assert_eq!(got.get(*k).map(String::as_str), Some(*v), "{}", out);
        }
        let strict = strict_pairs(format, &out)?;
        prop_assert_eq!(&strict, &pairs(format, &out).unwrap(), "{}", out);
        for v in overrides.values() {
            let refused = v
                .chars()
                .any(|c| c.is_control() || !hostile::is_xml_char(c))
                || v.chars().count() > 1024;
            let verdict = check_override(format, "P1", v);
            prop_assert_eq!(verdict.is_err(), refused, "{:?}: {:?}", v, verdict);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn xml_element_never_a_key_twice_and_overrides_win(
            overrides in proptest::collection::btree_map(xml_key(), hostile::text(6, 1024), 0..8),
            extra in proptest::collection::vec(("P[0-9]{1,2}", TEMPLATE_VALUE), 0..6),
        ) {
            let mut text = String::from("<?xml version=\"1.0\"?>\n<root>\n  <!-- a - b ]]> -->\n  <config>\n");
            for (k, v) in &extra {
                text.push_str(&format!("    <{k}>{}</{k}>\n", xml::escape(v)));
            }
            text.push_str("    <line index=\"1\"><Reg>a</Reg></line>\n    <user_host idx=\"2\" perm=\"\">h</user_host>\n  </config>\n</root>\n");
            check_xml_overlay(Format::XmlElement, &text, &overrides)?;
        }

        #[test]
        fn xml_attribute_never_a_key_twice_and_overrides_win(
            overrides in proptest::collection::btree_map(
                prop_oneof![
                    "[a-z]{1,3}(\\.[0-9])?|\\PC{0,5}",
                    hostile::text(3, 256),
                    "[a-z]{1,3}:[a-z]{1,3}",
                    "[a-z][a-z0-9.]{252,257}",
                ],
                hostile::text(6, 1024),
                0..8,
            ),
            extra in proptest::collection::vec(("[a-c]\\.[1-2]", TEMPLATE_VALUE), 0..6),
        ) {
            let mut text = String::from("<?xml version=\"1.0\"?>\n<polycomConfig>\n  <!-- a - b ]]> -->\n");
            for (k, v) in &extra {
                text.push_str(&format!("  <e {k}=\"{}\"/>\n", xml::escape(v)));
            }
            text.push_str("</polycomConfig>\n");
            check_xml_overlay(Format::XmlAttribute, &text, &overrides)?;
        }
    }
}
