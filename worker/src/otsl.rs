//! OTSL (the table recognition step's token language) to an HTML table.
//!
//! Tokens: `<fcel>` a cell with text, `<ecel>` an empty cell, `<lcel>` merges with the cell to
//! its left, `<ucel>` with the cell above, `<xcel>` with both, `<nl>` ends a row. Text follows the
//! token of its cell. Short rows are padded with empty cells, as MinerU's `convert_otsl_to_html`
//! does, and an answer that already is an HTML table passes through.

const TOKENS: [(&str, Token); 6] = [
    ("<fcel>", Token::Full),
    ("<ecel>", Token::Empty),
    ("<lcel>", Token::Left),
    ("<ucel>", Token::Up),
    ("<xcel>", Token::Cross),
    ("<nl>", Token::NewLine),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Full,
    Empty,
    Left,
    Up,
    Cross,
    NewLine,
}

/// One grid position: its token and the text after it.
#[derive(Debug, Clone)]
struct Slot<'a> {
    token: Token,
    text: &'a str,
}

/// A cell as written to HTML: its top-left grid position, span and text.
struct Cell<'a> {
    row: usize,
    col: usize,
    row_span: usize,
    col_span: usize,
    text: &'a str,
}

/// Converts an OTSL answer to `<table>…</table>`; an answer without cells gives an empty string.
pub fn otsl_to_html(otsl: &str) -> String {
    if otsl.starts_with("<table") && otsl.ends_with("</table>") {
        return otsl.to_owned();
    }
    let rows = grid(otsl);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let at = |r: usize, c: usize| {
        rows.get(r)
            .and_then(|row| row.get(c))
            .map_or(Token::Empty, |s| s.token)
    };

    let mut cells = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        for (c, slot) in row.iter().enumerate() {
            if !matches!(slot.token, Token::Full | Token::Empty) {
                continue;
            }
            let merges_right = |t| matches!(t, Token::Left | Token::Cross);
            let merges_down = |t| matches!(t, Token::Up | Token::Cross);
            let col_span = 1 + if merges_right(at(r, c + 1)) {
                (c + 1..cols)
                    .take_while(|&k| merges_right(at(r, k)))
                    .count()
            } else {
                0
            };
            let row_span = 1 + if merges_down(at(r + 1, c)) {
                (r + 1..rows.len())
                    .take_while(|&k| merges_down(at(k, c)))
                    .count()
            } else {
                0
            };
            let text = if slot.token == Token::Full {
                slot.text
            } else {
                ""
            };
            cells.push(Cell {
                row: r,
                col: c,
                row_span,
                col_span,
                text,
            });
        }
    }
    if cells.is_empty() {
        return String::new();
    }

    // Later cells overwrite earlier ones where spans overlap; a cell is written at the grid
    // position where it still owns its top-left corner.
    let mut owner = vec![vec![None; cols]; rows.len()];
    for (i, cell) in cells.iter().enumerate() {
        for row in owner.iter_mut().skip(cell.row).take(cell.row_span) {
            for slot in row.iter_mut().skip(cell.col).take(cell.col_span) {
                *slot = Some(i);
            }
        }
    }
    let mut html = String::from("<table>");
    for (r, row) in owner.iter().enumerate() {
        html.push_str("<tr>");
        for (c, slot) in row.iter().enumerate() {
            let Some(cell) = slot.map(|i| &cells[i]) else {
                // A padded position no cell covers: MinerU emits an empty cell there.
                html.push_str("<td></td>");
                continue;
            };
            if cell.row != r || cell.col != c {
                continue;
            }
            html.push_str("<td");
            if cell.row_span > 1 {
                html.push_str(&format!(" rowspan=\"{}\"", cell.row_span));
            }
            if cell.col_span > 1 {
                html.push_str(&format!(" colspan=\"{}\"", cell.col_span));
            }
            html.push('>');
            escape_into(&mut html, cell.text.trim());
            html.push_str("</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

/// Splits the answer into rows of slots, padding short rows with empty cells.
fn grid(otsl: &str) -> Vec<Vec<Slot<'_>>> {
    let mut rows: Vec<Vec<Slot<'_>>> = Vec::new();
    let mut row: Vec<Slot<'_>> = Vec::new();
    let mut rest = otsl;
    while let Some((offset, len, token)) = next_token(rest) {
        let text_after = &rest[offset + len..];
        let next = next_token(text_after).map_or(text_after.len(), |(o, _, _)| o);
        match token {
            Token::NewLine => {
                if !row.is_empty() {
                    rows.push(std::mem::take(&mut row));
                }
            }
            token => row.push(Slot {
                token,
                text: &text_after[..next],
            }),
        }
        rest = text_after;
    }
    if !row.is_empty() {
        rows.push(row);
    }
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    for row in &mut rows {
        row.resize(
            cols,
            Slot {
                token: Token::Empty,
                text: "",
            },
        );
    }
    rows
}

/// The earliest OTSL token in `s`: (byte offset, token length, token).
fn next_token(s: &str) -> Option<(usize, usize, Token)> {
    let mut search = s;
    let mut base = 0;
    while let Some(pos) = search.find('<') {
        let at = &search[pos..];
        if let Some(&(text, token)) = TOKENS.iter().find(|(text, _)| at.starts_with(text)) {
            return Some((base + pos, text.len(), token));
        }
        base += pos + 1;
        search = &search[pos + 1..];
    }
    None
}

/// HTML-escapes text as Python's `html.escape` does (quotes included).
fn escape_into(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            other => out.push(other),
        }
    }
}
