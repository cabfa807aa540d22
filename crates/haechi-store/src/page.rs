//! Paged lists: the `limit`/`offset` a caller asked for and the page it gets back.

/// `limit` and `offset`, already validated (the HTTP layer parses them from the query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: i64,
    pub offset: i64,
}

impl Paging {
    /// The number of all matches when a page of `rows` rows tells it by itself: a page shorter
    /// than its limit ends the list, so unless it is empty past the end (an offset beyond the
    /// last match says nothing of where the list ends) the total is its offset plus its rows,
    /// and the count query can be skipped.
    pub fn total_from(&self, rows: usize) -> Option<i64> {
        let rows = i64::try_from(rows).ok()?;
        (rows < self.limit && (rows > 0 || self.offset == 0)).then(|| self.offset + rows)
    }

    /// The page `items` with the number of all matches: the page's own when it tells it
    /// ([`Paging::total_from`]), otherwise what `count` (the count query) answers; `count` runs
    /// only then.
    pub async fn listed<T, E>(
        &self,
        items: Vec<T>,
        count: impl AsyncFnOnce() -> Result<i64, E>,
    ) -> Result<Listed<T>, E> {
        let total = match self.total_from(items.len()) {
            Some(total) => total,
            None => count().await?,
        };
        Ok(Listed { items, total })
    }
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

    /// The same page with each item converted by a conversion that can fail (a row holding a
    /// code the domain does not know): the first failure is the answer.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Listed<U>, E> {
        Ok(Listed {
            items: self.items.into_iter().map(f).collect::<Result<_, E>>()?,
            total: self.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Listed, Paging};

    #[test]
    fn a_short_page_tells_the_total_and_a_full_or_empty_one_does_not() {
        let p = |limit, offset| Paging { limit, offset };
        assert_eq!(p(50, 0).total_from(3), Some(3));
        assert_eq!(p(50, 0).total_from(0), Some(0));
        assert_eq!(p(50, 100).total_from(7), Some(107));
        // A full page may be followed by more; an empty page past the start says nothing.
        assert_eq!(p(50, 0).total_from(50), None);
        assert_eq!(p(50, 100).total_from(0), None);
        assert_eq!(p(0, 0).total_from(0), None);
    }

    #[tokio::test]
    async fn listed_counts_only_when_the_page_does_not_tell_the_total() {
        let counted = std::cell::Cell::new(0);
        let cell = &counted;
        let count = move || async move {
            cell.set(cell.get() + 1);
            Ok::<i64, String>(120)
        };
        let short = Paging {
            limit: 50,
            offset: 100,
        };
        let page = short.listed(vec![1, 2, 3], count).await.unwrap();
        assert_eq!(
            (page.items, page.total, counted.get()),
            (vec![1, 2, 3], 103, 0)
        );
        let full = Paging {
            limit: 2,
            offset: 0,
        };
        let page = full.listed(vec![1, 2], count).await.unwrap();
        assert_eq!(
            (page.items, page.total, counted.get()),
            (vec![1, 2], 120, 1)
        );
        // The count's error is the answer's.
        let failed = full
            .listed(vec![1, 2], async || Err::<i64, _>("no count".to_owned()))
            .await;
        assert_eq!(failed.err().as_deref(), Some("no count"));
    }

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

    #[test]
    fn try_map_keeps_the_total_or_answers_the_first_failure() {
        let page = || Listed {
            items: vec![1, 2, 3],
            total: 9,
        };
        let mapped = page().try_map(|n| Ok::<_, String>(n + 1)).unwrap();
        assert_eq!((mapped.items, mapped.total), (vec![2, 3, 4], 9));
        let failed = page().try_map(|n| {
            if n == 1 {
                Ok(n)
            } else {
                Err(format!("bad {n}"))
            }
        });
        assert_eq!(failed.err().as_deref(), Some("bad 2"));
    }
}
