//! The frames nodes exchange on the cluster link.
//!
//! `len:u32 | crc32c:u32 | kind:u8 | group:u64 | corr:u64 | body`, little-endian; `len`
//! counts everything after itself, the checksum covers everything after itself. A request
//! names its Raft group and a correlation number its response repeats, so one connection
//! carries every group's RPCs at once. Bodies are openraft's messages in bincode. A
//! connection starts with a handshake proving both ends know the cluster's secret (`auth.rs`).

use thiserror::Error;

/// The largest frame a node accepts: a metadata snapshot travels in one frame.
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes before the body.
const HEADER: usize = 4 + 4 + 1 + 8 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    AppendEntries = 1,
    Vote = 2,
    PreVote = 3,
    Snapshot = 4,
    TransferLeader = 5,
    /// A liveness probe (the failure detector's), answered at once whatever the group.
    Ping = 6,
    /// The answer to a request: a bincode `Result<response, String>`.
    Response = 128,
    /// Link handshake (see `auth.rs`): the listener's random challenge,
    Challenge = 129,
    /// the connecting node's challenge and proof,
    Hello = 130,
    /// and the listener's proof.
    Welcome = 131,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::AppendEntries,
            2 => Kind::Vote,
            3 => Kind::PreVote,
            4 => Kind::Snapshot,
            5 => Kind::TransferLeader,
            6 => Kind::Ping,
            128 => Kind::Response,
            129 => Kind::Challenge,
            130 => Kind::Hello,
            131 => Kind::Welcome,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub group: u64,
    pub corr: u64,
    pub body: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("frame of {0} bytes is shorter than its header")]
    TooShort(usize),
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("unknown frame kind {0}")]
    Kind(u8),
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.body.len());
        let len = (HEADER - 4 + self.body.len()) as u32;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.group.to_le_bytes());
        out.extend_from_slice(&self.corr.to_le_bytes());
        out.extend_from_slice(&self.body);
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The length a frame's first four bytes announce for the rest, checked against the limit.
    pub fn rest_len(prefix: [u8; 4]) -> Result<usize, WireError> {
        let len = u32::from_le_bytes(prefix) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        if len < HEADER - 4 {
            return Err(WireError::TooShort(len));
        }
        Ok(len)
    }

    /// Decodes what follows the length prefix.
    pub fn decode(rest: &[u8]) -> Result<Frame, WireError> {
        if rest.len() < HEADER - 4 {
            return Err(WireError::TooShort(rest.len()));
        }
        let (crc, covered) = rest.split_at(4);
        if crc32c::crc32c(covered) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(WireError::Checksum);
        }
        let kind = Kind::from_u8(covered[0]).ok_or(WireError::Kind(covered[0]))?;
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&covered[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Ok(Frame {
            kind,
            group: u64_at(1),
            corr: u64_at(9),
            body: covered[17..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(bytes: &[u8]) -> [u8; 4] {
        [bytes[0], bytes[1], bytes[2], bytes[3]]
    }

    #[test]
    fn frames_round_trip() {
        let f = Frame {
            kind: Kind::Vote,
            group: 7,
            corr: u64::MAX,
            body: b"hello".to_vec(),
        };
        let bytes = f.encode();
        assert_eq!(Frame::rest_len(prefix(&bytes)), Ok(bytes.len() - 4));
        assert_eq!(Frame::decode(&bytes[4..]), Ok(f));
    }

    #[test]
    fn damage_is_detected_not_misread() {
        let bytes = Frame {
            kind: Kind::AppendEntries,
            group: 1,
            corr: 2,
            body: vec![9; 100],
        }
        .encode();
        for i in 4..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(
                Frame::decode(&bad[4..]).is_err(),
                "flipped byte {i} went unnoticed"
            );
        }
        assert_eq!(Frame::decode(&bytes[4..10]), Err(WireError::TooShort(6)));
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert_eq!(
            Frame::rest_len(huge),
            Err(WireError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            Frame::rest_len(3u32.to_le_bytes()),
            Err(WireError::TooShort(3))
        );
        let mut unknown = bytes.clone();
        unknown[8] = 77;
        let crc = crc32c::crc32c(&unknown[8..]);
        unknown[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Frame::decode(&unknown[4..]), Err(WireError::Kind(77)));
    }
}
