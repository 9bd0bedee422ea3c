//! The subset of CBOR (RFC 8949) that WebAuthn uses: attestation objects and COSE keys.
//! Definite lengths only (CTAP2 canonical encoding never uses indefinite ones), integers
//! within i64, tags skipped, floats and simple values read and ignored; nesting is
//! bounded so a hostile body cannot exhaust the stack.

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Bool(bool),
    Null,
    /// A float, `undefined` or another simple value: never meaningful here.
    Other,
}

impl Value {
    /// The value under `key` in a map (text or integer keys).
    pub fn get(&self, key: &Value) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_text(&self, key: &str) -> Option<&Value> {
        self.get(&Value::Text(key.to_owned()))
    }

    pub fn get_int(&self, key: i64) -> Option<&Value> {
        self.get(&Value::Int(key))
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed CBOR: {0}")]
pub struct Error(&'static str);

/// Deeper than any attestation object or COSE key (3 levels); refuses hostile nesting.
const MAX_DEPTH: usize = 16;

/// Reads one value from the start of `buf`; returns it and the number of bytes it took
/// (authenticator data holds a COSE key followed by more bytes).
pub fn decode_prefix(buf: &[u8]) -> Result<(Value, usize), Error> {
    let mut d = Decoder { buf, pos: 0 };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

/// Reads `buf` as exactly one value.
pub fn decode(buf: &[u8]) -> Result<Value, Error> {
    let (v, used) = decode_prefix(buf)?;
    if used != buf.len() {
        return Err(Error("trailing bytes"));
    }
    Ok(v)
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(Error("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The argument of a head: `info` < 24 is the value itself, 24..=27 say how many
    /// bytes follow.
    fn argument(&mut self, info: u8) -> Result<u64, Error> {
        let n = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Err(Error("indefinite length")),
            _ => return Err(Error("reserved additional information")),
        };
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// A length that the remaining input could hold (each item takes at least a byte).
    fn length(&mut self, info: u8) -> Result<usize, Error> {
        let n = self.argument(info)?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.buf.len() - self.pos)
            .ok_or(Error("length beyond the input"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(Error("nested too deeply"));
        }
        let head = *self.take(1)?.first().ok_or(Error("truncated"))?;
        let (major, info) = (head >> 5, head & 0x1f);
        Ok(match major {
            0 => Value::Int(
                i64::try_from(self.argument(info)?).map_err(|_| Error("integer too large"))?,
            ),
            1 => {
                let n =
                    i64::try_from(self.argument(info)?).map_err(|_| Error("integer too large"))?;
                Value::Int(-1 - n)
            }
            2 => {
                let n = self.length(info)?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            3 => {
                let n = self.length(info)?;
                let s =
                    std::str::from_utf8(self.take(n)?).map_err(|_| Error("text is not UTF-8"))?;
                Value::Text(s.to_owned())
            }
            4 => {
                let n = self.length(info)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            5 => {
                let n = self.length(info)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.value(depth + 1)?;
                    let v = self.value(depth + 1)?;
                    entries.push((k, v));
                }
                Value::Map(entries)
            }
            6 => {
                self.argument(info)?;
                self.value(depth + 1)?
            }
            _ => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 => Value::Null,
                0..=19 | 23 => Value::Other,
                24..=27 => {
                    self.argument(info)?;
                    Value::Other
                }
                _ => return Err(Error("reserved simple value")),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_maps_ints_bytes_and_text() {
        // {1: 2, 3: -7, -1: 1, -2: h'0102', "fmt": "none"}
        let buf = [
            0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x42, 0x01, 0x02, 0x63, b'f', b'm',
            b't', 0x64, b'n', b'o', b'n', b'e',
        ];
        let v = decode(&buf).unwrap();
        assert_eq!(v.get_int(1).and_then(Value::as_int), Some(2));
        assert_eq!(v.get_int(3).and_then(Value::as_int), Some(-7));
        assert_eq!(v.get_int(-1).and_then(Value::as_int), Some(1));
        assert_eq!(v.get_int(-2).and_then(Value::as_bytes), Some(&[1u8, 2][..]));
        assert_eq!(v.get_text("fmt").and_then(Value::as_text), Some("none"));
    }

    #[test]
    fn refuses_truncated_indefinite_and_deep_input() {
        assert!(decode(&[0x42, 0x01]).is_err(), "2 bytes announced, 1 given");
        assert!(decode(&[0x5f, 0xff]).is_err(), "indefinite length");
        assert!(decode(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[0x81; 100]).is_err(), "100 nested arrays");
        assert!(decode(&[0x01, 0x02]).is_err(), "trailing bytes");
        let (v, used) = decode_prefix(&[0x01, 0x02]).unwrap();
        assert_eq!((v, used), (Value::Int(1), 1));
    }
}
