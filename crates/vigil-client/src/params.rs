//! The URL parameters of `GET /v1/events`, `/count` and exports.

/// Result order by event time (ties by `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first (the server's default).
    #[default]
    Desc,
    Asc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desc => "desc",
            Self::Asc => "asc",
        }
    }
}

/// A query as URL parameters. Build with the chained setters:
///
/// ```
/// use vigil_client::{Order, QueryParams};
///
/// let p = QueryParams::new()
///     .q("severity>=7 AND type:login.failed")
///     .from("-1h")
///     .filter("actor.id", "u-7")
///     .limit(50)
///     .order(Order::Asc);
/// assert!(p.to_pairs().contains(&("actor.id".to_owned(), "u-7".to_owned())));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    /// A filter expression (`severity>=7 AND type:login.failed`).
    pub q: Option<String>,
    /// Inclusive lower time bound: RFC 3339 or relative (`-15m`).
    pub from: Option<String>,
    /// Exclusive upper time bound.
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub order: Option<Order>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Exact-match `path=value` filters, ANDed with `q`.
    pub filters: Vec<(String, String)>,
}

impl QueryParams {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn q(mut self, expr: impl Into<String>) -> Self {
        self.q = Some(expr.into());
        self
    }

    pub fn from(mut self, bound: impl Into<String>) -> Self {
        self.from = Some(bound.into());
        self
    }

    pub fn to(mut self, bound: impl Into<String>) -> Self {
        self.to = Some(bound.into());
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn order(mut self, order: Order) -> Self {
        self.order = Some(order);
        self
    }

    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Adds an exact-match filter on a field path (`type`, `actor.id`, `details.plan`).
    pub fn filter(mut self, path: impl Into<String>, value: impl Into<String>) -> Self {
        self.filters.push((path.into(), value.into()));
        self
    }

    /// The parameters in the order the server reads them; absent ones are left out.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::with_capacity(6 + self.filters.len());
        let named = [
            ("q", self.q.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
            ("order", self.order.map(|o| o.as_str().to_owned())),
            ("cursor", self.cursor.clone()),
        ];
        for (name, value) in named {
            if let Some(v) = value {
                pairs.push((name.to_owned(), v));
            }
        }
        pairs.extend(self.filters.iter().cloned());
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_params_send_nothing() {
        assert!(QueryParams::new().to_pairs().is_empty());
    }

    #[test]
    fn every_set_parameter_is_sent_once() {
        let p = QueryParams::new()
            .q("a:b")
            .from("-1h")
            .to("2024-05-01T00:00:00Z")
            .limit(5)
            .order(Order::Asc)
            .cursor("abc")
            .filter("type", "login.failed")
            .filter("details.attempt", "3");
        assert_eq!(
            p.to_pairs(),
            [
                ("q", "a:b"),
                ("from", "-1h"),
                ("to", "2024-05-01T00:00:00Z"),
                ("limit", "5"),
                ("order", "asc"),
                ("cursor", "abc"),
                ("type", "login.failed"),
                ("details.attempt", "3"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }
}
