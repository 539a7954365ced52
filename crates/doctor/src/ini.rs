//! The AWS shared config and credentials file format, parsed the way botocore parses it, with positions.
//!
//! botocore reads both files with Python's `configparser.RawConfigParser()` (strict mode, `=` and `:`
//! delimiters, full-line `#`/`;` comments only, no interpolation, keys lower-cased, section names as
//! written, a `[DEFAULT]` section whose keys every other section inherits) and then splits values that
//! start with a newline into one level of nested `key = value` pairs (`s3 =` sub-sections). This module
//! reproduces that line for line (Python 3.11's `RawConfigParser._read`), but instead of stopping at the
//! first problem it records every problem with its position and keeps going, so the doctor can say
//! *what* and *where* when botocore only says "Unable to parse config file".
//!
//! [`IniFile::botocore_fails`] tells whether botocore would reject the file; the recovered sections are
//! still available for further checks.

use std::path::{Path, PathBuf};

/// A 1-based line and column (in characters) inside a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line number, starting at 1.
    pub line: u32,
    /// Column in characters, starting at 1.
    pub col: u32,
}

/// One `key = value` option of a section, as botocore would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key as botocore stores it: text before the first delimiter, right-trimmed, lower-cased.
    pub key: String,
    /// The key exactly as written in the file.
    pub raw_key: String,
    /// The value: first-line text after the delimiter, stripped, joined with continuation lines by `\n`,
    /// trailing whitespace and empty lines removed (configparser's result before botocore's nesting).
    pub value: String,
    /// Where the key starts.
    pub key_pos: Pos,
    /// Where the value starts on the key's line (just after the delimiter and its spaces).
    pub value_pos: Pos,
    /// Lines that configparser joined into this value as continuation lines.
    pub continuation_lines: Vec<u32>,
}

impl Entry {
    /// True when botocore turns this value into a nested map (the value starts with a newline).
    pub fn is_nested(&self) -> bool {
        self.value.starts_with('\n')
    }

    /// botocore's `_parse_nested`: the nested `key = value` pairs, or the first line without `=`.
    pub fn nested(&self) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in py_splitlines(&self.value) {
            let line = py_strip(line);
            if line.is_empty() {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => {
                    let k = py_strip(k).to_string();
                    let v = py_strip(v).to_string();
                    if let Some(slot) = out.iter_mut().find(|(ek, _)| *ek == k) {
                        slot.1 = v;
                    } else {
                        out.push((k, v));
                    }
                }
                None => return Err(line.to_string()),
            }
        }
        Ok(out)
    }
}

/// A `[section]` and its options, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets, exactly as configparser takes it (case and inner spaces kept).
    pub name: String,
    /// Position of the `[`.
    pub pos: Pos,
    /// The options written in this section (not including inherited `[DEFAULT]` ones).
    pub entries: Vec<Entry>,
}

impl Section {
    /// The option named `key` (already lower-case) written in this section.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// What is wrong with a line, in configparser's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file starts with a UTF-8 byte order mark; configparser sees `\u{feff}[...` and finds no header.
    Bom,
    /// The bytes are not UTF-8 (UTF-16 files land here too); `utf16` when it starts with a UTF-16 BOM.
    NotUtf8 {
        /// The file starts with a UTF-16 byte order mark.
        utf16: bool,
    },
    /// A non-comment line before the first `[section]` (`MissingSectionHeaderError`).
    NoSectionHeader,
    /// A second `[name]` with the same name (`DuplicateSectionError`); `first` is the earlier header.
    DuplicateSection {
        /// The section name.
        name: String,
        /// Position of the first header with that name.
        first: Pos,
    },
    /// A second option with the same (case-folded) key in one section (`DuplicateOptionError`).
    DuplicateKey {
        /// The section name.
        section: String,
        /// The lower-cased key.
        key: String,
        /// Position of the first occurrence.
        first: Pos,
    },
    /// A line with neither `=` nor `:` (or with an empty key), collected into `ParsingError`.
    InvalidLine,
    /// A value that starts on the next line (nested block) has a line without `=`: botocore's
    /// `_parse_nested` raises `ValueError`.
    BadNestedLine {
        /// The section name.
        section: String,
        /// The option whose nested block is broken.
        key: String,
    },
}

/// A problem found while parsing, with where it is. Every problem here makes botocore fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// Where it is.
    pub pos: Pos,
    /// The offending line's text, with control and invisible characters escaped.
    pub line_text: String,
}

/// A parsed config or credentials file.
#[derive(Clone, Debug, Default)]
pub struct IniFile {
    /// The path the file was read from (for messages and locations).
    pub path: PathBuf,
    /// Sections in file order, without `[DEFAULT]` (a duplicate header is recovered by merging).
    pub sections: Vec<Section>,
    /// Options of `[DEFAULT]` sections, inherited by every section as configparser does.
    pub defaults: Vec<Entry>,
    /// Positions of `[DEFAULT]` headers.
    pub default_headers: Vec<Pos>,
    /// Every problem found; any problem means botocore rejects the whole file.
    pub problems: Vec<Problem>,
}

impl IniFile {
    /// True when botocore's `raw_config_parse` would raise `ConfigParseError` for this file.
    pub fn botocore_fails(&self) -> bool {
        !self.problems.is_empty()
    }

    /// The section named exactly `name` (case-sensitive).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The option `key` of section `name` as configparser's `get` returns it: the section's own, else
    /// the `[DEFAULT]` one.
    pub fn lookup<'a>(&'a self, section: &'a Section, key: &str) -> Option<&'a Entry> {
        section
            .get(key)
            .or_else(|| self.defaults.iter().find(|e| e.key == key))
    }

    /// All options of a section as configparser's `options()` lists them: its own, then inherited ones.
    pub fn options<'a>(&'a self, section: &'a Section) -> Vec<&'a Entry> {
        let mut out: Vec<&Entry> = section.entries.iter().collect();
        for d in &self.defaults {
            if section.get(&d.key).is_none() {
                out.push(d);
            }
        }
        out
    }
}

/// Parses `bytes` read from `path` with botocore's semantics. Never fails: problems are recorded.
pub fn parse(path: &Path, bytes: &[u8]) -> IniFile {
    let mut file = IniFile {
        path: path.to_path_buf(),
        ..IniFile::default()
    };
    let text: String = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(e) => {
            let utf16 = bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]);
            let good = &bytes[..e.valid_up_to()];
            let good = std::str::from_utf8(good).unwrap_or_default();
            let line = good.matches('\n').count() as u32 + 1;
            let col = good.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
            file.problems.push(Problem {
                kind: ProblemKind::NotUtf8 { utf16 },
                pos: Pos { line, col },
                line_text: String::new(),
            });
            if utf16 {
                return file;
            }
            // Keep analysing the rest as lossy text so later checks can still point at lines.
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    let mut body = text.as_str();
    if let Some(rest) = body.strip_prefix('\u{feff}') {
        file.problems.push(Problem {
            kind: ProblemKind::Bom,
            pos: Pos { line: 1, col: 1 },
            line_text: escape(first_line(body)),
        });
        body = rest;
    }
    Parser::new(&mut file).run(body);
    file
}

/// Which section the parser is filling.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cur {
    Default,
    Section(usize),
}

struct Parser<'f> {
    file: &'f mut IniFile,
    cursect: Option<Cur>,
    sectname: String,
    /// Index of the current option in the current section (configparser's truthy `optname`).
    optidx: Option<usize>,
    indent_level: usize,
    /// A missing-header problem was recorded already (configparser stops at the first).
    saw_header_problem: bool,
}

impl<'f> Parser<'f> {
    fn new(file: &'f mut IniFile) -> Self {
        Parser {
            file,
            cursect: None,
            sectname: String::new(),
            optidx: None,
            indent_level: 0,
            saw_header_problem: false,
        }
    }

    fn entries_mut(&mut self, cur: Cur) -> &mut Vec<Entry> {
        match cur {
            Cur::Default => &mut self.file.defaults,
            Cur::Section(i) => &mut self.file.sections[i].entries,
        }
    }

    fn run(mut self, text: &str) {
        // Line pieces of each value, joined at the end like `_join_multiline_values`.
        let mut pieces: Vec<((Cur, usize), Vec<String>)> = Vec::new();
        for (idx, line) in py_file_lines(text).enumerate() {
            let lineno = idx as u32 + 1;
            let value = py_strip(line);
            if value.starts_with('#') || value.starts_with(';') {
                continue;
            }
            if value.is_empty() {
                if let (Some(cur), Some(oi)) = (self.cursect, self.optidx) {
                    if let Some((_, p)) = pieces.iter_mut().find(|(k, _)| *k == (cur, oi)) {
                        p.push(String::new());
                    }
                }
                continue;
            }
            let cur_indent = line.chars().take_while(|c| py_isspace(*c)).count();
            if let (Some(cur), Some(oi), true) =
                (self.cursect, self.optidx, cur_indent > self.indent_level)
            {
                if let Some((_, p)) = pieces.iter_mut().find(|(k, _)| *k == (cur, oi)) {
                    p.push(value.to_string());
                }
                self.entries_mut(cur)[oi].continuation_lines.push(lineno);
                continue;
            }
            self.indent_level = cur_indent;
            let col0 = cur_indent as u32 + 1;
            if let Some(header) = section_header(value) {
                let pos = Pos {
                    line: lineno,
                    col: col0,
                };
                self.optidx = None;
                if let Some(i) = self.file.sections.iter().position(|s| s.name == header) {
                    self.file.problems.push(Problem {
                        kind: ProblemKind::DuplicateSection {
                            name: header.to_string(),
                            first: self.file.sections[i].pos,
                        },
                        pos,
                        line_text: escape(line),
                    });
                    self.cursect = Some(Cur::Section(i));
                } else if header == "DEFAULT" {
                    self.file.default_headers.push(pos);
                    self.cursect = Some(Cur::Default);
                } else {
                    self.file.sections.push(Section {
                        name: header.to_string(),
                        pos,
                        entries: Vec::new(),
                    });
                    self.cursect = Some(Cur::Section(self.file.sections.len() - 1));
                }
                self.sectname = header.to_string();
                continue;
            }
            let Some(cur) = self.cursect else {
                if !self.saw_header_problem {
                    self.saw_header_problem = true;
                    self.file.problems.push(Problem {
                        kind: ProblemKind::NoSectionHeader,
                        pos: Pos {
                            line: lineno,
                            col: col0,
                        },
                        line_text: escape(line),
                    });
                }
                continue;
            };
            let Some(delim) = value.find(['=', ':']) else {
                self.file.problems.push(Problem {
                    kind: ProblemKind::InvalidLine,
                    pos: Pos {
                        line: lineno,
                        col: col0,
                    },
                    line_text: escape(line),
                });
                continue;
            };
            let raw_key = py_rstrip(&value[..delim]);
            let after = &value[delim + 1..];
            let optval = py_strip(after);
            let lead = after.chars().take_while(|c| py_isspace(*c)).count();
            let value_col = col0 + value[..delim].chars().count() as u32 + 1 + lead as u32;
            let key_pos = Pos {
                line: lineno,
                col: col0,
            };
            if raw_key.is_empty() {
                self.file.problems.push(Problem {
                    kind: ProblemKind::InvalidLine,
                    pos: key_pos,
                    line_text: escape(line),
                });
            }
            let key = raw_key.to_lowercase();
            let entries = self.entries_mut(cur);
            if let Some(existing) = entries.iter().position(|e| e.key == key) {
                let first = entries[existing].key_pos;
                let section = self.sectname.clone();
                self.file.problems.push(Problem {
                    kind: ProblemKind::DuplicateKey {
                        section,
                        key: key.clone(),
                        first,
                    },
                    pos: key_pos,
                    line_text: escape(line),
                });
                // Recover like the other SDKs: the later value wins.
                let entries = self.entries_mut(cur);
                entries[existing] = Entry {
                    key,
                    raw_key: raw_key.to_string(),
                    value: String::new(),
                    key_pos,
                    value_pos: Pos {
                        line: lineno,
                        col: value_col,
                    },
                    continuation_lines: Vec::new(),
                };
                pieces.retain(|(k, _)| *k != (cur, existing));
                pieces.push(((cur, existing), vec![optval.to_string()]));
                self.optidx = (!raw_key.is_empty()).then_some(existing);
                continue;
            }
            entries.push(Entry {
                key,
                raw_key: raw_key.to_string(),
                value: String::new(),
                key_pos,
                value_pos: Pos {
                    line: lineno,
                    col: value_col,
                },
                continuation_lines: Vec::new(),
            });
            let oi = entries.len() - 1;
            pieces.push(((cur, oi), vec![optval.to_string()]));
            // configparser's `optname` is falsy for an empty key: no continuation lines attach to it.
            self.optidx = (!raw_key.is_empty()).then_some(oi);
        }
        for ((cur, oi), parts) in pieces {
            let joined = parts.join("\n");
            let joined = py_rstrip(&joined).to_string();
            self.entries_mut(cur)[oi].value = joined;
        }
        // botocore's `_parse_nested` runs on every value (inherited ones too) that starts with a newline.
        let mut nested_problems = Vec::new();
        for s in &self.file.sections {
            for e in self.file.options(s) {
                if e.is_nested() {
                    if let Err(bad) = e.nested() {
                        let line = nested_line_of(e, &bad);
                        nested_problems.push(Problem {
                            kind: ProblemKind::BadNestedLine {
                                section: s.name.clone(),
                                key: e.key.clone(),
                            },
                            pos: Pos { line, col: 1 },
                            line_text: escape(&bad),
                        });
                    }
                }
            }
        }
        nested_problems.dedup_by(|a, b| a.pos == b.pos);
        self.file.problems.extend(nested_problems);
    }
}

/// The line number of the continuation line holding `text` in a nested value (best effort).
fn nested_line_of(e: &Entry, text: &str) -> u32 {
    let mut lines = e.continuation_lines.iter();
    for piece in py_splitlines(&e.value).skip(1) {
        if py_strip(piece).is_empty() {
            continue;
        }
        let l = lines.next();
        if py_strip(piece) == text {
            return l.copied().unwrap_or(e.key_pos.line);
        }
    }
    e.key_pos.line
}

/// configparser's `SECTCRE`: `\[(?P<header>.+)\]` matched at the start of the stripped line. The
/// greedy `.+` ends at the last `]` that leaves a non-empty name; text after it is ignored.
fn section_header(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('[')?;
    let close = rest.rfind(']')?;
    (close > 0).then(|| &rest[..close])
}

/// Python text-mode file iteration with universal newlines: `\r\n`, `\r` and `\n` end a line.
fn py_file_lines(text: &str) -> impl Iterator<Item = &str> {
    py_file_lines_with_endings(text).map(|(line, _)| line)
}

/// [`py_file_lines`] with each line's ending (`\r\n`, `\r`, `\n`, or empty for the last line):
/// the lines the parser's positions count, for editing a file in place.
pub(crate) fn py_file_lines_with_endings(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\r', '\n']) {
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                let (line, ending) = (&rest[..i], &rest[i..i + skip]);
                rest = &rest[i + skip..];
                Some((line, ending))
            }
            None => {
                let line = rest;
                rest = "";
                Some((line, ""))
            }
        }
    })
}

/// Python's `str.splitlines()` (without the rarer separators, which cannot occur in joined values).
fn py_splitlines(s: &str) -> impl Iterator<Item = &str> {
    s.split('\n')
}

/// Python's `str.isspace()` for one character.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_isspace)
}

fn first_line(s: &str) -> &str {
    py_file_lines(s).next().unwrap_or("")
}

/// The text with control, invisible and non-ASCII characters escaped, for messages.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IniFile {
        parse(Path::new("f"), s.as_bytes())
    }

    #[test]
    fn basic_values_keep_comments_and_quotes() {
        let f = p("[default]\naws_access_key_id = AKIA # mine\nRegion: \"us-east-1\"\n");
        let s = f.section("default").unwrap();
        assert_eq!(s.get("aws_access_key_id").unwrap().value, "AKIA # mine");
        assert_eq!(s.get("region").unwrap().value, "\"us-east-1\"");
        assert_eq!(s.get("region").unwrap().raw_key, "Region");
        assert_eq!(s.get("region").unwrap().value_pos, Pos { line: 3, col: 9 });
        assert!(!f.botocore_fails());
    }

    #[test]
    fn continuation_and_nested() {
        let f = p("[a]\nk = v\n  more\n\ns3 =\n  x = 1\n  y=2\n");
        let s = f.section("a").unwrap();
        assert_eq!(s.get("k").unwrap().value, "v\nmore");
        assert_eq!(s.get("k").unwrap().continuation_lines, vec![3]);
        let n = s.get("s3").unwrap().nested().unwrap();
        assert_eq!(n, vec![("x".into(), "1".into()), ("y".into(), "2".into())]);
    }

    #[test]
    fn problems_have_positions() {
        let f = p("x = 1\n[a]\nk=1\nK=2\nnodelim\n[a]\n");
        let kinds: Vec<_> = f
            .problems
            .iter()
            .map(|p| (p.kind.clone(), p.pos.line))
            .collect();
        assert!(matches!(kinds[0], (ProblemKind::NoSectionHeader, 1)));
        assert!(matches!(kinds[1], (ProblemKind::DuplicateKey { .. }, 4)));
        assert!(matches!(kinds[2], (ProblemKind::InvalidLine, 5)));
        assert!(matches!(
            kinds[3],
            (ProblemKind::DuplicateSection { .. }, 6)
        ));
    }

    #[test]
    fn bom_and_utf16() {
        let f = p("\u{feff}[default]\nk=v\n");
        assert!(matches!(f.problems[0].kind, ProblemKind::Bom));
        assert_eq!(f.section("default").unwrap().get("k").unwrap().value, "v");
        let f = parse(Path::new("f"), &[0xFF, 0xFE, b'[', 0]);
        assert!(matches!(
            f.problems[0].kind,
            ProblemKind::NotUtf8 { utf16: true }
        ));
    }

    #[test]
    fn default_section_is_inherited() {
        let f = p("[DEFAULT]\nregion = x\n[a]\n");
        let s = f.section("a").unwrap();
        assert_eq!(f.lookup(s, "region").unwrap().value, "x");
        assert!(f.section("DEFAULT").is_none());
    }

    #[test]
    fn header_regex_is_greedy() {
        assert_eq!(section_header("[a]b]"), Some("a]b"));
        assert_eq!(section_header("[a] junk"), Some("a"));
        assert_eq!(section_header("[]"), None);
    }
}
