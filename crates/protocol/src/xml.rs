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

/// Bytes [`escape_into`] does not copy as they are: the five XML special characters and controls.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'&' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'"' as usize] = true;
    t[b'\'' as usize] = true;
    t
};

/// Appends `text` to `out` with the five XML special characters escaped; control characters that XML
/// 1.0 cannot carry are written as character references so nothing is lost.
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
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {
                let _ = write!(out, "&#{};", c as u32);
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
        assert_eq!(escape("é\u{1}"), "é&#1;");
    }

    #[test]
    fn control_characters_survive() {
        assert_eq!(escape("a\rb\u{1}"), "a&#13;b&#1;");
    }
}
