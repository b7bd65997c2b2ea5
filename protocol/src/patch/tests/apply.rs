//! Applying patches strictly, checking editability, and creating diffs.

use super::*;

fn patch(text: &str) -> Patch {
    Patch::parse(text).unwrap()
}

fn lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

#[test]
fn context_mismatch_names_file_hunk_line_and_both_texts() {
    let base = tree(&[("train.py", "a\nb\nc\nd\ne\nf\ng\nh\ni\nlr = 0.02\nk\nl\n")]);
    let p = patch(
        "--- a/train.py\n+++ b/train.py\n@@ -1,1 +1,1 @@\n-a\n+A\n@@ -10,3 +10,4 @@\n-lr = 0.01\n+lr = 0.03\n k\n l\n+m\n",
    );
    let e = p.apply(&base).unwrap_err();
    assert_eq!(
        e.to_string(),
        "train.py hunk 2 (@@ -10,3 +10,4 @@): line 10 does not match the parent: expected \"lr = 0.01\", found \"lr = 0.02\""
    );
    // No fuzz: the right lines one position off are refused too.
    let p = patch("--- a/x\n+++ b/x\n@@ -2,2 +2,2 @@\n a\n-b\n+B\n");
    let e = p.apply(&tree(&[("x", "a\nb\nc\n")])).unwrap_err();
    assert!(e.to_string().contains("line 2 does not match"), "{e}");
    // Past the end of the parent.
    let p = patch("--- a/x\n+++ b/x\n@@ -3,2 +3,2 @@\n c\n-d\n+D\n");
    let e = p.apply(&tree(&[("x", "a\nb\nc\n")])).unwrap_err();
    assert!(e.to_string().contains("has only 3 lines"), "{e}");
    let p = patch("--- a/x\n+++ b/x\n@@ -9,0 +10,1 @@\n+z\n");
    let e = p.apply(&tree(&[("x", "a\n")])).unwrap_err();
    assert!(e.to_string().contains("has only 1 lines"), "{e}");
}

#[test]
fn files_must_exist_or_not_and_be_text() {
    let create = patch("--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+new\n");
    assert_eq!(
        create.apply(&tree(&[("x", "")])),
        Err(PatchError::AlreadyExists { path: "x".into() })
    );
    let modify = patch("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n");
    assert_eq!(
        modify.apply(&Files::new()),
        Err(PatchError::Missing { path: "x".into() })
    );
    let delete = patch("--- a/x\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n");
    assert!(matches!(
        delete.apply(&Files::new()),
        Err(PatchError::Missing { .. })
    ));
    let mut bin = Files::new();
    bin.insert(
        "x".into(),
        File {
            data: vec![b'a', 0xff, b'\n'],
            executable: false,
        },
    );
    let e = modify.apply(&bin).unwrap_err();
    assert_eq!(e, PatchError::NotText { path: "x".into() });
    assert!(e.to_string().contains("not UTF-8"));
    // Deleting needs every line removed.
    let e = delete.apply(&tree(&[("x", "a\nb\n")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "x: the patch deletes it but removes only 1 of its 2 lines"
    );
    assert!(delete.apply(&tree(&[("x", "a\n")])).unwrap().is_empty());
}

#[test]
fn executable_bits_are_kept_and_created_files_are_plain() {
    let mut base = tree(&[("run.sh", "echo a\n")]);
    base.get_mut("run.sh").unwrap().executable = true;
    let p = patch("--- a/run.sh\n+++ b/run.sh\n@@ -1 +1 @@\n-echo a\n+echo b\n--- /dev/null\n+++ b/new.sh\n@@ -0,0 +1 @@\n+x\n");
    let out = p.apply(&base).unwrap();
    assert!(out["run.sh"].executable);
    assert_eq!(out["run.sh"].data, b"echo b\n");
    assert!(!out["new.sh"].executable);
}

#[test]
fn no_newline_at_end_of_file_must_agree_with_the_parent() {
    let with_nl = tree(&[("x", "a\n")]);
    let without = tree(&[("x", "a")]);
    // Removing the final newline.
    let p = patch("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+a\n\\ No newline at end of file\n");
    assert_eq!(p.apply(&with_nl).unwrap(), without);
    let e = p.apply(&without).unwrap_err();
    assert!(e.to_string().contains("does not say so"), "{e}");
    // Adding it.
    let p = patch("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+a\n");
    assert_eq!(p.apply(&without).unwrap(), with_nl);
    let e = p.apply(&with_nl).unwrap_err();
    assert!(e.to_string().contains("but it has one"), "{e}");
    // A marker on a hunk that does not reach the end.
    let p = patch("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+b\n");
    let e = p.apply(&tree(&[("x", "a\nb\n")])).unwrap_err();
    assert!(e.to_string().contains("more lines after it"), "{e}");
    // Appending after a last line without newline.
    let p = patch("--- a/x\n+++ b/x\n@@ -1,0 +2 @@\n+b\n");
    assert_eq!(p.apply(&with_nl).unwrap(), tree(&[("x", "a\nb\n")]));
    let e = p.apply(&without).unwrap_err();
    assert!(e.to_string().contains("must replace that line"), "{e}");
    // Context line without newline on both sides.
    let p =
        patch("--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n-z\n+y\n+w\n a\n\\ No newline at end of file\n");
    assert_eq!(
        p.apply(&tree(&[("x", "z\na")])).unwrap(),
        tree(&[("x", "y\nw\na")])
    );
}

#[test]
fn the_result_tree_is_bounded() {
    let base: Files = (0..MAX_TREE_FILES)
        .map(|i| {
            (
                format!("f{i}"),
                File {
                    data: Vec::new(),
                    executable: false,
                },
            )
        })
        .collect();
    let p = patch("diff --git a/new b/new\nnew file mode 100644\n");
    assert_eq!(
        p.apply(&base),
        Err(PatchError::TreeTooManyFiles {
            files: MAX_TREE_FILES + 1
        })
    );
    let mut big = Files::new();
    big.insert(
        "big".into(),
        File {
            data: vec![b'a'; MAX_TREE_BYTES as usize],
            executable: false,
        },
    );
    let p = patch("--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+more\n");
    let e = p.apply(&big).unwrap_err();
    assert_eq!(
        e,
        PatchError::TreeTooLarge {
            bytes: MAX_TREE_BYTES + 5
        }
    );
}

#[test]
fn check_editable_lists_every_path_outside_the_globs() {
    let e = Editable::new(&["train.py".into(), "src/**/*.py".into()]).unwrap();
    let p = patch(
        "--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-a\n+b\n--- a/prepare.py\n+++ b/prepare.py\n@@ -1 +1 @@\n-a\n+b\n--- /dev/null\n+++ b/src/x/y.py\n@@ -0,0 +1 @@\n+a\n--- a/data/eval.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n",
    );
    let err = p.check_editable(&e).unwrap_err();
    assert_eq!(
        err,
        PatchError::NotEditable {
            paths: vec!["data/eval.py".into(), "prepare.py".into()]
        }
    );
    assert!(err
        .to_string()
        .contains("not editable in this program: data/eval.py, prepare.py"));
    let ok = patch("--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-a\n+b\n");
    assert_eq!(ok.check_editable(&e), Ok(()));
}

#[test]
fn diff_writes_git_style_sections_and_refuses_what_a_patch_cannot_say() {
    let old = tree(&[("a.py", &lines(20)), ("gone.txt", "x\n"), ("e", "")]);
    let mut newer = old.clone();
    newer.get_mut("a.py").unwrap().data = lines(20)
        .replace("line 2\n", "LINE 2\n")
        .replace("line 19\n", "")
        .into_bytes();
    newer.remove("gone.txt");
    newer.remove("e");
    newer.insert("new.txt".into(), tree(&[("", "n")])[""].clone());
    let d = diff(&old, &newer).unwrap();
    assert!(d.starts_with("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,5 +1,5 @@\n line 1\n-line 2\n+LINE 2\n"), "{d}");
    assert!(
        d.contains("@@ -16,5 +16,4 @@\n line 16\n line 17\n line 18\n-line 19\n line 20\n"),
        "{d}"
    );
    assert!(
        d.contains("diff --git a/e b/e\ndeleted file mode 100644\ndiff --git"),
        "{d}"
    );
    assert!(
        d.contains(
            "deleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-x\n"
        ),
        "{d}"
    );
    assert!(d.contains("new file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,1 @@\n+n\n\\ No newline at end of file\n"), "{d}");
    assert_eq!(Patch::parse(&d).unwrap().apply(&old).unwrap(), newer);
    assert_eq!(diff(&old, &old).unwrap(), "");

    let mut bin = old.clone();
    bin.get_mut("gone.txt").unwrap().data = vec![0xff];
    assert_eq!(
        diff(&old, &bin),
        Err(DiffError::Binary {
            path: "gone.txt".into()
        })
    );
    let mut exec = old.clone();
    exec.get_mut("a.py").unwrap().executable = true;
    let e = diff(&old, &exec).unwrap_err();
    assert_eq!(
        e,
        DiffError::Mode {
            path: "a.py".into()
        }
    );
    assert!(e.to_string().contains("executable bit"));
    // An unchanged binary file is fine.
    let mut with_bin = old.clone();
    with_bin.insert(
        "w.bin".into(),
        File {
            data: vec![0, 0xff],
            executable: true,
        },
    );
    let mut with_bin2 = with_bin.clone();
    with_bin2.remove("gone.txt");
    let d = diff(&with_bin, &with_bin2).unwrap();
    assert_eq!(
        Patch::parse(&d).unwrap().apply(&with_bin).unwrap(),
        with_bin2
    );

    let mut huge = old.clone();
    huge.insert("big.txt".into(), tree(&[("", &lines(20_000))])[""].clone());
    match diff(&old, &huge) {
        Err(DiffError::TooLarge { bytes }) => {
            assert!(bytes > MAX_PATCH_BYTES, "{bytes}");
            let msg = DiffError::TooLarge { bytes }.to_string();
            assert!(
                msg.contains(&bytes.to_string()) && msg.contains("65536"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn diff_refuses_what_parse_would_refuse() {
    let many: Files = (0..=MAX_PATCH_FILES)
        .map(|i| (format!("f{i}"), tree(&[("", "x\n")])[""].clone()))
        .collect();
    assert_eq!(
        diff(&Files::new(), &many),
        Err(DiffError::TooManyFiles {
            files: MAX_PATCH_FILES + 1
        })
    );
    let fits: Files = many.into_iter().take(MAX_PATCH_FILES).collect();
    let d = diff(&Files::new(), &fits).unwrap();
    assert_eq!(
        Patch::parse(&d).unwrap().apply(&Files::new()).unwrap(),
        fits
    );
    let bad = tree(&[("../x", "a\n")]);
    assert!(matches!(diff(&Files::new(), &bad), Err(DiffError::Path(_))));
}

#[test]
fn a_created_file_cannot_clash_with_a_directory() {
    let base = tree(&[("train.py", "x\n"), ("src/a.py", "y\n")]);
    for (path, other) in [("train.py/evil", "train.py"), ("src", "src/a.py")] {
        let p = patch(&format!("--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+z\n"));
        assert_eq!(
            p.apply(&base),
            Err(PatchError::FileDirClash {
                path: path.into(),
                other: other.into()
            })
        );
    }
    // Deleting the file in the same patch makes room.
    let p = patch(
        "--- a/train.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n--- /dev/null\n+++ b/train.py/ok\n@@ -0,0 +1 @@\n+z\n",
    );
    assert!(p.apply(&base).unwrap().contains_key("train.py/ok"));
    let ok = patch("--- /dev/null\n+++ b/src/b.py\n@@ -0,0 +1 @@\n+z\n");
    assert!(ok.apply(&base).is_ok());
}

#[test]
fn diff_effort_is_bounded_on_large_files() {
    // A few edits in a long file: a small diff, found fast.
    let long = lines(100_000);
    let old = tree(&[("big.txt", &long)]);
    let edited = long
        .replace("line 500\n", "LINE 500\n")
        .replace("line 99000\n", "");
    let new = tree(&[("big.txt", &edited)]);
    let d = diff(&old, &new).unwrap();
    assert!(d.len() < 400, "{d}");
    assert_eq!(Patch::parse(&d).unwrap().apply(&old).unwrap(), new);
    // Two unrelated long files: the search stops at the depth cap, the diff is over the limit.
    let other: String = (0..20_000).map(|i| format!("other {i}\n")).collect();
    let new = tree(&[("big.txt", &other)]);
    assert!(matches!(diff(&old, &new), Err(DiffError::TooLarge { .. })));
    // The same lines in another order: no shortcut, the capped search runs.
    let old = tree(&[("big.txt", &lines(30_000))]);
    let shuffled: String = (0..30_000)
        .map(|i| format!("line {}\n", (i * 7919) % 30_000 + 1))
        .collect();
    let new = tree(&[("big.txt", &shuffled)]);
    assert!(matches!(diff(&old, &new), Err(DiffError::TooLarge { .. })));
}
