//! Paged lists: the `limit`/`offset` a caller asked for and the page it gets back.

/// `limit` and `offset`, already validated (the HTTP layer parses them from the query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: i64,
    pub offset: i64,
}

/// One page of a list and the number of all matches.
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub total: i64,
}

impl<T> Listed<T> {
    /// The same page with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Listed<U> {
        Listed {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Listed;

    #[test]
    fn map_keeps_the_total_of_all_matches() {
        let page = Listed {
            items: vec![1, 2],
            total: 7,
        };
        let mapped = page.map(|n| n * 10);
        assert_eq!(mapped.items, vec![10, 20]);
        assert_eq!(mapped.total, 7);
    }
}
