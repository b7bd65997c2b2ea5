//! Parsing unified diffs: real git output and every refusal.

use super::*;

/// What `git diff` writes for: a changed file (two hunks, one with a function name after `@@`), a
/// created file, a deleted file, a created empty file and a change at an end without a newline.
pub(super) const GIT_DIFF: &str = "\
diff --git a/train.py b/train.py
index 3b18e51..a9c2f1d 100644
--- a/train.py
+++ b/train.py
@@ -1,4 +1,4 @@
 import torch
-lr = 0.01
+lr = 0.02
 steps = 100
 
@@ -8,3 +8,4 @@ def main():
     model = build()
     train(model)
     save(model)
+    report(model)
diff --git a/util/helpers.py b/util/helpers.py
new file mode 100644
index 0000000..e4a2d35
--- /dev/null
+++ b/util/helpers.py
@@ -0,0 +1,2 @@
+def helper():
+    return 1
diff --git a/old.py b/old.py
deleted file mode 100755
index 9f2c3a1..0000000
--- a/old.py
+++ /dev/null
@@ -1,2 +0,0 @@
-print('old')
-print('bye')
diff --git a/empty.txt b/empty.txt
new file mode 100644
index 0000000..e69de29
diff --git a/notes.txt b/notes.txt
index 1111111..2222222 100644
--- a/notes.txt
+++ b/notes.txt
@@ -1,2 +1,2 @@
 first
-second
\\ No newline at end of file
+second
";

pub(super) fn base() -> Files {
    let mut t = tree(&[
        (
            "train.py",
            "import torch\nlr = 0.01\nsteps = 100\n\ndef main():\n    data = load()\n    x = 1\n    model = build()\n    train(model)\n    save(model)\n",
        ),
        ("old.py", "print('old')\nprint('bye')\n"),
        ("notes.txt", "first\nsecond"),
        ("README.md", "untouched\n"),
    ]);
    t.get_mut("old.py").unwrap().executable = true;
    t.get_mut("README.md").unwrap().executable = true;
    t
}

#[test]
fn parses_and_applies_real_git_output() {
    let p = Patch::parse(GIT_DIFF).unwrap();
    assert_eq!(
        p.paths(),
        [
            "empty.txt",
            "notes.txt",
            "old.py",
            "train.py",
            "util/helpers.py"
        ]
    );
    let f = &p.files()[0];
    assert_eq!((f.path.as_str(), f.change), ("train.py", Change::Modify));
    assert_eq!(f.hunks.len(), 2);
    assert_eq!(f.hunks[1].section, "def main():");
    assert_eq!(f.hunks[1].header(), "@@ -8,3 +8,4 @@");
    assert_eq!(f.hunks[0].lines[4], Line::Context(String::new()));
    assert_eq!(p.files()[1].change, Change::Create);
    assert_eq!(p.files()[2].change, Change::Delete);
    assert_eq!(
        (p.files()[3].change, p.files()[3].hunks.len()),
        (Change::Create, 0)
    );
    assert!(p.files()[4].hunks[0].old_missing_newline);
    assert!(!p.files()[4].hunks[0].new_missing_newline);

    let out = p.apply(&base()).unwrap();
    let text = |p: &str| String::from_utf8(out[p].data.clone()).unwrap();
    assert_eq!(
        text("train.py"),
        "import torch\nlr = 0.02\nsteps = 100\n\ndef main():\n    data = load()\n    x = 1\n    model = build()\n    train(model)\n    save(model)\n    report(model)\n"
    );
    assert_eq!(text("util/helpers.py"), "def helper():\n    return 1\n");
    assert!(!out["util/helpers.py"].executable);
    assert_eq!(text("empty.txt"), "");
    assert_eq!(text("notes.txt"), "first\nsecond\n");
    assert!(!out.contains_key("old.py"));
    assert_eq!(out["README.md"], base()["README.md"]);
    assert_eq!(out.len(), 5);
}

#[test]
fn tolerates_plain_diff_headers_timestamps_blank_lines_and_trimmed_context() {
    let text = "--- a/x.py\t2024-01-01 00:00:00\n+++ b/x.py\t2024-01-02 00:00:00\n@@ -1,3 +1,3 @@\n a\n\n-b\n+c\n\n";
    let p = Patch::parse(text).unwrap();
    let out = p.apply(&tree(&[("x.py", "a\n\nb\n")])).unwrap();
    assert_eq!(out["x.py"].data, b"a\n\nc\n");
    // Counts default to 1; CRLF lines keep their `\r`.
    let p = Patch::parse("--- a/w.txt\n+++ b/w.txt\n@@ -1 +1 @@\n-a\r\n+b\r\n").unwrap();
    assert_eq!(
        p.apply(&tree(&[("w.txt", "a\r\n")])).unwrap()["w.txt"].data,
        b"b\r\n"
    );
    assert!(Patch::parse("").unwrap().is_empty());
    assert!(Patch::parse("\n\n").unwrap().is_empty());
}

/// Captured from git 2.47 (`git diff`): git ends a `---`/`+++` path that has a space with a tab.
const CAPTURED: &str = "diff --git a/f g.txt b/f g.txt\nindex de98044..36ef1ba 100644\n--- a/f g.txt\t\n+++ b/f g.txt\t\n@@ -1,3 +1,3 @@\n a\n-b\n-c\n+B\n+c\n\\ No newline at end of file\n";

#[test]
fn parses_captured_git_output_with_a_space_in_a_path() {
    let p = Patch::parse(CAPTURED).unwrap();
    assert_eq!(p.paths(), ["f g.txt"]);
    let out = p.apply(&tree(&[("f g.txt", "a\nb\nc\n")])).unwrap();
    assert_eq!(out, tree(&[("f g.txt", "a\nB\nc")]));
}

/// The error's message, which must contain every one of `words`.
fn refused(text: &str, words: &[&str]) -> PatchError {
    let e = Patch::parse(text).unwrap_err();
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
    e
}

#[test]
fn path_traversal_and_odd_paths_are_refused() {
    for path in ["../x", "a/../../b", "x/./y", "/etc/passwd", "a//b"] {
        let text = format!("--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n");
        let e = refused(&text, &["patch line 1", "path"]);
        assert!(matches!(e, PatchError::Path { .. }), "{path}: {e:?}");
    }
    // `--- /etc/passwd` without the a/ prefix.
    refused(
        "--- /etc/passwd\n+++ b/etc/passwd\n@@ -1 +1 @@\n-a\n+b\n",
        &["expected `--- a/<path>`"],
    );
    refused(
        "diff --git a/../x b/../x\nnew file mode 100644\n",
        &["`..`"],
    );
    refused("--- \"a/x y\"\n+++ \"b/x y\"\n", &["quoted"]);
    refused("--- a/x\r\n+++ b/x\r\n", &["control"]);
}

#[test]
fn renames_copies_modes_and_binaries_are_refused() {
    let e = refused(
        "--- a/old.py\n+++ b/new.py\n@@ -1 +1 @@\n-a\n+b\n",
        &["renames \"old.py\" to \"new.py\"", "not supported"],
    );
    assert!(matches!(e, PatchError::Rename { .. }));
    refused(
        "diff --git a/a.py b/b.py\nsimilarity index 100%\nrename from a.py\nrename to b.py\n",
        &["renames"],
    );
    refused(
        "diff --git a/a.py b/a.py\nsimilarity index 90%\ncopy from z.py\ncopy to a.py\n",
        &["renames \"z.py\""],
    );
    refused(
        "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n",
        &["run.sh", "mode"],
    );
    refused(
        "diff --git a/run.sh b/run.sh\nnew file mode 100755\n--- /dev/null\n+++ b/run.sh\n@@ -0,0 +1 @@\n+x\n",
        &["executable"],
    );
    refused("diff --git a/l b/l\nnew file mode 120000\n", &["symlink"]);
    refused(
        "diff --git a/w.bin b/w.bin\nindex 1..2 100644\nBinary files a/w.bin and b/w.bin differ\n",
        &["w.bin", "binary"],
    );
    refused(
        "diff --git a/w.bin b/w.bin\nindex 1..2 100644\nGIT binary patch\nliteral 0\n",
        &["binary"],
    );
    refused(
        "diff --git a/x b/x\nindex 1..2 100644\n",
        &["no `---`/`+++`"],
    );
    refused(
        "diff --git a/x b/x\n--- a/y\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n",
        &["names \"x\"", "\"y\""],
    );
}

#[test]
fn counts_positions_and_structure_must_add_up() {
    // Fewer lines than the header counts (at the end, and before the next section).
    refused(
        "--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n-b\n+c\n",
        &[
            "x hunk 1 (@@ -1,3 +1,3 @@)",
            "counts 3 old and 3 new lines, but the hunk has 2 and 2",
        ],
    );
    refused(
        "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n-b\n-c\n+d\n",
        &[
            "x hunk 1",
            "line 6 (\"-c\") is beyond the header's counts of 2 old and 2 new lines",
        ],
    );
    refused(
        "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n+d\n",
        &["beyond the lines counted by x hunk 1"],
    );
    refused(
        "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\nXb\n",
        &["expected a line starting with"],
    );
    refused(
        "--- a/x\n+++ b/x\n@@ -1,a +1 @@\n-a\n+b\n",
        &["hunk header"],
    );
    refused(
        "--- a/x\n+++ b/x\n@@ -1 +1 @@junk\n-a\n+b\n",
        &["hunk header"],
    );
    refused("--- a/x\n+++ b/x\n@@ -1234567890 +1 @@\n", &["hunk header"]);
    refused("--- a/x\n+++ b/x\n", &["x: the section has no hunks"]);
    refused("--- a/x\n@@ -1 +1 @@\n", &["expected a `+++ ` line"]);
    refused("--- a/x\n+++ b/x\n@@ -0,0 +0,0 @@\n", &["no lines"]);
    refused(
        "--- a/x\n+++ b/x\n@@ -0,1 +1 @@\n-a\n+b\n",
        &["line 1 or later"],
    );
    // Out of order, overlapping, inconsistent new side.
    refused(
        "--- a/x\n+++ b/x\n@@ -5 +5 @@\n-a\n+b\n@@ -2 +2 @@\n-a\n+b\n",
        &["x hunk 2", "in order"],
    );
    refused(
        "--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n a\n+n\n b\n@@ -5 +5 @@\n-a\n+b\n",
        &["x hunk 2 (@@ -5,1 +5,1 @@)", "must start at 6"],
    );
    // A `No newline` marker must end its side and its file.
    refused(
        "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n\\ No newline at end of file\n-b\n+c\n+d\n",
        &["follows `\\ No newline"],
    );
    refused(
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+b\n@@ -3 +3 @@\n-c\n+d\n",
        &["follows a hunk that ends the file"],
    );
    refused(
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n\\ x\n-a\n+b\n",
        &["before any line"],
    );
    // Created and deleted files.
    refused(
        "--- /dev/null\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
        &["created file's hunk"],
    );
    refused(
        "--- a/x\n+++ /dev/null\n@@ -1 +1 @@\n-a\n+b\n",
        &["deleted file's hunk"],
    );
    refused("--- /dev/null\n+++ /dev/null\n", &["both"]);
    // The same file twice.
    refused(
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n--- a/x\n+++ b/x\n@@ -3 +3 @@\n-a\n+b\n",
        &["x is changed twice"],
    );
    // Text that is no diff at all.
    refused("hello\n", &["patch line 1", "expected `diff --git`"]);
}

#[test]
fn size_and_file_count_are_bounded() {
    let big = format!(
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+{}\n",
        "b".repeat(MAX_PATCH_BYTES)
    );
    let e = Patch::parse(&big).unwrap_err();
    assert_eq!(e, PatchError::TooLarge { bytes: big.len() });
    assert!(e.to_string().contains("at most 65536"));

    let section = |i: usize| format!("--- /dev/null\n+++ b/f{i}\n@@ -0,0 +1 @@\n+x\n");
    let ok: String = (0..MAX_PATCH_FILES).map(section).collect();
    assert_eq!(Patch::parse(&ok).unwrap().paths().len(), MAX_PATCH_FILES);
    let over: String = (0..=MAX_PATCH_FILES).map(section).collect();
    assert_eq!(Patch::parse(&over), Err(PatchError::TooManyFiles));
}
