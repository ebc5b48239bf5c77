//! The `pgoutput` logical decoding protocol, version 1: one message per
//! `pg_logical_slot_peek_binary_changes` row (or per streamed `XLogData` payload).
//! Tuples arrive in text format; typing them is [`super::event`]'s job.

use std::fmt;

/// A WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/Y` text form.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    /// A TOASTed value the change did not touch: the server does not send it.
    UnchangedToast,
    /// The value in PostgreSQL's text output format.
    Text(String),
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity (the key sent as `old` on UPDATE/DELETE).
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
}

/// A table's shape, sent before the first change to it in each decoding session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub schema: String,
    pub table: String,
    pub columns: Vec<Column>,
}

/// Which old tuple an UPDATE or DELETE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: only the replica identity's key columns are meaningful.
    Key,
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01 00:00 UTC.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Cell>,
    },
    Update {
        relation: u32,
        old: Option<(OldKind, Vec<Cell>)>,
        new: Vec<Cell>,
    },
    Delete {
        relation: u32,
        old: (OldKind, Vec<Cell>),
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, Type, logical Message and anything newer: not needed for events.
    Other(u8),
}

/// A message that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed pgoutput message: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

type Parsed<T> = Result<T, ParseError>;

/// Big-endian reader over one message.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Parsed<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                ParseError(format!(
                    "needs {n} more bytes at offset {} of {}",
                    self.at,
                    self.buf.len()
                ))
            })?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Parsed<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Parsed<u8> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Parsed<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Parsed<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Parsed<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Parsed<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Parsed<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn lsn(&mut self) -> Parsed<Lsn> {
        self.u64().map(Lsn)
    }

    fn cstr(&mut self) -> Parsed<String> {
        let rest = &self.buf[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| ParseError("unterminated string".into()))?;
        let s = String::from_utf8(rest[..len].to_vec())
            .map_err(|_| ParseError("a name is not UTF-8".into()))?;
        self.at += len + 1;
        Ok(s)
    }

    fn count(&mut self) -> Parsed<usize> {
        usize::try_from(self.i16()?).map_err(|_| ParseError("negative column count".into()))
    }

    fn tuple(&mut self) -> Parsed<Vec<Cell>> {
        let n = self.count()?;
        let mut cells = Vec::with_capacity(n);
        for _ in 0..n {
            cells.push(match self.u8()? {
                b'n' => Cell::Null,
                b'u' => Cell::UnchangedToast,
                b't' => {
                    let len = usize::try_from(self.i32()?)
                        .map_err(|_| ParseError("negative value length".into()))?;
                    let bytes = self.take(len)?;
                    Cell::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| ParseError("a value is not UTF-8".into()))?,
                    )
                }
                b'b' => return Err(ParseError("binary tuple values are not requested".into())),
                other => return Err(ParseError(format!("unknown tuple cell kind {other:#04x}"))),
            });
        }
        Ok(cells)
    }

    fn old(&mut self, tag: u8) -> Parsed<(OldKind, Vec<Cell>)> {
        let kind = match tag {
            b'K' => OldKind::Key,
            b'O' => OldKind::Full,
            other => return Err(ParseError(format!("unexpected old-tuple tag {other:#04x}"))),
        };
        Ok((kind, self.tuple()?))
    }

    fn expect(&mut self, want: u8) -> Parsed<()> {
        match self.u8()? {
            b if b == want => Ok(()),
            other => Err(ParseError(format!(
                "expected {:?}, found {other:#04x}",
                want as char
            ))),
        }
    }
}

/// Decodes one pgoutput v1 message.
pub fn parse(buf: &[u8]) -> Parsed<Message> {
    let mut c = Cursor { buf, at: 0 };
    Ok(match c.u8()? {
        b'B' => Message::Begin {
            final_lsn: c.lsn()?,
            commit_time: c.i64()?,
            xid: c.u32()?,
        },
        b'C' => {
            let _flags = c.u8()?;
            Message::Commit {
                commit_lsn: c.lsn()?,
                end_lsn: c.lsn()?,
                commit_time: c.i64()?,
            }
        }
        b'R' => {
            let id = c.u32()?;
            let schema = c.cstr()?;
            let table = c.cstr()?;
            let _replica_identity = c.u8()?;
            let n = c.count()?;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = c.u8()?;
                let name = c.cstr()?;
                let type_oid = c.u32()?;
                let _typmod = c.i32()?;
                columns.push(Column {
                    is_key: flags & 1 == 1,
                    name,
                    type_oid,
                });
            }
            Message::Relation(Relation {
                id,
                schema,
                table,
                columns,
            })
        }
        b'I' => {
            let relation = c.u32()?;
            c.expect(b'N')?;
            Message::Insert {
                relation,
                new: c.tuple()?,
            }
        }
        b'U' => {
            let relation = c.u32()?;
            let (old, new) = match c.u8()? {
                b'N' => (None, c.tuple()?),
                tag => {
                    let old = c.old(tag)?;
                    c.expect(b'N')?;
                    (Some(old), c.tuple()?)
                }
            };
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = c.u32()?;
            let tag = c.u8()?;
            Message::Delete {
                relation,
                old: c.old(tag)?,
            }
        }
        b'T' => {
            let n = usize::try_from(c.i32()?)
                .map_err(|_| ParseError("negative relation count".into()))?;
            let _options = c.u8()?;
            let relations = (0..n).map(|_| c.u32()).collect::<Parsed<_>>()?;
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds messages the way the server writes them.
    #[derive(Default)]
    struct Buf(Vec<u8>);

    impl Buf {
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn cstr(mut self, s: &str) -> Self {
            self.0.extend(s.as_bytes());
            self.0.push(0);
            self
        }
        fn text(self, s: &str) -> Self {
            let mut b = self.u8(b't').i32(s.len() as i32);
            b.0.extend(s.as_bytes());
            b
        }
    }

    #[test]
    fn lsn_round_trips_through_text() {
        let lsn = Lsn::parse("16/B374D848").expect("valid");
        assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn::parse("nope"), None);
    }

    #[test]
    fn begin_and_commit_carry_lsns_time_and_xid() {
        let begin = Buf::default()
            .u8(b'B')
            .u64(0x1_0000_0010)
            .u64(42)
            .u32(777)
            .0;
        assert_eq!(
            parse(&begin).expect("valid"),
            Message::Begin {
                final_lsn: Lsn(0x1_0000_0010),
                commit_time: 42,
                xid: 777
            }
        );
        let commit = Buf::default().u8(b'C').u8(0).u64(0x10).u64(0x48).u64(42).0;
        assert_eq!(
            parse(&commit).expect("valid"),
            Message::Commit {
                commit_lsn: Lsn(0x10),
                end_lsn: Lsn(0x48),
                commit_time: 42
            }
        );
    }

    #[test]
    fn relation_lists_columns_with_key_flags_and_types() {
        let msg = Buf::default()
            .u8(b'R')
            .u32(16384)
            .cstr("public")
            .cstr("orders")
            .u8(b'd')
            .i16(2)
            .u8(1)
            .cstr("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .cstr("doc")
            .u32(3802)
            .i32(-1)
            .0;
        let Message::Relation(rel) = parse(&msg).expect("valid") else {
            panic!("not a relation");
        };
        assert_eq!(rel.id, 16384);
        assert_eq!(
            (rel.schema.as_str(), rel.table.as_str()),
            ("public", "orders")
        );
        assert_eq!(
            rel.columns,
            vec![
                Column {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 23
                },
                Column {
                    is_key: false,
                    name: "doc".into(),
                    type_oid: 3802
                },
            ]
        );
    }

    #[test]
    fn insert_tuple_has_text_null_and_unchanged_toast_cells() {
        let msg = Buf::default()
            .u8(b'I')
            .u32(7)
            .u8(b'N')
            .i16(3)
            .text("12")
            .u8(b'n')
            .u8(b'u')
            .0;
        assert_eq!(
            parse(&msg).expect("valid"),
            Message::Insert {
                relation: 7,
                new: vec![Cell::Text("12".into()), Cell::Null, Cell::UnchangedToast]
            }
        );
    }

    #[test]
    fn update_with_and_without_old_tuple() {
        let plain = Buf::default().u8(b'U').u32(7).u8(b'N').i16(1).text("b").0;
        assert_eq!(
            parse(&plain).expect("valid"),
            Message::Update {
                relation: 7,
                old: None,
                new: vec![Cell::Text("b".into())]
            }
        );
        let full = Buf::default()
            .u8(b'U')
            .u32(7)
            .u8(b'O')
            .i16(1)
            .text("a")
            .u8(b'N')
            .i16(1)
            .text("b")
            .0;
        assert_eq!(
            parse(&full).expect("valid"),
            Message::Update {
                relation: 7,
                old: Some((OldKind::Full, vec![Cell::Text("a".into())])),
                new: vec![Cell::Text("b".into())]
            }
        );
    }

    #[test]
    fn delete_carries_key_or_full_old_row() {
        let msg = Buf::default()
            .u8(b'D')
            .u32(9)
            .u8(b'K')
            .i16(2)
            .text("5")
            .u8(b'n')
            .0;
        assert_eq!(
            parse(&msg).expect("valid"),
            Message::Delete {
                relation: 9,
                old: (OldKind::Key, vec![Cell::Text("5".into()), Cell::Null])
            }
        );
    }

    #[test]
    fn truncate_lists_relations() {
        let msg = Buf::default().u8(b'T').i32(2).u8(0).u32(1).u32(2).0;
        assert_eq!(
            parse(&msg).expect("valid"),
            Message::Truncate {
                relations: vec![1, 2]
            }
        );
    }

    #[test]
    fn unknown_messages_are_passed_over_and_short_ones_fail() {
        assert_eq!(parse(b"Yxyz").expect("valid"), Message::Other(b'Y'));
        let cut = Buf::default()
            .u8(b'I')
            .u32(7)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(10)
            .0;
        assert!(parse(&cut).expect_err("must fail").0.contains("more bytes"));
        assert!(parse(&[]).is_err());
        let bad_tag = Buf::default().u8(b'D').u32(1).u8(b'X').i16(0).0;
        assert!(parse(&bad_tag).is_err());
    }
}
