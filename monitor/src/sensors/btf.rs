//! A small reader for the kernel's BTF type information.
//!
//! Rust eBPF programs get no CO-RE relocations, so the daemon reads struct member offsets from
//! the running kernel's BTF at start-up and hands them to the programs as globals. The format is
//! the one described in the kernel's `Documentation/bpf/btf.rst`; only little-endian BTF is read.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where the running kernel exposes its own BTF (`CONFIG_DEBUG_INFO_BTF`, Linux 5.4+).
const VMLINUX_PATH: &str = "/sys/kernel/btf/vmlinux";
const MAGIC: u16 = 0xeb9f;
const VERSION: u8 = 1;
/// The header fields this reader knows: magic, version, flags, `hdr_len` and the section fields.
const HEADER_LEN: u32 = 24;
/// Longest chain of typedefs/modifiers, array dimensions or nested anonymous members followed.
/// libbpf uses the same bound; it stops a malformed, cyclic BTF from looping forever.
const MAX_DEPTH: usize = 32;
/// Credwatch only runs on 64-bit kernels.
const POINTER_SIZE: u32 = 8;

/// Why BTF could not be read, or why a lookup in it failed.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("failed to read BTF from {}", path.display())]
    Read {
        /// The file that was read.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The magic says the BTF was written for a big-endian machine.
    #[error(
        "BTF is big-endian (magic bytes 0x9f 0xeb at byte 0); only little-endian BTF is supported"
    )]
    BigEndian,
    /// The data does not start with the BTF magic.
    #[error("not BTF: magic at byte 0 is {found:#06x}, expected {MAGIC:#06x}")]
    BadMagic {
        /// The first two bytes, read little-endian.
        found: u16,
    },
    /// The header's version is not 1.
    #[error("unsupported BTF version {version} at byte 2 (expected {VERSION})")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The header claims to be shorter than the fields it must hold.
    #[error("BTF header length {hdr_len} at byte 4 is shorter than the {HEADER_LEN}-byte header")]
    HeaderTooShort {
        /// The `hdr_len` field.
        hdr_len: u32,
    },
    /// A section named by the header does not lie inside the data.
    #[error("BTF {section} section (offset {offset}, length {len}, after a {hdr_len}-byte header) lies outside the {available}-byte data")]
    SectionOutOfBounds {
        /// `"type"` or `"string"`.
        section: &'static str,
        /// The section's offset, relative to the end of the header.
        offset: u32,
        /// The section's length.
        len: u32,
        /// The header's length.
        hdr_len: u32,
        /// The length of the whole data.
        available: usize,
    },
    /// The data ends in the middle of something.
    #[error(
        "BTF truncated: {what} at byte {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Byte offset in the data where it starts.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left in its section.
        available: usize,
    },
    /// A type has a kind this reader does not know (newer than `BTF_KIND_ENUM64`).
    #[error("unknown BTF kind {kind} for type {type_id} at byte {offset}")]
    UnknownKind {
        /// The kind number.
        kind: u32,
        /// The id the type would have had.
        type_id: u32,
        /// Byte offset of the type in the data.
        offset: usize,
    },
    /// A type refers to a type id that does not exist.
    #[error("type id {type_id} is out of range: the BTF has types 0..={last}")]
    TypeIdOutOfRange {
        /// The id referred to.
        type_id: u32,
        /// The largest id in the BTF.
        last: u32,
    },
    /// A name offset points past the string section.
    #[error("string offset {offset} is past the end of the {len}-byte string section")]
    StringOutOfRange {
        /// The offset, relative to the string section.
        offset: u32,
        /// The string section's length.
        len: usize,
    },
    /// A string runs to the end of the string section without a NUL.
    #[error("string at offset {offset} of the string section has no terminating NUL")]
    UnterminatedString {
        /// The offset, relative to the string section.
        offset: u32,
    },
    /// A type name is not UTF-8.
    #[error("string at offset {offset} of the string section is not UTF-8")]
    InvalidString {
        /// The offset, relative to the string section.
        offset: u32,
    },
    /// No struct or union has that name.
    #[error("no struct or union named `{name}` in the BTF")]
    TypeNotFound {
        /// The name looked for.
        name: String,
    },
    /// The struct or union is only forward-declared.
    #[error("`{name}` is only forward-declared in the BTF")]
    Incomplete {
        /// The name looked for.
        name: String,
    },
    /// The member path is empty or has an empty step (`"a..b"`).
    #[error("member path `{path}` of `{type_name}` is empty or has an empty step")]
    InvalidPath {
        /// The struct or union looked in.
        type_name: String,
        /// The path given.
        path: String,
    },
    /// The struct or union has no member of that name, even inside its anonymous members.
    #[error("`{type_name}` has no member `{member}`")]
    MemberNotFound {
        /// The struct or union looked in, with the path steps already taken (`"task_struct.se"`).
        type_name: String,
        /// The member looked for.
        member: String,
    },
    /// A step of the path other than the last is a pointer, which the path cannot follow.
    #[error("`{type_name}.{member}` is a pointer; every step of a member path but the last must be an embedded struct or union")]
    ThroughPointer {
        /// The struct or union the pointer is in, with the path steps already taken.
        type_name: String,
        /// The pointer member.
        member: String,
    },
    /// A step of the path other than the last is neither a struct nor a union.
    #[error("`{type_name}.{member}` is a {kind}, not an embedded struct or union, so the path cannot go on")]
    NotComposite {
        /// The struct or union the member is in, with the path steps already taken.
        type_name: String,
        /// The member.
        member: String,
        /// The kind of the member's type (`"int"`, `"array"`, ...).
        kind: &'static str,
    },
    /// The member is a bitfield, which has no byte offset or byte size.
    #[error("`{type_name}.{member}` is a bitfield, which has no byte offset or size")]
    Bitfield {
        /// The struct or union the member is in, with the path steps already taken.
        type_name: String,
        /// The bitfield member.
        member: String,
    },
    /// The member does not start on a byte boundary although it is not a bitfield.
    #[error("`{type_name}.{member}` starts at bit {bit_offset}, not on a byte boundary")]
    Unaligned {
        /// The struct or union the member is in, with the path steps already taken.
        type_name: String,
        /// The member.
        member: String,
        /// Its offset in bits from the start of `type_name`'s top-level struct.
        bit_offset: u64,
    },
    /// The member's byte offset does not fit in a `u32`.
    #[error("offset of `{type_name}.{member}` does not fit in 32 bits")]
    OffsetOverflow {
        /// The struct or union the member is in, with the path steps already taken.
        type_name: String,
        /// The member.
        member: String,
    },
    /// The type is void, a function, a forward declaration or another kind without a size.
    #[error("type {type_id} ({kind}) has no size")]
    NoSize {
        /// The type, after typedefs and modifiers were resolved.
        type_id: u32,
        /// Its kind.
        kind: &'static str,
    },
    /// An array's size does not fit in a `u32`.
    #[error("size of array type {type_id} does not fit in 32 bits")]
    SizeOverflow {
        /// The array type.
        type_id: u32,
    },
    /// A chain of typedefs, modifiers, arrays or anonymous members is too deep, most likely a cycle.
    #[error("type chain through type {type_id} is deeper than {MAX_DEPTH} levels (a cycle?)")]
    TooDeep {
        /// The type at which the reader gave up.
        type_id: u32,
    },
    /// The kernel has no raw tracepoint of that name.
    #[error("no raw tracepoint `{name}`: the BTF has no typedef `btf_trace_{name}`")]
    TracepointNotFound {
        /// The tracepoint looked for.
        name: String,
    },
    /// The `btf_trace_<name>` typedef is not shaped like `void (*)(void *__data, ...)`.
    #[error("typedef `btf_trace_{name}` is not a pointer to a function taking `void *__data` first: {reason}")]
    UnexpectedTracepointType {
        /// The tracepoint looked for.
        name: String,
        /// What differs.
        reason: &'static str,
    },
}

/// A kernel's BTF: its types, its strings, and name indexes for the lookups credwatch makes.
pub struct Btf {
    strings: Vec<u8>,
    /// Indexed by type id; id 0 is `void`.
    types: Vec<Type>,
    /// Members of every struct and union, in order; each composite holds a range of them.
    members: Vec<Member>,
    /// Parameter type ids of every function prototype; each prototype holds a range of them.
    params: Vec<u32>,
    /// Struct, union and forward-declaration names (one C tag namespace) to the best type id.
    tags: HashMap<String, u32>,
    typedefs: HashMap<String, u32>,
    funcs: HashSet<String>,
}

struct Type {
    name_off: u32,
    body: Body,
}

enum Body {
    Void,
    Int {
        size: u32,
        bit_offset: u32,
        bits: u32,
    },
    Ptr(u32),
    Array {
        element: u32,
        len: u32,
    },
    Struct(Composite),
    Union(Composite),
    Enum {
        size: u32,
    },
    Fwd,
    Typedef(u32),
    /// `volatile`, `const`, `restrict` or a type tag: same layout as the type it wraps.
    Modifier(u32),
    Func,
    FuncProto {
        params: Range<usize>,
    },
    Var,
    Datasec,
    Float {
        size: u32,
    },
    DeclTag,
    Enum64 {
        size: u32,
    },
}

impl Body {
    fn kind_name(&self) -> &'static str {
        match self {
            Body::Void => "void",
            Body::Int { .. } => "int",
            Body::Ptr(_) => "pointer",
            Body::Array { .. } => "array",
            Body::Struct(_) => "struct",
            Body::Union(_) => "union",
            Body::Enum { .. } => "enum",
            Body::Fwd => "forward declaration",
            Body::Typedef(_) => "typedef",
            Body::Modifier(_) => "type modifier",
            Body::Func => "function",
            Body::FuncProto { .. } => "function prototype",
            Body::Var => "variable",
            Body::Datasec => "data section",
            Body::Float { .. } => "float",
            Body::DeclTag => "declaration tag",
            Body::Enum64 { .. } => "enum64",
        }
    }
}

struct Composite {
    size: u32,
    members: Range<usize>,
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero only for bitfields in a struct whose `kind_flag` is set.
    bitfield_size: u32,
}

/// A member found by a path, with its offset from the start of the outermost struct.
struct Located<'a> {
    member: &'a Member,
    bit_offset: u64,
    /// `type_name` plus the path steps before the member, for error messages.
    parent: String,
    name: &'a str,
}

impl Btf {
    /// Reads the running kernel's BTF from /sys/kernel/btf/vmlinux.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_PATH))
    }

    /// Reads raw BTF (such as /sys/kernel/btf/vmlinux, not an ELF `.BTF` section) from `path`.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(data)
    }

    /// Parses raw little-endian BTF: header, type section and string section.
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let header = Header::read(&data)?;
        let type_range = header.section(&data, "type", header.type_off, header.type_len)?;
        let string_range = header.section(&data, "string", header.str_off, header.str_len)?;
        let mut types = vec![Type {
            name_off: 0,
            body: Body::Void,
        }];
        let mut members = Vec::new();
        let mut params = Vec::new();
        let mut cursor = Cursor {
            data: &data,
            pos: type_range.start,
            end: type_range.end,
        };
        let mut type_id: u32 = 1;
        while cursor.pos < cursor.end {
            types.push(read_type(&mut cursor, type_id, &mut members, &mut params)?);
            type_id += 1;
        }
        let strings = data[string_range].to_vec();
        drop(data);
        let mut btf = Btf {
            strings,
            types,
            members,
            params,
            tags: HashMap::new(),
            typedefs: HashMap::new(),
            funcs: HashSet::new(),
        };
        btf.build_indexes()?;
        Ok(btf)
    }

    /// Byte offset of the member at `path` inside struct or union `type_name`.
    ///
    /// `path` is dot-separated; every step but the last must be an embedded struct or union
    /// (`"se.vruntime"` in `task_struct`), never a pointer. Members of anonymous struct and
    /// union members are found as if they were direct members, with the anonymous member's
    /// offset added. A bitfield member is an error.
    pub fn member_offset(&self, type_name: &str, path: &str) -> Result<u32, BtfError> {
        let located = self.locate(type_name, path)?;
        u32::try_from(located.bit_offset / 8).map_err(|_| BtfError::OffsetOverflow {
            type_name: located.parent,
            member: located.name.to_owned(),
        })
    }

    /// Size in bytes of the type of the member at `path` (see [`Btf::member_offset`]), with
    /// typedefs, `const`, `volatile`, `restrict` and type tags resolved; pointers are 8 bytes.
    pub fn member_size(&self, type_name: &str, path: &str) -> Result<u32, BtfError> {
        let located = self.locate(type_name, path)?;
        self.type_size(located.member.type_id, 0)
    }

    /// Size in bytes of the struct or union named `type_name`.
    pub fn struct_size(&self, type_name: &str) -> Result<u32, BtfError> {
        Ok(self.composite_named(type_name)?.1.size)
    }

    /// Number of `TP_PROTO` arguments of raw tracepoint `name` (such as `"sched_process_exec"`).
    ///
    /// Read from the kernel's `btf_trace_<name>` typedef, a pointer to a function whose first
    /// parameter, `void *__data`, is the tracepoint's private data and is not counted.
    pub fn tracepoint_arg_count(&self, name: &str) -> Result<usize, BtfError> {
        let unexpected = |reason| BtfError::UnexpectedTracepointType {
            name: name.to_owned(),
            reason,
        };
        let typedef = self
            .typedefs
            .get(&format!("btf_trace_{name}"))
            .ok_or_else(|| BtfError::TracepointNotFound {
                name: name.to_owned(),
            })?;
        let (_, pointer) = self.resolve(*typedef)?;
        let Body::Ptr(proto) = pointer.body else {
            return Err(unexpected("it is not a pointer"));
        };
        let (_, proto) = self.resolve(proto)?;
        let Body::FuncProto { params } = &proto.body else {
            return Err(unexpected("it does not point to a function prototype"));
        };
        let params = &self.params[params.clone()];
        let Some(&first) = params.first() else {
            return Err(unexpected("the function has no parameters"));
        };
        let (_, first) = self.resolve(first)?;
        let Body::Ptr(pointee) = first.body else {
            return Err(unexpected("the first parameter is not a pointer"));
        };
        if !matches!(self.resolve(pointee)?.1.body, Body::Void) {
            return Err(unexpected("the first parameter is not `void *`"));
        }
        Ok(params.len() - 1)
    }

    /// Whether the BTF has a function named `name` (such as `"bpf_lsm_file_open"`).
    #[must_use]
    pub fn has_func(&self, name: &str) -> bool {
        self.funcs.contains(name)
    }

    fn build_indexes(&mut self) -> Result<(), BtfError> {
        for (type_id, ty) in (0u32..).zip(&self.types) {
            if !matches!(
                ty.body,
                Body::Struct(_) | Body::Union(_) | Body::Fwd | Body::Typedef(_) | Body::Func
            ) {
                continue;
            }
            let name = string(&self.strings, ty.name_off)?;
            if name.is_empty() {
                continue;
            }
            match ty.body {
                Body::Typedef(_) => {
                    if !self.typedefs.contains_key(name) {
                        self.typedefs.insert(name.to_owned(), type_id);
                    }
                }
                Body::Func => {
                    if !self.funcs.contains(name) {
                        self.funcs.insert(name.to_owned());
                    }
                }
                // vmlinux repeats a few struct names: prefer a full definition over an empty
                // struct over a forward declaration and, among equals, the first.
                _ => {
                    let better = self.tags.get(name).is_none_or(|&known| {
                        tag_rank(&self.types[known as usize].body) < tag_rank(&ty.body)
                    });
                    if better {
                        self.tags.insert(name.to_owned(), type_id);
                    }
                }
            }
        }
        Ok(())
    }

    fn ty(&self, type_id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(type_id as usize)
            .ok_or(BtfError::TypeIdOutOfRange {
                type_id,
                last: (self.types.len() - 1) as u32,
            })
    }

    /// Follows typedefs and modifiers to the type that gives the layout.
    fn resolve(&self, mut type_id: u32) -> Result<(u32, &Type), BtfError> {
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(type_id)?;
            match ty.body {
                Body::Typedef(target) | Body::Modifier(target) => type_id = target,
                _ => return Ok((type_id, ty)),
            }
        }
        Err(BtfError::TooDeep { type_id })
    }

    fn type_size(&self, type_id: u32, depth: usize) -> Result<u32, BtfError> {
        if depth >= MAX_DEPTH {
            return Err(BtfError::TooDeep { type_id });
        }
        let (type_id, ty) = self.resolve(type_id)?;
        match ty.body {
            Body::Int { size, .. }
            | Body::Enum { size }
            | Body::Enum64 { size }
            | Body::Float { size }
            | Body::Struct(Composite { size, .. })
            | Body::Union(Composite { size, .. }) => Ok(size),
            Body::Ptr(_) => Ok(POINTER_SIZE),
            Body::Array { element, len } => self
                .type_size(element, depth + 1)?
                .checked_mul(len)
                .ok_or(BtfError::SizeOverflow { type_id }),
            _ => Err(BtfError::NoSize {
                type_id,
                kind: ty.body.kind_name(),
            }),
        }
    }

    fn composite_named(&self, name: &str) -> Result<(u32, &Composite), BtfError> {
        let type_id = *self.tags.get(name).ok_or_else(|| BtfError::TypeNotFound {
            name: name.to_owned(),
        })?;
        match &self.ty(type_id)?.body {
            Body::Struct(composite) | Body::Union(composite) => Ok((type_id, composite)),
            _ => Err(BtfError::Incomplete {
                name: name.to_owned(),
            }),
        }
    }

    fn locate<'a>(&'a self, type_name: &str, path: &'a str) -> Result<Located<'a>, BtfError> {
        if path.split('.').any(str::is_empty) {
            return Err(BtfError::InvalidPath {
                type_name: type_name.to_owned(),
                path: path.to_owned(),
            });
        }
        let (mut composite_id, mut composite) = self.composite_named(type_name)?;
        let mut bit_offset = 0u64;
        let mut parent = type_name.to_owned();
        let mut steps = path.split('.');
        let mut name = steps.next().unwrap_or_default();
        loop {
            let Some((member, offset)) = self.find_member(composite_id, composite, name, 0)? else {
                return Err(BtfError::MemberNotFound {
                    type_name: parent,
                    member: name.to_owned(),
                });
            };
            bit_offset += offset;
            let Some(next) = steps.next() else {
                if self.is_bitfield(member)? {
                    return Err(BtfError::Bitfield {
                        type_name: parent,
                        member: name.to_owned(),
                    });
                }
                if !bit_offset.is_multiple_of(8) {
                    return Err(BtfError::Unaligned {
                        type_name: parent,
                        member: name.to_owned(),
                        bit_offset,
                    });
                }
                return Ok(Located {
                    member,
                    bit_offset,
                    parent,
                    name,
                });
            };
            let (member_type_id, member_type) = self.resolve(member.type_id)?;
            match &member_type.body {
                Body::Struct(inner) | Body::Union(inner) => {
                    (composite_id, composite) = (member_type_id, inner);
                }
                Body::Ptr(_) => {
                    return Err(BtfError::ThroughPointer {
                        type_name: parent,
                        member: name.to_owned(),
                    })
                }
                other => {
                    return Err(BtfError::NotComposite {
                        type_name: parent,
                        member: name.to_owned(),
                        kind: other.kind_name(),
                    })
                }
            }
            parent.push('.');
            parent.push_str(name);
            name = next;
        }
    }

    /// Finds member `name` directly in `composite` or inside its anonymous struct and union
    /// members, returning it with its bit offset from the start of `composite`.
    fn find_member(
        &self,
        composite_id: u32,
        composite: &Composite,
        name: &str,
        depth: usize,
    ) -> Result<Option<(&Member, u64)>, BtfError> {
        if depth >= MAX_DEPTH {
            return Err(BtfError::TooDeep {
                type_id: composite_id,
            });
        }
        for member in &self.members[composite.members.clone()] {
            let member_name = string_bytes(&self.strings, member.name_off)?;
            if member_name == name.as_bytes() {
                return Ok(Some((member, u64::from(member.bit_offset))));
            }
            if !member_name.is_empty() {
                continue;
            }
            let (inner_id, inner_type) = self.resolve(member.type_id)?;
            if let Body::Struct(inner) | Body::Union(inner) = &inner_type.body {
                if let Some((found, offset)) = self.find_member(inner_id, inner, name, depth + 1)? {
                    return Ok(Some((found, u64::from(member.bit_offset) + offset)));
                }
            }
        }
        Ok(None)
    }

    /// Bitfields are marked by a size in the member (`kind_flag` set) or, in older BTF, by an int
    /// type narrower than its storage.
    fn is_bitfield(&self, member: &Member) -> Result<bool, BtfError> {
        if member.bitfield_size != 0 {
            return Ok(true);
        }
        Ok(match self.resolve(member.type_id)?.1.body {
            Body::Int {
                size,
                bit_offset,
                bits,
            } => bit_offset != 0 || u64::from(bits) != u64::from(size) * 8,
            _ => false,
        })
    }
}

fn tag_rank(body: &Body) -> u8 {
    match body {
        Body::Struct(composite) | Body::Union(composite) if composite.size > 0 => 2,
        Body::Struct(_) | Body::Union(_) => 1,
        _ => 0,
    }
}

fn string_bytes(strings: &[u8], offset: u32) -> Result<&[u8], BtfError> {
    let rest = strings
        .get(offset as usize..)
        .filter(|rest| !rest.is_empty())
        .ok_or(BtfError::StringOutOfRange {
            offset,
            len: strings.len(),
        })?;
    let end = rest
        .iter()
        .position(|&byte| byte == 0)
        .ok_or(BtfError::UnterminatedString { offset })?;
    Ok(&rest[..end])
}

fn string(strings: &[u8], offset: u32) -> Result<&str, BtfError> {
    std::str::from_utf8(string_bytes(strings, offset)?)
        .map_err(|_| BtfError::InvalidString { offset })
}

struct Header {
    hdr_len: u32,
    type_off: u32,
    type_len: u32,
    str_off: u32,
    str_len: u32,
}

impl Header {
    fn read(data: &[u8]) -> Result<Self, BtfError> {
        let mut cursor = Cursor {
            data,
            pos: 0,
            end: data.len(),
        };
        let magic = cursor.array::<2>("BTF magic")?;
        match u16::from_le_bytes(magic) {
            MAGIC => {}
            found if found == MAGIC.swap_bytes() => return Err(BtfError::BigEndian),
            found => return Err(BtfError::BadMagic { found }),
        }
        let [version, _flags] = cursor.array::<2>("BTF version and flags")?;
        if version != VERSION {
            return Err(BtfError::UnsupportedVersion { version });
        }
        let hdr_len = cursor.u32("BTF header length")?;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::HeaderTooShort { hdr_len });
        }
        // A newer, longer header keeps these fields in place; the fields after them are skipped.
        Ok(Header {
            hdr_len,
            type_off: cursor.u32("BTF type section offset")?,
            type_len: cursor.u32("BTF type section length")?,
            str_off: cursor.u32("BTF string section offset")?,
            str_len: cursor.u32("BTF string section length")?,
        })
    }

    fn section(
        &self,
        data: &[u8],
        section: &'static str,
        offset: u32,
        len: u32,
    ) -> Result<Range<usize>, BtfError> {
        let start = self.hdr_len as usize + offset as usize;
        let end = start + len as usize;
        if end > data.len() {
            return Err(BtfError::SectionOutOfBounds {
                section,
                offset,
                len,
                hdr_len: self.hdr_len,
                available: data.len(),
            });
        }
        Ok(start..end)
    }
}

/// Reads little-endian values from `data[pos..end]`, failing instead of reading past `end`.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BtfError> {
        let remaining = self.data.get(self.pos..self.end).unwrap_or_default();
        let bytes = remaining.first_chunk::<N>().ok_or(BtfError::Truncated {
            what,
            offset: self.pos,
            needed: N,
            available: remaining.len(),
        })?;
        self.pos += N;
        Ok(*bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, BtfError> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    fn skip(&mut self, len: usize, what: &'static str) -> Result<(), BtfError> {
        let available = self.end.saturating_sub(self.pos);
        if len > available {
            return Err(BtfError::Truncated {
                what,
                offset: self.pos,
                needed: len,
                available,
            });
        }
        self.pos += len;
        Ok(())
    }
}

/// Reads one `struct btf_type` and the data that follows it, which depends on its kind.
fn read_type(
    cursor: &mut Cursor<'_>,
    type_id: u32,
    members: &mut Vec<Member>,
    params: &mut Vec<u32>,
) -> Result<Type, BtfError> {
    let offset = cursor.pos;
    let name_off = cursor.u32("type name")?;
    let info = cursor.u32("type info")?;
    let size_or_type = cursor.u32("type size or type")?;
    let vlen = (info & 0xffff) as usize;
    let kind = (info >> 24) & 0x1f;
    let kind_flag = info >> 31 == 1;
    let body = match kind {
        1 => {
            let encoding = cursor.u32("int encoding")?;
            Body::Int {
                size: size_or_type,
                bit_offset: (encoding >> 16) & 0xff,
                bits: encoding & 0xff,
            }
        }
        2 => Body::Ptr(size_or_type),
        3 => {
            let element = cursor.u32("array element type")?;
            let _index_type = cursor.u32("array index type")?;
            let len = cursor.u32("array length")?;
            Body::Array { element, len }
        }
        4 | 5 => {
            let start = members.len();
            for _ in 0..vlen {
                let name_off = cursor.u32("member name")?;
                let type_id = cursor.u32("member type")?;
                let offset = cursor.u32("member offset")?;
                // With `kind_flag` set, the top 8 bits hold the bitfield size.
                let (bit_offset, bitfield_size) = if kind_flag {
                    (offset & 0x00ff_ffff, offset >> 24)
                } else {
                    (offset, 0)
                };
                members.push(Member {
                    name_off,
                    type_id,
                    bit_offset,
                    bitfield_size,
                });
            }
            let composite = Composite {
                size: size_or_type,
                members: start..members.len(),
            };
            if kind == 4 {
                Body::Struct(composite)
            } else {
                Body::Union(composite)
            }
        }
        6 => {
            cursor.skip(vlen * 8, "enum values")?;
            Body::Enum { size: size_or_type }
        }
        7 => Body::Fwd,
        8 => Body::Typedef(size_or_type),
        9..=11 | 18 => Body::Modifier(size_or_type),
        12 => Body::Func,
        13 => {
            let start = params.len();
            for _ in 0..vlen {
                let _name_off = cursor.u32("function parameter name")?;
                params.push(cursor.u32("function parameter type")?);
            }
            Body::FuncProto {
                params: start..params.len(),
            }
        }
        14 => {
            cursor.skip(4, "variable linkage")?;
            Body::Var
        }
        15 => {
            cursor.skip(vlen * 12, "data section variables")?;
            Body::Datasec
        }
        16 => Body::Float { size: size_or_type },
        17 => {
            cursor.skip(4, "declaration tag component index")?;
            Body::DeclTag
        }
        19 => {
            cursor.skip(vlen * 12, "enum64 values")?;
            Body::Enum64 { size: size_or_type }
        }
        _ => {
            return Err(BtfError::UnknownKind {
                kind,
                type_id,
                offset,
            })
        }
    };
    Ok(Type { name_off, body })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::process::Command;

    use super::*;

    const INT: u32 = 1;
    const PTR: u32 = 2;
    const ARRAY: u32 = 3;
    const STRUCT: u32 = 4;
    const UNION: u32 = 5;
    const ENUM: u32 = 6;
    const FWD: u32 = 7;
    const TYPEDEF: u32 = 8;
    const VOLATILE: u32 = 9;
    const CONST: u32 = 10;
    const RESTRICT: u32 = 11;
    const FUNC: u32 = 12;
    const FUNC_PROTO: u32 = 13;
    const VAR: u32 = 14;
    const DATASEC: u32 = 15;
    const FLOAT: u32 = 16;
    const DECL_TAG: u32 = 17;
    const TYPE_TAG: u32 = 18;
    const ENUM64: u32 = 19;

    /// Writes BTF laid out as the kernel does: header, type section, string section.
    struct BtfBuilder {
        types: Vec<u8>,
        strings: Vec<u8>,
        last_id: u32,
    }

    impl BtfBuilder {
        fn new() -> Self {
            BtfBuilder {
                types: Vec::new(),
                strings: vec![0],
                last_id: 0,
            }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32;
            self.strings.extend(name.as_bytes());
            self.strings.push(0);
            offset
        }

        /// Byte offset in the built blob at which the next type starts.
        fn next_offset(&self) -> usize {
            HEADER_LEN as usize + self.types.len()
        }

        fn add(
            &mut self,
            name: &str,
            kind: u32,
            kind_flag: bool,
            vlen: usize,
            size_or_type: u32,
            trailing: &[u32],
        ) -> u32 {
            let name_off = self.name(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen as u32;
            for word in [name_off, info, size_or_type].iter().chain(trailing) {
                self.types.extend(word.to_le_bytes());
            }
            self.last_id += 1;
            self.last_id
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.add(name, INT, false, 0, size, &[size * 8])
        }

        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            kind_flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut trailing = Vec::new();
            for &(member, type_id, offset) in members {
                trailing.extend([self.name(member), type_id, offset]);
            }
            self.add(name, kind, kind_flag, members.len(), size, &trailing)
        }

        fn build(&self) -> Vec<u8> {
            let type_len = self.types.len() as u32;
            let mut blob = Vec::new();
            blob.extend(MAGIC.to_le_bytes());
            blob.extend([VERSION, 0]);
            for word in [HEADER_LEN, 0, type_len, type_len, self.strings.len() as u32] {
                blob.extend(word.to_le_bytes());
            }
            blob.extend(&self.types);
            blob.extend(&self.strings);
            blob
        }
    }

    /// A `task` struct with anonymous unions and structs, a typedef'd member, an embedded
    /// struct, a pointer and a bitfield, preceded by one type of every other kind so that a
    /// cursor misreading any kind's trailing data would break what follows.
    fn sample() -> Vec<u8> {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4); // 1
        let long = b.int("long", 8); // 2
        let pid_t = b.add("pid_t", TYPEDEF, false, 0, int, &[]); // 3
        let const_pid = b.add("", CONST, false, 0, pid_t, &[]); // 4
        b.add("", VOLATILE, false, 0, long, &[]);
        b.add("", RESTRICT, false, 0, 0, &[]);
        b.add("user", TYPE_TAG, false, 0, int, &[]);
        let (a, z) = (b.name("A"), b.name("Z"));
        b.add("state", ENUM, false, 2, 4, &[a, 0, z, u32::MAX]);
        b.add("big", ENUM64, false, 2, 8, &[a, 1, 0, z, 0, 1]);
        b.add("only_declared", FWD, false, 0, 0, &[]);
        b.add("double", FLOAT, false, 0, 8, &[]);
        let var = b.add("counter", VAR, false, 0, int, &[1]);
        b.add(".data", DATASEC, false, 1, 4, &[var, 0, 4]);
        b.add("tagged", DECL_TAG, false, 0, var, &[u32::MAX]);
        let counts = b.add("", ARRAY, false, 0, 0, &[long, int, 4]); // 15
        let void_ptr = b.add("", PTR, false, 0, 0, &[]); // 16

        let inner = b.composite(STRUCT, "inner", 8, false, &[("a", int, 0), ("b", int, 32)]);
        let pid_union = b.composite(
            UNION,
            "",
            8,
            false,
            &[("pid", const_pid, 0), ("cookie", long, 0)],
        );
        let tgid_union = b.composite(UNION, "", 8, false, &[("tgid", int, 0), ("alias", long, 0)]);
        let flags_struct = b.composite(
            STRUCT,
            "",
            16,
            false,
            &[("flags", int, 0), ("", tgid_union, 64)],
        );
        let task = b.last_id + 2;
        let task_ptr = b.add("", PTR, false, 0, task, &[]);
        // kind_flag is set, so every member offset keeps a bitfield size in its top 8 bits.
        b.composite(
            STRUCT,
            "task",
            88,
            true,
            &[
                ("state", long, 0),
                ("", pid_union, 64),
                ("", flags_struct, 128),
                ("inner", inner, 256),
                ("parent", task_ptr, 320),
                ("counts", counts, 384),
                ("ready", int, (1 << 24) | 640),
            ],
        );

        let narrow = b.add("int", INT, false, 0, 4, &[3]);
        b.composite(STRUCT, "old_style", 4, false, &[("narrow", narrow, 0)]);

        b.add("dup", FWD, false, 0, 0, &[]);
        b.composite(STRUCT, "dup", 0, false, &[]);
        b.composite(STRUCT, "dup", 16, false, &[("x", long, 64)]);
        b.composite(STRUCT, "dup", 8, false, &[("y", long, 0)]);

        let proto = b.add(
            "",
            FUNC_PROTO,
            false,
            3,
            0,
            &[0, void_ptr, 0, task_ptr, 0, int],
        );
        let proto_ptr = b.add("", PTR, false, 0, proto, &[]);
        b.add("btf_trace_demo", TYPEDEF, false, 0, proto_ptr, &[]);
        b.add("do_demo", FUNC, false, 0, proto, &[]);
        let bad_proto = b.add("", FUNC_PROTO, false, 1, int, &[0, int]);
        let bad_ptr = b.add("", PTR, false, 0, bad_proto, &[]);
        b.add("btf_trace_bad", TYPEDEF, false, 0, bad_ptr, &[]);
        b.add("btf_trace_flat", TYPEDEF, false, 0, int, &[]);
        b.build()
    }

    fn sample_btf() -> Btf {
        Btf::parse(sample()).expect("the sample BTF parses")
    }

    #[test]
    fn anonymous_members_are_found_with_their_offsets_added() {
        let btf = sample_btf();
        assert_eq!(btf.member_offset("task", "state").unwrap(), 0);
        assert_eq!(btf.member_offset("task", "pid").unwrap(), 8);
        assert_eq!(btf.member_offset("task", "cookie").unwrap(), 8);
        assert_eq!(btf.member_offset("task", "flags").unwrap(), 16);
        // Two levels deep: an anonymous union inside an anonymous struct.
        assert_eq!(btf.member_offset("task", "tgid").unwrap(), 24);
        assert_eq!(btf.member_offset("task", "counts").unwrap(), 48);
    }

    #[test]
    fn member_sizes_resolve_typedefs_and_modifiers() {
        let btf = sample_btf();
        // `const pid_t`, pid_t being a typedef of int.
        assert_eq!(btf.member_size("task", "pid").unwrap(), 4);
        assert_eq!(btf.member_size("task", "state").unwrap(), 8);
        assert_eq!(btf.member_size("task", "parent").unwrap(), 8);
        assert_eq!(btf.member_size("task", "inner").unwrap(), 8);
        assert_eq!(btf.member_size("task", "counts").unwrap(), 32);
        assert_eq!(btf.struct_size("task").unwrap(), 88);
    }

    #[test]
    fn paths_step_into_embedded_structs_only() {
        let btf = sample_btf();
        assert_eq!(btf.member_offset("task", "inner.b").unwrap(), 36);
        assert_eq!(btf.member_size("task", "inner.b").unwrap(), 4);
        assert!(matches!(
            btf.member_offset("task", "parent.state"),
            Err(BtfError::ThroughPointer { type_name, member }) if type_name == "task" && member == "parent"
        ));
        assert!(matches!(
            btf.member_offset("task", "inner.a.b"),
            Err(BtfError::NotComposite { type_name, member, kind: "int" })
                if type_name == "task.inner" && member == "a"
        ));
        for path in ["", "inner..b", ".state", "state."] {
            assert!(
                matches!(
                    btf.member_offset("task", path),
                    Err(BtfError::InvalidPath { .. })
                ),
                "{path:?}"
            );
        }
    }

    #[test]
    fn bitfields_are_errors() {
        let btf = sample_btf();
        let err = btf.member_offset("task", "ready").unwrap_err();
        assert!(
            matches!(&err, BtfError::Bitfield { type_name, member } if type_name == "task" && member == "ready"),
            "{err}"
        );
        assert!(matches!(
            btf.member_size("task", "ready"),
            Err(BtfError::Bitfield { .. })
        ));
        // Without kind_flag, a bitfield shows as an int narrower than its storage.
        assert!(matches!(
            btf.member_offset("old_style", "narrow"),
            Err(BtfError::Bitfield { .. })
        ));
    }

    #[test]
    fn missing_names_are_errors_naming_what_was_looked_for() {
        let btf = sample_btf();
        let err = btf.member_offset("task", "nope").unwrap_err();
        assert!(
            matches!(&err, BtfError::MemberNotFound { type_name, member } if type_name == "task" && member == "nope"),
            "{err}"
        );
        assert_eq!(err.to_string(), "`task` has no member `nope`");
        let err = btf.member_offset("task", "inner.nope").unwrap_err();
        assert_eq!(err.to_string(), "`task.inner` has no member `nope`");
        let err = btf.struct_size("nothing").unwrap_err();
        assert!(
            matches!(&err, BtfError::TypeNotFound { name } if name == "nothing"),
            "{err}"
        );
        // An anonymous member's own members are reachable, but not by an empty name.
        assert!(btf.member_offset("task", "x").is_err());
    }

    #[test]
    fn duplicate_names_prefer_the_full_definition() {
        let btf = sample_btf();
        assert_eq!(btf.struct_size("dup").unwrap(), 16);
        assert_eq!(btf.member_offset("dup", "x").unwrap(), 8);
        assert!(matches!(
            btf.struct_size("only_declared"),
            Err(BtfError::Incomplete { name }) if name == "only_declared"
        ));
    }

    #[test]
    fn tracepoint_arguments_skip_the_data_pointer() {
        let btf = sample_btf();
        assert_eq!(btf.tracepoint_arg_count("demo").unwrap(), 2);
        assert!(matches!(
            btf.tracepoint_arg_count("missing"),
            Err(BtfError::TracepointNotFound { name }) if name == "missing"
        ));
        for name in ["bad", "flat"] {
            assert!(
                matches!(
                    btf.tracepoint_arg_count(name),
                    Err(BtfError::UnexpectedTracepointType { .. })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn functions_are_indexed_by_name() {
        let btf = sample_btf();
        assert!(btf.has_func("do_demo"));
        assert!(!btf.has_func("task"));
        assert!(!btf.has_func("do_other"));
    }

    #[test]
    fn unknown_kind_is_an_error_naming_kind_and_offset() {
        let mut b = BtfBuilder::new();
        b.int("int", 4);
        let offset = b.next_offset();
        b.add("future", 20, false, 0, 0, &[]);
        let err = Btf::parse(b.build()).err().expect("kind 20 is unknown");
        assert!(
            matches!(err, BtfError::UnknownKind { kind: 20, type_id: 2, offset: o } if o == offset),
            "{err}"
        );
    }

    #[test]
    fn truncated_blobs_are_errors() {
        let blob = sample();
        for len in 0..blob.len() {
            assert!(
                Btf::parse(blob[..len].to_vec()).is_err(),
                "prefix of {len} bytes"
            );
        }
        // A type section whose length cuts a struct's members short.
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.composite(STRUCT, "s", 8, false, &[("a", int, 0), ("b", int, 32)]);
        let mut blob = b.build();
        let type_len = b.types.len() as u32 - 4;
        blob[12..16].copy_from_slice(&type_len.to_le_bytes());
        let err = Btf::parse(blob).err().expect("the last member is cut");
        assert!(
            matches!(
                err,
                BtfError::Truncated {
                    what: "member offset",
                    offset: 72,
                    needed: 4,
                    available: 0
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn corrupted_blobs_never_panic() {
        let blob = sample();
        for position in 0..blob.len() {
            for value in [0x00, 0x01, 0x13, 0x7f, 0x80, 0xff] {
                let mut corrupt = blob.clone();
                corrupt[position] = value;
                let Ok(btf) = Btf::parse(corrupt) else {
                    continue;
                };
                for path in ["pid", "tgid", "inner.b", "parent", "counts", "ready"] {
                    let _ = btf.member_offset("task", path);
                    let _ = btf.member_size("task", path);
                }
                let _ = btf.struct_size("dup");
                let _ = btf.tracepoint_arg_count("demo");
                let _ = btf.has_func("do_demo");
            }
        }
    }

    #[test]
    fn bad_magic_and_big_endian_are_errors() {
        let mut blob = sample();
        blob[..2].copy_from_slice(&[0xeb, 0x9f]);
        assert!(matches!(Btf::parse(blob.clone()), Err(BtfError::BigEndian)));
        blob[..2].copy_from_slice(b"\x7fE");
        let err = Btf::parse(blob).err().expect("ELF magic is not BTF");
        assert!(matches!(err, BtfError::BadMagic { found: 0x457f }), "{err}");
        assert_eq!(
            err.to_string(),
            "not BTF: magic at byte 0 is 0x457f, expected 0xeb9f"
        );
        assert!(matches!(
            Btf::parse(Vec::new()),
            Err(BtfError::Truncated { offset: 0, .. })
        ));
    }

    #[test]
    fn out_of_range_type_ids_and_strings_are_errors() {
        let mut b = BtfBuilder::new();
        b.composite(STRUCT, "s", 8, false, &[("a", 999, 0)]);
        let btf = Btf::parse(b.build()).unwrap();
        assert!(matches!(
            btf.member_size("s", "a"),
            Err(BtfError::TypeIdOutOfRange {
                type_id: 999,
                last: 1
            })
        ));

        let mut b = BtfBuilder::new();
        b.add("", STRUCT, false, 0, 0, &[]);
        let mut blob = b.build();
        let name_off = 1000u32;
        blob[24..28].copy_from_slice(&name_off.to_le_bytes());
        assert!(matches!(
            Btf::parse(blob),
            Err(BtfError::StringOutOfRange {
                offset: 1000,
                len: 1
            })
        ));

        let mut b = BtfBuilder::new();
        b.add("s", STRUCT, false, 0, 0, &[]);
        let mut blob = b.build();
        blob.pop();
        let str_len = b.strings.len() as u32 - 1;
        blob[20..24].copy_from_slice(&str_len.to_le_bytes());
        assert!(matches!(
            Btf::parse(blob),
            Err(BtfError::UnterminatedString { offset: 1 })
        ));
    }

    #[test]
    fn cycles_are_errors_not_endless_loops() {
        let mut b = BtfBuilder::new();
        // Typedefs 1 and 2 name each other; struct 3 holds itself as an anonymous member.
        b.add("a", TYPEDEF, false, 0, 2, &[]);
        b.add("b", TYPEDEF, false, 0, 1, &[]);
        b.composite(STRUCT, "loop", 8, false, &[("", 3, 0), ("x", 1, 0)]);
        let btf = Btf::parse(b.build()).unwrap();
        assert!(matches!(
            btf.member_size("loop", "x"),
            Err(BtfError::TooDeep { .. })
        ));
        assert!(matches!(
            btf.member_offset("loop", "y"),
            Err(BtfError::TooDeep { type_id: 3 })
        ));
    }

    /// The running kernel's BTF, or `None` (with a note) on a kernel built without it.
    fn vmlinux() -> Option<Btf> {
        if !Path::new(VMLINUX_PATH).exists() {
            eprintln!("skipped: {VMLINUX_PATH} is missing (kernel without CONFIG_DEBUG_INFO_BTF)");
            return None;
        }
        Some(Btf::from_sys_fs().expect("the running kernel's BTF parses"))
    }

    /// One type as bpftool's raw dump prints it.
    struct BpftoolType {
        kind: String,
        name: String,
        size: Option<u32>,
        target: Option<u32>,
        /// Name, type id and bit offset of each struct or union member.
        members: Vec<(String, u32, u64)>,
    }

    /// bpftool's own decoding of the running kernel's BTF, or `None` if bpftool is missing.
    fn bpftool_types() -> Option<HashMap<u32, BpftoolType>> {
        let args = ["btf", "dump", "file", VMLINUX_PATH, "format", "raw"];
        let output = ["bpftool", "/usr/sbin/bpftool"]
            .into_iter()
            .find_map(|program| Command::new(program).args(args).output().ok());
        let Some(output) = output else {
            eprintln!("skipped the bpftool cross-check: bpftool is not installed");
            return None;
        };
        assert!(
            output.status.success(),
            "bpftool btf dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let dump = String::from_utf8(output.stdout).expect("bpftool prints UTF-8");
        let mut types = HashMap::new();
        let mut current = None;
        for line in dump.lines() {
            let field = |rest: &str, key: &str| {
                rest.split_whitespace()
                    .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                    .map(|value| value.trim_end_matches(',').parse::<u64>().expect(line))
            };
            // `[114] STRUCT 'task_struct' size=3264 vlen=248`
            if let Some(rest) = line.strip_prefix('[') {
                let (id, rest) = rest.split_once("] ").expect(line);
                let (kind, rest) = rest.split_once(" '").expect(line);
                let (name, rest) = rest.split_once('\'').expect(line);
                let id = id.parse().expect(line);
                types.insert(
                    id,
                    BpftoolType {
                        kind: kind.to_owned(),
                        name: name.to_owned(),
                        size: field(rest, "size").map(|size| size as u32),
                        target: field(rest, "type_id").map(|target| target as u32),
                        members: Vec::new(),
                    },
                );
                current = Some(id);
            // `	'pid' type_id=68 bits_offset=10112`
            } else if let Some(rest) = line.strip_prefix("\t'") {
                let parent = types.get_mut(&current.expect(line)).expect(line);
                if parent.kind == "STRUCT" || parent.kind == "UNION" {
                    let (name, rest) = rest.split_once('\'').expect(line);
                    let type_id = field(rest, "type_id").expect(line) as u32;
                    let bits = field(rest, "bits_offset").expect(line);
                    parent.members.push((name.to_owned(), type_id, bits));
                }
            }
        }
        Some(types)
    }

    fn bpftool_resolve(types: &HashMap<u32, BpftoolType>, mut id: u32) -> &BpftoolType {
        loop {
            let ty = &types[&id];
            match ty.kind.as_str() {
                "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => {
                    id = ty.target.expect("modifiers name a type");
                }
                _ => return ty,
            }
        }
    }

    /// Bit offset and type id of `name` in `composite`, searching anonymous members too.
    fn bpftool_find(
        types: &HashMap<u32, BpftoolType>,
        composite: &BpftoolType,
        name: &str,
    ) -> Option<(u64, u32)> {
        composite
            .members
            .iter()
            .find_map(|(member, type_id, bits)| {
                if member == name {
                    return Some((*bits, *type_id));
                }
                let inner = bpftool_resolve(types, *type_id);
                let anonymous_composite =
                    member == "(anon)" && (inner.kind == "STRUCT" || inner.kind == "UNION");
                if !anonymous_composite {
                    return None;
                }
                bpftool_find(types, inner, name)
                    .map(|(inner_bits, found)| (bits + inner_bits, found))
            })
    }

    /// Byte offset and size of `path` in `type_name`, as bpftool decodes them.
    fn bpftool_member(
        types: &HashMap<u32, BpftoolType>,
        type_name: &str,
        path: &str,
    ) -> (u64, u32) {
        let mut composite = types
            .iter()
            .filter(|(_, ty)| {
                (ty.kind == "STRUCT" || ty.kind == "UNION")
                    && ty.name == type_name
                    && ty.size.is_some_and(|size| size > 0)
            })
            .min_by_key(|(id, _)| **id)
            .map(|(_, ty)| ty)
            .unwrap_or_else(|| panic!("bpftool lists no struct {type_name}"));
        let mut bits = 0;
        let mut steps = path.split('.').peekable();
        while let Some(step) = steps.next() {
            let (step_bits, type_id) = bpftool_find(types, composite, step)
                .unwrap_or_else(|| panic!("bpftool finds no {type_name}.{path}"));
            bits += step_bits;
            let member_type = bpftool_resolve(types, type_id);
            if steps.peek().is_none() {
                assert_eq!(bits % 8, 0, "{type_name}.{path} is byte-aligned");
                let size = match member_type.kind.as_str() {
                    "PTR" => 8,
                    _ => member_type.size.expect("the member's type has a size"),
                };
                return (bits / 8, size);
            }
            composite = member_type;
        }
        unreachable!("split yields at least one step")
    }

    #[test]
    fn vmlinux_offsets_match_bpftool() {
        let Some(btf) = vmlinux() else {
            return;
        };
        let members = [
            ("task_struct", "pid"),
            ("task_struct", "tgid"),
            ("task_struct", "real_parent"),
            ("task_struct", "start_boottime"),
            ("task_struct", "exit_code"),
            ("task_struct", "signal"),
            ("task_struct", "mm"),
            ("task_struct", "se.vruntime"),
            ("mm_struct", "arg_start"),
            ("signal_struct", "live"),
            ("signal_struct", "live.counter"),
            ("linux_binprm", "filename"),
            // Inside an anonymous union at a non-zero offset, through a `const struct path`.
            ("file", "f_path.dentry"),
            // Inside an anonymous struct inside an anonymous union, both at non-zero offsets.
            ("sock_common", "skc_dport"),
        ];
        let found: Vec<_> = members
            .iter()
            .map(|&(type_name, path)| {
                let offset = btf
                    .member_offset(type_name, path)
                    .unwrap_or_else(|err| panic!("{type_name}.{path}: {err}"));
                let size = btf
                    .member_size(type_name, path)
                    .unwrap_or_else(|err| panic!("{type_name}.{path}: {err}"));
                println!("{type_name}.{path}: offset {offset}, size {size}");
                (type_name, path, offset, size)
            })
            .collect();
        let Some(types) = bpftool_types() else {
            return;
        };
        let mm_struct = types
            .values()
            .find(|ty| ty.kind == "STRUCT" && ty.name == "mm_struct")
            .expect("bpftool lists mm_struct");
        assert!(
            mm_struct
                .members
                .iter()
                .all(|(name, _, _)| name != "arg_start"),
            "mm_struct.arg_start should sit in an anonymous struct, as this test means to check"
        );
        for (type_name, path, offset, size) in found {
            let (bpftool_offset, bpftool_size) = bpftool_member(&types, type_name, path);
            assert_eq!(
                u64::from(offset),
                bpftool_offset,
                "offset of {type_name}.{path}"
            );
            assert_eq!(size, bpftool_size, "size of {type_name}.{path}");
        }
        for type_name in ["task_struct", "mm_struct", "signal_struct", "linux_binprm"] {
            let bpftool_size = types
                .values()
                .find(|ty| ty.kind == "STRUCT" && ty.name == type_name)
                .and_then(|ty| ty.size);
            assert_eq!(
                btf.struct_size(type_name).ok(),
                bpftool_size,
                "size of {type_name}"
            );
        }
    }

    #[test]
    fn vmlinux_tracepoints_and_functions() {
        let Some(btf) = vmlinux() else {
            return;
        };
        assert_eq!(btf.tracepoint_arg_count("sched_process_exec").unwrap(), 3);
        assert_eq!(btf.tracepoint_arg_count("sched_process_fork").unwrap(), 2);
        // (struct task_struct *p) before Linux 6.15, (..., bool group_dead) from then on.
        let exit = btf.tracepoint_arg_count("sched_process_exit").unwrap();
        println!("sched_process_exit: {exit} arguments");
        assert!(
            (1..=2).contains(&exit),
            "sched_process_exit has {exit} arguments"
        );
        assert!(matches!(
            btf.tracepoint_arg_count("no_such_tracepoint"),
            Err(BtfError::TracepointNotFound { .. })
        ));
        assert!(btf.has_func("do_sys_openat2"));
        assert!(!btf.has_func("task_struct"));
    }
}
