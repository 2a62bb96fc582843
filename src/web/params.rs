//! Query-string parsing with clear 400 messages.
//!
//! Every page and API route declares the parameters it accepts; anything
//! else, a parameter given twice, a bad percent escape or a value that is not
//! what the route expects is a [`WebError`] naming the parameter, the value
//! and what was expected. Values never become paths: routes only turn them
//! into numbers, flags, or names checked against a small alphabet.

use super::WebError;

/// Longest query string accepted [bytes].
pub const MAX_QUERY_BYTES: usize = 8192;
/// Longest single value accepted [bytes].
pub const MAX_VALUE_BYTES: usize = 2048;

/// Characters of an oversized query or value quoted in its error message.
const QUOTED_CHARS: usize = 64;

/// The first `chars` characters of `s`: cut on a character boundary, so
/// multi-byte text at the cut cannot split a character.
fn head(s: &str, chars: usize) -> &str {
    s.char_indices().nth(chars).map_or(s, |(at, _)| &s[..at])
}

/// The decoded parameters of one request.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Decode `%XX` and `+` of one query component (`application/x-www-form-urlencoded`).
///
/// The `percent-encoding` crate decodes; it passes a `%` that does not start
/// a two-digit hex escape through as text, which this route layer refuses
/// instead, so a mistyped link gets a 400 naming it rather than a lookup of
/// a value nobody wrote.
fn percent_decode(s: &str, what: &str) -> Result<String, WebError> {
    let bytes = s.as_bytes();
    let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return Err(WebError::bad_param(what, s, "valid %XX escapes"));
    }
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| WebError::bad_param(what, s, "UTF-8 text"))
}

impl Params {
    /// Parse a raw query string, accepting only the names in `allowed`.
    ///
    /// # Errors
    /// [`WebError::BadParam`] or [`WebError::UnknownParam`].
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, WebError> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY_BYTES {
            return Err(WebError::bad_param(
                "query",
                head(raw, QUOTED_CHARS),
                &format!("at most {MAX_QUERY_BYTES} bytes"),
            ));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_decode(k, "parameter name")?;
            if !allowed.contains(&key.as_str()) {
                return Err(WebError::UnknownParam {
                    param: key.chars().take(64).collect(),
                    allowed: allowed.join(", "),
                });
            }
            let value = percent_decode(v, &key)?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(WebError::bad_param(
                    &key,
                    head(&value, QUOTED_CHARS),
                    &format!("at most {MAX_VALUE_BYTES} bytes"),
                ));
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(WebError::bad_param(&key, &value, "the parameter once"));
            }
            pairs.push((key, value));
        }
        Ok(Self { pairs })
    }

    /// The value of a parameter, trimmed; an empty value counts as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// An unsigned integer parameter no larger than `max`.
    ///
    /// # Errors
    /// [`WebError::BadParam`] for anything but decimal digits in range.
    pub fn uint(&self, key: &str, what: &str, max: u64) -> Result<Option<u64>, WebError> {
        self.get(key)
            .map(|v| parse_uint(key, v, what, max))
            .transpose()
    }

    /// A run number parameter.
    ///
    /// # Errors
    /// As [`Params::uint`].
    pub fn run(&self, key: &str) -> Result<Option<u32>, WebError> {
        Ok(self
            .uint(key, "a run number", u64::from(u32::MAX))?
            .map(|v| v as u32))
    }

    /// A flag: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`.
    ///
    /// # Errors
    /// [`WebError::BadParam`] for other text.
    pub fn flag(&self, key: &str) -> Result<bool, WebError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false" | "no" | "off") => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some(_) => Err(WebError::bad_param(
                key,
                self.get(key).unwrap_or_default(),
                "1/true/yes/on or 0/false/no/off",
            )),
        }
    }

    /// A finite decimal number parameter.
    ///
    /// # Errors
    /// [`WebError::BadParam`] for anything else.
    pub fn number(&self, key: &str, what: &str) -> Result<Option<f64>, WebError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let ok = v.len() <= 32
            && v.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
        match v.parse::<f64>() {
            Ok(x) if ok && x.is_finite() => Ok(Some(x)),
            _ => Err(WebError::bad_param(key, v, what)),
        }
    }

    /// A name over `[A-Za-z0-9_.-]` of 1-128 characters (families, lineage hashes).
    ///
    /// # Errors
    /// [`WebError::BadParam`] for other text.
    pub fn name(&self, key: &str, what: &str) -> Result<Option<&str>, WebError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let ok = v.len() <= 128
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            Ok(Some(v))
        } else {
            Err(WebError::bad_param(key, v, what))
        }
    }
}

/// Parse decimal digits into an integer no larger than `max`.
///
/// # Errors
/// [`WebError::BadParam`] naming `key`, the value and `what`.
pub fn parse_uint(key: &str, v: &str, what: &str, max: u64) -> Result<u64, WebError> {
    let expected = format!("{what}: an integer 0-{max}");
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebError::bad_param(key, v, &expected));
    }
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(WebError::bad_param(key, v, &expected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_queries_with_multibyte_text_near_the_cut_are_refused_cleanly() {
        // 'é' is 2 bytes and 'ü' 2 bytes: with an odd ASCII prefix either
        // straddles byte 64 of the query or of the value.
        for pad in 60..68 {
            let q = format!("q={}{}", "a".repeat(pad), "é".repeat(MAX_QUERY_BYTES));
            let e = Params::parse(Some(&q), &["q"]).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{e}");
            assert!(e.to_string().contains("at most 8192 bytes"), "{e}");
            let q = format!("q={}{}", "a".repeat(pad), "%C3%BC".repeat(1200));
            let e = Params::parse(Some(&q), &["q"]).unwrap_err();
            assert!(e.to_string().contains("at most 2048 bytes"), "{e}");
        }
    }

    #[test]
    fn good_and_bad_queries() {
        let p = Params::parse(
            Some("run=17&event=%31%32&q=a+b&x="),
            &["run", "event", "q", "x"],
        )
        .unwrap();
        assert_eq!(p.run("run").unwrap(), Some(17));
        assert_eq!(p.uint("event", "an event", u64::MAX).unwrap(), Some(12));
        assert_eq!(p.get("q"), Some("a b"));
        assert_eq!(p.get("x"), None);
        let table = [
            ("run=abc", "`run`"),
            ("run=-1", "`run`"),
            ("run=4294967296", "`run`"),
            ("run=1;DROP TABLE runs", "`run`"),
            ("run=..%2F..%2Fetc%2Fpasswd", "`run`"),
            ("run=%zz", "%XX"),
            ("run=1&run=2", "once"),
            ("path=/etc/passwd", "unknown parameter `path`"),
        ];
        for (q, needle) in table {
            let e = Params::parse(Some(q), &["run"])
                .and_then(|p| p.run("run"))
                .unwrap_err();
            assert!(e.to_string().contains(needle), "{q}: {e}");
            assert_eq!(e.status().as_u16(), 400, "{q}");
        }
        let p = Params::parse(Some("name=SR3_W41_PROD-1&bad=a/b"), &["name", "bad"]).unwrap();
        assert_eq!(p.name("name", "a family").unwrap(), Some("SR3_W41_PROD-1"));
        assert!(p.name("bad", "a family").is_err());
    }
}
