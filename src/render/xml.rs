//! A small XML tree for the overlays: parsed with quick-xml, every byte that is not
//! touched is written back exactly as the template produced it.
//!
//! Text and attribute values are kept in their escaped (source) form; values the overlay
//! sets are escaped on the way in, so the output stays well-formed whatever a user typed.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// A node: an element, or any other source text (text, comments, declarations) verbatim.
#[derive(Debug, Clone)]
pub enum Node {
    /// An element.
    Elem(Elem),
    /// Source text kept as is.
    Raw(String),
}

/// An element with its attributes (values escaped) and children.
#[derive(Debug, Clone)]
pub struct Elem {
    /// Tag name.
    pub name: String,
    /// Attributes in source order, values in escaped form.
    pub attrs: Vec<(String, String)>,
    /// The start tag as written, while the element is unchanged.
    raw_start: Option<String>,
    /// Written as `<x/>`.
    self_closing: bool,
    /// Children.
    pub children: Vec<Node>,
}

/// Why a document could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("not well-formed XML at byte {position}: {message}")]
pub struct XmlError {
    /// Byte offset.
    pub position: u64,
    /// The parser's words.
    pub message: String,
}

/// A parsed document: top-level nodes (declaration, comments, the root element).
#[derive(Debug, Clone)]
pub struct Doc {
    /// Top-level nodes.
    pub nodes: Vec<Node>,
}

fn err(position: u64, message: impl ToString) -> XmlError {
    XmlError {
        position,
        message: message.to_string(),
    }
}

fn start_elem(
    e: &BytesStart<'_>,
    raw: &str,
    self_closing: bool,
    pos: u64,
) -> Result<Elem, XmlError> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    // quick-xml reads `<   a="1"/>` as an element named ``, and `<a</b x="1"/>` as one
    // named `a</b`; neither could be edited or written back.
    if name.is_empty() {
        return Err(err(pos, "an element without a name"));
    }
    if name.contains(['<', '>', '/', '=', '"', '\'', '&']) {
        return Err(err(pos, format!("`{name}` is not an element name")));
    }
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|x| err(pos, x))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = String::from_utf8_lossy(&a.value).replace('"', "&quot;");
        attrs.push((key, value));
    }
    // Attributes not separated by whitespace cannot be edited in place.
    if !scan_attrs(raw, |_| {}) {
        return Err(err(pos, "attributes must be separated by whitespace"));
    }
    Ok(Elem {
        name,
        attrs,
        raw_start: Some(raw.to_string()),
        self_closing,
        children: Vec::new(),
    })
}

impl Doc {
    /// Parses `text`; mismatched or unclosed tags are errors.
    pub fn parse(text: &str) -> Result<Doc, XmlError> {
        let mut reader = Reader::from_str(text);
        reader.config_mut().check_end_names = true;
        let mut top: Vec<Node> = Vec::new();
        let mut stack: Vec<Elem> = Vec::new();
        let mut roots = 0;
        loop {
            let before = reader.buffer_position();
            let ev = reader.read_event().map_err(|e| err(before, e))?;
            let after = reader.buffer_position();
            let raw = text
                .get(before as usize..after as usize)
                .ok_or_else(|| err(before, "offset outside the text"))?;
            let node = match ev {
                Event::Eof => break,
                Event::Start(e) => {
                    stack.push(start_elem(&e, raw, false, before)?);
                    continue;
                }
                Event::End(_) => {
                    let Some(done) = stack.pop() else {
                        return Err(err(before, "end tag without a start tag"));
                    };
                    Node::Elem(done)
                }
                Event::Empty(e) => Node::Elem(start_elem(&e, raw, true, before)?),
                Event::Text(_)
                | Event::CData(_)
                | Event::Comment(_)
                | Event::Decl(_)
                | Event::PI(_)
                | Event::DocType(_)
                | Event::GeneralRef(_) => Node::Raw(raw.to_string()),
            };
            match stack.last_mut() {
                Some(parent) => parent.children.push(node),
                None => {
                    if let Node::Elem(_) = node {
                        roots += 1;
                    } else if let Node::Raw(r) = &node
                        && !r.trim().is_empty()
                        && !r.trim_start().starts_with("<!--")
                        && !r.trim_start().starts_with("<?")
                        && !(roots == 0 && r.trim_start().starts_with("<!DOCTYPE"))
                    {
                        // Only blanks, comments and processing instructions (and a DOCTYPE
                        // before it) may stand beside the root element.
                        return Err(err(before, "text outside the root element"));
                    }
                    top.push(node);
                }
            }
        }
        if let Some(open) = stack.last() {
            return Err(err(
                text.len() as u64,
                format!("<{}> is not closed", open.name),
            ));
        }
        if roots != 1 {
            return Err(err(0, format!("{roots} root elements")));
        }
        Ok(Doc { nodes: top })
    }

    /// The root element.
    pub fn root_mut(&mut self) -> Option<&mut Elem> {
        self.nodes.iter_mut().find_map(|n| match n {
            Node::Elem(e) => Some(e),
            Node::Raw(_) => None,
        })
    }

    /// The root element.
    pub fn root(&self) -> Option<&Elem> {
        self.nodes.iter().find_map(|n| match n {
            Node::Elem(e) => Some(e),
            Node::Raw(_) => None,
        })
    }

    /// Writes the document back.
    pub fn write(&self) -> String {
        self.write_sized(0)
    }

    /// Writes the document back into a string of `capacity` bytes to start with (the
    /// overlay's output is about as long as the text it parsed).
    pub(crate) fn write_sized(&self, capacity: usize) -> String {
        let mut out = String::with_capacity(capacity);
        for n in &self.nodes {
            write_node(n, &mut out);
        }
        out
    }
}

fn write_node(n: &Node, out: &mut String) {
    match n {
        Node::Raw(r) => out.push_str(r),
        Node::Elem(e) => e.write(out),
    }
}

impl Elem {
    /// A new element holding `text` (escaped here).
    pub fn new(name: &str, attrs: Vec<(String, String)>, text: &str) -> Elem {
        Elem {
            name: name.to_string(),
            attrs,
            raw_start: None,
            self_closing: false,
            children: vec![Node::Raw(escape(text))],
        }
    }

    /// True when no child is an element.
    pub fn is_leaf(&self) -> bool {
        !self.children.iter().any(|c| matches!(c, Node::Elem(_)))
    }

    /// An attribute's escaped value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets attribute `k` to `escaped` (already escaped), editing the start tag as written
    /// so its layout (one attribute per line, say) is kept; a new attribute goes last.
    pub fn set_attr(&mut self, k: &str, escaped: &str) {
        match self.attrs.iter_mut().find(|(a, _)| a == k) {
            Some(slot) => slot.1 = escaped.to_string(),
            None => self.attrs.push((k.to_string(), escaped.to_string())),
        }
        let Some(raw) = self.raw_start.take() else {
            return;
        };
        self.raw_start = match find_attr(&raw, k) {
            Some((_, vs, ve)) => Some(format!("{}{escaped}{}", &raw[..vs], &raw[ve..])),
            None => {
                let end = raw.len() - if raw.ends_with("/>") { 2 } else { 1 };
                let head = raw[..end].trim_end();
                // Same separator as before the last attribute (newline + indent, or a space).
                let sep = self
                    .attrs
                    .iter()
                    .rev()
                    .nth(1)
                    .and_then(|(a, _)| find_attr(&raw, a))
                    .map(|(ws, _, _)| ws)
                    .unwrap_or_else(|| " ".into());
                let tail = &raw[head.len()..];
                Some(format!("{head}{sep}{k}=\"{escaped}\"{tail}"))
            }
        };
    }

    /// Removes attribute `k`, returning its escaped value.
    pub fn remove_attr(&mut self, k: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(a, _)| a == k)?;
        let (_, v) = self.attrs.remove(pos);
        if let Some(raw) = self.raw_start.take() {
            self.raw_start = find_attr_at(&raw, k)
                .map(|(ws, _, _, ve)| format!("{}{}", &raw[..ws], &raw[ve + 1..]));
        }
        Some(v)
    }

    /// Replaces the content with `children` as parsed (a generated duplicate's); an empty
    /// element (`<a/>`) given content opens, so the content is written.
    pub fn replace_children(&mut self, children: Vec<Node>) {
        if !children.is_empty() {
            self.self_closing = false;
        }
        self.raw_start = None;
        self.children = children;
    }

    /// Replaces the content with `text` (escaped here).
    pub fn set_text(&mut self, text: &str) {
        if self.self_closing {
            self.self_closing = false;
            self.raw_start = None;
        }
        self.children = vec![Node::Raw(escape(text))];
    }

    /// The text content, unescaped (for explain).
    pub fn text(&self) -> String {
        let mut raw = String::new();
        for c in &self.children {
            if let Node::Raw(r) = c {
                raw.push_str(r);
            }
        }
        unescape(&raw)
    }

    /// Appends `child` after the last element child, with the same indentation.
    pub fn append(&mut self, child: Elem) {
        if self.self_closing {
            self.self_closing = false;
            self.raw_start = None;
        }
        let last = self
            .children
            .iter()
            .rposition(|c| matches!(c, Node::Elem(_)));
        match last {
            Some(i) => {
                let indent = match i.checked_sub(1).map(|j| &self.children[j]) {
                    Some(Node::Raw(r)) if r.trim().is_empty() => r.clone(),
                    _ => String::new(),
                };
                self.children.insert(i + 1, Node::Elem(child));
                if !indent.is_empty() {
                    self.children.insert(i + 1, Node::Raw(indent));
                }
            }
            None => self.children.push(Node::Elem(child)),
        }
    }

    fn write(&self, out: &mut String) {
        let rebuilt;
        let start = match &self.raw_start {
            Some(r) if !self.self_closing || self.children.is_empty() => r.as_str(),
            _ => {
                let mut s = format!("<{}", self.name);
                for (k, v) in &self.attrs {
                    s.push_str(&format!(" {k}=\"{v}\""));
                }
                s.push_str(if self.self_closing { "/>" } else { ">" });
                rebuilt = s;
                rebuilt.as_str()
            }
        };
        out.push_str(start);
        if self.self_closing {
            return;
        }
        for c in &self.children {
            write_node(c, out);
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

/// Finds attribute `k` in a raw start tag: (the whitespace before it, value start, value
/// end) where the value is `raw[start..end]` and `raw[end]` is the closing quote.
fn find_attr(raw: &str, k: &str) -> Option<(String, usize, usize)> {
    find_attr_at(raw, k).map(|(ws, name, vs, ve)| (raw[ws..name].to_string(), vs, ve))
}

/// Like [`find_attr`], with offsets: (whitespace start, name start, value start, value end).
fn find_attr_at(raw: &str, k: &str) -> Option<(usize, usize, usize, usize)> {
    // An empty name matches nothing.
    if k.is_empty() {
        return None;
    }
    attr_spans(raw)?
        .into_iter()
        .find(|&(_, name, name_end, _, _)| &raw[name..name_end] == k)
        .map(|(ws, name, _, vs, ve)| (ws, name, vs, ve))
}

/// One attribute in a raw start tag: (whitespace start, name start, name end, value start,
/// value end).
type AttrSpan = (usize, usize, usize, usize, usize);

/// Every attribute of a raw start tag, in order, read token by token so text inside a
/// quoted value is never taken for an attribute. `None` when an attribute does not follow
/// whitespace (`a="1"b="2"`, which quick-xml reads but XML forbids) or the tag does not scan.
fn attr_spans(raw: &str) -> Option<Vec<AttrSpan>> {
    let mut out = Vec::new();
    scan_attrs(raw, |span| out.push(span)).then_some(out)
}

/// Scans a raw start tag as [`attr_spans`] does, handing each attribute to `f` in order;
/// false where [`attr_spans`] is `None`. Allocates nothing (parsing checks every tag).
fn scan_attrs(raw: &str, mut f: impl FnMut(AttrSpan)) -> bool {
    let b = raw.as_bytes();
    let skip_ws = |mut j: usize| {
        while j < b.len() && is_xml_space(b[j]) {
            j += 1;
        }
        j
    };
    // Past `<` and the element name.
    let mut j = 1;
    while j < b.len() && !is_xml_space(b[j]) && !matches!(b[j], b'/' | b'>') {
        j += 1;
    }
    loop {
        let ws = j;
        j = skip_ws(j);
        let name = j;
        while j < b.len() && !is_xml_space(b[j]) && !matches!(b[j], b'=' | b'/' | b'>') {
            j += 1;
        }
        if j == name {
            // Only the end of the tag may follow (`/eg="1"` is no attribute).
            return matches!(raw.get(j..), Some(">" | "/>"));
        }
        if ws == name {
            return false;
        }
        let name_end = j;
        j = skip_ws(j);
        if b.get(j) != Some(&b'=') {
            return false;
        }
        j = skip_ws(j + 1);
        let Some(&q) = b.get(j) else {
            return false;
        };
        if q != b'"' && q != b'\'' {
            return false;
        }
        let vs = j + 1;
        let Some(ve) = raw.get(vs..).and_then(|r| r.find(q as char)) else {
            return false;
        };
        let ve = vs + ve;
        f((ws, name, name_end, vs, ve));
        j = ve + 1;
    }
}

/// XML's whitespace, as quick-xml reads it (not form feed, which `is_ascii_whitespace`
/// takes: `\x0Cb="1"` is an attribute named `\x0Cb`).
fn is_xml_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Escapes text or an attribute value.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Unescapes what [`escape`] (or a template) produced; undecodable input is returned as is.
pub fn unescape(s: &str) -> String {
    quick_xml::escape::unescape(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// True for an XML name this crate will write (`[A-Za-z_][A-Za-z0-9_.-]*`, not starting
/// with `xml`). No `:`: a prefix without its namespace declaration is not well-formed to a
/// namespace-aware parser (found by the overlay's property tests).
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !s.to_ascii_lowercase().starts_with("xml")
}

/// Hostile text for the property tests of the overlay and of this module: explicit
/// fragments a user could type (every control character, the Unicode line separators,
/// XML's markup and what XML forbids in comments and text, non-ASCII, the two characters
/// XML 1.0 cannot hold) mixed with arbitrary text, and strings at a length limit.
#[cfg(test)]
pub(crate) mod hostile {
    use proptest::prelude::*;

    /// Fragments besides the control characters ([`control`]).
    pub const FRAGMENTS: &[&str] = &[
        "\r\n",
        "\u{2028}",
        "\u{2029}",
        "]]>",
        "--",
        "]",
        "<!--",
        "-->",
        "\"",
        "'",
        "&",
        "<",
        ">",
        "&amp;",
        "&#x41;",
        "&#0;",
        "<![CDATA[",
        "<a>",
        "</x>",
        "é",
        "中",
        "😀",
        "\u{FEFF}",
        "\u{FFFE}",
        "\u{FFFF}",
        " ",
        "=",
        "#",
        ";",
        "[",
        "/",
        ":",
        "\u{A0}",
        "-",
    ];

    /// One control character: every C0 (NUL, TAB, LF, VT, FF, CR among them), DEL and every
    /// C1 (U+0085 among them).
    pub fn control() -> impl Strategy<Value = String> {
        prop_oneof![0u32..0x20, Just(0x7f_u32), 0x80u32..0xa0]
            .prop_map(|c| char::from_u32(c).map(String::from).unwrap_or_default())
    }

    /// One fragment: a control character, an explicit fragment, or arbitrary text.
    pub fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => control(),
            4 => proptest::sample::select(FRAGMENTS).prop_map(str::to_string),
            3 => "\\PC{1,4}",
            1 => any::<char>().prop_map(String::from),
        ]
    }

    /// Up to `parts` fragments end to end; or, one draw in five, text of `limit - 4` to
    /// `limit + 2` bytes ([`at_length`]).
    pub fn text(parts: usize, limit: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::collection::vec(fragment(), 0..=parts).prop_map(|v| v.concat()),
            1 => at_length(limit),
        ]
    }

    /// Exactly `limit - 4` to `limit + 2` bytes: filler (ASCII or a 3-byte character) and a
    /// fragment last, so a multi-byte character can sit on the limit.
    pub fn at_length(limit: usize) -> impl Strategy<Value = String> {
        (
            limit - 4..=limit + 2,
            fragment(),
            prop_oneof!["[a-z]", Just("中".to_string())],
        )
            .prop_map(|(n, tail, fill)| {
                let mut s = String::with_capacity(n);
                while s.len() + fill.len() + tail.len() <= n {
                    s.push_str(&fill);
                }
                while s.len() + tail.len() < n {
                    s.push('x');
                }
                s.push_str(&tail);
                s
            })
    }

    /// True when XML 1.0 can hold `c` at all (its `Char` production).
    pub fn is_xml_char(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}'
    }

    /// `n` draws of `s` from a deterministic runner (to measure what a generator yields).
    pub fn draws<S: Strategy>(s: S, n: usize) -> Vec<S::Value> {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        (0..n)
            .map(|_| s.new_tree(&mut runner).expect("a value").current())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_exactly() {
        let src = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n<a x='1' y=\"a&amp;b\">\n  <b/>\n  <c>t &lt; u</c>\n</a>\n";
        let d = Doc::parse(src).unwrap();
        assert_eq!(d.write(), src);
    }

    #[test]
    fn attribute_edits_keep_the_layout() {
        let src = "<r>\n  <reg\n    a=\"1\"\n    b='2'\n  />\n</r>";
        let mut d = Doc::parse(src).unwrap();
        let Some(Node::Elem(reg)) = d.root_mut().unwrap().children.get_mut(1) else {
            panic!()
        };
        reg.set_attr("a", "x&amp;");
        reg.set_attr("c", "3");
        assert_eq!(reg.remove_attr("b").as_deref(), Some("2"));
        assert_eq!(
            d.write(),
            "<r>\n  <reg\n    a=\"x&amp;\"\n    c=\"3\"\n  />\n</r>"
        );
        assert!(Doc::parse(&d.write()).is_ok());
    }

    #[test]
    fn rejects_broken_documents() {
        for bad in [
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "</a>",
            "<a/>text",
            "",
            "text<a/>",
            "<![CDATA[x]]><a/>",
            "<a/><!DOCTYPE a>",
        ] {
            assert!(Doc::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "<?xml version=\"1.0\"?>\n<!-- c -->\n<!DOCTYPE a>\n<a/>\n<!-- d -->\n",
            " \n<a/>\n",
        ] {
            assert!(Doc::parse(good).is_ok(), "{good}");
        }
    }

    /// The attribute scan stops at the end of a tag cut short (the parser only hands it
    /// whole tags; the scan must not rely on that).
    #[test]
    fn attribute_scan_of_a_cut_tag_ends() {
        for raw in [
            "<",
            "<a",
            "<a ",
            "<a b",
            "<a b=",
            "<a b=\"1",
            "<a b=\"1\" c",
        ] {
            let _ = attr_spans(raw);
        }
        assert!(attr_spans("<a b=\"1\">").is_some_and(|s| s.len() == 1));
    }

    /// Found by the `overlay_xml_attribute` fuzz target: an empty attribute name (an
    /// unchecked override key) looped forever in the start-tag search.
    #[test]
    fn empty_attribute_name_terminates() {
        let mut d = Doc::parse("<r a=\"1\" b='2'/>").unwrap();
        let r = d.root_mut().unwrap();
        r.set_attr("", "x");
        assert_eq!(r.attr("a"), Some("1"));
        assert_eq!(r.attr(""), Some("x"));
        assert_eq!(find_attr_at("<r a=\"1\"/>", ""), None);
    }

    /// Found by the `overlay_xml_attribute` fuzz target: an element without a name parsed,
    /// and moving its duplicate attribute wrote `</>`, so the output no longer parsed.
    #[test]
    fn rejects_an_element_without_a_name() {
        // And (found on the confirmation run) one whose name holds markup, so the start-tag
        // scan stopped at its `/` and missed the attributes.
        for bad in [
            "<r><a x=\"1\"/><   x=\"2\"/></r>",
            "<r>< x=\"2\"></ ></r>",
            "< />",
            "<r><a</b x=\"1\"/></r>",
            "<r><a=b/></r>",
            "<r><a x=\"1\" /y=\"2\"/></r>",
        ] {
            assert!(Doc::parse(bad).is_err(), "{bad}");
        }
        let out = crate::render::overlay::apply(
            crate::model::Format::XmlAttribute,
            "<r><a x=\"1\"/><b x=\"2\"/></r>",
            [],
        );
        assert_eq!(out.unwrap(), "<r><a x=\"2\"/><b/></r>");
    }

    /// Found by the `overlay_xml_attribute` fuzz target: `a="1"b="2"` parsed (quick-xml
    /// allows it), the start-tag search missed `b`, and moving a duplicate `b` wrote it twice.
    /// The search now reads the tag token by token, so a value's text is no match either.
    #[test]
    fn attributes_are_found_as_tokens() {
        assert!(Doc::parse("<r><a x=\"1\"/><b y=\"2\"x=\"3\"/></r>").is_err());
        let raw = "<e a='x k=\"1\"' k = \"2\" kk=\"3\"/>";
        assert_eq!(find_attr(raw, "k"), Some((" ".to_string(), 20, 21)));
        assert_eq!(find_attr(raw, "x"), None);
        assert_eq!(
            find_attr(raw, "kk").map(|(_, vs, ve)| &raw[vs..ve]),
            Some("3")
        );
        // Found on the confirmation run: quick-xml reads `\x0Cb` as the name, so must this.
        let raw = "<e b=\"1\" \u{c}b=\"2\"/>";
        assert_eq!(
            find_attr(raw, "b").map(|(_, vs, ve)| &raw[vs..ve]),
            Some("1")
        );
        assert_eq!(
            find_attr(raw, "\u{c}b").map(|(_, vs, ve)| &raw[vs..ve]),
            Some("2")
        );
        let out = crate::render::overlay::apply(
            crate::model::Format::XmlAttribute,
            "<r><e b=\"1\" \u{c}b=\"2\"/><f b=\"3\"/></r>",
            [],
        );
        assert_eq!(out.unwrap(), "<r><e b=\"3\" \u{c}b=\"2\"/><f/></r>");
        let out = crate::render::overlay::apply(
            crate::model::Format::XmlAttribute,
            "<r><e a='x k=\"1\"' k=\"2\"/></r>",
            [("k", "9")],
        );
        assert_eq!(out.unwrap(), "<r><e a='x k=\"1\"' k=\"9\"/></r>");
    }

    /// Text of an element as a conforming parser reads it (no text: empty).
    fn strict_text(e: roxmltree::Node<'_, '_>) -> String {
        e.children().filter_map(|c| c.text()).collect()
    }

    proptest::proptest! {
        /// Text and attribute values set here come out escaped, whatever they hold: a
        /// conforming parser (roxmltree) reads the document exactly when the value holds
        /// only XML characters (the overlay's check refuses the others), and then reads back
        /// the text as set (up to XML's end-of-line handling of CR) and the attribute as set
        /// (unless it holds TAB, LF or CR, which attribute normalisation makes spaces).
        #[test]
        fn escaped_values_read_back_strictly(t in hostile::text(8, 1024)) {
            let src = "<?xml version=\"1.0\"?>\n<r>\n  <p>1</p>\n  <q a=\"1\"/>\n</r>\n";
            let mut d = Doc::parse(src).unwrap();
            let root = d.root_mut().unwrap();
            if let Some(Node::Elem(q)) = root.children.get_mut(3) {
                q.set_attr("a", &escape(&t));
                q.set_text(&t);
            }
            root.append(Elem::new("z", vec![("b".into(), escape(&t))], &t));
            let out = d.write();
            // Our own reader reads back every value exactly.
            let ours = Doc::parse(&out).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
            let ours = ours.root().unwrap();
            for (i, attr) in [(3, "a"), (5, "b")] {
                let Some(Node::Elem(e)) = ours.children.get(i) else { panic!("{out}") };
                prop_assert_eq!(e.text(), t.as_str());
                prop_assert_eq!(e.attr(attr).map(unescape), Some(t.clone()));
            }
            let strict = roxmltree::Document::parse(&out);
            let xml_text = t.chars().all(hostile::is_xml_char);
            prop_assert_eq!(strict.is_ok(), xml_text, "{:?}: {:?}", out, strict.err());
            let Ok(doc) = strict else { return Ok(()) };
            let elems: Vec<_> = doc.root_element().children().filter(|n| n.is_element()).collect();
            prop_assert_eq!(elems.len(), 3);
            // XML's end-of-line handling may read CR LF and CR as LF.
            let lf = |s: &str| s.replace("\r\n", "\n").replace('\r', "\n");
            for (e, attr) in [(elems[1], "a"), (elems[2], "b")] {
                prop_assert_eq!(lf(&strict_text(e)), lf(&t), "{:?}", out);
                if !t.contains(['\t', '\n', '\r']) {
                    prop_assert_eq!(e.attribute(attr), Some(t.as_str()), "{:?}", out);
                }
            }
        }
    }

    #[test]
    fn set_and_append_escape() {
        let mut d = Doc::parse("<r>\n  <p>1</p>\n  <q/>\n</r>\n").unwrap();
        let root = d.root_mut().unwrap();
        if let Node::Elem(q) = &mut root.children[3] {
            q.set_text("<&>");
        }
        root.append(Elem::new("z", vec![], "\"x\""));
        assert_eq!(
            d.write(),
            "<r>\n  <p>1</p>\n  <q>&lt;&amp;&gt;</q>\n  <z>&quot;x&quot;</z>\n</r>\n"
        );
    }
}
