//! Conformance (N.1, N.5), splitting, and property tests for the scanner.
//!
//! Accepted lines are checked through one `render` form so the tests read
//! like the conformance document: `measurement | tags | fields | timestamp`,
//! every token unescaped, control bytes written `<LF>`, `<xHH>`, ….

use super::*;

fn show(bytes: &[u8], out: &mut String) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("<LF>"),
                '\r' => out.push_str("<CR>"),
                '\t' => out.push_str("<TAB>"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("<x{:02X}>", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("<x{b:02X}>"));
        }
    }
}

fn unescaped(token: &[u8], kind: Escape) -> String {
    let mut plain = Vec::new();
    unescape_into(token, kind, &mut plain);
    // The comparison helper must agree with the copying one.
    assert!(
        unescaped_eq(token, kind, &plain),
        "unescaped_eq vs unescape_into on {token:?}"
    );
    let mut s = String::new();
    show(&plain, &mut s);
    s
}

fn render(line: &Line<'_>) -> String {
    let mut s = unescaped(line.measurement, Escape::Measurement);
    s.push_str(" |");
    for (k, v) in tags(line.tags) {
        s.push(' ');
        s.push_str(&unescaped(k, Escape::TagKey));
        s.push('=');
        s.push_str(&unescaped(v, Escape::TagValue));
    }
    s.push_str(" |");
    let mut count = 0;
    for (k, v) in fields(line.fields) {
        count += 1;
        s.push(' ');
        s.push_str(&unescaped(k, Escape::FieldKey));
        s.push('=');
        match v {
            FieldValue::Float(f) => s.push_str(&format!("F({f:?})")),
            FieldValue::Int(i) => s.push_str(&format!("I({i})")),
            FieldValue::UInt(u) => s.push_str(&format!("U({u})")),
            FieldValue::Bool(b) => s.push_str(&format!("B({b})")),
            FieldValue::Str(text) => {
                let mut plain = Vec::new();
                unescape_str_into(text, &mut plain);
                s.push_str("S(");
                show(&plain, &mut s);
                s.push(')');
            }
        }
    }
    // fields() must see every field the scanner accepted.
    assert!(count > 0, "no fields decoded from {:?}", line.fields);
    match line.timestamp {
        Some(ts) => {
            s.push_str(&format!(" | {ts}"));
            let text = std::str::from_utf8(&line.raw[line.timestamp_offset..]).unwrap();
            assert_eq!(text.trim_end().parse::<i64>().unwrap(), ts);
        }
        None => {
            s.push_str(" | -");
            assert_eq!(line.timestamp_offset, line.raw.len());
        }
    }
    s
}

/// Scan `input` (one line) and compare with `expect`: a rendered line, or
/// `Err(Reason)`.
#[track_caller]
fn check(input: &[u8], expect: &str) {
    let got = match scan_line(input) {
        Ok(line) => {
            assert_eq!(line.raw, input);
            render(&line)
        }
        Err(e) => format!("Err({e:?})"),
    };
    assert_eq!(got, expect, "input: {:?}", String::from_utf8_lossy(input));
}

/// Split and scan a datagram; one entry per item.
fn check_datagram(input: &[u8], expect: &[&str]) {
    let got: Vec<String> = lines(input)
        .map(|item| match item {
            Item::Line(line) => render(&line),
            Item::Reject { raw, error } => {
                let mut s = format!("Err({error:?}) ");
                show(raw, &mut s);
                s
            }
        })
        .collect();
    assert_eq!(got, expect, "input: {:?}", String::from_utf8_lossy(input));
}

// ---- N.1 accepted ----

#[test]
fn n1_01_tags_float_timestamp() {
    check(
        b"cpu,host=a,region=us-west value=1.0 1434055562000000000",
        "cpu | host=a region=us-west | value=F(1.0) | 1434055562000000000",
    );
}

#[test]
fn n1_02_03_number_types() {
    check(b"cpu value=1", "cpu | | value=F(1.0) | -");
    check(b"cpu value=1i", "cpu | | value=I(1) | -");
    check(b"cpu value=-1i", "cpu | | value=I(-1) | -");
    check(b"cpu value=42u", "cpu | | value=U(42) | -");
}

#[test]
fn n1_04_05_integer_edges() {
    check(
        b"cpu value=9223372036854775807i",
        "cpu | | value=I(9223372036854775807) | -",
    );
    check(
        b"cpu value=-9223372036854775808i",
        "cpu | | value=I(-9223372036854775808) | -",
    );
    check(
        b"cpu value=0009223372036854775807i",
        "cpu | | value=I(9223372036854775807) | -",
    );
    check(
        b"cpu value=18446744073709551615u",
        "cpu | | value=U(18446744073709551615) | -",
    );
    check(
        b"cpu value=00018446744073709551615u",
        "cpu | | value=U(18446744073709551615) | -",
    );
}

#[test]
fn n1_06_floats() {
    for (text, value) in [
        (".1", "0.1"),
        ("1.", "1.0"),
        ("-0.64", "-0.64"),
        ("1e4", "10000.0"),
        ("1E4", "10000.0"),
        ("1.0e4", "10000.0"),
        ("1.0E4", "10000.0"),
        ("1.0e-4", "0.0001"),
        ("-1.0e-4", "-0.0001"),
        ("6.632243e+06", "6632243.0"),
        ("1e-9999999999", "0.0"),
    ] {
        check(
            format!("cpu value={text}").as_bytes(),
            &format!("cpu | | value=F({value}) | -"),
        );
    }
}

#[test]
fn n1_07_booleans() {
    check(
        b"cpu b1=t,b2=TRUE,b3=False 1000000000",
        "cpu | | b1=B(true) b2=B(true) b3=B(false) | 1000000000",
    );
    for (text, value) in [
        ("t", true),
        ("T", true),
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("f", false),
        ("F", false),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ] {
        check(
            format!("cpu v={text}").as_bytes(),
            &format!("cpu | | v=B({value}) | -"),
        );
    }
}

#[test]
fn n1_08_to_14_strings() {
    check(
        br#"cpu str="foo bar",s2="foo,bar",s3="foo=bar" 1000000000"#,
        "cpu | | str=S(foo bar) s2=S(foo,bar) s3=S(foo=bar) | 1000000000",
    );
    check(
        br#"cpu value="{Hello\"{,}\" World}" 1000000000"#,
        r#"cpu | | value=S({Hello"{,}" World}) | 1000000000"#,
    );
    check(
        br#"cpu value="foo\,bar" 1000000000"#,
        r"cpu | | value=S(foo\,bar) | 1000000000",
    );
    check(
        br#"cpu value="test\\" 1000000000"#,
        r"cpu | | value=S(test\) | 1000000000",
    );
    check(
        br#"cpu value="test\\\"" 1000000000"#,
        r#"cpu | | value=S(test\") | 1000000000"#,
    );
    check(
        "cpu,host=serverA value=\"wè\" 1000000000".as_bytes(),
        "cpu | host=serverA | value=S(wè) | 1000000000",
    );
    // Case 13 is a datagram-level case: see `split_multiline_string`.
    check(b"cpu value=\"4\n2\"", "cpu | | value=S(4<LF>2) | -");
    // Case 14 DIVERGES: we follow 1.x, only `\\` and `\"` unescape.
    check(br#"m s="\t\r\n\v""#, r"m | | s=S(\t\r\n\v) | -");
    check(br#"m s="""#, "m | | s=S() | -");
}

#[test]
fn n1_15_to_19_measurement_escapes() {
    check(
        br"cpu\ load,region=east value=1.0",
        "cpu load | region=east | value=F(1.0) | -",
    );
    check(
        br"cpu\,main,regions=east value=1.0",
        "cpu,main | regions=east | value=F(1.0) | -",
    );
    check(
        b"cpu=load,region=east value=1.0",
        "cpu=load | region=east | value=F(1.0) | -",
    );
    check(
        br"cpu\=load,region=east value=1.0",
        r"cpu\=load | region=east | value=F(1.0) | -",
    );
    check(
        br#""cpu",host=serverA value=1.0 1000000000"#,
        r#""cpu" | host=serverA | value=F(1.0) | 1000000000"#,
    );
}

#[test]
fn n1_20_to_30_tag_escapes() {
    check(
        br"cpu,region\ zone=east value=1.0",
        "cpu | region zone=east | value=F(1.0) | -",
    );
    check(
        br"cpu,region\,zone=east value=1.0",
        "cpu | region,zone=east | value=F(1.0) | -",
    );
    check(br"cpu,\ =east value=1.0", "cpu |  =east | value=F(1.0) | -");
    check(
        br"cpu,regions=east\ west value=1.0",
        "cpu | regions=east west | value=F(1.0) | -",
    );
    check(
        br"cpu,regions=east\,west value=1.0",
        "cpu | regions=east,west | value=F(1.0) | -",
    );
    check(
        br"cpu=load,equals\=foo=tag\=value value=1i",
        "cpu=load | equals=foo=tag=value | value=I(1) | -",
    );
    check(
        br"cpu,regions=eas\t value=1.0",
        r"cpu | regions=eas\t | value=F(1.0) | -",
    );
    check(
        br"cpu,regions=\\ east value=1.0",
        r"cpu | regions=\ east | value=F(1.0) | -",
    );
    check(
        br"cpu,host=two\\ words value=42",
        r"cpu | host=two\ words | value=F(42.0) | -",
    );
    check(
        br"cpu,host=two\\\ words value=42",
        r"cpu | host=two\\ words | value=F(42.0) | -",
    );
    check(
        br"cpu,regions=\\,\,\=east value=1.0",
        r"cpu | regions=\,,=east | value=F(1.0) | -",
    );
    check(
        br"cpu,reg\\=ion=east value=1.0",
        r"cpu | reg\=ion=east | value=F(1.0) | -",
    );
    check(
        br#"cpu,"host"="serverA",region=us-east value=1.0 1000000000"#,
        r#"cpu | "host"="serverA" region=us-east | value=F(1.0) | 1000000000"#,
    );
    check(
        br#"t159,label=hey\ "ya a=1i,value=0i"#,
        r#"t159 | label=hey "ya | a=I(1) value=I(0) | -"#,
    );
}

#[test]
fn n1_30_unbalanced_quote_in_tag() {
    check_datagram(
        b"baz,mytag=\"a x=1 1441103862125\nbaz,mytag=a z=1 1441103862126",
        &[
            r#"baz | mytag="a | x=F(1.0) | 1441103862125"#,
            "baz | mytag=a | z=F(1.0) | 1441103862126",
        ],
    );
}

#[test]
fn n1_31_to_36_field_keys() {
    check(
        br"cpu,regions=east value\ ms=1.0",
        "cpu | regions=east | value ms=F(1.0) | -",
    );
    check(
        br"cpu,regions=east value\,ms=1.0",
        "cpu | regions=east | value,ms=F(1.0) | -",
    );
    check(br"cpu va\=lue=42", "cpu | | va=lue=F(42.0) | -");
    check(br"cpu \a=1i", r"cpu | | \a=I(1) | -");
    check(br#"cpu "a=1"#, r#"cpu | | "a=F(1.0) | -"#);
    // Case 34: the scanner keeps tags as written; the series key is not sorted here.
    check(
        b"cpu,last=1,first=2 value=1i",
        "cpu | last=1 first=2 | value=I(1) | -",
    );
    check(
        br#"cpu,host=a value=1i,b=2,c="x" 1000000000"#,
        "cpu | host=a | value=I(1) b=F(2.0) c=S(x) | 1000000000",
    );
    // Case 36 policy: duplicate fields accepted (last wins when materialised).
    check(
        b"cpu value=1,value=2",
        "cpu | | value=F(1.0) value=F(2.0) | -",
    );
    assert!(has_duplicate_field(b"value=1,value=2"));
    assert!(!has_duplicate_field(b"value=1,value2=2"));
}

#[test]
fn n1_37_38_whitespace() {
    let expect = "cpu | | value=F(1.0) | 1257894000000000000";
    check(b"cpu    value=1.0 1257894000000000000", expect);
    check(b"cpu value=1.0     1257894000000000000", expect);
    check(b"cpu value=1.0 1257894000000000000   ", expect);
    check(b"cpu,t=v   value=1.0   ", "cpu | t=v | value=F(1.0) | -");
    check(b"   m v=1", "m | | v=F(1.0) | -");
    check(b"\tm v=1", "Err(BadMeasurement)");
}

#[test]
fn n1_39_to_43_comments_and_line_endings() {
    check_datagram(b"# comment only", &[]);
    check_datagram(
        b"\t# indented comment\ncpu value=1 1",
        &["cpu | | value=F(1.0) | 1"],
    );
    check_datagram(
        b"cpu value=1i 1000000000\n\ncpu value=2i 2000000000",
        &[
            "cpu | | value=I(1) | 1000000000",
            "cpu | | value=I(2) | 2000000000",
        ],
    );
    check_datagram(b"\n\n\n\n", &[]);
    check_datagram(b"# foo\r\nm x=1\r\n\r\n", &["m | | x=F(1.0) | -"]);
    check_datagram(
        b"# foo\rxxx\nm x=1",
        &["Err(BadMeasurement) # foo<CR>xxx", "m | | x=F(1.0) | -"],
    );
    check_datagram(
        b"cpu value=1\ncpu value=2",
        &["cpu | | value=F(1.0) | -", "cpu | | value=F(2.0) | -"],
    );
}

// ---- N.1 rejected ----

#[track_caller]
fn rejects(error: ParseError, inputs: &[&[u8]]) {
    for input in inputs {
        check(input, &format!("Err({error:?})"));
    }
}

#[test]
fn n1_44_missing_fields() {
    rejects(
        ParseError::NoFields,
        &[b"cpu", b"cpu_load_short,host=server01,region=us-west"],
    );
    // 1.x reports "missing fields"; we report the first bad byte: `=` in a tag value.
    rejects(ParseError::BadTag, &[b"cpu,host=="]);
}

#[test]
fn n1_45_to_48_bad_tags() {
    rejects(
        ParseError::BadTag,
        &[
            b"cpu,host",
            b"cpu,host value=1i",
            b"cpu,host=",
            b"cpu,host= value=1",
            b"cpu,host=serverA,region=,zone=us-west value=1i",
            b"cpu,=us-east value=1i",
            b"cpu, value=1",
            b"cpu,",
            b"cpu,,,",
            b"cpu,host=f=o, value=1",
            b"cpu,host=f=o value=1",
            b"cpu,host=a, value=1",
        ],
    );
    rejects(ParseError::NoFields, &[b"="]);
    rejects(
        ParseError::DuplicateTag,
        &[
            b"cpu,host=a,host=b value=1i 1000000000",
            b"cpu,b=2,c=3,b=1 value=1i 1000000000",
        ],
    );
}

#[test]
fn n1_48_duplicate_tags_past_tracking_limit() {
    let mut line = String::from("m");
    for k in 0..40 {
        line.push_str(&format!(",k{k}=v"));
    }
    check(format!("{line} f=1").as_bytes(), &{
        let mut s = String::from("m |");
        for k in 0..40 {
            s.push_str(&format!(" k{k}=v"));
        }
        s + " | f=F(1.0) | -"
    });
    check(format!("{line},k3=w f=1").as_bytes(), "Err(DuplicateTag)");
    check(format!("{line},k39=w f=1").as_bytes(), "Err(DuplicateTag)");
}

#[test]
fn n1_49_50_bad_fields() {
    rejects(
        ParseError::BadField,
        &[
            b"cpu value=",
            b"cpu value= 1000000000i",
            b"cpu value=,value2=1i",
            b"cpu =123i",
            b"cpu value=123i,=456i",
            b"cpu value=1i,b",
            b"cpu value=1i,",
            b"cpu value=1i, b=2",
            b"cpu a,b=1",
        ],
    );
    rejects(
        ParseError::NoFields,
        &[
            b"cpu,host=server01 1434055562000000000i",
            b"cpu value",
            b"cpu   ",
        ],
    );
}

#[test]
fn n1_51_bad_numbers() {
    for text in [
        "-", "-.", ".", "1a", "42+3", "-e-e-e", "1.1.1", "0.-1", ".1a", "9ie10", "1.0i", "1ii",
        "-i", "9e10i", "-123u", "--1u", "1e", "1e+", "+1", "1.5u", "1u2",
    ] {
        check(format!("cpu v={text}").as_bytes(), "Err(BadNumber)");
    }
}

#[test]
fn n1_52_out_of_range() {
    rejects(
        ParseError::NumberOutOfRange,
        &[
            b"cpu value=9223372036854775808i",
            b"cpu value=-9223372036854775809i",
            b"cpu value=18446744073709551616u",
            b"cpu value=99999999999999999999999i",
            b"m v=1e9999999999999",
            b"m v=1e309",
        ],
    );
    check(b"m v=1e308", "m | | v=F(1e308) | -");
}

#[test]
fn n1_53_to_56_unsupported_values() {
    rejects(
        ParseError::BadNumber,
        &[
            b"cpu value=NaN",
            b"cpu value=nAn",
            b"cpu value=Inf",
            b"cpu value=+Inf",
            b"cpu value=-Inf",
        ],
    );
    rejects(
        ParseError::BadField,
        &[b"cpu value=tRue", b"cpu value=yes", b"cpu value=truex"],
    );
    rejects(
        ParseError::UnterminatedString,
        &[br#"cpu value="test"#, br#"cpu value="test\""#],
    );
    rejects(
        ParseError::BadField,
        &[
            br#"cpu value="test"""#,
            br#"m f="blah"=123,r 1531703600000000000"#,
        ],
    );
    check(br#"cpu "\, '= "\ v=1.0"#, "Err(NoFields)");
}

#[test]
fn n1_57_to_59_bytes() {
    rejects(ParseError::BadField, &[b"m x\x01y=1"]);
    rejects(
        ParseError::BadTag,
        &[b"m,k=x\x01y v=1", b"m,k\x7f=x v=1", b"m,k=\\\x01 v=1"],
    );
    rejects(
        ParseError::BadMeasurement,
        &[b"x\x01y v=1", b"\x00 v=1", b"x\\\ty v=1"],
    );
    check(b"m v=\"x\x01y\"", "m | | v=S(x<x01>y) | -");
    check("m\u{a0}v=1".as_bytes(), "Err(NoFields)");
    rejects(
        ParseError::InvalidUtf8,
        &[b"m,t=\xc3\x28 v=1", b"\xff v=1", b"m v=\"\xc3\""],
    );
}

#[test]
fn n1_60_key_too_long() {
    // 1.x: len(series key) + 4 + len(field key) <= 65535 (TestNewPointsRejectsMaxKey).
    let key = "a".repeat(KEY_LEN_MAX - "value".len() - 4);
    assert!(scan_line(format!("{key} value=1").as_bytes()).is_ok());
    check(format!("{key}a value=1").as_bytes(), "Err(KeyTooLong)");
    // The longest field key counts, not the first.
    let key = "a".repeat(KEY_LEN_MAX - 10);
    assert!(scan_line(format!("{key} v=1,w=2").as_bytes()).is_ok());
    check(
        format!("{key} v=1,wwwwwwwwwww=2").as_bytes(),
        "Err(KeyTooLong)",
    );
}

#[test]
fn n1_61_partial_batch() {
    check_datagram(
        b"cpu value=42\ncpu value=invalid\ncpu value=42",
        &[
            "cpu | | value=F(42.0) | -",
            "Err(BadField) cpu value=invalid",
            "cpu | | value=F(42.0) | -",
        ],
    );
}

#[test]
fn n1_62_to_66_timestamps() {
    check(b"cpu value=1 -1", "cpu | | value=F(1.0) | -1");
    check(
        b"cpu value=1 9223372036854775806",
        "cpu | | value=F(1.0) | 9223372036854775806",
    );
    check(
        b"cpu value=1 -9223372036854775806",
        "cpu | | value=F(1.0) | -9223372036854775806",
    );
    check(b"cpu value=1 0001", "cpu | | value=F(1.0) | 1");
    // Case 64 DIVERGES from v2: 1.x's MaxNanoTime is MaxInt64 - 1.
    rejects(
        ParseError::BadTimestamp,
        &[
            b"cpu value=1 9223372036854775807",
            b"cpu value=1 -9223372036854775807",
            b"cpu value=1 9223372036854775808",
            b"cpu value=1 -92233720368547758078",
            b"cpu value=1 -",
            b"cpu value=1 1-",
            b"cpu value=1 -1?",
            b"cpu value=1 -/",
            b"a v=1 0\\",
            b"cpu value=1 9223372036854775807 12",
            b"cpu value=1 1 2",
            b"cpu value=1 1.5",
        ],
    );
    let line = scan_line(b"cpu value=1 12  ").unwrap();
    assert_eq!(line.timestamp_offset, 12);
}

#[test]
fn n1_71_reserved_names_accepted() {
    check(
        b"cpu,_measurement=v0,tag0=v0 value=1",
        "cpu | _measurement=v0 tag0=v0 | value=F(1.0) | -",
    );
    check(
        b"cpu,tag0=v0,time=v0 value=1",
        "cpu | tag0=v0 time=v0 | value=F(1.0) | -",
    );
}

// ---- Splitting and N.5 ----

#[test]
fn split_multiline_string() {
    // Case 13: the point spans two physical lines.
    check_datagram(
        b"cpu value=\"4\n2\"\nm v=1",
        &["cpu | | value=S(4<LF>2) | -", "m | | v=F(1.0) | -"],
    );
    check_datagram(
        b"cpu value=\"4\r\n2\"\r\nm v=1\r\n",
        &["cpu | | value=S(4<CR><LF>2) | -", "m | | v=F(1.0) | -"],
    );
    check_datagram(
        b"m a=\"x\ny\nz\",b=1i 5",
        &["m | | a=S(x<LF>y<LF>z) b=I(1) | 5"],
    );
    // A quote that never closes costs only its own line.
    check_datagram(
        b"cpu value=\"x\ncpu value=42\ncpu value=43",
        &[
            "Err(UnterminatedString) cpu value=\"x",
            "cpu | | value=F(42.0) | -",
            "cpu | | value=F(43.0) | -",
        ],
    );
    // A join that does not give a valid point is undone.
    check_datagram(
        b"cpu value=\"x\ncpu value=\"y\"\n",
        &[
            "Err(UnterminatedString) cpu value=\"x",
            "cpu | | value=S(y) | -",
        ],
    );
    // Lines without a quote are joined without a rescan of their own.
    check_datagram(
        b"m v=\"a\nb\nc\",w=1i\n",
        &["m | | v=S(a<LF>b<LF>c) w=I(1) | -"],
    );
    // No join past LINE_SPAN_MAX physical lines.
    let long = format!("m v=\"{}\"\nm v=1", "a\n".repeat(LINE_SPAN_MAX));
    let items: Vec<_> = lines(long.as_bytes()).collect();
    assert!(matches!(
        items[0],
        Item::Reject {
            error: ParseError::UnterminatedString,
            ..
        }
    ));
    assert!(matches!(items.last(), Some(Item::Line(_))));
}

#[test]
fn split_many_open_quotes() {
    // Every line opens a string that never closes: each is rejected alone.
    let datagram = "m v=\"x\n".repeat(4000);
    let items: Vec<_> = lines(datagram.as_bytes()).collect();
    assert_eq!(items.len(), 4000);
    assert!(items.iter().all(|i| matches!(
        i,
        Item::Reject {
            error: ParseError::UnterminatedString,
            ..
        }
    )));
}

#[test]
fn split_line_endings() {
    check_datagram(
        b"m v=1\r\nm v=2\nm v=3\r",
        &[
            "m | | v=F(1.0) | -",
            "m | | v=F(2.0) | -",
            "m | | v=F(3.0) | -",
        ],
    );
    check_datagram(b"m v=1\r\r\n", &["Err(BadNumber) m v=1<CR>"]);
    check_datagram(b"   \n\t\n \t \r\n", &[]);
    check_datagram(b"  # c\n#\nm v=1", &["m | | v=F(1.0) | -"]);
}

#[test]
fn n5_1_empty_datagrams() {
    check_datagram(b"", &[]);
    check_datagram(b"\n", &[]);
}

#[test]
fn n5_2_full_size_datagram() {
    let line = b"cpu,host=server042,region=us-west-2 usage_user=12.5,usage_idle=84.25 1700000000123456789\n";
    let mut datagram = Vec::new();
    while datagram.len() + line.len() + 10 <= 65_507 {
        datagram.extend_from_slice(line);
    }
    let count = datagram.len() / line.len();
    // Fill to exactly 65,507 bytes with one last line, no final newline.
    let last = format!("m v={}", "1".repeat(65_507 - datagram.len() - 4));
    datagram.extend_from_slice(last.as_bytes());
    assert_eq!(datagram.len(), 65_507);
    let items: Vec<_> = lines(&datagram).collect();
    assert_eq!(items.len(), count + 1);
    assert!(items.iter().all(|i| matches!(i, Item::Line(_))));
}

#[test]
fn n5_3_split_line_halves_rejected() {
    check_datagram(b"cpu,host=a value", &["Err(NoFields) cpu,host=a value"]);
    check_datagram(
        b"=1 1700000000000000000",
        &["Err(NoFields) =1 1700000000000000000"],
    );
    check_datagram(b"cpu,host=a val", &["Err(NoFields) cpu,host=a val"]);
    check_datagram(
        b"ue=1 1700000000000000000",
        &["Err(NoFields) ue=1 1700000000000000000"],
    );
}

#[test]
fn n5_4_garbage_lines() {
    check_datagram(
        b"m v=1\n\x00\x00\x00\n\xff\xfe\xfd\nm v=2\n\x00garbage v=1\n",
        &[
            "m | | v=F(1.0) | -",
            "Err(BadMeasurement) <x00><x00><x00>",
            "Err(InvalidUtf8) <xFF><xFE><xFD>",
            "m | | v=F(2.0) | -",
            "Err(BadMeasurement) <x00>garbage v=1",
        ],
    );
}

// ---- API helpers ----

#[test]
fn error_labels() {
    for (i, e) in ParseError::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
        assert!(!e.as_str().is_empty());
    }
}

#[test]
fn unescape_helpers() {
    assert!(unescaped_eq(br"hell\ o", Escape::Measurement, b"hell o"));
    assert!(!unescaped_eq(br"hell\ o", Escape::Measurement, br"hell\ o"));
    assert!(unescaped_eq(br"a\=b", Escape::Measurement, br"a\=b"));
    assert!(unescaped_eq(br"a\=b", Escape::TagKey, b"a=b"));
    assert!(!unescaped_eq(br"a\=b", Escape::TagKey, b"a=bc"));
    assert!(!unescaped_eq(br"a\=bc", Escape::TagKey, b"a=b"));
    assert!(unescaped_eq(b"plain", Escape::TagValue, b"plain"));
    assert!(unescaped_eq(br"end\", Escape::TagValue, br"end\"));
    let mut out = b"x".to_vec();
    unescape_into(br"a\,b\ c\=d\\e\", Escape::FieldKey, &mut out);
    assert_eq!(out, br"xa,b c=d\\e\");
    let mut out = Vec::new();
    unescape_str_into(br#"a\"b\\c\nd\"#, &mut out);
    assert_eq!(out, br#"a"b\c\nd\"#);
}

#[test]
fn line_helpers() {
    let line = scan_line(b"  cpu\\ x,b=2,a=1 v=1i,s=\"q\" 7").unwrap();
    assert_eq!(line.series_key(), b"cpu\\ x,b=2,a=1");
    assert_eq!(line.tag_pairs().count(), 2);
    assert_eq!(line.field_values().count(), 2);
    let line = scan_line(b"cpu v=1").unwrap();
    assert_eq!(line.series_key(), b"cpu");
    assert_eq!(tags(b"").count(), 0);
    assert_eq!(tags(b"novalue").count(), 0);
    assert_eq!(fields(b"a=").count(), 0);
}

// ---- Property tests ----

mod prop {
    use super::super::*;
    use proptest::prelude::*;

    const CASES: u32 = 1000;

    /// Name characters both parsers treat alike, with the escapes both share.
    fn name(first: &'static str) -> impl Strategy<Value = String> {
        (
            first,
            proptest::collection::vec(
                prop_oneof![
                    8 => "[a-zA-Z0-9_.:/-]",
                    1 => Just(r"\ ".to_string()),
                    1 => Just(r"\,".to_string()),
                ],
                0..8,
            ),
        )
            .prop_map(|(head, rest)| head + &rest.concat())
    }

    fn key_name() -> impl Strategy<Value = String> {
        (name("[a-zA-Z_]"), prop::bool::ANY).prop_map(|(n, eq)| if eq { n + r"\=x" } else { n })
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            (-1_000_000i64..1_000_000, 0u32..1000).prop_map(|(i, f)| format!("{i}.{f}")),
            any::<i64>().prop_map(|i| format!("{i}i")),
            any::<u64>().prop_map(|u| format!("{u}u")),
            any::<i32>().prop_map(|i| i.to_string()),
            (1u32..9, 0u32..99, -30i32..30).prop_map(|(a, b, e)| format!("{a}.{b}e{e}")),
            prop::sample::select(
                &["t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"][..]
            )
            .prop_map(str::to_string),
            proptest::collection::vec(
                prop_oneof![
                    6 => "[a-z ,=#]",
                    1 => Just(r#"\""#.to_string()),
                    1 => Just(r"\\".to_string()),
                    1 => Just(r"\t".to_string()),
                ],
                0..10
            )
            .prop_map(|parts| format!("\"{}\"", parts.concat())),
        ]
    }

    prop_compose! {
        /// A valid line in the grammar 1.x and the oracle share.
        fn line()(
            measurement in name("[a-zA-Z]"),
            tags in proptest::collection::vec((key_name(), name("[a-zA-Z0-9]")), 0..5),
            fields in proptest::collection::vec((key_name(), value()), 1..6),
            timestamp in proptest::option::of(-(1i64 << 62)..(1i64 << 62)),
            gap in " {1,3}",
        ) -> String {
            let mut s = measurement;
            for (i, (k, v)) in tags.iter().enumerate() {
                s.push_str(&format!(",{k}{i}={v}"));
            }
            s.push_str(&gap);
            let fields: Vec<String> =
                fields.iter().enumerate().map(|(i, (k, v))| format!("{k}{i}={v}")).collect();
            s.push_str(&fields.join(","));
            if let Some(ts) = timestamp {
                s.push_str(&format!("{gap}{ts}"));
            }
            s
        }
    }

    fn oracle_value(v: &influxdb_line_protocol::FieldValue<'_>) -> FieldValue<'static> {
        use influxdb_line_protocol::FieldValue as O;
        match v {
            O::I64(i) => FieldValue::Int(*i),
            O::U64(u) => FieldValue::UInt(*u),
            O::F64(f) => FieldValue::Float(*f),
            O::Boolean(b) => FieldValue::Bool(*b),
            O::String(_) => FieldValue::Str(b""),
        }
    }

    /// Compare our decoded line with the oracle's.
    fn agree(text: &str) -> Result<(), TestCaseError> {
        let ours = scan_line(text.as_bytes());
        let theirs: Vec<_> = influxdb_line_protocol::parse_lines(text).collect();
        prop_assert_eq!(theirs.len(), 1);
        let theirs = match &theirs[0] {
            Ok(l) => l,
            Err(e) => return Err(TestCaseError::fail(format!("oracle rejects {text:?}: {e}"))),
        };
        let ours = ours.map_err(|e| TestCaseError::fail(format!("we reject {text:?}: {e:?}")))?;
        let unescape = |t: &[u8], k| {
            let mut v = Vec::new();
            unescape_into(t, k, &mut v);
            String::from_utf8(v).unwrap()
        };
        prop_assert_eq!(
            unescape(ours.measurement, Escape::Measurement),
            theirs.series.measurement.as_str()
        );
        let our_tags: Vec<(String, String)> = tags(ours.tags)
            .map(|(k, v)| (unescape(k, Escape::TagKey), unescape(v, Escape::TagValue)))
            .collect();
        let their_tags: Vec<(String, String)> = theirs
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        prop_assert_eq!(our_tags, their_tags);
        let our_fields: Vec<_> = fields(ours.fields).collect();
        prop_assert_eq!(our_fields.len(), theirs.field_set.len());
        for ((k, v), (tk, tv)) in our_fields.iter().zip(theirs.field_set.iter()) {
            prop_assert_eq!(unescape(k, Escape::FieldKey), tk.as_str());
            match (v, tv) {
                (FieldValue::Str(s), influxdb_line_protocol::FieldValue::String(t)) => {
                    let mut plain = Vec::new();
                    unescape_str_into(s, &mut plain);
                    prop_assert_eq!(String::from_utf8(plain).unwrap(), t.as_str());
                }
                (v, tv) => prop_assert_eq!(*v, oracle_value(tv)),
            }
        }
        prop_assert_eq!(ours.timestamp, theirs.timestamp);
        Ok(())
    }

    /// Corruptions that make a valid line invalid for both parsers.
    fn corrupt(line: &str, how: usize) -> String {
        let (series, rest) = split_series(line);
        match how % 6 {
            // Trailing text after the timestamp or fields.
            0 => format!("{line} 12 x"),
            // No field section.
            1 => series.to_string(),
            // A field without a value.
            2 => format!("{series} {rest},k="),
            // A tag without a value.
            3 => format!("{series},k= {rest}"),
            // An unterminated string.
            4 => format!("{series} {rest},s=\"abc"),
            // An empty field key.
            _ => format!("{series} ={rest}"),
        }
    }

    fn split_series(line: &str) -> (&str, &str) {
        let b = line.as_bytes();
        let mut i = 0;
        while b[i] != b' ' || b[i - 1] == b'\\' {
            i += 1;
        }
        (&line[..i], line[i..].trim_start())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_oracle_on_valid_lines(text in line()) {
            agree(&text)?;
        }

        #[test]
        fn agrees_with_oracle_on_invalid_lines(text in line(), how in 0usize..6) {
            let bad = corrupt(&text, how);
            let theirs = influxdb_line_protocol::parse_lines(&bad).next();
            prop_assert!(matches!(theirs, Some(Err(_))), "oracle accepts {:?}", bad);
            prop_assert!(scan_line(bad.as_bytes()).is_err(), "we accept {:?}", bad);
        }

        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            exercise(&bytes);
        }

        #[test]
        fn never_panics_on_near_miss(
            parts in proptest::collection::vec(prop::sample::select(&[
                "a", "b", "=", ",", " ", "\\", "\"", "\n", "\r", "\t", "#", "0", "9", "-", ".",
                "e", "i", "u", "t", "true", "\u{0}", "\u{7f}", "é", "1i", "=1", "\"x\"",
            ][..]), 0..60)
        ) {
            exercise(parts.concat().as_bytes());
        }
    }

    /// Whether a line uses a form where 1.x (which we follow) and the v2-style
    /// oracle knowingly differ in what they accept: `\\` sequences (1.x
    /// escapes by "previous byte is a backslash", the oracle unescapes `\\`),
    /// floats like `.5`, `-.5`, `1.` (1.x accepts them, case 6), and
    /// trailing spaces after the fields.
    fn known_divergence(text: &str) -> bool {
        let b = text.as_bytes();
        text.contains(r"\\")
            // 1.x allows trailing spaces with or without a timestamp (case 37).
            || text.ends_with(' ')
            // A `.` without a digit on both sides (over-broad: names may hold dots).
            || (0..b.len()).any(|i| {
                b[i] == b'.'
                    && !(i > 0
                        && b[i - 1].is_ascii_digit()
                        && b.get(i + 1).is_some_and(u8::is_ascii_digit))
            })
    }

    /// Random edits of valid lines: whatever we accept, the oracle accepts
    /// too, with the same values, unless the line is a known divergence. The
    /// oracle accepts more than 1.x (commas in keys, `=` in tag values), so
    /// the other direction is not checked.
    #[test]
    fn mutations_we_accept_the_oracle_accepts() {
        let seeds = [
            "cpu,host=a,region=us-west value=1.0,i=5i,s=\"x y\",b=t 1434055562000000000",
            r"m\ x,k\=1=v\,2 f\ 1=-1.5e3,u=7u",
        ];
        let alphabet = b"a=, \\\"0-.eiutf9#";
        let mut rng = fastrand::Rng::with_seed(7);
        let mut compared = 0;
        for _ in 0..20_000 {
            let mut line = seeds[rng.usize(..seeds.len())].as_bytes().to_vec();
            for _ in 0..rng.usize(1..4) {
                let p = rng.usize(..line.len());
                match rng.u8(..3) {
                    0 => line.insert(p, alphabet[rng.usize(..alphabet.len())]),
                    1 => {
                        line.remove(p);
                    }
                    _ => line[p] = alphabet[rng.usize(..alphabet.len())],
                }
            }
            let text = String::from_utf8(line).expect("ASCII edits");
            // Through `lines`, which skips `#` comments as the oracle does.
            let accepted = matches!(lines(text.as_bytes()).next(), Some(Item::Line(_)));
            if accepted && !known_divergence(&text) {
                compared += 1;
                if let Err(e) = agree(&text) {
                    panic!("{text:?}: {e}");
                }
            }
        }
        // The edits must leave enough valid lines for the test to mean something.
        assert!(compared > 2_000, "only {compared} lines compared");
    }

    /// Walk everything the API offers and check the invariants of an accepted line.
    fn exercise(bytes: &[u8]) {
        let _ = scan_line(bytes);
        let mut out = Vec::new();
        for item in lines(bytes) {
            match item {
                Item::Line(l) => {
                    let again = scan_line(l.raw).expect("an accepted line rescans");
                    assert_eq!(again.fields, l.fields);
                    assert!(l.timestamp_offset <= l.raw.len());
                    assert!(!l.measurement.is_empty() && !l.fields.is_empty());
                    unescape_into(l.measurement, Escape::Measurement, &mut out);
                    assert!(l.series_key().starts_with(l.measurement));
                    for (k, v) in tags(l.tags) {
                        assert!(!k.is_empty() && !v.is_empty());
                        unescape_into(k, Escape::TagKey, &mut out);
                        assert!(unescaped_eq(v, Escape::TagValue, &{
                            let mut p = Vec::new();
                            unescape_into(v, Escape::TagValue, &mut p);
                            p
                        }));
                    }
                    let n = fields(l.fields).count();
                    assert!(n > 0, "no fields decoded from accepted {:?}", l.raw);
                    for (_, v) in fields(l.fields) {
                        if let FieldValue::Str(s) = v {
                            unescape_str_into(s, &mut out);
                        }
                    }
                }
                Item::Reject { raw, .. } => assert!(!raw.is_empty()),
            }
        }
        let _ = tags(bytes).count();
        let _ = fields(bytes).count();
        let _ = has_duplicate_field(bytes);
    }
}

// ---- The shards' path (`Scanner`) against `lines` ----

mod scanner {
    use super::super::*;
    use proptest::prelude::*;

    /// `Scanner::lines` yields item for item what `lines` yields: same
    /// verdicts, same slices (same addresses, so the same line boundaries).
    fn same(datagram: &[u8], scanner: &mut Scanner) -> Result<(), TestCaseError> {
        let ours: Vec<Item> = scanner.lines(datagram).collect();
        let theirs: Vec<Item> = lines(datagram).collect();
        prop_assert_eq!(&ours, &theirs, "{:?}", String::from_utf8_lossy(datagram));
        // Equal contents could still come from different places: compare addresses too.
        let start = |item: &Item| match *item {
            Item::Line(l) => l.raw.as_ptr(),
            Item::Reject { raw, .. } => raw.as_ptr(),
        };
        for (a, b) in ours.iter().zip(&theirs) {
            prop_assert_eq!(start(a), start(b));
        }
        Ok(())
    }

    const PIECES: &[&str] = &[
        "cpu,host=a,region=eu usage=1.5,idle=98i 1795985842709494595",
        "mem free=12u,ok=t",
        "disk,path=/x v=\"multi\nline\" 5",
        "net v=\"open",
        "# comment",
        "   ",
        "\t# indented comment",
        "  cpu v=1",
        "cpu v=1\r",
        "# bad\rcomment",
        "cpu,a=1,a=2 v=1",
        "cpu v=1e3",
        "cpu v=é",
        "",
    ];

    /// The datagram of `pieces` (indices into `from`), each but perhaps the
    /// last followed by its line ending, then `edits` (position, byte).
    fn datagram(
        from: &[&str],
        pieces: &[usize],
        ending: impl Fn(usize) -> &'static str,
        trailing_newline: bool,
        edits: Vec<(prop::sample::Index, u8)>,
    ) -> Vec<u8> {
        let mut d = Vec::new();
        for (i, &p) in pieces.iter().enumerate() {
            d.extend_from_slice(from[p].as_bytes());
            if i + 1 < pieces.len() || trailing_newline {
                d.extend_from_slice(ending(i).as_bytes());
            }
        }
        for (at, byte) in edits {
            if !d.is_empty() {
                let p = at.index(d.len());
                d[p] = byte;
            }
        }
        d
    }

    /// Plain lines (every byte one the fast path takes), some valid, some not.
    const PLAIN_PIECES: &[&str] = &[
        "cpu,host=a,region=eu usage=1.5,idle=98i 1795985842709494595",
        "cpu,host=host0012,region=eu-west-1,cpu=cpu3 usage_user=12.22,usage_system=22.68,usage_idle=64.22,usage_iowait=85.71,seq=000000000012i 1764547200000000000",
        "mem free=12u,ok=t",
        "mem,a=1,b=2 x=-3i,y=.5,z=F -12",
        "# comment",
        "   ",
        "  cpu v=1",
        "cpu,a=1,a=2 v=1",
        "cpu v=1e3",
        "cpu v=1 2 3",
        "cpu,=x v=1",
        "cpu v=1 99999999999999999999",
        "",
    ];

    #[test]
    fn plain_datagrams_are_classified_whole() {
        let mut scanner = Scanner::new();
        assert!(scanner.takes_whole(PLAIN_PIECES.join("\n").as_bytes()));
        for declined in [
            "cpu v=1\r\n",
            "cpu v=\"s\"",
            "\tcpu v=1",
            "cpu\\ x v=1",
            "cpu v=é",
        ] {
            assert!(!scanner.takes_whole(declined.as_bytes()), "{declined:?}");
            same(declined.as_bytes(), &mut scanner).unwrap();
        }
    }

    #[test]
    fn long_lines_and_block_edges() {
        let mut scanner = Scanner::new();
        for len in [62, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025, 1100, 5000] {
            for crlf in [false, true] {
                let mut line = String::from("m,k=v f=1,g=");
                while line.len() + 1 + (crlf as usize) < len {
                    line.push('7');
                }
                line.push('i');
                let mut d = line.clone();
                d.push_str(if crlf { "\r\n" } else { "\n" });
                d.push_str(&line);
                d.push('\n');
                d.push_str(&line);
                same(d.as_bytes(), &mut scanner).unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Datagrams built from typical and awkward lines, with edits.
        #[test]
        fn scanner_matches_lines(
            pieces in proptest::collection::vec(0..PIECES.len(), 1..12),
            crlf in proptest::collection::vec(any::<bool>(), 12),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(
                &b"a=, 0\n\r\"\\\t#.-i"[..])), 0..4),
            trailing_newline in any::<bool>(),
        ) {
            let d = datagram(PIECES, &pieces, |i| if crlf[i] { "\r\n" } else { "\n" },
                trailing_newline, edits);
            let mut scanner = Scanner::new();
            same(&d, &mut scanner)?;
        }

        /// Datagrams of plain lines only (no CR, TAB, quote, backslash or
        /// other declined byte), so the whole datagram is classified at once,
        /// with edits from the same bytes: line ends, blocks edges and
        /// invalid lines on the datagram's masks.
        #[test]
        fn scanner_matches_lines_on_plain_datagrams(
            pieces in proptest::collection::vec(0..PLAIN_PIECES.len(), 1..40),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(
                &b"a=, 0\n#.-iu9t"[..])), 0..6),
            trailing_newline in any::<bool>(),
        ) {
            let d = datagram(PLAIN_PIECES, &pieces, |_| "\n", trailing_newline, edits);
            let mut scanner = Scanner::new();
            prop_assert!(scanner.takes_whole(&d));
            same(&d, &mut scanner)?;
        }

        /// Plain bytes, newline-rich, over many blocks.
        #[test]
        fn scanner_matches_lines_on_plain_bytes(bytes in proptest::collection::vec(
            prop_oneof![8 => prop::sample::select(&b"ab=, 01.-i\n"[..]), 1 => (0x20u8..0x7f).prop_filter("a byte the fast path takes", |b| *b != b'"' && *b != b'\\')], 0..2000)) {
            let mut scanner = Scanner::new();
            same(&bytes, &mut scanner)?;
        }

        /// Arbitrary bytes, newline-rich.
        #[test]
        fn scanner_matches_lines_on_bytes(bytes in proptest::collection::vec(
            prop_oneof![8 => prop::sample::select(&b"ab=, 01.-i\n"[..]), 1 => any::<u8>()], 0..400)) {
            let mut scanner = Scanner::new();
            same(&bytes, &mut scanner)?;
        }
    }
}

#[test]
fn escaped_says_whether_the_line_holds_a_backslash() {
    for (line, escaped) in [
        ("cpu,host=a v=1 1", false),
        (r"cpu\ x,host=a v=1", true),
        (r"cpu,h\,x=a v=1", true),
        (r#"cpu v="a\"b""#, true),
        (r#"cpu v="plain string" 1"#, false),
    ] {
        assert_eq!(
            scan_line(line.as_bytes()).unwrap().escaped,
            escaped,
            "{line}"
        );
        assert_eq!(
            scan_line_full(line.as_bytes()).unwrap().escaped,
            escaped,
            "{line}"
        );
    }
}
