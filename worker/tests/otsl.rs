//! OTSL → HTML, by table. Expected strings are those of MinerU's `convert_otsl_to_html`, except
//! where noted.

use mineru_worker::otsl::otsl_to_html;

#[test]
fn converts_otsl_like_mineru() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "plain grid",
            "<fcel>a<fcel>b<nl><fcel>c<fcel>d<nl>",
            "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>",
        ),
        (
            "lcel spans columns",
            "<fcel>wide<lcel><nl><fcel>x<fcel>y<nl>",
            "<table><tr><td colspan=\"2\">wide</td></tr><tr><td>x</td><td>y</td></tr></table>",
        ),
        (
            "ucel spans rows",
            "<fcel>tall<fcel>b<nl><ucel><fcel>d<nl>",
            "<table><tr><td rowspan=\"2\">tall</td><td>b</td></tr><tr><td>d</td></tr></table>",
        ),
        (
            "xcel spans both",
            "<fcel>big<lcel><fcel>c<nl><ucel><xcel><fcel>f<nl>",
            "<table><tr><td rowspan=\"2\" colspan=\"2\">big</td><td>c</td></tr><tr><td>f</td></tr></table>",
        ),
        (
            "short rows are padded with empty cells",
            "<fcel>a<fcel>b<fcel>c<nl><fcel>d<nl>",
            "<table><tr><td>a</td><td>b</td><td>c</td></tr><tr><td>d</td><td></td><td></td></tr></table>",
        ),
        (
            "text is HTML-escaped, quotes included",
            "<fcel>a & b<fcel>x<y \"q\" 'z'<nl>",
            "<table><tr><td>a &amp; b</td><td>x&lt;y &quot;q&quot; &#x27;z&#x27;</td></tr></table>",
        ),
        (
            "empty cells drop stray text, cell text is trimmed",
            "<ecel><fcel> spaced  <nl><ecel>ignored<ecel><nl>",
            "<table><tr><td></td><td>spaced</td></tr><tr><td></td><td></td></tr></table>",
        ),
        (
            "a missing final <nl> still closes the row",
            "<fcel>a<fcel>b",
            "<table><tr><td>a</td><td>b</td></tr></table>",
        ),
        (
            "a span token without a cell to extend leaves an empty cell",
            "<lcel><fcel>x<nl>",
            "<table><tr><td></td><td>x</td></tr></table>",
        ),
        (
            "an HTML table passes through",
            "<table><tr><td>x</td></tr></table>",
            "<table><tr><td>x</td></tr></table>",
        ),
        ("no answer is no table", "", ""),
        ("text without tokens is no table", "just text", ""),
        (
            // MinerU loses the second row's text here; empty rows are simply skipped.
            "empty rows are skipped",
            "<fcel>a<nl><nl><fcel>b<nl>",
            "<table><tr><td>a</td></tr><tr><td>b</td></tr></table>",
        ),
    ];
    for (name, otsl, html) in cases {
        assert_eq!(otsl_to_html(otsl), *html, "case: {name}");
    }
}

#[test]
fn survives_hostile_input() {
    for otsl in [
        "<ucel><ucel><nl><xcel><lcel>",
        "<fcel><",
        "<fcel>\u{0}\u{fffd}<nl>é<ecel>",
        "<nl><nl><nl>",
        "<lcel><lcel><lcel><nl><ucel><ucel><ucel><nl>",
    ] {
        let html = otsl_to_html(otsl);
        assert!(
            html.is_empty() || html.starts_with("<table>"),
            "{otsl:?} gave {html:?}"
        );
    }
}
