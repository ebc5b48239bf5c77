//! Pagination parameters shared by every list query.

/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: i64 = 200;
/// The page size when a client names none.
pub const DEFAULT_PAGE_SIZE: i64 = 20;

/// A validated page request: `page` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// 1-based page number.
    pub page: i64,
    /// Rows per page, 1..=MAX_PAGE_SIZE.
    pub page_size: i64,
}

impl PageRequest {
    /// Validates client input; `None` takes the defaults.
    pub fn new(page: Option<i64>, page_size: Option<i64>) -> crate::Result<Self> {
        let page = page.unwrap_or(1);
        let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if page < 1 {
            return Err(crate::Error::Invalid("page must be at least 1".into()));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(crate::Error::Invalid(format!(
                "pageSize must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        Ok(Self { page, page_size })
    }

    /// SQL `OFFSET` for this page.
    pub fn offset(&self) -> i64 {
        (self.page - 1).saturating_mul(self.page_size)
    }

    /// SQL `LIMIT` for this page.
    pub fn limit(&self) -> i64 {
        self.page_size
    }
}

/// One page of rows plus the total count over all pages.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Rows over all pages.
    pub total_count: i64,
    /// The request that produced this page.
    pub request: PageRequest,
}

impl<T> Page<T> {
    /// Number of pages needed for `total_count` rows.
    pub fn total_pages(&self) -> i64 {
        (self.total_count + self.request.page_size - 1) / self.request.page_size
    }

    /// Converts every row, keeping the counts.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total_count: self.total_count,
            request: self.request,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_page_zero_and_oversized_pages() {
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(None, Some(MAX_PAGE_SIZE + 1)).is_err());
        assert!(PageRequest::new(None, Some(0)).is_err());
    }

    #[test]
    fn offset_and_total_pages_follow_page_size() {
        let req = PageRequest::new(Some(3), Some(10)).expect("valid");
        assert_eq!(req.offset(), 20);
        let page = Page::<()> {
            items: vec![],
            total_count: 21,
            request: req,
        };
        assert_eq!(page.total_pages(), 3);
        let empty = Page::<()> {
            items: vec![],
            total_count: 0,
            request: req,
        };
        assert_eq!(empty.total_pages(), 0);
    }
}
