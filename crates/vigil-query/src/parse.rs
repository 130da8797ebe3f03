//! The `q=` expression parser and printer.
//!
//! Two stages: a lexer turns the text into tokens — parentheses, the keywords `AND`, `OR`,
//! `NOT`, a lone `*`, and whole comparisons (`path op value`, which is where all the lexical
//! subtlety lives: values may contain `:` and `-`) — and a recursive-descent parser applies
//! precedence `NOT` > `AND` > `OR`. Recursion only happens at `(` and `NOT`, both bounded by
//! [`QueryLimits::max_depth`], so no input can exhaust the stack.

use std::iter::Peekable;
use std::vec::IntoIter;

use vigil_event::resolve_path_alias;

use crate::ast::{ends_bare_value, is_op_char};
use crate::eval::is_time_path;
use crate::time::TimeLiteral;
use crate::{CmpOp, Expr, Literal, QueryError, QueryLimits};

/// Nesting is capped here whatever [`QueryLimits::max_depth`] says: parsing, printing,
/// evaluating and dropping an expression all recurse once per level.
pub(crate) const MAX_DEPTH_CEILING: usize = 256;

/// Parses a `q=` expression (grammar in `docs/query.md`). Field paths are alias-resolved.
///
/// An empty (or all-whitespace) expression is [`Expr::All`]. Errors carry the byte offset of
/// the problem and say what was expected there.
pub fn parse_expr(input: &str, limits: &QueryLimits) -> Result<Expr, QueryError> {
    if input.len() > limits.max_expr_bytes {
        return Err(QueryError::TooComplex(format!(
            "the expression is {} bytes; the limit is {}",
            input.len(),
            limits.max_expr_bytes
        )));
    }
    let tokens = Lexer { input, pos: 0 }.run()?;
    let terms = tokens
        .iter()
        .filter(|t| matches!(t.tok, Tok::Term(_)))
        .count();
    if terms > limits.max_terms {
        return Err(QueryError::TooComplex(format!(
            "the expression has {terms} comparisons; the limit is {}",
            limits.max_terms
        )));
    }
    if tokens.is_empty() {
        return Ok(Expr::All);
    }
    let mut parser = Parser {
        tokens: tokens.into_iter().peekable(),
        end: input.len(),
        max_depth: limits.max_depth.min(MAX_DEPTH_CEILING),
    };
    let expr = parser.or(0)?;
    match parser.tokens.next() {
        None => Ok(expr),
        Some(t) => Err(syntax(
            t.offset,
            format!("unexpected {} with no matching `(`", t.tok.describe()),
        )),
    }
}

/// True for a field path as the grammar writes it: `[A-Za-z0-9_.-]+`.
pub(crate) fn is_path(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_path_char)
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn syntax(offset: usize, message: impl Into<String>) -> QueryError {
    QueryError::Syntax {
        offset,
        message: message.into(),
    }
}

#[derive(Debug)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    /// A lone `*`: every event.
    All,
    /// A whole comparison.
    Term(Expr),
}

impl Tok {
    fn describe(&self) -> &'static str {
        match self {
            Self::LParen => "`(`",
            Self::RParen => "`)`",
            Self::And => "`AND`",
            Self::Or => "`OR`",
            Self::Not => "`NOT`",
            Self::All => "`*`",
            Self::Term(_) => "a filter",
        }
    }
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    /// Byte offset of the token's first character.
    offset: usize,
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn run(mut self) -> Result<Vec<Token>, QueryError> {
        let mut tokens = Vec::new();
        loop {
            self.skip_whitespace();
            let start = self.pos;
            let Some(c) = self.peek() else {
                return Ok(tokens);
            };
            let tok = match c {
                '(' => {
                    self.bump(c);
                    Tok::LParen
                }
                ')' => {
                    self.bump(c);
                    Tok::RParen
                }
                '*' => {
                    self.bump(c);
                    if !self.at_token_end() {
                        return Err(syntax(
                            start,
                            "`*` on its own matches every event; a prefix match puts it after a value: `field:value*`",
                        ));
                    }
                    Tok::All
                }
                c if is_path_char(c) => self.word()?,
                '&' | '|' | '!' => {
                    let (written, keyword) = match c {
                        '&' => ("&", "AND"),
                        '|' => ("|", "OR"),
                        _ => ("!", "NOT"),
                    };
                    return Err(syntax(
                        start,
                        format!("unexpected `{written}`: write {keyword}"),
                    ));
                }
                '"' => {
                    return Err(syntax(
                        start,
                        "expected a field path before the quoted value: write `field:\"value\"`",
                    ));
                }
                c if is_op_char(c) => {
                    return Err(syntax(start, format!("expected a field path before `{c}`")));
                }
                c => {
                    return Err(syntax(
                        start,
                        format!(
                            "unexpected `{c}`: expected a filter `field:value`, `(`, `)`, AND, OR or NOT"
                        ),
                    ));
                }
            };
            tokens.push(Token { tok, offset: start });
        }
    }

    fn peek(&self) -> Option<char> {
        self.input
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self, c: char) {
        self.pos += c.len_utf8();
    }

    fn skip_whitespace(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.bump(c);
        }
    }

    /// End of input, whitespace or a parenthesis: where a token must stop.
    fn at_token_end(&self) -> bool {
        self.peek().is_none_or(ends_bare_value)
    }

    /// A run of path characters: a keyword, or the path of a comparison.
    fn word(&mut self) -> Result<Tok, QueryError> {
        let start = self.pos;
        while let Some(c) = self.peek().filter(|c| is_path_char(*c)) {
            self.bump(c);
        }
        let word = &self.input[start..self.pos];
        match self.peek() {
            Some(c) if is_op_char(c) => return self.comparison(start, word),
            Some(c) if !ends_bare_value(c) => {
                return Err(syntax(
                    self.pos,
                    format!(
                        "unexpected `{c}` after `{word}`: field paths use letters, digits, `_`, `.` and `-`, \
                         followed by `:`, `=`, `>`, `>=`, `<` or `<=`"
                    ),
                ));
            }
            _ => {}
        }
        for (keyword, tok) in [("AND", Tok::And), ("OR", Tok::Or), ("NOT", Tok::Not)] {
            if word.eq_ignore_ascii_case(keyword) {
                return Ok(tok);
            }
        }
        // A word standing alone. Say whether it looks like `field >= value` with spaces.
        let after = self.pos;
        self.skip_whitespace();
        if let Some(c) = self.peek().filter(|c| is_op_char(*c)) {
            let op = if matches!(c, '<' | '>') && self.input[self.pos + 1..].starts_with('=') {
                format!("{c}=")
            } else {
                c.to_string()
            };
            return Err(syntax(
                after,
                format!(
                    "unexpected space between `{word}` and `{op}`: write `{word}{op}value` without spaces"
                ),
            ));
        }
        Err(syntax(
            start,
            format!(
                "expected an operator after `{word}`: a filter is `field:value` (or `=`, `>`, `>=`, `<`, `<=`); \
                 free-text search is not supported"
            ),
        ))
    }

    /// `path op value`, with `self.pos` at the operator.
    fn comparison(&mut self, path_start: usize, written_path: &str) -> Result<Tok, QueryError> {
        let rest = &self.input[self.pos..];
        let (op, op_len) = if rest.starts_with(">=") {
            (CmpOp::Ge, 2)
        } else if rest.starts_with("<=") {
            (CmpOp::Le, 2)
        } else if rest.starts_with('>') {
            (CmpOp::Gt, 1)
        } else if rest.starts_with('<') {
            (CmpOp::Lt, 1)
        } else {
            (CmpOp::Eq, 1)
        };
        self.pos += op_len;
        let written = &self.input[path_start..self.pos];
        let path = resolve_path_alias(written_path).into_owned();
        let value_start = self.pos;

        let expr = match self.peek() {
            None => {
                return Err(syntax(
                    value_start,
                    format!("expected a value after `{written}`"),
                ));
            }
            Some(c) if c.is_whitespace() || c == ')' => {
                return Err(syntax(
                    value_start,
                    format!("expected a value after `{written}`"),
                ));
            }
            Some('(') => {
                return Err(syntax(
                    value_start,
                    format!(
                        "expected a value after `{written}`: to match one of several values write \
                         `({written}a OR {written}b)`"
                    ),
                ));
            }
            Some('"') => {
                let raw = self.quoted()?;
                let prefix = self.peek() == Some('*');
                if prefix {
                    self.bump('*');
                }
                if !self.at_token_end() {
                    return Err(syntax(
                        self.pos,
                        "expected a space or `)` after the closing `\"`",
                    ));
                }
                if op.is_range() {
                    return Err(syntax(
                        value_start,
                        format!(
                            "a range takes an unquoted number or time after `{written}`: remove the quotes"
                        ),
                    ));
                }
                if prefix {
                    Expr::Prefix { path, prefix: raw }
                } else {
                    Expr::Compare {
                        path,
                        op,
                        value: Literal::quoted(raw),
                    }
                }
            }
            Some(c) if is_op_char(c) => {
                return Err(syntax(
                    value_start,
                    format!(
                        "a value cannot start with `{c}`: for a range write `{written_path}>=value`, \
                         or quote the value"
                    ),
                ));
            }
            Some(_) => {
                while let Some(c) = self.peek().filter(|c| !ends_bare_value(*c)) {
                    self.bump(c);
                }
                let raw = &self.input[value_start..self.pos];
                self.bare_value(path, op, written, raw, value_start)?
            }
        };
        Ok(Tok::Term(expr))
    }

    fn bare_value(
        &self,
        path: String,
        op: CmpOp,
        written: &str,
        raw: &str,
        at: usize,
    ) -> Result<Expr, QueryError> {
        if let Some(i) = raw.find('"') {
            return Err(syntax(
                at + i,
                "unexpected `\"` inside a value: quote the whole value instead",
            ));
        }
        if let Some(i) = raw.find('*') {
            if i + 1 != raw.len() {
                return Err(syntax(
                    at + i,
                    "`*` is only allowed at the end of a value, as a prefix match",
                ));
            }
            if op.is_range() {
                return Err(syntax(
                    at + i,
                    format!(
                        "a range cannot use `*`: expected a number or a time after `{written}`"
                    ),
                ));
            }
            return Ok(match &raw[..i] {
                "" => Expr::Exists { path },
                prefix => Expr::Prefix {
                    path,
                    prefix: prefix.to_string(),
                },
            });
        }
        let value = Literal::bare(raw);
        if op.is_range() {
            if is_time_path(&path) {
                if TimeLiteral::parse(raw).is_none() {
                    return Err(syntax(
                        at,
                        format!(
                            "expected a time after `{written}`, found `{raw}`: use RFC 3339 (2024-05-01T10:00:00Z), \
                             a date (2024-05-01), a relative time (-15m, -24h, -7d) or epoch seconds"
                        ),
                    ));
                }
            } else if value.as_number().is_none() && TimeLiteral::parse(raw).is_none() {
                return Err(syntax(
                    at,
                    format!("expected a number or a time after `{written}`, found `{raw}`"),
                ));
            }
        }
        Ok(Expr::Compare { path, op, value })
    }

    /// A double-quoted string with `\"` and `\\` escapes; `self.pos` at the opening quote.
    fn quoted(&mut self) -> Result<String, QueryError> {
        let open = self.pos;
        self.bump('"');
        let mut out = String::new();
        while let Some(c) = self.peek() {
            let at = self.pos;
            self.bump(c);
            match c {
                '"' => return Ok(out),
                '\\' => match self.peek() {
                    Some(e @ ('"' | '\\')) => {
                        self.bump(e);
                        out.push(e);
                    }
                    Some(e) => {
                        return Err(syntax(
                            at,
                            format!(
                                "unknown escape `\\{e}` in a quoted value: only `\\\"` and `\\\\` are escapes"
                            ),
                        ));
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(syntax(
            open,
            "unterminated quoted value: missing the closing `\"`",
        ))
    }
}

struct Parser {
    tokens: Peekable<IntoIter<Token>>,
    /// Input length: the offset reported for "expected … at the end".
    end: usize,
    max_depth: usize,
}

impl Parser {
    /// `or = and { OR and }`
    fn or(&mut self, depth: usize) -> Result<Expr, QueryError> {
        let mut items = Vec::new();
        push_flat(&mut items, self.and(depth)?, |e| matches!(e, Expr::Or(_)));
        while let Some(t) = self.tokens.next_if(|t| matches!(t.tok, Tok::Or)) {
            self.expect_operand("OR", t.offset)?;
            push_flat(&mut items, self.and(depth)?, |e| matches!(e, Expr::Or(_)));
        }
        Ok(collapse(items, Expr::Or))
    }

    /// `and = unary { [AND] unary }`
    fn and(&mut self, depth: usize) -> Result<Expr, QueryError> {
        let mut items = Vec::new();
        push_flat(&mut items, self.unary(depth)?, |e| {
            matches!(e, Expr::And(_))
        });
        loop {
            match self.tokens.peek().map(|t| &t.tok) {
                Some(Tok::And) => {
                    let offset = self.tokens.next().map_or(self.end, |t| t.offset);
                    self.expect_operand("AND", offset)?;
                }
                Some(Tok::Not | Tok::LParen | Tok::Term(_) | Tok::All) => {}
                _ => break,
            }
            push_flat(&mut items, self.unary(depth)?, |e| {
                matches!(e, Expr::And(_))
            });
        }
        Ok(collapse(items, Expr::And))
    }

    /// `unary = NOT unary | "(" or ")" | comparison | "*"`
    fn unary(&mut self, depth: usize) -> Result<Expr, QueryError> {
        let Some(token) = self.tokens.next() else {
            return Err(syntax(self.end, "expected a filter"));
        };
        match token.tok {
            Tok::Term(expr) => Ok(expr),
            Tok::All => Ok(Expr::All),
            Tok::Not => {
                self.enter(depth, token.offset)?;
                self.expect_operand("NOT", token.offset)?;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Tok::LParen => {
                self.enter(depth, token.offset)?;
                if let Some(close) = self.tokens.next_if(|t| matches!(t.tok, Tok::RParen)) {
                    return Err(syntax(
                        close.offset,
                        "empty parentheses: expected a filter between `(` and `)`",
                    ));
                }
                let inner = self.or(depth + 1)?;
                match self.tokens.next() {
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => Ok(inner),
                    _ => Err(syntax(
                        self.end,
                        format!("missing `)` to close the `(` at offset {}", token.offset),
                    )),
                }
            }
            Tok::RParen => Err(syntax(token.offset, "unexpected `)` with no matching `(`")),
            Tok::And | Tok::Or => Err(syntax(
                token.offset,
                format!("{} needs a filter before it", token.tok.describe()),
            )),
        }
    }

    fn enter(&self, depth: usize, offset: usize) -> Result<(), QueryError> {
        if depth >= self.max_depth {
            return Err(QueryError::TooComplex(format!(
                "nesting at offset {offset} is deeper than {} levels of parentheses and NOT",
                self.max_depth
            )));
        }
        Ok(())
    }

    /// After `keyword`, the next token must start a filter.
    fn expect_operand(&mut self, keyword: &str, keyword_offset: usize) -> Result<(), QueryError> {
        match self.tokens.peek() {
            Some(Token {
                tok: Tok::Not | Tok::LParen | Tok::Term(_) | Tok::All,
                ..
            }) => Ok(()),
            Some(t) => Err(syntax(
                t.offset,
                format!(
                    "expected a filter after `{keyword}` (offset {keyword_offset}), found {}",
                    t.tok.describe()
                ),
            )),
            None => Err(syntax(
                self.end,
                format!("expected a filter after `{keyword}`"),
            )),
        }
    }
}

/// Appends `expr` to `items`, splicing in its children when it is the same connective.
fn push_flat(items: &mut Vec<Expr>, expr: Expr, same: impl Fn(&Expr) -> bool) {
    if same(&expr) {
        if let Expr::And(children) | Expr::Or(children) = expr {
            items.extend(children);
        }
    } else {
        items.push(expr);
    }
}

fn collapse(mut items: Vec<Expr>, connective: fn(Vec<Expr>) -> Expr) -> Expr {
    match items.len() {
        1 => items.pop().unwrap_or(Expr::All),
        _ => connective(items),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(s: &str) -> Result<Expr, QueryError> {
        parse_expr(s, &QueryLimits::default())
    }

    fn ok(s: &str) -> Expr {
        match parse(s) {
            Ok(e) => e,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    /// The error message and offset for `s`.
    fn err(s: &str) -> (usize, String) {
        match parse(s) {
            Err(QueryError::Syntax { offset, message }) => (offset, message),
            other => panic!("{s:?} should be a syntax error, got {other:?}"),
        }
    }

    fn cmp(path: &str, op: CmpOp, value: Literal) -> Expr {
        Expr::Compare {
            path: path.into(),
            op,
            value,
        }
    }

    fn eq(path: &str, raw: &str) -> Expr {
        cmp(path, CmpOp::Eq, Literal::bare(raw))
    }

    #[test]
    fn parses_the_documented_example() {
        let q = r#"severity>=7 AND (type:login.failed OR type:"account.deactivated") AND NOT actor.ip:10.* AND details.amount>100"#;
        let expected = Expr::And(vec![
            cmp("severity", CmpOp::Ge, Literal::bare("7")),
            Expr::Or(vec![
                eq("type", "login.failed"),
                cmp("type", CmpOp::Eq, Literal::quoted("account.deactivated")),
            ]),
            Expr::Not(Box::new(Expr::Prefix {
                path: "actor.ip".into(),
                prefix: "10.".into(),
            })),
            cmp("details.amount", CmpOp::Gt, Literal::bare("100")),
        ]);
        assert_eq!(ok(q), expected);
        assert_eq!(expected.to_string(), q);
    }

    #[test]
    fn documented_examples_parse() {
        for q in [
            "type:login.failed",
            "type:login.* AND severity>=5",
            r#"actor.id:"John Doe" OR username:jdoe"#,
            "NOT outcome:success AND time>=-24h",
            "details.plan:* AND NOT details.plan:free",
            "details.attempt:3",
            r#"details.attempt:"3""#,
            "time>=2024-05-01 time<2024-05-02",
            "tags:admin",
            "details.expires_at<now",
            "details.url:https://example.com/a?b=c",
            r#"path:"John D"*"#,
            "not:x",
            "time:2024-05-01T12:00:00+02:00",
        ] {
            let e = ok(q);
            assert_eq!(ok(&e.to_string()), e, "{q}");
        }
    }

    #[test]
    fn empty_and_star_match_everything() {
        assert_eq!(ok(""), Expr::All);
        assert_eq!(ok("  \t\n"), Expr::All);
        assert_eq!(ok("*"), Expr::All);
        assert_eq!(ok("NOT *"), Expr::Not(Box::new(Expr::All)));
    }

    #[test]
    fn operators() {
        assert_eq!(ok("a:1"), eq("a", "1"));
        assert_eq!(ok("a=1"), eq("a", "1"));
        assert_eq!(ok("a>1"), cmp("a", CmpOp::Gt, Literal::bare("1")));
        assert_eq!(ok("a>=1"), cmp("a", CmpOp::Ge, Literal::bare("1")));
        assert_eq!(ok("a<1"), cmp("a", CmpOp::Lt, Literal::bare("1")));
        assert_eq!(ok("a<=1"), cmp("a", CmpOp::Le, Literal::bare("1")));
    }

    #[test]
    fn the_first_operator_separates_path_and_value() {
        assert_eq!(
            ok("time>=2024-05-01T10:00:00Z"),
            cmp("time", CmpOp::Ge, Literal::bare("2024-05-01T10:00:00Z"))
        );
        assert_eq!(
            ok("details.url:http://x/y?a=b"),
            eq("details.url", "http://x/y?a=b")
        );
        assert_eq!(ok("actor.ip:fe80::1"), eq("actor.ip", "fe80::1"));
        assert_eq!(ok("details.expr=a<b"), eq("details.expr", "a<b"));
        assert_eq!(
            ok("actor.id:u@example.com"),
            eq("actor.id", "u@example.com")
        );
    }

    #[test]
    fn quoted_values_and_escapes() {
        assert_eq!(
            ok(r#"a:"x y""#),
            cmp("a", CmpOp::Eq, Literal::quoted("x y"))
        );
        assert_eq!(
            ok(r#"a:"say \"hi\" \\o/""#),
            cmp("a", CmpOp::Eq, Literal::quoted(r#"say "hi" \o/"#))
        );
        assert_eq!(ok(r#"a:"""#), cmp("a", CmpOp::Eq, Literal::quoted("")));
        assert_eq!(
            ok(r#"a:"(AND)*x""#),
            cmp("a", CmpOp::Eq, Literal::quoted("(AND)*x"))
        );
        assert_eq!(
            ok(r#"a:"x y"*"#),
            Expr::Prefix {
                path: "a".into(),
                prefix: "x y".into()
            }
        );
        assert_eq!(ok(r#"(a:"x")"#), cmp("a", CmpOp::Eq, Literal::quoted("x")));
    }

    #[test]
    fn prefix_and_exists() {
        assert_eq!(
            ok("actor.ip:10.*"),
            Expr::Prefix {
                path: "actor.ip".into(),
                prefix: "10.".into()
            }
        );
        assert_eq!(
            ok("actor.ip=10.*"),
            Expr::Prefix {
                path: "actor.ip".into(),
                prefix: "10.".into()
            }
        );
        assert_eq!(
            ok("details.plan:*"),
            Expr::Exists {
                path: "details.plan".into()
            }
        );
    }

    #[test]
    fn aliases_resolve() {
        assert_eq!(ok("event_type:x"), eq("type", "x"));
        assert_eq!(ok("username:u-7"), eq("actor.id", "u-7"));
        assert_eq!(ok("app_data.plan:pro"), eq("details.plan", "pro"));
        assert_eq!(
            ok("criticality>=7"),
            cmp("severity", CmpOp::Ge, Literal::bare("7"))
        );
        assert_eq!(
            ok("timestamp>-15m"),
            cmp("time", CmpOp::Gt, Literal::bare("-15m"))
        );
    }

    #[test]
    fn precedence_is_not_and_or() {
        assert_eq!(
            ok("a:1 OR b:2 AND c:3"),
            Expr::Or(vec![
                eq("a", "1"),
                Expr::And(vec![eq("b", "2"), eq("c", "3")])
            ])
        );
        assert_eq!(
            ok("NOT a:1 AND b:2"),
            Expr::And(vec![Expr::Not(Box::new(eq("a", "1"))), eq("b", "2")])
        );
        assert_eq!(
            ok("(a:1 OR b:2) c:3"),
            Expr::And(vec![
                Expr::Or(vec![eq("a", "1"), eq("b", "2")]),
                eq("c", "3")
            ])
        );
        assert_eq!(
            ok("NOT NOT a:1"),
            Expr::Not(Box::new(Expr::Not(Box::new(eq("a", "1")))))
        );
    }

    #[test]
    fn adjacency_is_and_and_nesting_flattens() {
        let flat = Expr::And(vec![eq("a", "1"), eq("b", "2"), eq("c", "3")]);
        assert_eq!(ok("a:1 b:2 c:3"), flat);
        assert_eq!(ok("a:1 AND (b:2 AND c:3)"), flat);
        assert_eq!(ok("(a:1 b:2) c:3"), flat);
        assert_eq!(ok("((a:1))"), eq("a", "1"));
        assert_eq!(
            ok("a:1 OR (b:2 OR c:3)"),
            Expr::Or(vec![eq("a", "1"), eq("b", "2"), eq("c", "3")])
        );
        assert_eq!(ok("a:1(b:2)"), Expr::And(vec![eq("a", "1"), eq("b", "2")]));
    }

    #[test]
    fn keywords_are_case_insensitive_and_paths_win_before_an_operator() {
        assert_eq!(ok("a:1 and b:2 or not c:3"), ok("a:1 AND b:2 OR NOT c:3"));
        assert_eq!(ok("NOT:x"), eq("NOT", "x"));
        assert_eq!(
            ok("or:1 and:2"),
            Expr::And(vec![eq("or", "1"), eq("and", "2")])
        );
        assert_eq!(ok("type:AND"), eq("type", "AND"));
        assert_eq!(ok("NOT(a:1)"), Expr::Not(Box::new(eq("a", "1"))));
    }

    #[test]
    fn helpful_errors() {
        assert_eq!(
            err("severity>="),
            (10, "expected a value after `severity>=`".into())
        );
        assert_eq!(err("severity>= 7").0, 10);
        assert_eq!(err("(type:)"), (6, "expected a value after `type:`".into()));
        assert!(err("type:(a OR b)").1.contains("(type:a OR type:b)"));
        let (off, msg) = err("severity >= 7");
        assert_eq!(off, 8);
        assert!(msg.contains("`severity>=value`"), "{msg}");
        let (off, msg) = err("login.failed");
        assert_eq!(off, 0);
        assert!(
            msg.starts_with("expected an operator after `login.failed`"),
            "{msg}"
        );
        assert_eq!(err("a:1 AND"), (7, "expected a filter after `AND`".into()));
        assert_eq!(err("a:1 OR"), (6, "expected a filter after `OR`".into()));
        assert_eq!(err("NOT"), (3, "expected a filter after `NOT`".into()));
        assert_eq!(err("AND a:1"), (0, "`AND` needs a filter before it".into()));
        assert_eq!(err("a:1 AND OR b:2").0, 8);
        assert_eq!(err("a:1 AND )").0, 8);
        assert_eq!(
            err("(a:1"),
            (4, "missing `)` to close the `(` at offset 0".into())
        );
        assert_eq!(
            err("a:1)"),
            (3, "unexpected `)` with no matching `(`".into())
        );
        assert_eq!(err(")").0, 0);
        assert_eq!(
            err("()"),
            (
                1,
                "empty parentheses: expected a filter between `(` and `)`".into()
            )
        );
        assert_eq!(
            err(r#"a:"x"#),
            (
                2,
                "unterminated quoted value: missing the closing `\"`".into()
            )
        );
        assert_eq!(err(r#"a:"x\"#).0, 2);
        assert!(err(r#"a:"x\n""#).1.starts_with("unknown escape `\\n`"));
        assert_eq!(err(r#"a:"x"y"#).0, 5);
        assert_eq!(err(r#"a:x"y""#).0, 3);
        assert_eq!(err("a:x*y").0, 3);
        assert_eq!(err("a:**").0, 2);
        assert_eq!(err("a:1 *x").0, 4);
        assert!(err("severity:>=7").1.contains("`severity>=value`"));
        assert!(
            err("a && b:1")
                .1
                .starts_with("expected an operator after `a`")
        );
        assert_eq!(err("a:1 && b:1"), (4, "unexpected `&`: write AND".into()));
        assert_eq!(err("a:1 || b:1"), (4, "unexpected `|`: write OR".into()));
        assert_eq!(err("!a:1"), (0, "unexpected `!`: write NOT".into()));
        assert_eq!(err(":x").0, 0);
        assert_eq!(err(r#""x""#).0, 0);
        assert!(
            err("actor/ip:x")
                .1
                .starts_with("unexpected `/` after `actor`")
        );
        assert_eq!(err("a:1 é:2").0, 4);
    }

    #[test]
    fn range_values_must_be_numbers_or_times() {
        assert_eq!(
            ok("details.amount>-1.5"),
            cmp("details.amount", CmpOp::Gt, Literal::bare("-1.5"))
        );
        assert_eq!(
            ok("details.at<2024-05-01"),
            cmp("details.at", CmpOp::Lt, Literal::bare("2024-05-01"))
        );
        assert_eq!(
            ok("time>1714557600"),
            cmp("time", CmpOp::Gt, Literal::bare("1714557600"))
        );
        assert_eq!(
            err("severity>high"),
            (
                9,
                "expected a number or a time after `severity>`, found `high`".into()
            )
        );
        assert!(
            err("time>3.5")
                .1
                .starts_with("expected a time after `time>`, found `3.5`")
        );
        assert!(
            err("time>-15")
                .1
                .starts_with("expected a time after `time>`")
        );
        assert!(err(r#"severity>"7""#).1.contains("remove the quotes"));
        assert!(err("severity>7*").1.starts_with("a range cannot use `*`"));
        assert!(err("severity>*").1.starts_with("a range cannot use `*`"));
    }

    #[test]
    fn offsets_are_bytes() {
        assert_eq!(err("a:\"é\" b:"), (9, "expected a value after `b:`".into()));
    }

    #[test]
    fn limits() {
        let limits = QueryLimits {
            max_expr_bytes: 10,
            max_terms: 2,
            max_depth: 2,
            ..QueryLimits::default()
        };
        assert!(
            matches!(parse_expr("a:1 b:2 c:3", &limits), Err(QueryError::TooComplex(m)) if m.contains("limit is 10"))
        );
        assert!(
            matches!(parse_expr("a:1 b:2 c:3", &QueryLimits { max_expr_bytes: 100, ..limits.clone() }),
            Err(QueryError::TooComplex(m)) if m == "the expression has 3 comparisons; the limit is 2")
        );
        assert!(parse_expr("((a:1))", &limits).is_ok());
        assert!(parse_expr("NOT (a:1)", &limits).is_ok());
        assert!(
            matches!(parse_expr("(((a:1)))", &limits), Err(QueryError::TooComplex(m)) if m.contains("offset 2"))
        );
        assert!(matches!(
            parse_expr("NOT NOT NOT a:1", &limits),
            Err(QueryError::TooComplex(_))
        ));
        let deep = format!("{}a:1{}", "(".repeat(1000), ")".repeat(1000));
        let huge = QueryLimits {
            max_expr_bytes: usize::MAX,
            max_depth: usize::MAX,
            ..QueryLimits::default()
        };
        assert!(matches!(
            parse_expr(&deep, &huge),
            Err(QueryError::TooComplex(_))
        ));
    }

    // ---- properties ----

    fn is_canonical_path(p: &str) -> bool {
        resolve_path_alias(p) == p
    }

    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "type",
                "severity",
                "actor.id",
                "actor.ip",
                "details.amount",
                "details.items.sku",
                "time",
                "received_at",
                "AND",
                "not",
                "Or",
                "-",
                "x-y_z.0",
                "details",
            ])
            .prop_map(str::to_string),
            "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,12}"
                .prop_filter("canonical path", |p| is_canonical_path(p)),
        ]
    }

    fn bare_text() -> impl Strategy<Value = String> {
        "(\\PC|[:=<>\"*()]){1,12}".prop_map(|s| {
            let cleaned: String = s
                .chars()
                .filter(|c| !ends_bare_value(*c) && !matches!(c, '"' | '*'))
                .collect();
            match cleaned.chars().next() {
                None => "v".to_string(),
                Some(c) if is_op_char(c) => format!("v{cleaned}"),
                Some(_) => cleaned,
            }
        })
    }

    fn any_text() -> impl Strategy<Value = String> {
        "(\\PC|[\\n\\t\"\\\\*() ]){0,12}"
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i32>().prop_map(|n| n.to_string()),
            (-1.0e6f64..1.0e6).prop_map(|n| n.to_string()),
            "-?[0-9]{1,4}(\\.[0-9]{1,3})?(e-?[0-9]{1,2})?",
        ]
    }

    fn time_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("now".to_string()),
            "-[0-9]{1,4}[smhdw]",
            "20[0-9]{2}-0[1-9]-[0-2][1-9]",
            "20[0-9]{2}-0[1-9]-[0-2][1-9]T[01][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]0[0-9]:00)",
            "[0-9]{1,12}",
        ]
    }

    fn range_op() -> impl Strategy<Value = CmpOp> {
        prop::sample::select(vec![CmpOp::Gt, CmpOp::Ge, CmpOp::Lt, CmpOp::Le])
    }

    fn leaf() -> impl Strategy<Value = Expr> {
        prop_oneof![
            Just(Expr::All),
            (path(), bare_text()).prop_map(|(p, v)| cmp(&p, CmpOp::Eq, Literal::bare(v))),
            (path(), any_text()).prop_map(|(p, v)| cmp(&p, CmpOp::Eq, Literal::quoted(v))),
            (path(), range_op(), prop_oneof![number(), time_text()]).prop_map(|(p, op, v)| {
                // On envelope time fields a range takes a time only; elsewhere a number or a time.
                let is_time = TimeLiteral::parse(&v).is_some();
                let valid = is_time
                    || (!is_time_path(&p) && Literal::bare(v.as_str()).as_number().is_some());
                let v = if valid { v } else { "now".to_string() };
                cmp(&p, op, Literal::bare(v))
            }),
            (path(), any_text()).prop_map(|(path, prefix)| Expr::Prefix { path, prefix }),
            path().prop_map(|path| Expr::Exists { path }),
        ]
    }

    /// Trees as the parser builds them: no `AND` directly under `AND`, no `OR` under `OR`.
    fn expr() -> impl Strategy<Value = Expr> {
        leaf().prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..5).prop_map(|items| flat(items, Expr::And)),
                prop::collection::vec(inner.clone(), 2..5).prop_map(|items| flat(items, Expr::Or)),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    fn flat(items: Vec<Expr>, connective: fn(Vec<Expr>) -> Expr) -> Expr {
        let and = matches!(connective(Vec::new()), Expr::And(_));
        let mut out = Vec::new();
        for item in items {
            push_flat(&mut out, item, |e| {
                if and {
                    matches!(e, Expr::And(_))
                } else {
                    matches!(e, Expr::Or(_))
                }
            });
        }
        connective(out)
    }

    fn roomy() -> QueryLimits {
        QueryLimits {
            max_expr_bytes: 1 << 20,
            max_terms: 10_000,
            ..QueryLimits::default()
        }
    }

    /// Fragments that make structurally interesting garbage.
    fn soup() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "AND",
            "OR",
            "NOT",
            "and",
            "(",
            ")",
            " ",
            " ",
            "a:1",
            "b=x",
            "c>=5",
            "t>-15m",
            "d<",
            ":",
            "=",
            ">",
            "\"",
            "\"q\"",
            "\\",
            "*",
            "x*",
            "time",
            "-",
            ".",
            "é",
            "\t",
            "&&",
            "!",
            "2024-05-01T10:00:00Z",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn print_then_parse_round_trips(e in expr()) {
            let text = e.to_string();
            prop_assert_eq!(parse_expr(&text, &roomy()), Ok(e), "printed as {}", text);
        }

        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,120}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_token_soup_and_reprints_what_it_accepts(s in soup()) {
            if let Ok(e) = parse_expr(&s, &roomy()) {
                let text = e.to_string();
                prop_assert_eq!(parse_expr(&text, &roomy()), Ok(e), "{} printed as {}", s, text);
            }
        }
    }
}
