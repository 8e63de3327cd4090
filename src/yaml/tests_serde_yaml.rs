//! Our reader and writer against serde_yaml 0.9 (a dev-dependency kept for
//! this): every YAML file in the repository, the README's YAML examples and
//! a corpus of cases must read the same; what we write must read back the
//! same in both.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use serde_yaml::Value as Y;

use super::{from_json, parse};

// Shared with the fuzz target (fuzz/fuzz_targets/yaml.rs).
#[path = "serde_yaml_view.rs"]
mod view;
pub(crate) use view::json_of;

/// Both readers accept `text` and agree.
#[track_caller]
fn same(text: &str) -> Value {
    let theirs: Y = serde_yaml::from_str(text).unwrap_or_else(|e| panic!("serde_yaml refused {text:?}: {e}"));
    let theirs = json_of(&theirs).unwrap_or_else(|| panic!("not JSON: {text:?}"));
    let ours = parse(text).unwrap_or_else(|e| panic!("we refused {text:?}: {e}"));
    assert_eq!(ours, theirs, "{text:?}");
    ours
}

/// Both readers refuse `text`.
#[track_caller]
fn both_refuse(text: &str) {
    assert!(serde_yaml::from_str::<Y>(text).is_err(), "serde_yaml accepted {text:?}");
    assert!(parse(text).is_err(), "we accepted {text:?}: {:?}", parse(text));
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "node_modules") {
                yaml_files(&p, out);
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".md") {
            out.push(p);
        }
    }
}

/// The ```yaml blocks of a markdown file.
fn yaml_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start() == "```yaml" => cur = Some(String::new()),
            Some(b) if line.trim_start() == "```" => {
                blocks.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn fill_placeholders(text: &str) -> String {
    let parts: Vec<&str> = text.split('@').collect();
    let mut out = String::from(parts[0]);
    let mut i = 1;
    while i < parts.len() {
        let name = parts[i];
        if i + 1 < parts.len() && !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            out.push_str("1024");
            out.push_str(parts[i + 1]);
            i += 2;
        } else {
            out.push('@');
            out.push_str(name);
            i += 1;
        }
    }
    out
}

#[test]
fn every_yaml_file_and_example_in_the_repository_reads_the_same() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    yaml_files(root, &mut files);
    let (mut docs, mut blocks) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if f.extension().is_some_and(|e| e == "md") {
            for b in yaml_blocks(&text) {
                same(&b);
                blocks += 1;
            }
        } else {
            // rootfs/etc/tinyscale/config.yaml is a template: cross/package.sh
            // puts numbers for its @NAME@ placeholders.
            let filled = fill_placeholders(&text);
            if filled != text {
                both_refuse(&text);
            }
            let v = same(&filled);
            assert!(v.is_object(), "{}", f.display());
            docs += 1;
        }
    }
    // tests/fixtures/*.yaml and rootfs/etc/tinyscale/config.yaml at least.
    assert!(docs >= 4, "found {docs} YAML files");
    assert!(blocks >= 5, "found {blocks} ```yaml blocks");
}

const AGREE: &[&str] = &[
    "",
    "# only a comment\n",
    "---\n",
    "--- # c\na: 1\n",
    "a: 1\n...\n",
    "---\na: 1\n...\n",
    "a: 1",
    "a: b\r\nc: d\r\n",
    "\u{feff}a: 1\n",
    "key: value\nother:   spaced   # comment\nurl: http://x:8080/a#frag\n",
    "a:\n  b:\n    c: 1\n  d: 2\ne: 3\n",
    "  a: 1\n  b: 2\n",
    "list:\n  - 1\n  - two\n  -\n  - - x\n    - y\n",
    "list:\n- a\n- b\nnext: 1\n",
    "- a: 1\n  b: [x, y]\n- c\n-   d: 1\n    e: 2\n",
    "- a:\n  - 1\n  b: 2\n",
    "- - - deep\n",
    "a:\nb: ~\nc: null\nd: Null\ne: NULL\nf: ''\ng: \"\"\n",
    "t: [true, True, TRUE, false, False, FALSE, yes, no, on, off, y, n]\n",
    "i: [0, 1, -1, +2, 0x1F, 0o17, 0b101, -0x10, 0770, -012, 00, 1_000, 18446744073709551615, -9223372036854775808]\n",
    "f: [1.5, -0.5, .5, 1., 1e3, 1E-3, +1.5, 0.1, 3.0, 6.02e23, 0770.5]\n",
    "s: [inf, nan, Infinity, 1.2.3, 1:2, 0x, 0xZZ, '1', \"2\", 1 2, a b c]\n",
    "ports: {a: 1, b: [2, 3], c: {d: e}}\n",
    "flow: [a, [b, c], {d: e, f: [g]}, 'q', \"r\"]\n",
    "e: []\nm: {}\n",
    "multi: [a,\n  b,\n  c]\n",
    "multi: {a: 1,\n  b: 2, # comment\n  c: 3,\n}\n",
    "json: {\"a\":1, \"b\":[true,null]}\n",
    "pairs: [a: 1, b]\n",
    "urls: [http://a:80/x, https://b]\n",
    "{a:1}\n",
    "flowplain: [multi\n  line, x]\n",
    "sq: 'it''s'\ndq: \"tab\\there\\nnew \\\"q\\\" back\\\\ \\u00e9 \\x41 \\U0001F600 \\0 \\e \\N \\_ \\L \\P \\/\"\n",
    "sq: 'line one\n  line two\n\n  after blank'\n",
    "dq: \"join\\\n  ed\"\n",
    "dq: \"a\n\n\n  b\"\n",
    "plain: this is\n  continued\n  over lines\n\n  with a blank\nnext: x\n",
    "- item\n  continued\n",
    "top\nlevel\n",
    "lit: |\n  line 1\n    indented\n  line 3\nnext: x\n",
    "lit: |-\n  no newline\n",
    "lit: |+\n  keep\n\n\nnext: x\n",
    "lit: |\n  a\n\n\n",
    "lit: |2\n    two more\n  base\n",
    "lit: |-2\n   x\n",
    "fold: >\n  folded\n  text\n\n  para\n    more\n  back\n",
    "fold: >-\n  a\n  b\n",
    "fold: >+\n  a\n\n",
    "empty: |\nnext: 1\n",
    "lit: |\n  text",
    "- |\n  in a list\n- >\n  folded\n",
    "k: |\n\n  after empty\n",
    "k: | # comment\n  x\n",
    "k: |#c\n  x\n",
    "\"quoted key\": 1\n'single': 2\n",
    "900: a\n1.5: b\ntrue: c\n~: d\n",
    "a: 'x' # c\nb: \"y\"   \n",
    "tab:\tvalue\n",
    "a: b:c\n",
    "a: -1\nb: -x\nc: ?x\nd: :x\n",
    "a: x#y\nb: x #y\n",
    "a: \u{e9}t\u{e9} \u{1f600}\n",
    "extra_records:\n  - name: a.example\n    type: A\n    value: 100.64.0.1\n",
    "a:\n  # comment inside\n  b: 1\n\n\n  c: 2\n",
    "a:   \n  b: 1\n",
    "[a, b]\n",
    "- a\n- b\n",
    "just a string\n",
    "42\n",
    "key: [a, b] # c\n",
    "nested: [[[[1]]]]\n",
    "a: {b: {c: {d: [1, {e: f}]}}}\n",
    "k: {a: , b: 1}\n",
    "k: [a, b, ]\n",
    "k: {a, b: 1}\n",
    "lit: |\n  trailing spaces   \n  kept\n",
    "fold: >\n\n  leading empty\n",
    "plain: a\n\n\n  b\n",
    "-\n  a: 1\n",
    "a:\n  -\n    b\n",
];

#[test]
fn a_corpus_of_cases_reads_the_same() {
    let failed: Vec<String> = AGREE
        .iter()
        .filter_map(|text| std::panic::catch_unwind(|| same(text)).err())
        .map(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
        .collect();
    assert!(failed.is_empty(), "{} of {} cases:\n{}", failed.len(), AGREE.len(), failed.join("\n"));
}

const REFUSED: &[&str] = &[
    "a: 1\na: 2\n",
    "a: {b: 1, b: 2}\n",
    "a: [1, 2\n",
    "a: {b: 1\n",
    "a: \"unclosed\n",
    "a: 'unclosed\n",
    "a: 1\n---\nb: 2\n",
    "a: b: c\n",
    "a: 1\n b: 2\n",
    "a:\n  b: 1\n c: 2\n",
    "- a\nb: 1\n",
    "a: - b\n",
    "a: \"\\q\"\n",
    "a: [1, 2]]\n",
    "a:\n\t- b\n",
    "a: |0\n  x\n",
    "a: b\n  c: d\n",
    "a: @x\n",
    "k: v\n---\n",
    "a: -\n",
    "a: `x`\n",
    "- a\n  - b: c\n",
    "a: \"x\" y\n",
    ": no key\n",
];

#[test]
fn what_serde_yaml_refuses_we_refuse() {
    for text in REFUSED {
        both_refuse(text);
    }
}

/// What we read differently from serde_yaml, on purpose.
#[test]
fn the_differences_are_the_documented_ones() {
    // Anchors, aliases, tags, complex keys, directives: refused, naming the line.
    for (text, what, line) in [
        ("a: &anchor 1\nb: *anchor\n", "anchors", 1),
        ("a: 1\nb: *anchor\n", "aliases", 2),
        ("a: !!str 1\n", "tags", 1),
        ("a:\n  - !tag x\n", "tags", 2),
        ("? complex\n: key\n", "complex keys", 1),
        ("[a, b]: c\n", "cannot be a key", 1),
        // libyaml skips a byte order mark at a line's start as if it were a space.
        ("a:\n\u{feff}b: 1\n", "byte order mark", 2),
        ("%YAML 1.2\n---\na: 1\n", "directives", 1),
    ] {
        assert!(serde_yaml::from_str::<Y>(text).is_ok() || what == "aliases", "{text}");
        let e = parse(text).unwrap_err();
        assert!(e.message.contains(what) && e.line == line, "{text}: {e}");
    }
    // Integers past u64/i64: serde_yaml refuses them; they are floats here, as in JSON.
    assert!(serde_yaml::from_str::<Y>("a: 99999999999999999999\n").is_err());
    assert_eq!(parse("a: 99999999999999999999\n").unwrap(), json!({"a": 1e20}));
    // Infinity and NaN, which JSON lacks, are the strings serde_yaml printed for them.
    assert_eq!(parse("a: [.inf, -.Inf, .NaN]\n").unwrap(), json!({"a": [".inf", "-.inf", ".nan"]}));
    // A byte order mark before `---`: libyaml counts it as a column, so the
    // marker is a string "---" there; here the BOM is dropped first.
    assert!(serde_yaml::from_str::<Y>("\u{feff}---\na: 1\n").is_err());
    assert_eq!(parse("\u{feff}---\na: 1\n").unwrap(), json!({"a": 1}));
    // Keys become strings; two that are equal as strings are a duplicate.
    assert!(serde_yaml::from_str::<Y>("1: a\n'1': b\n").is_ok());
    assert!(parse("1: a\n'1': b\n").is_err());
}

const EMIT: &[&str] = &[
    r#"{"id":1,"name":"bob","created_at":"2026-01-01T00:00:00Z","tags":[],"m":{},"n":null,"ok":true,"f":1.5}"#,
    r#"[{"id":1,"user":{"id":2,"name":"a"},"acl_tags":["tag:a","tag:b"]},{"id":3,"user":null,"acl_tags":[]}]"#,
    r#"{"e":"","t":"true","num":"123","z":"0770","x":"0x10","inf":".inf","null":"~","colon":"a: b","hash":"a #b","ok":"a#b","c2":"a:b"}"#,
    r#"{"lead":" x","trail":"x ","dash":"- x","d":"-","star":"*x","amp":"&x","bang":"!x","q":"it's","dq":"\"x\"","pct":"%x","at":"@x","bt":"`x`"}"#,
    r#"{"multi":"line1\nline2\n","m2":"a\nb","m3":"a\n\n","lead":"\n x\n","ind":"a\n  b\n","sp":"a \nb","tab":"a\tb","ctl":"a\u0001b\u007f","nl":"\n"}"#,
    r#"{"emoji":"héllo 😀","dots":"...","dashes":"---","brk":"[x]","br2":"{x}","c":",x","p":"|x","g":">x","qm":"?x","k":":x"}"#,
    r#"{"nested":[[1,2],[],[[3]]],"deep":{"a":{"b":{"c":[{"d":[1]}]}}}}"#,
    r#"{"1":"x","true":1,"":2,"a b":3,"- k":4,"k: v":5}"#,
    r#"{"policy":"{\n  \"acls\": [\n    {\"action\": \"accept\"}\n  ]\n}\n"}"#,
    r#""just a string""#,
    r#""two\nlines""#,
    r#"[]"#,
    r#"{}"#,
    r#"null"#,
    r#"42"#,
    r#"[1,"a",null,true,[],{}]"#,
];

/// Valid YAML that reads back, written otherwise than serde_yaml writes it.
const EMIT_OTHERWISE: &[&str] = &[
    // serde_yaml: a `? |-` complex key; here a double-quoted one.
    r#"{"multi\nline":1}"#,
];

#[test]
fn what_we_write_reads_back_and_matches_serde_yaml() {
    for json in EMIT_OTHERWISE {
        let value: Value = serde_json::from_str(json).unwrap();
        let yaml = from_json(json).unwrap();
        assert_eq!(parse(&yaml).unwrap(), value, "ours reading back {yaml}");
        assert_eq!(json_of(&serde_yaml::from_str(&yaml).unwrap()).unwrap(), value, "{yaml}");
    }
    for json in EMIT {
        let value: Value = serde_json::from_str(json).unwrap();
        let yaml = from_json(json).unwrap();
        assert_eq!(parse(&yaml).unwrap(), value, "ours reading back {yaml}");
        let theirs: Y = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
        assert_eq!(json_of(&theirs).unwrap(), value, "serde_yaml reading back {yaml}");
        // Same text as serde_yaml wrote, but for our keeping the JSON's key order.
        let sorted = from_json(&value.to_string()).unwrap();
        assert_eq!(sorted, serde_yaml::to_string(&value).unwrap(), "{json}");
    }
}

#[test]
fn derp_map_files_read_as_before() {
    use crate::tailcfg::DerpMap;
    let cases = [
        "",
        "regions:\n",
        "regions:\n  900:\n    regionid: 900\n    regioncode: home\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: router.lan\n        ipv4: 192.0.2.1\n        ipv6: \"2001:db8::1\"\n        stunport: 3478\n        stunonly: false\n        derpport: 443\n",
        "regions:\n  1:\n    regionid: 1\n    regioncode: 123\n    nodes:\n      - name: 1\n        certname:\n        hostname: true\n",
        "regions:\n  0x10:\n    regionid: 1\n    nodes:\n",
        "Regions: {}\nomitDefaultRegions: true\n",
    ];
    for text in cases {
        let theirs: DerpMap = serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(DerpMap::from_yaml(text).unwrap(), theirs, "{text}");
    }
    for text in
        ["regions: [1, 2\n", "regions:\n  1:\n    regionid: x\n", "regions:\n  1:\n    nodes:\n      - stunport:\n"]
    {
        assert!(serde_yaml::from_str::<DerpMap>(text).is_err());
        assert!(DerpMap::from_yaml(text).is_err(), "{text}");
    }
    // serde_yaml took a null text field as its spelling ("~", "null"); Go and we take "".
    let m = DerpMap::from_yaml("regions:\n  1:\n    regionid: 1\n    nodes:\n      - hostname: ~\n").unwrap();
    assert_eq!(m.regions[&1].nodes[0].host_name, "");
}

/// Texts of YAML's significant pieces, from a fixed seed.
pub(crate) fn random_texts(count: usize, mut seed: u64) -> Vec<String> {
    const PIECES: &[&str] = &[
        "a",
        "b",
        "key",
        "1",
        "-2",
        "0x1f",
        "1.5",
        "true",
        "~",
        "null",
        "yes",
        " ",
        "  ",
        "    ",
        "\n",
        "\n",
        "\n  ",
        "\n- ",
        ":",
        ": ",
        ":\n",
        "- ",
        "-",
        "[",
        "]",
        "{",
        "}",
        ", ",
        ",",
        "#",
        " # c",
        "'",
        "''",
        "\"",
        "\\",
        "\\n",
        "|",
        "|-",
        ">",
        ">+",
        "\t",
        "...",
        "---",
        "?",
        "é",
        "a: 1\n",
        "- x\n",
        "k:\n  - v\n",
        "\"q\"",
        "'s'",
    ];
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    (0..count)
        .map(|_| {
            let n = next() % 24;
            (0..n).map(|_| PIECES[next() % PIECES.len()]).collect::<String>()
        })
        .collect()
}

/// The fuzz target's property on generated texts: never a panic, and where
/// both readers accept a text they agree.
#[test]
fn generated_texts_agree_where_both_accept() {
    let mut disagreements = Vec::new();
    let mut both = 0;
    for text in random_texts(50_000, 7) {
        let ours = parse(&text);
        let theirs = serde_yaml::from_str::<Y>(&text).ok().and_then(|v| json_of(&v));
        if let (Ok(ours), Some(theirs)) = (ours, theirs) {
            both += 1;
            if ours != theirs {
                disagreements.push(format!("{text:?}: ours {ours} theirs {theirs}"));
            }
        }
    }
    assert!(disagreements.is_empty(), "{} disagreements:\n{}", disagreements.len(), disagreements.join("\n"));
    assert!(both > 5_000, "only {both} texts were read by both");
}
