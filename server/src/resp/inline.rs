//! Splitting an inline command line into arguments, with the quoting rules of
//! Redis's `sdssplitargs` (so `SET k "a b\x41"` means what redis-cli users expect).

use super::ProtocolError;

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends each argument of `line` to `out` and its range in `out` to `ranges`.
pub(crate) fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<(usize, usize)>,
) -> Result<(), ProtocolError> {
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let start = out.len();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if c == b'\\' && i + 3 < line.len() && line[i + 1] == b'x' {
                        if let (Some(h), Some(l)) = (hex_value(line[i + 2]), hex_value(line[i + 3]))
                        {
                            out.push(h * 16 + l);
                            i += 4;
                            continue;
                        }
                    }
                    if c == b'\\' && i + 1 < line.len() {
                        out.push(match line[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                        continue;
                    }
                    if c == b'"' {
                        // A closing quote must be followed by a space or the end.
                        if i + 1 < line.len() && !is_space(line[i + 1]) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    out.push(c);
                    i += 1;
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if c == b'\\' && i + 1 < line.len() && line[i + 1] == b'\'' {
                        out.push(b'\'');
                        i += 2;
                        continue;
                    }
                    if c == b'\'' {
                        if i + 1 < line.len() && !is_space(line[i + 1]) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    out.push(c);
                    i += 1;
                }
            }
            _ => {
                while i < line.len() && !is_space(line[i]) {
                    out.push(line[i]);
                    i += 1;
                }
            }
        }
        ranges.push((start, out.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut out = Vec::new();
        let mut ranges = Vec::new();
        split_args(line.as_bytes(), &mut out, &mut ranges)?;
        Ok(ranges.iter().map(|&(s, e)| out[s..e].to_vec()).collect())
    }

    #[test]
    fn plain_words_split_on_whitespace() {
        assert_eq!(
            split("  SET  k\tv ").unwrap(),
            vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]
        );
        assert!(split("   ").unwrap().is_empty());
    }

    #[test]
    fn double_quotes_understand_escapes() {
        assert_eq!(
            split(r#"SET k "a b\x41\n""#).unwrap()[2],
            b"a bA\n".to_vec()
        );
        assert_eq!(split(r#"ECHO """#).unwrap()[1], b"".to_vec());
    }

    #[test]
    fn single_quotes_keep_backslashes() {
        assert_eq!(split(r"ECHO 'a\n\'b'").unwrap()[1], br"a\n'b".to_vec());
    }

    #[test]
    fn unterminated_or_glued_quotes_are_refused() {
        assert_eq!(split(r#"SET k "abc"#), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(
            split(r#"SET k "abc"x"#),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(split("SET k 'abc"), Err(ProtocolError::UnbalancedQuotes));
    }
}
