//! `--query` of `vigil bench`: URL parameters as written, with the `{rand}` placeholder, and
//! the parameters each numbered request of a query or count run sends.

use rand::Rng;
use vigil_client::{Order, QueryParams};
use vigil_store::fixtures::unit_rng;

/// What `--query` replaces by a random number.
pub(super) const PLACEHOLDER: &str = "{rand}";

/// `--query`: URL parameters as written (`actor.id=u-{rand}&limit=10`), parsed into what
/// `GET /v1/events` takes. Values may hold the `{rand}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTemplate {
    /// As given on the command line, for the report.
    pub(super) text: String,
    pub(super) params: QueryParams,
}

impl QueryTemplate {
    /// Splits `text` at `&` into `NAME=VALUE` pairs (at the first `=`) and decodes `%XX`
    /// escapes; `+` stays a plus sign. `q`, `from`, `to`, `limit`, `order` and `cursor` are
    /// the query's own parameters (each at most once); any other name is an exact-match filter
    /// on that field path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut params = QueryParams::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(format!("expected NAME=VALUE, got {pair:?}"));
            };
            let (name, value) = (percent_decode(name)?, percent_decode(value)?);
            if name.is_empty() {
                return Err(format!("a parameter name is missing in {pair:?}"));
            }
            let slot = match name.as_str() {
                "q" => &mut params.q,
                "from" => &mut params.from,
                "to" => &mut params.to,
                "cursor" => &mut params.cursor,
                "limit" if params.limit.is_none() => {
                    let limit = value
                        .parse()
                        .map_err(|_| format!("limit must be a whole number, got {value:?}"))?;
                    params.limit = Some(limit);
                    continue;
                }
                "order" if params.order.is_none() => {
                    params.order = Some(match value.as_str() {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => return Err(format!("order must be asc or desc, got {value:?}")),
                    });
                    continue;
                }
                "limit" | "order" => return Err(format!("{name} is given twice")),
                _ => {
                    params.filters.push((name, value));
                    continue;
                }
            };
            if slot.is_some() {
                return Err(format!("{name} is given twice"));
            }
            *slot = Some(value);
        }
        Ok(Self {
            text: text.to_owned(),
            params,
        })
    }

    /// Whether some value holds `{rand}`.
    pub(super) fn has_placeholder(&self) -> bool {
        let p = &self.params;
        [&p.q, &p.from, &p.to, &p.cursor]
            .into_iter()
            .flatten()
            .chain(p.filters.iter().map(|(_, value)| value))
            .any(|value| value.contains(PLACEHOLDER))
    }

    /// The parameters with every `{rand}` replaced by `n`.
    fn render(&self, n: u64) -> QueryParams {
        let n = n.to_string();
        let mut params = self.params.clone();
        let p = &mut params;
        for value in [&mut p.q, &mut p.from, &mut p.to, &mut p.cursor]
            .into_iter()
            .flatten()
            .chain(p.filters.iter_mut().map(|(_, value)| value))
        {
            if value.contains(PLACEHOLDER) {
                *value = value.replace(PLACEHOLDER, &n);
            }
        }
        params
    }
}

/// Decodes `%XX` escapes; anything else is kept as written. A `%` that starts no escape is
/// refused rather than kept, so a forgotten `%25` cannot change a query unnoticed.
fn percent_decode(s: &str) -> Result<String, String> {
    let malformed = s.match_indices('%').any(|(at, _)| {
        s.as_bytes()
            .get(at + 1..at + 3)
            .is_none_or(|hex| !hex.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(format!(
            "{s:?}: % must start an escape like %26 (write %25 for %)"
        ));
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| format!("{s:?}: escapes do not decode to UTF-8"))
}

/// What the requests of a query or count run ask.
#[derive(Debug)]
pub(super) struct QueryPlan {
    pub(super) template: QueryTemplate,
    /// The range of `{rand}`, when the template has one.
    pub(super) pool: Option<u64>,
    pub(super) seed: u64,
}

impl QueryPlan {
    /// The parameters of request number `index`.
    pub(super) fn params(&self, index: u64) -> QueryParams {
        match self.pool {
            Some(pool) => self
                .template
                .render(unit_rng(self.seed, index).random_range(0..pool)),
            None => self.template.params.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use vigil_client::Url;

    use super::*;

    fn template(text: &str) -> QueryTemplate {
        QueryTemplate::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The URL `vigil_client` requests for `params` (it encodes parameters the same way).
    fn url_for(params: &QueryParams) -> Url {
        let mut url = Url::parse("http://127.0.0.1:7878/v1/events").unwrap();
        url.query_pairs_mut().extend_pairs(params.to_pairs());
        url
    }

    #[test]
    fn query_parameters_become_the_query_and_its_filters() {
        let t = template(
            "q=severity>=7 AND type:login.failed&from=-1h&limit=10&order=asc&actor.id=u-17&details.plan=pro",
        );
        let want = QueryParams::new()
            .q("severity>=7 AND type:login.failed")
            .from("-1h")
            .limit(10)
            .order(Order::Asc)
            .filter("actor.id", "u-17")
            .filter("details.plan", "pro");
        assert_eq!(t.params, want);
        assert_eq!(template("").params, QueryParams::new());
        assert_eq!(
            template("type=a&&type=b&").params,
            QueryParams::new().filter("type", "a").filter("type", "b")
        );
    }

    #[test]
    fn escapes_are_decoded_and_everything_else_kept_as_written() {
        let t = template("q=details.note:%22a%26b%22&to=2024-05-01T00:00:00+02:00&k%3Dx=v=w");
        assert_eq!(t.params.q.as_deref(), Some(r#"details.note:"a&b""#));
        assert_eq!(t.params.to.as_deref(), Some("2024-05-01T00:00:00+02:00"));
        assert_eq!(t.params.filters, [("k=x".to_owned(), "v=w".to_owned())]);
        assert_eq!(template("x=%C3%A9").params.filters[0].1, "é");
    }

    #[test]
    fn malformed_queries_are_refused_with_the_reason() {
        for (text, reason) in [
            ("limit", "expected NAME=VALUE"),
            ("=u-1", "name is missing"),
            ("q=a&q=b", "q is given twice"),
            ("limit=1&limit=2", "limit is given twice"),
            ("limit=ten", "whole number"),
            ("order=up", "asc or desc"),
            ("q=100%", "escape"),
            ("q=%+1", "escape"),
            ("q=%zz", "escape"),
            ("q=%ff", "UTF-8"),
        ] {
            let err = QueryTemplate::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn query_values_are_url_encoded_and_read_back_unchanged() {
        let t = template("q=severity>=7 AND actor.ip:10.*&limit=10&details.q=a%26b=c&from=-15m");
        let url = url_for(&t.params);
        assert_eq!(
            url.query(),
            Some("q=severity%3E%3D7+AND+actor.ip%3A10.*&from=-15m&limit=10&details.q=a%26b%3Dc")
        );
        let read_back: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(read_back, t.params.to_pairs());
        assert_eq!(
            read_back[0],
            ("q".to_owned(), "severity>=7 AND actor.ip:10.*".to_owned())
        );
    }

    #[test]
    fn placeholders_draw_a_reproducible_number_below_the_pool() {
        let t = template("actor.id=u-{rand}&q=resource.id:acct-{rand}&limit=5");
        assert!(t.has_placeholder());
        assert!(!template("actor.id=u-1&limit=5").has_placeholder());
        assert!(QueryTemplate::parse("limit={rand}").is_err());
        assert_eq!(
            t.render(17),
            QueryParams::new()
                .q("resource.id:acct-17")
                .limit(5)
                .filter("actor.id", "u-17")
        );

        let plan = |seed| QueryPlan {
            template: t.clone(),
            pool: Some(50),
            seed,
        };
        let (a, b) = (plan(9), plan(9));
        let seen: std::collections::BTreeSet<String> = (0..500)
            .map(|i| {
                let p = a.params(i);
                assert_eq!(p, b.params(i), "request {i}");
                p.filters[0].1.clone()
            })
            .collect();
        let allowed: std::collections::BTreeSet<String> =
            (0..50).map(|n| format!("u-{n}")).collect();
        assert_eq!(seen, allowed, "500 draws cover the pool and stay inside it");
        assert!((0..20).any(|i| plan(10).params(i) != a.params(i)));

        let fixed = QueryPlan {
            template: template("actor.id=u-1"),
            pool: None,
            seed: 1,
        };
        assert_eq!(
            fixed.params(3),
            QueryParams::new().filter("actor.id", "u-1")
        );
    }
}
