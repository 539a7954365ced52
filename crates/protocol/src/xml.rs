//! A minimal XML writer for AWS responses: elements and escaped text, nothing else.

use std::fmt::Write;

/// Builds an XML document as a string.
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    /// An empty document.
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(512),
        }
    }

    /// A document that starts with the XML declaration, as S3 sends.
    pub fn with_declaration() -> Self {
        let mut w = Self::new();
        w.out
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        w
    }

    /// Opens `<tag>`.
    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// Opens `<tag xmlns="ns">`.
    pub fn open_ns(&mut self, tag: &str, ns: &str) -> &mut Self {
        self.open2_ns(tag, "", ns)
    }

    /// Opens `<{tag}{suffix} xmlns="ns">`, e.g. `<GetCallerIdentityResponse xmlns="...">`.
    pub fn open2_ns(&mut self, tag: &str, suffix: &str, ns: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push_str(suffix);
        self.out.push_str(" xmlns=\"");
        escape_into(&mut self.out, ns);
        self.out.push_str("\">");
        self
    }

    /// Opens `<{tag}{suffix}>`, e.g. `<GetCallerIdentityResult>`, without building the name first.
    pub fn open2(&mut self, tag: &str, suffix: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push_str(suffix);
        self.out.push('>');
        self
    }

    /// Closes `</{tag}{suffix}>`.
    pub fn close2(&mut self, tag: &str, suffix: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(suffix);
        self.out.push('>');
        self
    }

    /// Closes `</tag>`.
    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// Writes `<tag>text</tag>` with `text` escaped.
    pub fn elem(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        escape_into(&mut self.out, text);
        self.close(tag)
    }

    /// Writes `<tag>text</tag>` when `text` is `Some`.
    pub fn opt_elem(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.elem(tag, t);
        }
        self
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Bytes [`escape_into`] does not copy as they are: the five XML special characters, controls, and
/// the lead byte of U+FFFE and U+FFFF (which XML cannot carry either).
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[0xef] = true;
    t[b'&' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'"' as usize] = true;
    t[b'\'' as usize] = true;
    t
};

/// Appends `text` to `out` with the five XML special characters escaped, and carriage return as a
/// character reference (so a parser does not turn it into a newline).
///
/// XML 1.0 cannot carry the other control characters (but tab and newline) nor U+FFFE and U+FFFF,
/// not even as character references: `&#1;` makes the whole reply malformed, and botocore then
/// fails to parse an error reply instead of raising the error. They only reach a reply when an error
/// message quotes what the client sent, so they are written as the visible text `\u0001`: the
/// reply stays well-formed and still says what was received.
pub fn escape_into(out: &mut String, text: &str) {
    // Most values (ids, ARNs, dates) need no escaping: copy them whole (one table look-up a byte).
    if !text.bytes().any(|b| SPECIAL[usize::from(b)]) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if ((c as u32) < 0x20 && c != '\n' && c != '\t')
                || matches!(c, '\u{fffe}' | '\u{ffff}') =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `text` with XML special characters escaped.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    escape_into(&mut s, text);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_nests() {
        let mut w = XmlWriter::new();
        w.open_ns("A", "urn:x")
            .elem("B", "a<b>&\"c'")
            .opt_elem("C", None)
            .close("A");
        assert_eq!(
            w.finish(),
            "<A xmlns=\"urn:x\"><B>a&lt;b&gt;&amp;&quot;c&apos;</B></A>"
        );
    }

    #[test]
    fn only_special_bytes_are_escaped() {
        for b in 0u8..=0x7f {
            let s = char::from(b).to_string();
            let plain = escape(&s) == s;
            let special = b < 0x20 || b"&<>\"'".contains(&b);
            // Tab and newline are copied as they are even though they go through the slow path.
            assert_eq!(plain, !special || b == b'\t' || b == b'\n', "byte {b:#x}");
        }
        assert_eq!(escape("é\u{1}"), "é\\u0001");
    }

    #[test]
    fn control_characters_are_shown_in_well_formed_text() {
        assert_eq!(
            escape("a\rb\u{1}\u{0}\u{1f}"),
            "a&#13;b\\u0001\\u0000\\u001f"
        );
        assert_eq!(
            escape("\u{fffe}x\u{ffff}\u{fffd}\u{ef}"),
            "\\ufffex\\uffff\u{fffd}\u{ef}"
        );
        // What XML 1.0 allows: tab, newline, carriage return (as a reference), and from U+0020 on,
        // but for U+FFFE and U+FFFF. Every escaped character is one of those or markup.
        let allowed =
            |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{fffd}' | '\u{10000}'..);
        let all: String = (0..0x11000u32).filter_map(char::from_u32).collect();
        let escaped = escape(&all);
        assert!(escaped.chars().all(allowed));
        assert!(!escaped.contains("&#1;"));
    }
}
