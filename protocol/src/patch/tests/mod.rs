//! Tests of source trees and code hypotheses.

use super::*;

mod apply;
mod glob;
mod parse;
mod prop;

/// A tree of non-executable text files.
fn tree(files: &[(&str, &str)]) -> Files {
    files
        .iter()
        .map(|(p, d)| {
            (
                p.to_string(),
                File {
                    data: d.as_bytes().to_vec(),
                    executable: false,
                },
            )
        })
        .collect()
}

#[test]
fn tree_digest_depends_on_every_field() {
    let a = tree(&[("a", "x"), ("b", "y")]);
    let d = tree_digest(&a);
    assert_eq!(d, tree_digest(&a.clone()));
    let mut exec = a.clone();
    exec.get_mut("a").unwrap().executable = true;
    assert_ne!(d, tree_digest(&exec));
    assert_ne!(d, tree_digest(&tree(&[("a", "x"), ("b", "z")])));
    assert_ne!(d, tree_digest(&tree(&[("a", "x"), ("c", "y")])));
    // Moving a byte between path and data, or between files, changes the digest.
    assert_ne!(
        tree_digest(&tree(&[("ab", "")])),
        tree_digest(&tree(&[("a", "b")]))
    );
    assert_ne!(
        tree_digest(&tree(&[("a", "xy"), ("b", "")])),
        tree_digest(&tree(&[("a", "x"), ("b", "y")]))
    );
    assert_ne!(tree_digest(&Files::new()), tree_digest(&tree(&[("a", "")])));
}

#[test]
fn changed_paths_lists_added_removed_modified_and_mode() {
    let old = tree(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
    let mut new = tree(&[("a", "1"), ("b", "2!"), ("d", "4"), ("e", "5")]);
    new.get_mut("d").unwrap().executable = true;
    assert_eq!(changed_paths(&old, &new), ["b", "c", "d", "e"]);
    assert!(changed_paths(&old, &old).is_empty());
}
