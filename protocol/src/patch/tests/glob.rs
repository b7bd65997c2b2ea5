//! Editable globs.

use super::*;

fn ed(patterns: &[&str]) -> Editable {
    let v: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    Editable::new(&v).unwrap()
}

#[test]
fn literal_star_question_and_any_depth() {
    let e = ed(&["train.py"]);
    assert!(e.matches("train.py"));
    assert!(!e.matches("src/train.py"));
    assert!(!e.matches("train.pyc"));

    let e = ed(&["*.py"]);
    assert!(e.matches("a.py"));
    assert!(e.matches(".py"));
    assert!(!e.matches("src/a.py"), "`*` does not cross `/`");
    assert!(!e.matches("a.pyx"));

    let e = ed(&["model?.py"]);
    assert!(e.matches("model1.py"));
    assert!(!e.matches("model.py"));
    assert!(!e.matches("model12.py"));

    let e = ed(&["src/**/*.py"]);
    assert!(e.matches("src/a.py"), "`**` matches zero components");
    assert!(e.matches("src/x/a.py"));
    assert!(e.matches("src/x/y/z/a.py"));
    assert!(!e.matches("a.py"));
    assert!(!e.matches("src/x/a.txt"));
    assert!(!e.matches("lib/src/a.py"));

    let e = ed(&["**/*.py"]);
    assert!(e.matches("a.py"));
    assert!(e.matches("deep/er/a.py"));
    assert!(!e.matches("deep/er/a.rs"));

    let e = ed(&["**"]);
    for p in ["a", "a/b", "x/y/z.bin", ".hidden"] {
        assert!(e.matches(p), "{p}");
    }

    let e = ed(&["conf/*/base.toml", "train.py"]);
    assert!(e.matches("conf/x/base.toml"));
    assert!(!e.matches("conf/base.toml"));
    assert!(!e.matches("conf/x/y/base.toml"));
    assert!(e.matches("train.py"));

    assert!(
        !ed(&[]).matches("train.py"),
        "no patterns: nothing is editable"
    );
    // Characters that are special in other glob dialects are refused (see below).
    assert!(Editable::new(&["a[1].py".to_string()]).is_err());
}

#[test]
fn bad_patterns_are_refused_with_the_reason() {
    for (p, why) in [
        ("", "is empty"),
        ("/etc/*", "absolute"),
        ("../x", "`..`"),
        ("src/./a.py", "`.`"),
        ("src//a.py", "empty component"),
        ("src/", "empty component"),
        ("src/**.py", "`**` must be a whole component"),
        ("a\\b", "backslash"),
        ("a\nb", "control"),
    ] {
        let e = check_pattern(p).unwrap_err();
        assert!(e.contains(why), "{p:?}: {e}");
        let e = Editable::new(&["ok.py".to_string(), p.to_string()]).unwrap_err();
        assert!(e.contains(why) && e.contains("editable pattern"), "{e}");
    }
    assert!(check_pattern(&"a".repeat(256)).unwrap_err().contains("255"));
    assert!(check_pattern(&"a".repeat(255)).is_ok());
    let many: Vec<String> = (0..=MAX_EDITABLE_PATTERNS)
        .map(|i| format!("f{i}"))
        .collect();
    assert!(Editable::new(&many).unwrap_err().contains("at most 64"));
    assert!(Editable::new(&many[..MAX_EDITABLE_PATTERNS]).is_ok());
}

#[test]
fn pathological_globs_finish_fast() {
    // Naive backtracking is exponential in the number of stars on these.
    let stars = format!("{}b", "*a".repeat(60));
    let name = "a".repeat(250);
    let deep = format!("{}x", "**/a/".repeat(40));
    let path = vec!["a"; 127].join("/");
    let e = ed(&[&stars, &deep, &format!("{}b", "a*".repeat(100))]);
    let t = std::time::Instant::now();
    for _ in 0..20 {
        assert!(!e.matches(&name));
        assert!(!e.matches(&path));
    }
    assert!(ed(&[&stars]).matches(&format!("{name}b")));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn any_depth_may_match_zero_components_at_the_end_too() {
    let e = ed(&["src/**"]);
    assert!(e.matches("src/a"));
    assert!(e.matches("src/a/b.py"));
    assert!(e.matches("src"));
    assert!(!e.matches("srcx/a"));
    let e = ed(&["a/**/b/**/c"]);
    assert!(e.matches("a/b/c"));
    assert!(e.matches("a/x/b/y/z/c"));
    assert!(!e.matches("a/x/c"));
}

#[test]
fn brackets_and_braces_are_refused_not_matched_literally() {
    for p in ["*.{py,toml}", "src/[ab].py", "x}"] {
        let e = check_pattern(p).unwrap_err();
        assert!(e.contains("only `*`, `?` and `**`"), "{p}: {e}");
    }
}
