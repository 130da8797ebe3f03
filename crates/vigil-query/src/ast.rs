//! The filter expression tree.

use std::fmt;

use vigil_event::Scalar;

/// A comparison operator: `:` / `=` (exact), `>`, `>=`, `<`, `<=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    /// The operator as written in a query (`Eq` prints as `:`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => ":",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    /// True for `>`, `>=`, `<`, `<=`.
    pub fn is_range(self) -> bool {
        !matches!(self, Self::Eq)
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A literal as written: its text and whether it was quoted. Unquoted `3` matches the string
/// "3" and the number 3; unquoted `true`/`false`/`null` also match the JSON literal; quoted
/// literals match strings only.
#[derive(Debug, Clone, PartialEq)]
pub struct Literal {
    pub raw: String,
    pub quoted: bool,
}

impl Literal {
    /// An unquoted literal (as in `type:login.failed` or a URL parameter value).
    pub fn bare(raw: impl Into<String>) -> Self {
        Self {
            raw: raw.into(),
            quoted: false,
        }
    }

    /// A quoted literal (as in `type:"login.failed"`): matches strings only.
    pub fn quoted(raw: impl Into<String>) -> Self {
        Self {
            raw: raw.into(),
            quoted: true,
        }
    }

    /// The scalars an exact match on this literal accepts (see the type docs).
    pub fn exact_candidates(&self) -> Vec<Scalar<'_>> {
        let mut out = vec![Scalar::String(&self.raw)];
        if self.quoted {
            return out;
        }
        if let Some(n) = self.as_number() {
            out.push(Scalar::Number(n));
        }
        match self.raw.as_str() {
            "true" => out.push(Scalar::Bool(true)),
            "false" => out.push(Scalar::Bool(false)),
            "null" => out.push(Scalar::Null),
            _ => {}
        }
        out
    }

    /// The literal as a number, when unquoted and numeric.
    pub fn as_number(&self) -> Option<f64> {
        if self.quoted {
            return None;
        }
        self.raw.parse::<f64>().ok().filter(|n| n.is_finite())
    }
}

impl fmt::Display for Literal {
    /// Unquoted literals print bare when the grammar can read them back bare; otherwise (text
    /// with spaces, parentheses, quotes or `*`, which only URL parameters produce) quoted. Such
    /// text is never a number, boolean or null, so the quoted form matches the same events.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.quoted && is_bare_value(&self.raw) {
            f.write_str(&self.raw)
        } else {
            write_quoted(f, &self.raw)
        }
    }
}

/// A filter. `path`s are canonical field paths (aliases already resolved).
///
/// `Display` prints the expression back as query text that [`crate::parse_expr`] reads back to
/// the same tree (for trees the parser produces: paths of `[A-Za-z0-9_.-]`, nested `AND`s and
/// `OR`s flattened).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Matches every event (an empty filter, or `*`).
    All,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `path:value`, `path=value`, `path>value`, …
    Compare {
        path: String,
        op: CmpOp,
        value: Literal,
    },
    /// `path:value*` — strings starting with `prefix`.
    Prefix {
        path: String,
        prefix: String,
    },
    /// `path:*` — the event has at least one value (string, number, boolean or null) at
    /// `path`, directly or as an array element. An object is not a value: `actor:*` matches
    /// nothing, `actor.id:*` is the question to ask.
    Exists {
        path: String,
    },
}

impl Expr {
    /// How many comparisons (`Compare`, `Prefix`, `Exists`) the tree holds: what
    /// [`crate::QueryLimits::max_terms`] bounds.
    pub fn term_count(&self) -> usize {
        match self {
            Self::All => 0,
            Self::And(v) | Self::Or(v) => v.iter().map(Self::term_count).sum(),
            Self::Not(e) => e.term_count(),
            Self::Compare { .. } | Self::Prefix { .. } | Self::Exists { .. } => 1,
        }
    }

    fn write_child(&self, f: &mut fmt::Formatter<'_>, parenthesize: bool) -> fmt::Result {
        if parenthesize {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::And(items) => match items.as_slice() {
                [] => f.write_str("*"),
                [only] => write!(f, "{only}"),
                _ => {
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(" AND ")?;
                        }
                        item.write_child(
                            f,
                            matches!(item, Self::And(v) | Self::Or(v) if v.len() > 1),
                        )?;
                    }
                    Ok(())
                }
            },
            Self::Or(items) => match items.as_slice() {
                [] => f.write_str("NOT *"),
                [only] => write!(f, "{only}"),
                _ => {
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(" OR ")?;
                        }
                        item.write_child(f, matches!(item, Self::Or(v) if v.len() > 1))?;
                    }
                    Ok(())
                }
            },
            Self::Not(inner) => {
                f.write_str("NOT ")?;
                inner.write_child(
                    f,
                    matches!(&**inner, Self::And(v) | Self::Or(v) if v.len() > 1),
                )
            }
            Self::Compare { path, op, value } => write!(f, "{path}{op}{value}"),
            Self::Prefix { path, prefix } => {
                f.write_str(path)?;
                f.write_str(":")?;
                if is_bare_value(prefix) {
                    f.write_str(prefix)?;
                } else {
                    write_quoted(f, prefix)?;
                }
                f.write_str("*")
            }
            Self::Exists { path } => write!(f, "{path}:*"),
        }
    }
}

/// Characters that can never appear in an unquoted value.
pub(crate) fn ends_bare_value(c: char) -> bool {
    c.is_whitespace() || c == '(' || c == ')'
}

/// Operator characters: a bare value may not start with one (`severity:>=7` is a mistake for
/// `severity>=7`).
pub(crate) fn is_op_char(c: char) -> bool {
    matches!(c, ':' | '=' | '<' | '>')
}

/// True when `s` reads back as the same unquoted value.
pub(crate) fn is_bare_value(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    !is_op_char(first)
        && !s
            .chars()
            .any(|c| ends_bare_value(c) || c == '"' || c == '*')
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_numbers_match_strings_and_numbers() {
        let lit = Literal::bare("3");
        assert_eq!(
            lit.exact_candidates(),
            vec![Scalar::String("3"), Scalar::Number(3.0)]
        );
        assert_eq!(lit.as_number(), Some(3.0));
    }

    #[test]
    fn unquoted_json_literals_match_the_literal_and_the_text() {
        assert_eq!(
            Literal::bare("true").exact_candidates(),
            vec![Scalar::String("true"), Scalar::Bool(true)]
        );
        assert_eq!(
            Literal::bare("false").exact_candidates(),
            vec![Scalar::String("false"), Scalar::Bool(false)]
        );
        assert_eq!(
            Literal::bare("null").exact_candidates(),
            vec![Scalar::String("null"), Scalar::Null]
        );
        assert_eq!(
            Literal::bare("True").exact_candidates(),
            vec![Scalar::String("True")]
        );
    }

    #[test]
    fn quoted_literals_match_strings_only() {
        assert_eq!(
            Literal::quoted("3").exact_candidates(),
            vec![Scalar::String("3")]
        );
        assert_eq!(
            Literal::quoted("true").exact_candidates(),
            vec![Scalar::String("true")]
        );
        assert_eq!(Literal::quoted("3").as_number(), None);
    }

    #[test]
    fn non_finite_numbers_are_text() {
        for raw in ["inf", "NaN", "1e400", "-infinity"] {
            assert_eq!(Literal::bare(raw).as_number(), None, "{raw}");
            assert_eq!(
                Literal::bare(raw).exact_candidates(),
                vec![Scalar::String(raw)]
            );
        }
        assert_eq!(Literal::bare("-2.5e3").as_number(), Some(-2500.0));
    }

    #[test]
    fn display_prints_query_text() {
        let expr = Expr::And(vec![
            Expr::Compare {
                path: "severity".into(),
                op: CmpOp::Ge,
                value: Literal::bare("7"),
            },
            Expr::Or(vec![
                Expr::Compare {
                    path: "type".into(),
                    op: CmpOp::Eq,
                    value: Literal::bare("login.failed"),
                },
                Expr::Compare {
                    path: "type".into(),
                    op: CmpOp::Eq,
                    value: Literal::quoted("account.deactivated"),
                },
            ]),
            Expr::Not(Box::new(Expr::Prefix {
                path: "actor.ip".into(),
                prefix: "10.".into(),
            })),
            Expr::Compare {
                path: "details.amount".into(),
                op: CmpOp::Gt,
                value: Literal::bare("100"),
            },
        ]);
        assert_eq!(
            expr.to_string(),
            r#"severity>=7 AND (type:login.failed OR type:"account.deactivated") AND NOT actor.ip:10.* AND details.amount>100"#
        );
    }

    #[test]
    fn display_quotes_what_cannot_be_bare() {
        let cmp = |raw: &str| Expr::Compare {
            path: "a".into(),
            op: CmpOp::Eq,
            value: Literal::bare(raw),
        };
        assert_eq!(cmp("John Doe").to_string(), r#"a:"John Doe""#);
        assert_eq!(cmp("").to_string(), r#"a:"""#);
        assert_eq!(cmp(">5").to_string(), r#"a:">5""#);
        assert_eq!(cmp("a*").to_string(), r#"a:"a*""#);
        assert_eq!(
            Expr::Compare {
                path: "a".into(),
                op: CmpOp::Eq,
                value: Literal::quoted(r#"say "hi" \o/"#)
            }
            .to_string(),
            r#"a:"say \"hi\" \\o/""#
        );
        assert_eq!(
            Expr::Prefix {
                path: "a".into(),
                prefix: "John D".into()
            }
            .to_string(),
            r#"a:"John D"*"#
        );
        assert_eq!(Expr::Exists { path: "a".into() }.to_string(), "a:*");
        assert_eq!(Expr::All.to_string(), "*");
        assert_eq!(Expr::Not(Box::new(Expr::All)).to_string(), "NOT *");
    }

    #[test]
    fn term_count_counts_comparisons() {
        let e = Expr::And(vec![
            Expr::Exists { path: "a".into() },
            Expr::Not(Box::new(Expr::Or(vec![
                Expr::Prefix {
                    path: "b".into(),
                    prefix: "x".into(),
                },
                Expr::All,
            ]))),
        ]);
        assert_eq!(e.term_count(), 2);
    }
}
