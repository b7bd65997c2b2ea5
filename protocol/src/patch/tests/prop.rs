//! Laws: `apply(parse(diff(old, new)), old) == new`; parsing and applying never panic.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

const LINES: &[&str] = &[
    "a",
    "b",
    "c",
    "",
    " ",
    "lr = 0.01",
    "\tx",
    "é ü",
    "}",
    "a\r",
];
const PATHS: &[&str] = &["a.py", "src/b.py", "src/c/d.txt", "e", "f g.txt"];

fn lines_to_text(lines: &[&str], newline: bool) -> String {
    let mut s = lines.join("\n");
    if newline && !lines.is_empty() {
        s.push('\n');
    }
    s
}

fn text() -> impl Strategy<Value = String> {
    (vec(select(LINES), 0..14), any::<bool>()).prop_map(|(l, nl)| lines_to_text(&l, nl))
}

/// Line edits: (position, 0 insert / 1 delete / 2 replace, line).
type Edits = Vec<(usize, u8, &'static str)>;

fn edit(text: &str, edits: &Edits, flip_newline: bool) -> String {
    let (mut lines, nl) = super::super::apply::split_lines(text);
    for &(at, op, line) in edits {
        match op {
            0 => lines.insert(at % (lines.len() + 1), line),
            _ if lines.is_empty() => {}
            1 => {
                lines.remove(at % lines.len());
            }
            _ => {
                let i = at % lines.len();
                lines[i] = line;
            }
        }
    }
    lines_to_text(&lines, nl != flip_newline)
}

/// An old tree and a new one: each path kept, edited, deleted, created or replaced.
fn trees() -> impl Strategy<Value = (Files, Files)> {
    let old = btree_map(select(PATHS), (text(), any::<bool>()), 0..=PATHS.len());
    let choice = (
        0u8..5,
        vec((0usize..40, 0u8..3, select(LINES)), 0..6),
        any::<bool>(),
        text(),
    );
    (old, vec(choice, PATHS.len())).prop_map(|(old, choices)| {
        let old: Files = old
            .into_iter()
            .map(|(p, (t, x))| {
                (
                    p.to_string(),
                    File {
                        data: t.into_bytes(),
                        executable: x,
                    },
                )
            })
            .collect();
        let mut new = Files::new();
        for (path, (kind, edits, flip, fresh)) in PATHS.iter().zip(choices) {
            let before = old.get(*path);
            let data = match (kind, before) {
                (0, Some(f)) => Some(f.data.clone()),
                (1, Some(f)) => {
                    let t = std::str::from_utf8(&f.data).unwrap();
                    Some(edit(t, &edits, flip).into_bytes())
                }
                (2, _) | (0 | 1, None) => None,
                _ => Some(fresh.into_bytes()),
            };
            if let Some(data) = data {
                let executable = before.is_some_and(|f| f.executable);
                new.insert(path.to_string(), File { data, executable });
            }
        }
        (old, new)
    })
}

/// Pieces of diffs, for strings that get deep into the parser.
const PIECES: &[&str] = &[
    "--- a/x\n",
    "+++ b/x\n",
    "--- /dev/null\n",
    "+++ /dev/null\n",
    "@@ -1,2 +1,2 @@\n",
    "@@ -0,0 +1 @@\n",
    "@@ -1 +0,0 @@\n",
    "@@ -2,0 +3,1 @@ f\n",
    " a\n",
    "-a\n",
    "+b\n",
    "-\n",
    "\n",
    "\\ No newline at end of file\n",
    "diff --git a/x b/x\n",
    "new file mode 100644\n",
    "deleted file mode 100755\n",
    "index 1..2 100644\n",
    "+++ b/y\n",
    "--- a/../x\n",
];

fn apply_base() -> Files {
    let mut t = parse::base();
    t.insert(
        "x".into(),
        File {
            data: b"a\nb\nc".to_vec(),
            executable: false,
        },
    );
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn diff_then_apply_gives_the_new_tree((old, new) in trees()) {
        let d = diff(&old, &new).unwrap();
        let p = Patch::parse(&d).unwrap();
        prop_assert_eq!(p.paths(), changed_paths(&old, &new));
        prop_assert_eq!(p.apply(&old).unwrap(), new);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(s in ".{0,400}") {
        if let Ok(p) = Patch::parse(&s) {
            let _ = p.apply(&apply_base());
        }
    }

    #[test]
    fn parse_and_apply_never_panic_on_diff_like_text(pieces in vec(select(PIECES), 0..40)) {
        if let Ok(p) = Patch::parse(&pieces.concat()) {
            let _ = p.apply(&apply_base());
        }
    }

    #[test]
    fn parse_and_apply_never_panic_on_mutated_patches(
        muts in vec((any::<usize>(), 0u8..4, any::<char>(), 0usize..8), 1..6),
    ) {
        let mut chars: Vec<char> = parse::GIT_DIFF.chars().collect();
        for (at, op, c, len) in muts {
            let i = at % (chars.len() + 1);
            match op {
                0 => chars.insert(i, c),
                1 => { chars.drain(i..(i + len).min(chars.len())); }
                2 => { let piece: Vec<char> = chars[i..(i + len * 8).min(chars.len())].to_vec(); chars.splice(i..i, piece); }
                _ => if i < chars.len() { chars[i] = c },
            }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(p) = Patch::parse(&text) {
            let _ = p.apply(&parse::base());
        }
    }
}

/// Length of a longest common subsequence, by dynamic programming.
fn lcs(a: &[u32], b: &[u32]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The edit script walks both sequences in order, matches only equal lines, and is minimal
    /// unless the depth cap cut the search short.
    #[test]
    fn myers_scripts_are_valid_and_minimal(
        a in vec(0u32..4, 0..40),
        b in vec(0u32..4, 0..40),
        max_d in 1usize..8,
    ) {
        for cap in [max_d, usize::MAX / 4] {
            let ops = super::super::myers::diff(&a, &b, cap);
            let (mut i, mut j, mut equal) = (0, 0, 0);
            for op in &ops {
                match *op {
                    myers::Op::Equal(x, y) => {
                        prop_assert_eq!((x, y), (i, j));
                        prop_assert_eq!(a[x], b[y]);
                        i += 1;
                        j += 1;
                        equal += 1;
                    }
                    myers::Op::Delete(x) => {
                        prop_assert_eq!(x, i);
                        i += 1;
                    }
                    myers::Op::Insert(y) => {
                        prop_assert_eq!(y, j);
                        j += 1;
                    }
                }
            }
            prop_assert_eq!((i, j), (a.len(), b.len()));
            if cap > 100 {
                prop_assert_eq!(equal, lcs(&a, &b));
            }
        }
    }
}
