//! Pure decoder of the chunked transfer coding: bytes in, body bytes out,
//! every line bounded, no I/O.
//!
//! Spec: <https://www.rfc-editor.org/rfc/rfc9112#section-7.1>.

/// The longest chunk-size line (size, extensions we ignore, line end).
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// The most trailer bytes we skip after the last chunk (trailer fields are
/// ignored; the bound is the one for a whole head).
pub const MAX_TRAILER_BYTES: usize = super::head::MAX_HEAD_BYTES;

/// Why a chunked body was refused.
pub type ChunkError = &'static str;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size of the next chunk.
    Size {
        size: u64,
        digits: usize,
        line: usize,
        extension: bool,
        cr: bool,
    },
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// After a chunk's data: its line end (`cr` once the CR was seen).
    DataEnd {
        cr: bool,
    },
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        line: usize,
        total: usize,
        cr: bool,
    },
    Done,
}

/// Decodes one chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    state: State,
}

/// The state at the start of a chunk-size line.
const NEXT_CHUNK: State = State::Size { size: 0, digits: 0, line: 0, extension: false, cr: false };

impl Default for Decoder {
    fn default() -> Self {
        Decoder { state: NEXT_CHUNK }
    }
}

impl Decoder {
    /// Whether the whole body (last chunk and trailer) was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input` into `output`; returns the bytes of `input` used
    /// and of `output` filled. Stops when the body ends, `output` is full or
    /// `input` is used up (then more input is needed).
    pub fn decode(&mut self, input: &[u8], output: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        let mut used = 0;
        let mut filled = 0;
        while used < input.len() {
            let rest = input.get(used..).unwrap_or_default();
            match &mut self.state {
                State::Done => break,
                State::Data(remaining) => {
                    let room = output.len() - filled;
                    if room == 0 {
                        break;
                    }
                    let count = rest.len().min(room).min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    output[filled..filled + count].copy_from_slice(&rest[..count]);
                    filled += count;
                    used += count;
                    *remaining -= count as u64;
                    if *remaining == 0 {
                        self.state = State::DataEnd { cr: false };
                    }
                }
                state => {
                    let byte = rest[0];
                    used += 1;
                    *state = step(*state, byte)?;
                }
            }
        }
        Ok((used, filled))
    }
}

/// One control byte (outside chunk data).
fn step(state: State, byte: u8) -> Result<State, ChunkError> {
    match state {
        State::Size { size, digits, line, extension, cr } => {
            let line = line + 1;
            if MAX_CHUNK_LINE_BYTES < line {
                return Err("chunk-size line too long");
            }
            if cr && byte != b'\n' {
                return Err("CR without LF in a chunk-size line");
            }
            match byte {
                b'\n' if digits == 0 => Err("chunk-size line without a size"),
                b'\n' if size == 0 => Ok(State::Trailer { line: 0, total: 0, cr: false }),
                b'\n' => Ok(State::Data(size)),
                b'\r' => Ok(State::Size { size, digits, line, extension, cr: true }),
                _ if extension => {
                    if byte.is_ascii_graphic() || byte == b' ' || byte == b'\t' {
                        Ok(State::Size { size, digits, line, extension, cr })
                    } else {
                        Err("bad byte in a chunk extension")
                    }
                }
                b';' if 0 < digits => Ok(State::Size { size, digits, line, extension: true, cr }),
                b' ' | b'\t' if 0 < digits => Ok(State::Size { size, digits, line, extension: true, cr }),
                _ => {
                    let digit = (byte as char).to_digit(16).ok_or("bad chunk size")?;
                    let size = size
                        .checked_mul(16)
                        .and_then(|size| size.checked_add(u64::from(digit)))
                        .ok_or("chunk size overflows")?;
                    Ok(State::Size { size, digits: digits + 1, line, extension, cr })
                }
            }
        }
        State::DataEnd { cr } => match byte {
            b'\r' if !cr => Ok(State::DataEnd { cr: true }),
            b'\n' => Ok(NEXT_CHUNK),
            _ => Err("chunk data longer than its size"),
        },
        State::Trailer { line, total, cr } => {
            let total = total + 1;
            if MAX_TRAILER_BYTES < total
                || MAX_CHUNK_LINE_BYTES.max(super::head::MAX_HEADER_LINE_BYTES) < line
            {
                return Err("trailer too large");
            }
            match byte {
                b'\n' if line == 0 => Ok(State::Done),
                b'\n' => Ok(State::Trailer { line: 0, total, cr: false }),
                _ if cr => Err("CR without LF in a trailer"),
                b'\r' => Ok(State::Trailer { line, total, cr: true }),
                _ => Ok(State::Trailer { line: line + 1, total, cr }),
            }
        }
        State::Data(_) | State::Done => Ok(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed `piece` bytes at a time into an output of `room` bytes.
    fn decode(input: &[u8], piece: usize, room: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut decoder = Decoder::default();
        let mut body = Vec::new();
        let mut pending = Vec::new();
        for part in input.chunks(piece) {
            pending.extend_from_slice(part);
            loop {
                let mut output = vec![0; room];
                let (used, filled) = decoder.decode(&pending, &mut output)?;
                pending.drain(..used);
                body.extend_from_slice(&output[..filled]);
                if filled == 0 {
                    break;
                }
            }
        }
        Ok((body, decoder.is_done()))
    }

    #[test]
    fn bodies_decode_in_any_pieces() {
        let input = b"5\r\nhello\r\n1;name=value\r\n \r\n6\nworld!\n0\r\nTrailer: x\r\n\r\n";
        for piece in [1, 2, 5, 100] {
            for room in [1, 3, 64] {
                assert_eq!(
                    decode(input, piece, room),
                    Ok((b"hello world!".to_vec(), true)),
                    "{piece} {room}"
                );
            }
        }
    }

    #[test]
    fn a_partial_trailer_is_not_the_end() {
        assert_eq!(decode(b"2\r\nhi\r\n0\r\nX", 100, 10), Ok((b"hi".to_vec(), false)));
        assert_eq!(decode(b"2\r\nhi\r\n", 100, 10), Ok((b"hi".to_vec(), false)));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            &b"g\r\n"[..],
            b"\r\n",
            b"2\r\nhello\r\n",
            b"ffffffffffffffffffff\r\n",
            b"2\rx",
            b"-1\r\n",
            b"2\r\nhi\r\n0\r\nX\ry",
        ] {
            assert!(decode(bad, 100, 100).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE_BYTES + 10, b'a');
        assert!(decode(&long, 100, 100).is_err());
        let mut trailer = b"0\r\n".to_vec();
        trailer.resize(MAX_TRAILER_BYTES + 10, b'a');
        assert!(decode(&trailer, 1000, 100).is_err());
    }

    /// Mutated bodies fed in random pieces: never a panic, never more
    /// output than input.
    #[test]
    fn mutated_bodies_never_panic() {
        let seed = b"5\r\nhello\r\n1;a=b\r\n \r\n0\r\nT: x\r\n\r\n";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..30_000 {
            let mut input = seed.to_vec();
            for _ in 0..1 + next() % 6 {
                let position = (next() % input.len() as u64) as usize;
                input[position] = [b'\r', b'\n', b';', b'0', b'f', next() as u8][(next() % 6) as usize];
            }
            let piece = 1 + (next() % 16) as usize;
            let room = 1 + (next() % 16) as usize;
            if let Ok((body, _)) = decode(&input, piece, room) {
                assert!(body.len() <= input.len());
            }
        }
    }
}
