//! The canonical ustar writer and the hostile-input reader.

use std::collections::btree_map::Entry;

use btd_protocol::patch::{check_path, File, Files};

use super::{check_no_file_dir_clash, check_tree, SourceError, MAX_TREE_FILES};

const BLOCK: usize = 512;
const NAME: std::ops::Range<usize> = 0..100;
const MODE: std::ops::Range<usize> = 100..108;
const UID: std::ops::Range<usize> = 108..116;
const GID: std::ops::Range<usize> = 116..124;
const SIZE: std::ops::Range<usize> = 124..136;
const MTIME: std::ops::Range<usize> = 136..148;
const CHKSUM: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC: std::ops::Range<usize> = 257..265;
const DEVMAJOR: std::ops::Range<usize> = 329..337;
const DEVMINOR: std::ops::Range<usize> = 337..345;
const PREFIX: std::ops::Range<usize> = 345..500;
/// POSIX ustar: `ustar\0` then version `00`.
const USTAR_MAGIC: &[u8; 8] = b"ustar\x0000";
/// Largest size an 11-digit octal field holds.
const MAX_OCTAL_SIZE: u64 = (1 << 33) - 1;

/// Packs `files` into the canonical bundle described in the module docs. Fails if the tree breaks
/// the rules (bad path, a path that is both a file and a directory, over [`MAX_TREE_FILES`] files
/// or `max_bytes` bytes) or a path cannot be stored in a ustar header (a last component over 100
/// bytes, or no `/` splitting the path into ≤ 155 + ≤ 100 bytes).
pub fn pack(files: &Files, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
    check_tree(files, max_bytes)?;
    let mut out = Vec::new();
    for (path, file) in files {
        let size = file.data.len() as u64;
        if size > MAX_OCTAL_SIZE {
            return Err(SourceError::refused(path.as_str(), "is larger than 8 GiB"));
        }
        let (prefix, name) = split_path(path).ok_or_else(|| {
            SourceError::refused(
                path.as_str(),
                "cannot be stored in a ustar header: its last component must be at most 100 \
                 bytes and the rest at most 155",
            )
        })?;
        let mut h = [0u8; BLOCK];
        h[NAME][..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[MODE], if file.executable { 0o755 } else { 0o644 });
        octal(&mut h[UID], 0);
        octal(&mut h[GID], 0);
        octal(&mut h[SIZE], size);
        octal(&mut h[MTIME], 0);
        h[TYPEFLAG] = b'0';
        h[MAGIC].copy_from_slice(USTAR_MAGIC);
        octal(&mut h[DEVMAJOR], 0);
        octal(&mut h[DEVMINOR], 0);
        h[PREFIX][..prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum is computed with its own field as spaces, then stored as 6 octal digits,
        // NUL, space.
        h[CHKSUM].fill(b' ');
        let sum = checksum(&h);
        octal(&mut h[CHKSUM.start..CHKSUM.end - 1], sum);
        h[CHKSUM.end - 1] = b' ';
        out.extend_from_slice(&h);
        out.extend_from_slice(&file.data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    // End of archive: two zero blocks.
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

/// Splits `path` into a ustar (prefix, name): `name` ≤ 100 bytes, `prefix` ≤ 155 bytes, joined by
/// a `/` (or the whole path as the name when it fits). The longest fitting prefix is used.
fn split_path(path: &str) -> Option<(&str, &str)> {
    if path.len() <= NAME.len() {
        return Some(("", path));
    }
    path.match_indices('/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .rfind(|(prefix, name)| prefix.len() <= PREFIX.len() && name.len() <= NAME.len())
}

/// Writes `value` as zero-padded octal digits followed by a NUL into `field`.
fn octal(field: &mut [u8], mut value: u64) {
    let Some((nul, digits)) = field.split_last_mut() else {
        return;
    };
    *nul = 0;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (value & 7) as u8;
        value >>= 3;
    }
}

fn checksum(header: &[u8; BLOCK]) -> u64 {
    header
        .iter()
        .enumerate()
        .map(|(i, &b)| u64::from(if CHKSUM.contains(&i) { b' ' } else { b }))
        .sum()
}

/// Parses an octal numeric field: optional leading spaces, octal digits, then NUL or spaces to the
/// end. `None` for anything else (including GNU base-256 numbers, which bundles never need).
fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let digits_end = field[s..]
        .iter()
        .position(|b| !(b'0'..=b'7').contains(b))
        .map_or(field.len(), |n| s + n);
    if !field[digits_end..].iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    field[s..digits_end].iter().try_fold(0u64, |v, &d| {
        v.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

/// The bytes of a NUL-terminated (or full-width) text field.
fn text(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |n| &field[..n])
}

/// Reads a bundle: a POSIX ustar archive, as [`pack`] writes it or as `tar --format=ustar`
/// writes it from a directory of regular files.
///
/// The archive is hostile input. Accepted: regular-file entries (type `0` or NUL) and directory
/// entries (type `5`, checked and ignored), each with a valid ustar magic, a correct header
/// checksum and octal numeric fields; then the end-of-archive zero block, after which every byte
/// must be zero. Refused, with the offending offset: hard and symbolic links, devices, FIFOs,
/// pax and GNU extension headers, paths that fail [`check_path`] or are not UTF-8, a path given
/// twice, a path that is both a file and a directory, more than [`MAX_TREE_FILES`] files, more
/// than `max_bytes` bytes of file content (checked from each header *before* its data is read),
/// and a truncated archive. A file is executable when its mode has the owner's execute bit.
pub fn read_tar(bytes: &[u8], max_bytes: u64) -> Result<Files, SourceError> {
    let mut files = Files::new();
    let mut total = 0u64;
    let mut at = 0usize;
    let bad = |at: usize, why: String| SourceError::Tar {
        offset: at as u64,
        why,
    };
    loop {
        let Some(block) = bytes.get(at..at + BLOCK) else {
            return Err(bad(
                at,
                "the archive ends without its end-of-archive marker (truncated?)".into(),
            ));
        };
        let Ok(header) = <&[u8; BLOCK]>::try_from(block) else {
            return Err(bad(at, "short header block".into()));
        };
        if header.iter().all(|&b| b == 0) {
            let rest = &bytes[at..];
            if let Some(n) = rest.iter().position(|&b| b != 0) {
                return Err(bad(at + n, "data after the end-of-archive marker".into()));
            }
            break;
        }
        if &header[MAGIC] != USTAR_MAGIC {
            return Err(bad(
                at,
                "not a POSIX ustar header (bundles are ustar archives; GNU and old tar formats \
                 are not read)"
                    .into(),
            ));
        }
        if parse_octal(&header[CHKSUM]) != Some(checksum(header)) {
            return Err(bad(at, "header checksum mismatch (corrupt archive)".into()));
        }
        let size = parse_octal(&header[SIZE])
            .ok_or_else(|| bad(at, "the size field is not an octal number".into()))?;
        let mode = parse_octal(&header[MODE])
            .ok_or_else(|| bad(at, "the mode field is not an octal number".into()))?;
        let path = entry_path(header).map_err(|why| bad(at, why))?;
        let is_dir = match header[TYPEFLAG] {
            b'0' | 0 => false,
            b'5' => true,
            t => return Err(bad(at, format!("{path}: {}", refused_type(t)))),
        };
        let data_at = at + BLOCK;
        if is_dir {
            let dir = path.strip_suffix('/').unwrap_or(&path);
            check_path(dir)?;
            if size != 0 {
                return Err(bad(at, format!("{path}: a directory entry with data")));
            }
            at = data_at;
            continue;
        }
        check_path(&path)?;
        if files.len() >= MAX_TREE_FILES {
            return Err(SourceError::TooManyFiles {
                limit: MAX_TREE_FILES,
            });
        }
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(SourceError::TooLarge {
                bytes: total,
                limit: max_bytes,
            });
        }
        let data = usize::try_from(size)
            .ok()
            .and_then(|n| bytes.get(data_at..data_at.checked_add(n)?))
            .ok_or_else(|| bad(at, format!("{path}: the archive ends inside its data")))?;
        let file = File {
            data: data.to_vec(),
            executable: mode & 0o100 != 0,
        };
        match files.entry(path) {
            Entry::Occupied(e) => {
                return Err(bad(at, format!("{} appears twice", e.key())));
            }
            Entry::Vacant(e) => {
                e.insert(file);
            }
        }
        at = (data_at + data.len()).next_multiple_of(BLOCK);
    }
    check_no_file_dir_clash(&files)?;
    Ok(files)
}

/// The path of a header: `prefix/name`, or `name` when the prefix is empty; UTF-8 only.
fn entry_path(header: &[u8; BLOCK]) -> Result<String, String> {
    let name = text(&header[NAME]);
    let prefix = text(&header[PREFIX]);
    let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        path.extend_from_slice(prefix);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    String::from_utf8(path).map_err(|e| {
        format!(
            "the path {:?} is not UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        )
    })
}

fn refused_type(t: u8) -> String {
    let what = match t {
        b'1' => "is a hard link",
        b'2' => "is a symbolic link",
        b'3' | b'4' => "is a device",
        b'6' => "is a FIFO",
        b'7' => "is a contiguous file",
        b'x' | b'g' => "is a pax extended header",
        b'L' | b'K' => "is a GNU long-name header",
        _ => "has an unknown entry type",
    };
    format!(
        "{what} (type {:?}); bundles hold only regular files and directories",
        char::from(t)
    )
}
