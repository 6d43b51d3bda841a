//! A small, strict JSON reader (objects, arrays, numbers, strings,
//! `true`/`false`/`null`), used for the reference cases' metadata and, by the benches
//! crate, for `workloads.json`. It accepts RFC 8259 JSON only (no `NaN`/`Infinity`, no
//! trailing commas, no duplicate object keys), limits nesting depth, and never panics:
//! every malformed input is an `Err` with a position.
//!
//! It is a reader only, for small configuration and metadata files: numbers are `f64`
//! (integers above 2⁵³ lose precision), and the whole text is parsed into a tree.
//!
//! ```
//! use readout_layers::json::{self, Json};
//!
//! let v = json::parse(r#"{"name": "eq_small", "num_layers": [32, 32]}"#).unwrap();
//! assert_eq!(v.get("name").and_then(Json::as_str), Some("eq_small"));
//! let layers: Vec<usize> = v
//!     .get("num_layers")
//!     .and_then(Json::as_array)
//!     .unwrap()
//!     .iter()
//!     .filter_map(Json::as_usize)
//!     .collect();
//! assert_eq!(layers, [32, 32]);
//! assert!(json::parse("[1, 2,]").is_err());
//! ```

use alloc::string::String;
use alloc::vec::Vec;

/// Deepest nesting accepted; the metadata needs 2.
const MAX_DEPTH: usize = 64;

/// A parsed JSON value. Objects keep their key order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number (always finite).
    Number(f64),
    /// A string, escapes decoded.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object's members in document order (keys are unique).
    Object(Vec<(String, Json)>),
}

/// Largest integer an `f64` holds exactly (2⁵³).
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

impl Json {
    /// The value of `key` in an object (`None` for a missing key or a non-object).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(x) => Some(*x),
            _ => None,
        }
    }

    /// The number as a count: `Some` only for a whole number in `0 ..= 2⁵³` that fits a
    /// `usize` (so `2.5`, `-1` and `1e300` are `None`, never truncated).
    pub fn as_usize(&self) -> Option<usize> {
        match self {
            Json::Number(x) if *x >= 0.0 && x.fract() == 0.0 && *x <= MAX_EXACT_INT => {
                usize::try_from(*x as u64).ok()
            }
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members in document order, if this is an object.
    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(members) => Some(members),
            _ => None,
        }
    }

    /// A short description of the value's kind, for messages ("a number", "an array").
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Parses a complete JSON text (one value, surrounded by optional whitespace).
///
/// # Errors
/// A message naming the problem and its byte offset, for any text that is not
/// RFC 8259 JSON or nests deeper than 64 levels.
pub fn parse(text: &str) -> Result<Json, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        alloc::format!("{what} at byte {}", self.i)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') if self.eat(b"true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat(b"false") => Ok(Json::Bool(false)),
            Some(b'n') if self.eat(b"null") => Ok(Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.i += 1; // '{'
        let mut members: Vec<(String, Json)> = Vec::new();
        self.ws();
        if self.eat(b"}") {
            return Ok(Json::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                return Err(self.err("duplicate object key"));
            }
            self.ws();
            if !self.eat(b":") {
                return Err(self.err("expected ':'"));
            }
            self.ws();
            let v = self.value(depth + 1)?;
            members.push((key, v));
            self.ws();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"}") {
                return Ok(Json::Object(members));
            }
            return Err(self.err("expected ',' or '}'"));
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.i += 1; // '['
        let mut items = Vec::new();
        self.ws();
        if self.eat(b"]") {
            return Ok(Json::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"]") {
                return Ok(Json::Array(items));
            }
            return Err(self.err("expected ',' or ']'"));
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err("expected 4 hex digits after \\u")),
            };
            v = v * 16 + u32::from(d);
            self.i += 1;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(self.err("invalid escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return Err(self.err("control character in string")),
                _ => out.push(b),
            }
        }
        // The input is a &str, and escapes add whole characters: this cannot fail, but
        // it is reported rather than assumed.
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8 in string"))
    }

    fn unicode_escape(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.eat(b"\\u") {
                return Err(self.err("unpaired surrogate"));
            }
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("invalid low surrogate"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid code point"))
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        self.eat(b"-");
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.eat(b".") && self.digits() == 0 {
            return Err(self.err("expected digits after '.'"));
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("expected exponent digits"));
            }
        }
        let text =
            core::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.err("invalid number"))?;
        let v: f64 = text.parse().map_err(|_| self.err("invalid number"))?;
        if v.is_finite() {
            Ok(Json::Number(v))
        } else {
            Err(self.err("number out of range"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn parses_the_metadata_shapes() {
        let v = parse(
            r#"{"in_channels": 8, "num_layers": [16, 12], "lamb": 0.5, "x": null, "b": true}"#,
        )
        .unwrap();
        assert_eq!(v.get("in_channels"), Some(&Json::Number(8.0)));
        assert_eq!(
            v.get("num_layers"),
            Some(&Json::Array(vec![Json::Number(16.0), Json::Number(12.0)]))
        );
        assert_eq!(v.get("lamb"), Some(&Json::Number(0.5)));
        assert_eq!(v.get("x"), Some(&Json::Null));
        assert_eq!(v.get("b"), Some(&Json::Bool(true)));
        assert_eq!(parse("{}").unwrap(), Json::Object(vec![]));
        assert_eq!(parse(" [ ] ").unwrap(), Json::Array(vec![]));
        assert_eq!(parse("-1.5e-3").unwrap(), Json::Number(-1.5e-3));
        assert_eq!(parse("0.7").unwrap(), Json::Number(0.7));
    }

    #[test]
    fn accessors() {
        let v = parse(r#"{"n": 3, "f": 2.5, "neg": -1, "big": 1e300, "s": "x", "b": false, "a": [1], "o": {}}"#)
            .unwrap();
        assert_eq!(v.get("n").and_then(Json::as_usize), Some(3));
        assert_eq!(v.get("f").and_then(Json::as_usize), None);
        assert_eq!(v.get("f").and_then(Json::as_f64), Some(2.5));
        assert_eq!(v.get("neg").and_then(Json::as_usize), None);
        assert_eq!(v.get("big").and_then(Json::as_usize), None);
        assert_eq!(v.get("s").and_then(Json::as_str), Some("x"));
        assert_eq!(v.get("b").and_then(Json::as_bool), Some(false));
        assert_eq!(
            v.get("a").and_then(Json::as_array).map(<[Json]>::len),
            Some(1)
        );
        assert_eq!(
            v.get("o").and_then(Json::as_object).map(<[_]>::len),
            Some(0)
        );
        assert_eq!(v.get("s").and_then(Json::as_f64), None);
        assert_eq!(v.get("missing"), None);
        assert_eq!(v.get("a").unwrap().get("n"), None);
        assert_eq!(v.kind(), "an object");
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            parse(r#""a\"b\\c\/\n\u00e9\ud83d\ude00""#).unwrap(),
            Json::String("a\"b\\c/\né😀".to_string())
        );
        assert!(parse(r#""\ud83d""#).is_err());
        assert!(parse(r#""\x""#).is_err());
        assert!(parse("\"a\u{1}\"").is_err());
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            "1e",
            "-",
            "NaN",
            "Infinity",
            "1e999",
            "tru",
            "nul",
            "[1] x",
            "{\"a\":1,\"a\":2}",
            "\"abc",
            "[",
            "{\"a\":",
            "--1",
            "+1",
            ".5",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep: String = "[".repeat(100_000);
        assert!(parse(&deep).is_err());
        let ok = alloc::format!("{}{}", "[".repeat(60), "]".repeat(60));
        assert!(parse(&ok).is_ok());
    }
}
