//! The filter expression tree.

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

/// A literal as written: its text and whether it was quoted. Unquoted `3` matches the string
/// "3" and the number 3; unquoted `true`/`false`/`null` also match the JSON literal; quoted
/// literals match strings only.
#[derive(Debug, Clone, PartialEq)]
pub struct Literal {
    pub raw: String,
    pub quoted: bool,
}

impl Literal {
    /// The scalars an exact match on this literal accepts (see the type docs).
    pub fn exact_candidates(&self) -> Vec<Scalar<'_>> {
        todo!()
    }

    /// The literal as a number, when unquoted and numeric.
    pub fn as_number(&self) -> Option<f64> {
        todo!()
    }
}

/// A filter. `path`s are canonical field paths (aliases already resolved).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Matches every event (an empty filter).
    All,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `path:value`, `path=value`, `path>value`, …
    Compare { path: String, op: CmpOp, value: Literal },
    /// `path:value*` — strings starting with `prefix`.
    Prefix { path: String, prefix: String },
}
