//! Minimal CSV encoding for `COPY ... (FORMAT csv)`: an unquoted empty
//! field is NULL, everything else is quoted when it must be.

/// A CSV line being built.
#[derive(Debug, Default)]
pub(crate) struct Line<'b> {
    buf: Option<&'b mut Vec<u8>>,
    first: bool,
}

impl<'b> Line<'b> {
    /// Starts a line at the end of `buf`.
    pub(crate) fn new(buf: &'b mut Vec<u8>) -> Self {
        Self {
            buf: Some(buf),
            first: true,
        }
    }

    fn sep(&mut self) -> &mut Vec<u8> {
        let buf = self.buf.as_mut().expect("line open");
        if !self.first {
            buf.push(b',');
        }
        self.first = false;
        buf
    }

    /// A text field (never NULL: an empty string is written `""`).
    pub(crate) fn text(&mut self, s: &str) -> &mut Self {
        let buf = self.sep();
        if s.is_empty() || s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
            buf.push(b'"');
            for b in s.bytes() {
                if b == b'"' {
                    buf.push(b'"');
                }
                buf.push(b);
            }
            buf.push(b'"');
        } else {
            buf.extend_from_slice(s.as_bytes());
        }
        self
    }

    /// An optional text field (`None` is NULL).
    pub(crate) fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    /// A number or other value whose Display needs no quoting.
    pub(crate) fn plain(&mut self, v: impl std::fmt::Display) -> &mut Self {
        use std::io::Write;
        let buf = self.sep();
        write!(buf, "{v}").expect("writing to a Vec");
        self
    }

    /// An optional plain value (`None` is NULL).
    pub(crate) fn opt_plain(&mut self, v: Option<impl std::fmt::Display>) -> &mut Self {
        match v {
            Some(v) => self.plain(v),
            None => self.null(),
        }
    }

    /// A `text[]` field, as a PostgreSQL array literal.
    pub(crate) fn text_array(&mut self, items: &[String]) -> &mut Self {
        let mut lit = String::from("{");
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                lit.push(',');
            }
            lit.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    lit.push('\\');
                }
                lit.push(c);
            }
            lit.push('"');
        }
        lit.push('}');
        self.text(&lit)
    }

    /// NULL.
    pub(crate) fn null(&mut self) -> &mut Self {
        self.sep();
        self
    }

    /// Ends the line.
    pub(crate) fn end(&mut self) {
        if let Some(buf) = self.buf.take() {
            buf.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn quotes_only_what_needs_it_and_tells_null_from_empty() {
        let mut buf = Vec::new();
        Line::new(&mut buf)
            .text("plain")
            .text("a,b")
            .text("say \"hi\"")
            .text("")
            .null()
            .plain(42)
            .opt_plain(None::<i32>)
            .text_array(&["Côte d'Ivoire".into(), "a\"b".into()])
            .end();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            r#"plain,"a,b","say ""hi""","",,42,,"{""Côte d'Ivoire"",""a\""b""}"
"#
        );
    }
}
