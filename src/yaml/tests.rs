//! The reader and writer on their own: values, errors with their lines,
//! the depth bound, and never a panic.

use serde_json::json;

use super::{from_json, parse, MAX_DEPTH};

#[test]
fn reads_a_headscale_style_config() {
    let text = "\
---
server_url: https://hs.example.net:443   # trailing comment
listen_addr: 0.0.0.0:8080
unix_socket_permission: \"0770\"
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
derp:
  urls:
  - https://controlplane.tailscale.com/derpmap/default
  paths: []
  server:
    enabled: false
    region_id: 999
dns:
  nameservers:
    global: [1.1.1.1, \"2606:4700:4700::1111\"]
  extra_records:
    - name: grafana.example
      type: A
      value: 100.64.0.3
oidc:
  extra_params: {domain_hint: example.com}
policy:
  text: |
    {\"acls\": []}
...
";
    assert_eq!(
        parse(text).unwrap(),
        json!({
            "server_url": "https://hs.example.net:443",
            "listen_addr": "0.0.0.0:8080",
            "unix_socket_permission": "0770",
            "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48"},
            "derp": {
                "urls": ["https://controlplane.tailscale.com/derpmap/default"],
                "paths": [],
                "server": {"enabled": false, "region_id": 999},
            },
            "dns": {
                "nameservers": {"global": ["1.1.1.1", "2606:4700:4700::1111"]},
                "extra_records": [{"name": "grafana.example", "type": "A", "value": "100.64.0.3"}],
            },
            "oidc": {"extra_params": {"domain_hint": "example.com"}},
            "policy": {"text": "{\"acls\": []}\n"},
        })
    );
}

#[test]
fn scalars_resolve_by_the_core_schema() {
    let v =
        parse("[~, null, '', true, False, yes, on, 0, -7, 0x1f, 0o17, 010, 1.5, 1e3, .inf, -.inf, .nan, a b]").unwrap();
    assert_eq!(
        v,
        json!([
            null, null, "", true, false, "yes", "on", 0, -7, 31, 15, "010", 1.5, 1000.0, ".inf", "-.inf", ".nan", "a b"
        ])
    );
    // Keys are strings, whatever their scalar's type.
    assert_eq!(parse("900: a\ntrue: b\n1.5: c\n").unwrap(), json!({"900": "a", "true": "b", "1.5": "c"}));
    // Environment values (TINYSCALE_*), read as YAML.
    assert_eq!(parse("[https://x, https://y]").unwrap(), json!(["https://x", "https://y"]));
    assert_eq!(parse("8080").unwrap(), json!(8080));
    assert_eq!(parse("true").unwrap(), json!(true));
    assert_eq!(parse("").unwrap(), json!(null));
}

#[test]
fn quoted_and_block_scalars() {
    let v = parse(
        "a: \"\\t\\\"q\\\" \\\\ \\u00e9 \\n\"\nb: 'it''s'\nc: >-\n  one\n  two\n\n  three\nd: |+\n  keep\n\ne: x\n",
    )
    .unwrap();
    assert_eq!(v, json!({"a": "\t\"q\" \\ é \n", "b": "it's", "c": "one two\nthree", "d": "keep\n\n", "e": "x"}));
}

#[test]
fn errors_name_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("a: 1\nb: [1, 2\n", 2, "never closed"),
        ("a: ['x' y]\n", 1, "expected `,` or `]`"),
        ("a: {b: 'x' y}\n", 1, "expected `,` or `}`"),
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key `a`"),
        ("a:\n  b: &x 1\n", 2, "anchors"),
        ("a:\n  - *x\n", 2, "aliases"),
        ("a: !!int 1\n", 1, "tags"),
        ("a: 1\n---\nb: 2\n", 2, "more than one document"),
        ("a: 1\n  b: 2\n", 2, "unexpected `:`"),
        ("a:\n  b: 'x'\n   c: 2\n", 3, "unexpected indentation"),
        ("a: \"x\n", 1, "never closed"),
        ("a: \"\\q\"\n", 1, "unknown escape"),
        ("a: b: c\n", 1, "mapping cannot start"),
        ("a: - b\n", 1, "list cannot start"),
        ("a:\n\tb: 1\n", 2, "tab"),
        ("x: 1\ny: 2\n- z\n", 3, "a `- ` item where a key"),
        ("- a\nb: 1\n", 2, "unexpected text after the document"),
    ];
    for &(text, line, what) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(what), "{text:?}: {e}");
        assert!(e.to_string().contains(&format!("at line {line} column")), "{e}");
    }
}

#[test]
fn nesting_is_bounded() {
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse(&ok).is_ok());
    for text in [
        format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)),
        "[".repeat(100_000),
        "{a: ".repeat(100_000),
        "- ".repeat(100_000),
        (0..10_000).map(|i| format!("{}k:\n", " ".repeat(i))).collect(),
        (0..10_000).map(|i| format!("{}-\n", " ".repeat(i))).collect(),
    ] {
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("nested deeper than 64"), "{e}");
    }
}

/// Bytes looked at by the parser per byte of text, counted (not timed).
fn examined_per_byte(text: &str) -> (serde_json::Value, f64) {
    super::parse::EXAMINED.with(|c| c.set(0));
    let v = parse(text).unwrap();
    let n = super::parse::EXAMINED.with(|c| c.get());
    (v, n as f64 / text.len() as f64)
}

#[test]
fn time_is_linear_in_the_text() {
    // Shapes where a careless parser rescans: a long line (a flow list, a
    // flow map), many short lines, deep-ish indentation, long folded scalars.
    type Make = fn(usize) -> String;
    let shapes: [(&str, Make); 6] = [
        ("flow list", |n| format!("a: [{}]\n", "item, ".repeat(n))),
        ("flow map", |n| format!("a: {{{}}}\n", (0..n).map(|i| format!("k{i}: v, ")).collect::<String>())),
        ("block list", |n| "- key: value # comment\n  other: 'quoted'\n".repeat(n)),
        ("nested", |n| "- a:\n    b:\n      - c: [1, 2]\n        d: \"x\"\n".repeat(n)),
        ("plain lines", |n| format!("a: {}\n", "word word\n  ".repeat(n))),
        ("literal", |n| format!("a: |\n{}", "  text text\n".repeat(n))),
    ];
    for (name, make) in shapes {
        let (_, small) = examined_per_byte(&make(500));
        let (_, large) = examined_per_byte(&make(10_000));
        // Linear: the same few looks per byte at 20x the size (a rescan per
        // item or line would make it grow about 20x).
        assert!(large < 8.0 && large < small * 1.5 + 0.5, "{name}: {small:.2} then {large:.2} looks per byte");
    }
    let (v, _) = examined_per_byte(&format!("a: [{}]\n", "item, ".repeat(20_000)));
    assert_eq!(v["a"].as_array().unwrap().len(), 20_000);
}

#[test]
fn arbitrary_text_never_panics() {
    for text in super::tests_serde_yaml::random_texts(20_000, 99) {
        let _ = parse(&text);
    }
    // Every byte cut of a realistic file, and odd characters.
    let text = "a:\n  - \"é\\u00e9\"\n  - 'x'\n  - |\n    y\n  - {b: [c, d]}\n";
    for i in 0..=text.len() {
        if let Some(prefix) = text.get(..i) {
            let _ = parse(prefix);
        }
    }
    for text in ["\0", "a: \"\\", "a: \"\\u12", "a: \"\\uD800\"", "\u{feff}", "\r", "a: |9\n x", "- |\n\t x"] {
        let _ = parse(text);
    }
}

#[test]
fn writes_block_yaml_in_the_json_order() {
    let json = r#"{"id":1,"name":"bob","acl_tags":["tag:a"],"user":{"id":2,"email":""},"none":[],"ok":true,"n":null}"#;
    assert_eq!(
        from_json(json).unwrap(),
        "id: 1\nname: bob\nacl_tags:\n- tag:a\nuser:\n  id: 2\n  email: ''\nnone: []\nok: true\nn: null\n"
    );
    let yaml = from_json(r#"[{"a":"true","b":"x: y","c":"two\nlines","d":"tab\there"}]"#).unwrap();
    assert_eq!(yaml, "- a: 'true'\n  b: 'x: y'\n  c: |-\n    two\n    lines\n  d: \"tab\\there\"\n");
    assert!(from_json("not json").is_none());
    // Floats read back as serde_json reads the JSON text they came from.
    for json in ["5.555555555555556e49", "[0.1, -2.5e-8, 1e300]"] {
        assert_eq!(parse(&from_json(json).unwrap()).unwrap(), serde_json::from_str::<serde_json::Value>(json).unwrap());
    }
}
