//! Editable globs: which files of a program's source tree a code hypothesis may change.
//!
//! Syntax, per `/`-separated component: `*` matches any run of characters other than `/` (also
//! none), `?` exactly one character other than `/`, a component that is exactly `**` matches zero
//! or more whole components (so `src/**` also matches a file named `src`, and `**` matches every
//! path); every other character is literal (there are no character classes or
//! alternatives: `[`, `{` and `\` mean themselves, and `\` is refused like in paths).
//!
//! Matching is linear-ish: both levels (characters within a component, components within a path)
//! use the greedy wildcard algorithm that remembers only the last star, so a hostile pattern and
//! path take at most O(pattern × path) steps, never exponential time.

use super::MAX_PATH_BYTES;

/// Most editable patterns a program may list.
pub const MAX_EDITABLE_PATTERNS: usize = 64;

/// Checks one editable pattern: relative, 1..=255 bytes, `/`-separated components none of which is
/// empty, `.` or `..`, no backslash or control character, and `**` only as a whole component.
/// The error says which pattern and why.
pub fn check_pattern(p: &str) -> Result<(), String> {
    let fail = |why: &str| {
        let shown: String = p.chars().take(300).collect();
        Err(format!("editable pattern {shown:?} {why}"))
    };
    if p.is_empty() {
        return fail("is empty");
    }
    if p.len() > MAX_PATH_BYTES {
        return fail("is longer than 255 bytes");
    }
    if p.starts_with('/') {
        return fail("is absolute; patterns are relative to the source tree's root");
    }
    if p.contains('\\') || p.chars().any(char::is_control) {
        return fail("contains a backslash or a control character");
    }
    if p.contains(['[', ']', '{', '}']) {
        // Other glob dialects give these a meaning this one does not: refuse rather than match
        // nothing silently.
        return fail(
            "uses [ ] or { }, which btd's globs do not support (only `*`, `?` and `**`); list \
             the patterns one by one",
        );
    }
    for c in p.split('/') {
        match c {
            "" => return fail("has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return fail("has a `.` or `..` component"),
            "**" => {}
            _ if c.contains("**") => {
                return fail(
                    "uses `**` inside a component; `**` must be a whole component \
                     (like `src/**/*.py`), `*` matches within one",
                )
            }
            _ => {}
        }
    }
    Ok(())
}

/// One component of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Component {
    /// `**`: zero or more whole path components.
    AnyDepth,
    /// A component glob with `*` and `?`, as characters.
    Glob(Vec<char>),
}

/// A program's editable patterns, checked and compiled. A path is editable when any pattern
/// matches it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Editable {
    patterns: Vec<Vec<Component>>,
}

impl Editable {
    /// Checks and compiles `patterns` (at most [`MAX_EDITABLE_PATTERNS`], each as
    /// [`check_pattern`]). The error names the first bad pattern and why. An empty list makes
    /// nothing editable.
    pub fn new(patterns: &[String]) -> Result<Editable, String> {
        if patterns.len() > MAX_EDITABLE_PATTERNS {
            return Err(format!(
                "{} editable patterns; at most {MAX_EDITABLE_PATTERNS} are allowed",
                patterns.len()
            ));
        }
        let mut compiled = Vec::with_capacity(patterns.len());
        for p in patterns {
            check_pattern(p)?;
            compiled.push(
                p.split('/')
                    .map(|c| match c {
                        "**" => Component::AnyDepth,
                        _ => Component::Glob(c.chars().collect()),
                    })
                    .collect(),
            );
        }
        Ok(Editable { patterns: compiled })
    }

    /// Whether `path` (a tree path, `/`-separated) matches one of the patterns.
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<Vec<char>> = path.split('/').map(|c| c.chars().collect()).collect();
        self.patterns.iter().any(|p| match_components(p, &parts))
    }
}

/// Greedy wildcard matching of pattern components against path components, `**` being the star.
fn match_components(pattern: &[Component], path: &[Vec<char>]) -> bool {
    wildcard(
        pattern.len(),
        path.len(),
        |i| matches!(pattern[i], Component::AnyDepth),
        |i, j| match &pattern[i] {
            Component::AnyDepth => false,
            Component::Glob(g) => match_component(g, &path[j]),
        },
    )
}

/// Greedy wildcard matching of one component glob against one path component.
fn match_component(glob: &[char], name: &[char]) -> bool {
    wildcard(
        glob.len(),
        name.len(),
        |i| glob[i] == '*',
        |i, j| glob[i] == '?' || glob[i] == name[j],
    )
}

/// The classic wildcard matcher: `is_star(i)` says pattern element `i` matches any run of
/// elements, `one(i, j)` whether the non-star pattern element `i` matches element `j`. Only the
/// most recent star is a backtracking point, which is enough (an earlier star can always absorb
/// what a later one would), so it runs in O(pattern × text) steps.
fn wildcard(
    plen: usize,
    tlen: usize,
    is_star: impl Fn(usize) -> bool,
    one: impl Fn(usize, usize) -> bool,
) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < tlen {
        if p < plen && is_star(p) {
            star = Some((p, t));
            p += 1;
        } else if p < plen && one(p, t) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < plen && is_star(p) {
        p += 1;
    }
    p == plen
}
