//! A publish's properties, checked and read without decoding them.
//!
//! The server must reject malformed properties on every publish, but of the fourteen it only
//! reads a few. [`BasicProperties::decode`] builds all of them (a string per property, a
//! `Vec` per field table) and costs ~600 instructions for two properties; [`BasicProperties::scan`]
//! walks the same bytes, applies the same checks in the same order (so malformed input fails
//! with the same [`CodecError`]) and keeps only what the broker uses, borrowed from the input.

use crate::error::CodecError;
use crate::types::{check_utf8, nest};
use crate::BasicProperties;

/// What the broker reads from a publish's properties. Strings borrow the raw properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PropertySummary<'a> {
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub reply_to: Option<&'a str>,
    pub expiration: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// Whether a headers table is present (decode the properties to read it).
    pub has_headers: bool,
}

impl BasicProperties {
    /// Checks raw properties exactly as [`BasicProperties::decode`] does (same errors for the
    /// same bytes) and returns the few the broker needs, without building the others.
    pub fn scan(raw: &[u8]) -> Result<PropertySummary<'_>, CodecError> {
        /// Flags of the fourteen basic properties (bit 15 is the first).
        const KNOWN_FLAGS: u16 = 0xfffc;
        let mut r = Cursor(raw);
        let flags = r.u16()?;
        let mut unknown = flags & !KNOWN_FLAGS & !1 != 0;
        let mut word = flags;
        while word & 1 != 0 {
            word = r.u16()?;
            unknown |= word & !1 != 0;
        }
        let mut s = PropertySummary::default();
        let has = |bit: u16| flags & bit != 0;
        if has(0x8000) {
            r.skip_short_str()?; // content-type
        }
        if has(0x4000) {
            r.skip_short_str()?; // content-encoding
        }
        if has(0x2000) {
            r.skip_table(0)?;
            s.has_headers = true;
        }
        if has(0x1000) {
            s.delivery_mode = Some(r.u8()?);
        }
        if has(0x0800) {
            s.priority = Some(r.u8()?);
        }
        if has(0x0400) {
            r.skip_short_str()?; // correlation-id
        }
        if has(0x0200) {
            s.reply_to = Some(r.short_str()?);
        }
        if has(0x0100) {
            s.expiration = Some(r.short_str()?);
        }
        if has(0x0080) {
            r.skip_short_str()?; // message-id
        }
        if has(0x0040) {
            r.take(8)?; // timestamp
        }
        if has(0x0020) {
            r.skip_short_str()?; // type
        }
        if has(0x0010) {
            s.user_id = Some(r.short_str()?);
        }
        if has(0x0008) {
            r.skip_short_str()?; // app-id
        }
        if has(0x0004) {
            r.skip_short_str()?; // cluster-id (reserved)
        }
        if !r.0.is_empty() && !unknown {
            return Err(CodecError::TrailingBytes(r.0.len()));
        }
        Ok(s)
    }
}

/// A bounds-checked cursor over borrowed bytes: [`crate::Reader`] without reference counting.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn short_str(&mut self) -> Result<&'a str, CodecError> {
        let len = self.u8()?;
        let bytes = self.take(usize::from(len))?;
        std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidUtf8)
    }

    fn skip_short_str(&mut self) -> Result<(), CodecError> {
        let len = self.u8()?;
        check_utf8(self.take(usize::from(len))?)
    }

    /// As `FieldTable::decode`, inside `depth` enclosing tables or arrays.
    fn skip_table(&mut self, depth: usize) -> Result<(), CodecError> {
        let len = self.u32()? as usize;
        let mut inner = Cursor(self.take(len)?);
        while !inner.0.is_empty() {
            inner.skip_short_str()?;
            inner.skip_value(depth)?;
        }
        Ok(())
    }

    /// As `FieldValue::decode`, inside `depth` enclosing tables or arrays.
    fn skip_value(&mut self, depth: usize) -> Result<(), CodecError> {
        let len = match self.u8()? {
            b't' | b'b' | b'B' => 1,
            b's' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'l' | b'd' | b'T' => 8,
            b'D' => 5,
            b'V' => 0,
            b'S' | b'x' => self.u32()? as usize,
            b'A' => {
                let len = self.u32()? as usize;
                let mut inner = Cursor(self.take(len)?);
                let depth = nest(depth)?;
                while !inner.0.is_empty() {
                    inner.skip_value(depth)?;
                }
                return Ok(());
            }
            b'F' => return self.skip_table(nest(depth)?),
            other => return Err(CodecError::UnknownFieldType(other)),
        };
        self.take(len).map(drop)
    }
}
