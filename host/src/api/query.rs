//! Query-string parameters, percent-decoded. Unknown or repeated parameters
//! are refused rather than silently ignored, so a typo (`?form=10`) is not
//! mistaken for the default.

use super::error::ApiError;

/// The parameters of one request, checked against the names a route knows.
#[derive(Debug)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>, known: &[&str]) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let (name, value) = (name.into_owned(), value.into_owned());
            if !known.contains(&name.as_str()) {
                let known = known.join(", ");
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {name:?}; this call takes: {known}"
                )));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::invalid(format!(
                    "query parameter {name:?} is repeated"
                )));
            }
            pairs.push((name, value));
        }
        Ok(Self { pairs })
    }

    /// The text parameter `name`, if given.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The boolean parameter `name` (`true` or `false`), false when absent.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.text(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::invalid(format!(
                "query parameter {name} must be true or false, got {other:?}"
            ))),
        }
    }

    /// The integer parameter `name`, `default` when absent; must lie in `range`.
    pub fn number(
        &self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ApiError> {
        let Some((_, raw)) = self.pairs.iter().find(|(n, _)| *n == name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!(
                "query parameter {name} must be an integer from {} to {}, got {raw:?}",
                range.start(),
                range.end()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: Option<&str>, expected: Result<(u64, u64), &str>) {
        let got = Query::parse(query, &["from", "limit"]).and_then(|q| {
            Ok((
                q.number("from", 0, 0..=u64::MAX)?,
                q.number("limit", 100, 1..=1000)?,
            ))
        });
        match (got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{query:?}"),
            (Err(e), Err(needle)) => {
                assert_eq!(e.status.as_u16(), 400);
                assert!(e.message.contains(needle), "{query:?}: {}", e.message);
            }
            (got, expected) => panic!("{query:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn parameters_are_parsed_and_checked() {
        check(None, Ok((0, 100)));
        check(Some(""), Ok((0, 100)));
        check(Some("from=7&limit=1000"), Ok((7, 1000)));
        check(Some("limit=5&"), Ok((0, 5)));
        check(Some("limit=0"), Err("from 1 to 1000"));
        check(Some("limit=1001"), Err("from 1 to 1000"));
        check(Some("from=-1"), Err("from must be an integer"));
        check(Some("from="), Err("from must be an integer"));
        check(Some("form=3"), Err("unknown query parameter \"form\""));
        check(Some("from=1&from=2"), Err("repeated"));
    }

    #[test]
    fn text_parameters_are_percent_decoded() {
        let q =
            Query::parse(Some("prefix=seen%2Fa+b&after="), &["prefix", "after"]).expect("parse");
        assert_eq!(q.text("prefix"), Some("seen/a b"));
        assert_eq!(q.text("after"), Some(""));
        assert_eq!(q.text("limit"), None);
    }
}
