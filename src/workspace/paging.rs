//! Index paging (`startIndex`/`count`) that survives providers which lie about
//! `totalResults`, ignore `count`, leave out `itemsPerPage` or repeat pages.
//!
//! The loop stops on an empty page, on a page that brings no new id, when
//! `startIndex` passes `totalResults` (unless the pages keep coming full and new,
//! which is how a `totalResults` equal to the page size shows itself; full is the
//! size asked, or the first page's when the provider pages by a smaller one), and
//! after an iteration cap. Without `totalResults` an empty page ends it, and so does
//! a page of objects all read already after a first page shorter than asked (a
//! provider that sends everything whatever it is asked); after a first page as long
//! as asked, such a page is a provider ignoring `startIndex` (every page the first),
//! and fails the listing, since nothing then says where it ends. A page
//! that fails past its retries fails the listing, except the one asked only to
//! check that a short page as long as `totalResults` was the last (not once more
//! objects came than announced: the total is then wrong, the page a real one).
//! When the first page announces more than one page, the rest are fetched
//! concurrently (bounded by `max_concurrency`) and the sequential loop
//! takes over if the last of them was still full, or from the first of them that
//! held fewer than the first page before the end.
//!
//! Cursor paging (RFC 9865) follows `nextCursor` one page after the other until a
//! page has none, or an empty page comes once every announced object is in. A
//! cursor followed twice is an error (the listing would loop), as is a listing
//! past the page cap (which follows the smallest page seen). A provider that refuses a cursor mid-listing
//! (`expiredCursor`, `invalidCursor`: it timed out while retries waited) gets the
//! listing asked again from the first page, once.
//!
//! A listing may carry a filter (`list_filtered`: an account's groups under
//! `group_members = "by_member_filter"`); every page is asked with it.
//!
//! Under `pagination = "auto"`, a provider that did not announce index paging and
//! answers the first index page with 501 is asked once more without paging
//! parameters: a cursor-only one answers with its first page and a `nextCursor`
//! (followed), one that does not page at all with everything it has.

use std::collections::HashSet;

use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::WorkspaceError;
use super::parse::{self, ListBody, Page};
use super::{Progress, ScimClient};

/// No listing may take more pages than this, whatever the provider says.
pub(crate) const ABSOLUTE_PAGE_CAP: u64 = 100_000;
/// Pages allowed beyond what `totalResults` (or the ids seen) account for.
const SLACK_PAGES: u64 = 10;

struct Collector<T> {
    seen: HashSet<String>,
    items: Vec<T>,
    pages: u64,
    /// The largest `totalResults` any page announced.
    largest_total: Option<u64>,
}

impl<T> Collector<T> {
    fn new() -> Self {
        Collector {
            seen: HashSet::new(),
            items: Vec::new(),
            pages: 0,
            largest_total: None,
        }
    }

    /// Adds a page's resources; returns how many ids were new.
    fn add<R, F>(
        &mut self,
        endpoint: &str,
        resources: Vec<R>,
        parse_one: &F,
    ) -> Result<u64, WorkspaceError>
    where
        F: Fn(&str, R) -> Result<(String, T), WorkspaceError>,
    {
        self.pages += 1;
        let mut new = 0;
        for item in resources {
            let (id, parsed) = parse_one(endpoint, item)?;
            if self.seen.insert(id) {
                self.items.push(parsed);
                new += 1;
            }
        }
        Ok(new)
    }

    /// Tells `progress` how far the listing is, after each page with the total
    /// that page announced.
    fn report(
        &mut self,
        progress: &(dyn Fn(Progress) + Send + Sync),
        what: &'static str,
        total: Option<u64>,
    ) {
        self.largest_total = self.largest_total.max(total);
        progress(Progress {
            what,
            pages: self.pages,
            objects: self.items.len() as u64,
            total,
        });
    }
}

/// The last page seen, for deciding whether to ask for another.
#[derive(Debug, Clone, Copy)]
struct Last {
    len: u64,
    new: u64,
    /// The `startIndex` for the next page: this page's plus what it actually held.
    next: u64,
}

/// Whether another page may hold more: see the module docs. `full` is what a
/// full page holds: the page size asked, or the first page's length when that
/// was shorter (a provider that ignores `count` for a smaller size of its own).
fn more_pages(last: Last, full: u64, seen: u64, total: Option<u64>) -> bool {
    if last.len == 0 || last.new == 0 {
        return false;
    }
    match total {
        Some(t) if last.next <= t => true,
        // Past totalResults: believe it unless the page was full and the count is
        // already proven wrong, or looks like the page size rather than a total.
        // A page as long as the first and as long as the total cannot tell an
        // honest small listing from a provider paging by a smaller size than asked
        // and announcing the page as the total: one more request tells them apart,
        // and believing the lie would drop everyone past the first page.
        Some(t) => last.len >= full && (seen > t || t == last.len),
        // No totalResults: nothing says where the listing ends, and pages may
        // come short before it (a provider that drops hidden users after paging):
        // only an empty page, or one without new ids, ends it.
        None => true,
    }
}

fn page_cap(total: Option<u64>, seen: u64, stride: u64) -> u64 {
    let known = total.unwrap_or(0).max(seen);
    (known / stride.max(1))
        .saturating_add(SLACK_PAGES)
        .min(ABSOLUTE_PAGE_CAP)
}

/// What narrows a listing, asked with every page: a `filter`, and the
/// `attributes` each resource is returned with (RFC 7644 §3.4.2.5: a listing of
/// names needs no Group's `members`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Narrowing<'a> {
    pub filter: Option<&'a str>,
    pub attributes: Option<&'a str>,
}

/// `filter` and `attributes` first, then the paging parameters.
fn query_with(
    filter: Narrowing<'_>,
    paging: impl IntoIterator<Item = (&'static str, String)>,
) -> Vec<(&'static str, String)> {
    let narrowing = [
        filter.filter.map(|f| ("filter", f.to_owned())),
        filter.attributes.map(|a| ("attributes", a.to_owned())),
    ];
    narrowing.into_iter().flatten().chain(paging).collect()
}

fn index_query(filter: Narrowing<'_>, start: u64, count: u64) -> Vec<(&'static str, String)> {
    query_with(
        filter,
        [
            ("startIndex", start.to_string()),
            ("count", count.to_string()),
        ],
    )
}

async fn fetch<R: DeserializeOwned>(
    client: &ScimClient,
    path: &str,
    filter: Narrowing<'_>,
    start: u64,
    count: u64,
) -> Result<(String, Page<R>), WorkspaceError> {
    let query = index_query(filter, start, count);
    let started = std::time::Instant::now();
    let (endpoint, body) = client.get_json::<ListBody<R>>(path, &query).await?;
    let page = parse::page(&endpoint, body, start)?;
    // Pages past the end say nothing about what a full page costs.
    if !page.resources.is_empty() {
        client.record_page_read(started.elapsed());
    }
    Ok((endpoint, page))
}

/// The listing asked without `startIndex`, `count` or `cursor`.
async fn fetch_unpaged<R: DeserializeOwned>(
    client: &ScimClient,
    path: &str,
    filter: Narrowing<'_>,
) -> Result<(String, Page<R>), WorkspaceError> {
    let query = query_with(filter, []);
    let (endpoint, body) = client.get_json::<ListBody<R>>(path, &query).await?;
    let page = parse::page(&endpoint, body, 1)?;
    Ok((endpoint, page))
}

fn cursor_query(filter: Narrowing<'_>, cursor: &str, count: u64) -> Vec<(&'static str, String)> {
    query_with(
        filter,
        [("cursor", cursor.to_owned()), ("count", count.to_string())],
    )
}

async fn fetch_by_cursor<R: DeserializeOwned>(
    client: &ScimClient,
    path: &str,
    filter: Narrowing<'_>,
    cursor: &str,
    count: u64,
    seen: u64,
) -> Result<(String, Page<R>), WorkspaceError> {
    let started = std::time::Instant::now();
    let (endpoint, body) = client
        .get_json::<ListBody<R>>(path, &cursor_query(filter, cursor, count))
        .await?;
    // A last page without Resources is fine once everything announced is in.
    let page = parse::page(&endpoint, body, seen + 1)?;
    if !page.resources.is_empty() {
        client.record_page_read(started.elapsed());
    }
    Ok((endpoint, page))
}

/// Whether the provider refused a cursor it handed out (RFC 9865 §2.1): asking
/// for the listing again from the first page gives fresh ones.
fn cursor_refused(e: &WorkspaceError) -> bool {
    matches!(
        e,
        WorkspaceError::Status { status: 400, scim_type: Some(t), .. }
            if t.eq_ignore_ascii_case("expiredCursor") || t.eq_ignore_ascii_case("invalidCursor")
    )
}

/// One listing as asked: where, what it lists (for logs and progress) and how a
/// resource is read.
struct Listed<'a, F> {
    client: &'a ScimClient,
    path: &'a str,
    filter: Narrowing<'a>,
    what: &'static str,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
    parse_one: &'a F,
}

/// Follows `nextCursor` from `cursor` until a page comes without one, adding every
/// page to `collector`; returns the last `totalResults` seen.
async fn follow_cursors<R, T, F>(
    listed: &Listed<'_, F>,
    collector: &mut Collector<T>,
    mut total: Option<u64>,
    mut cursor: String,
) -> Result<Option<u64>, WorkspaceError>
where
    R: DeserializeOwned,
    F: Fn(&str, R) -> Result<(String, T), WorkspaceError>,
{
    let Listed {
        client,
        path,
        filter,
        what,
        progress,
        parse_one,
    } = *listed;
    let requested = u64::from(client.effective_page_size());
    let mut followed = HashSet::new();
    // The smallest page yet, for the cap: a provider may send fewer than asked,
    // and fewer on later pages than on the first.
    let mut stride = collector.items.len() as u64 / collector.pages.max(1);
    loop {
        let endpoint = || {
            super::endpoint_name(
                &reqwest::Method::GET,
                path,
                &cursor_query(filter, &cursor, requested),
            )
        };
        if !followed.insert(cursor.clone()) {
            return Err(WorkspaceError::malformed(
                &endpoint(),
                format!(
                    "nextCursor {cursor:?} was already followed in this listing: it would never end"
                ),
            ));
        }
        let cap = page_cap(total, collector.items.len() as u64, stride);
        if collector.pages >= cap {
            return Err(WorkspaceError::malformed(
                &endpoint(),
                format!(
                    "paging did not end after {} pages ({} {what}, totalResults {})",
                    collector.pages,
                    collector.items.len(),
                    total.map_or_else(|| "absent".to_owned(), |t| t.to_string())
                ),
            ));
        }
        let (endpoint, mut page) = fetch_by_cursor::<R>(
            client,
            path,
            filter,
            &cursor,
            requested,
            collector.items.len() as u64,
        )
        .await?;
        total = page.total_results.or(total);
        let len = page.resources.len() as u64;
        if len > 0 {
            stride = if stride == 0 { len } else { stride.min(len) };
        }
        let next = page.next_cursor.take();
        collector.add(&endpoint, page.resources, parse_one)?;
        collector.report(progress, what, total);
        // An empty page once everything announced is in ends the listing, whatever
        // cursor it hands out (some providers send one on the page after the last).
        let all_in = len == 0 && total.is_some_and(|t| collector.items.len() as u64 >= t);
        match next {
            Some(next) if !all_in => cursor = next,
            _ => return Ok(total),
        }
    }
}

/// A whole listing by cursor, from the first page; asked again once if the
/// provider refuses one of its cursors on the way.
async fn list_by_cursor<R, T, F>(listed: &Listed<'_, F>) -> Result<Listing<T>, WorkspaceError>
where
    R: DeserializeOwned,
    F: Fn(&str, R) -> Result<(String, T), WorkspaceError>,
{
    let mut restarted = false;
    loop {
        let mut collector = Collector::new();
        match follow_cursors(listed, &mut collector, None, String::new()).await {
            Ok(total) => return Ok(finish(collector, total, listed.what, Paged::ByCursor)),
            Err(e) if !restarted && collector.pages > 0 && cursor_refused(&e) => {
                tracing::warn!(
                    what = listed.what,
                    pages = collector.pages,
                    error = %e,
                    "the provider refused its own cursor; listing again from the first page"
                );
                restarted = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How a listing was paged, for [`finish`].
#[derive(Clone, Copy)]
enum Paged {
    ByIndex,
    ByCursor,
}

/// The listing `collector` holds, checked against `totalResults`: by index, the
/// largest announced, not the last: an object deleted from a page already read
/// shifts the next one back onto it, so the listing skips that one and still ends
/// as long as the new, smaller total. A cursor does not shift, and a deletion
/// behind it skips nothing: the last total stands.
fn finish<T>(
    collector: Collector<T>,
    total: Option<u64>,
    what: &'static str,
    paged: Paged,
) -> Listing<T> {
    let total = match paged {
        Paged::ByIndex => collector.largest_total.max(total),
        Paged::ByCursor => total,
    };
    let whole = total.is_none_or(|t| collector.items.len() as u64 >= t);
    if !whole {
        tracing::warn!(
            what,
            listed = collector.items.len(),
            total_results = total,
            "listing ended with fewer objects than totalResults announced"
        );
    }
    Listing {
        items: collector.items,
        whole,
    }
}

/// A whole listing and whether it is as long as the provider said it would be.
pub(crate) struct Listing<T> {
    pub items: Vec<T>,
    /// False when the listing ended with fewer distinct objects than the largest
    /// `totalResults` announced: objects moved between pages (created or deleted
    /// meanwhile), or the provider stopped early.
    pub whole: bool,
}

/// Every resource at `path`, each read from the page as `R` and parsed by
/// `parse_one` into its id and `T`, and whether the listing reached the announced
/// total.
pub(crate) async fn list_all<R, T, F>(
    client: &ScimClient,
    path: &str,
    what: &'static str,
    progress: &(dyn Fn(Progress) + Send + Sync),
    parse_one: F,
) -> Result<Listing<T>, WorkspaceError>
where
    R: DeserializeOwned,
    F: Fn(&str, R) -> Result<(String, T), WorkspaceError>,
{
    list_narrowed(
        client,
        path,
        Narrowing::default(),
        what,
        progress,
        parse_one,
    )
    .await
}

/// [`list_all`] of what `filter` matches (every page asked with it), paged the
/// same way.
pub(crate) async fn list_filtered<R, T, F>(
    client: &ScimClient,
    path: &str,
    filter: Option<&str>,
    what: &'static str,
    progress: &(dyn Fn(Progress) + Send + Sync),
    parse_one: F,
) -> Result<Listing<T>, WorkspaceError>
where
    R: DeserializeOwned,
    F: Fn(&str, R) -> Result<(String, T), WorkspaceError>,
{
    let narrowing = Narrowing {
        filter,
        attributes: None,
    };
    list_narrowed(client, path, narrowing, what, progress, parse_one).await
}

/// [`list_all`] narrowed by `filter` (a filter, the attributes returned: every
/// page asked with them), paged the same way.
pub(crate) async fn list_narrowed<R, T, F>(
    client: &ScimClient,
    path: &str,
    filter: Narrowing<'_>,
    what: &'static str,
    progress: &(dyn Fn(Progress) + Send + Sync),
    parse_one: F,
) -> Result<Listing<T>, WorkspaceError>
where
    R: DeserializeOwned,
    F: Fn(&str, R) -> Result<(String, T), WorkspaceError>,
{
    let listed = Listed {
        client,
        path,
        filter,
        what,
        progress,
        parse_one: &parse_one,
    };
    if client.pages_by_cursor() {
        return list_by_cursor(&listed).await;
    }
    let requested = u64::from(client.effective_page_size());
    let mut collector = Collector::new();

    let (endpoint, mut first, by_index) = match fetch::<R>(client, path, filter, 1, requested).await
    {
        Ok((endpoint, first)) => (endpoint, first, true),
        // A provider that pages by cursor only may refuse `startIndex` with 501
        // (scim2-server does) without saying so in its ServiceProviderConfig, and
        // one that does not page at all may refuse any paging parameter ("501
        // pagination not supported"). Asked without them, the first answers with
        // its first page and a `nextCursor`, the other with everything.
        Err(e @ WorkspaceError::Status { status: 501, .. }) if client.follows_unasked_cursors() => {
            tracing::info!(error = %e, "index paging refused; listing without paging parameters");
            let (endpoint, first) = fetch_unpaged::<R>(client, path, filter).await?;
            (endpoint, first, false)
        }
        Err(e) => return Err(e),
    };
    let mut total = first.total_results;
    let stride = first.resources.len() as u64;
    let next_cursor = first.next_cursor.take();
    let new = collector.add(&endpoint, first.resources, &parse_one)?;
    collector.report(progress, what, total);
    if let Some(cursor) = next_cursor
        && client.follows_unasked_cursors()
    {
        // `startIndex` ignored (or refused) and a cursor handed out: follow it.
        client.note_cursor_paging(
            "the provider answered a listing not asked by cursor with a nextCursor",
        );
        return match follow_cursors(&listed, &mut collector, total, cursor).await {
            Ok(total) => Ok(finish(collector, total, what, Paged::ByCursor)),
            Err(e) if cursor_refused(&e) => list_by_cursor(&listed).await,
            Err(e) => Err(e),
        };
    }
    if !by_index {
        // A provider without paging sent what it has in one answer.
        return Ok(finish(collector, total, what, Paged::ByIndex));
    }
    let mut last = Last {
        len: stride,
        new,
        next: 1 + stride,
    };

    // The rest of the announced pages, concurrently, consumed in order.
    if let Some(t) = total
        && stride > 0
        && t > stride
        && client.inner.max_concurrency > 1
    {
        let pages_left = (t - stride).div_ceil(stride).min(ABSOLUTE_PAGE_CAP);
        let starts = (1..=pages_left).map(|i| 1 + i * stride);
        let mut pages = futures::stream::iter(starts.map(|start| async move {
            fetch::<R>(client, path, filter, start, requested)
                .await
                .map(|page| (start, page))
        }))
        .buffered(client.inner.max_concurrency);
        while let Some(result) = pages.next().await {
            let (start, (endpoint, page)) = result?;
            let len = page.resources.len() as u64;
            let new = collector.add(&endpoint, page.resources, &parse_one)?;
            total = page.total_results.or(total);
            collector.report(progress, what, total);
            last = Last {
                len,
                new,
                next: start + len,
            };
            if len == 0 || new == 0 {
                // Stop early; do not keep asking a provider that has run dry.
                break;
            }
            if len < stride && total.is_some_and(|t| start + len <= t) {
                // Fewer than the first page held, before the end (a provider that
                // sizes pages by bytes): the pages asked after this one started
                // past objects nobody asked for. Go on one page after the other.
                break;
            }
        }
    }

    // The cap follows the smallest page seen: later pages may hold fewer.
    let mut smallest = stride;
    let full = requested.min(stride);
    while more_pages(last, full, collector.items.len() as u64, total) {
        let cap = page_cap(total, collector.items.len() as u64, smallest);
        if collector.pages >= cap {
            return Err(WorkspaceError::malformed(
                &super::endpoint_name(
                    &reqwest::Method::GET,
                    path,
                    &index_query(filter, last.next, requested),
                ),
                format!(
                    "paging did not end after {} pages ({} {what}, totalResults {})",
                    collector.pages,
                    collector.items.len(),
                    total.map_or_else(|| "absent".to_owned(), |t| t.to_string())
                ),
            ));
        }
        let (endpoint, page) = match fetch::<R>(client, path, filter, last.next, requested).await {
            Ok(answer) => answer,
            // Without totalResults a short page is followed by one more request,
            // and so is a short page as long as the total (see more_pages); a
            // provider that answers a startIndex past its end with 400 or 404
            // (not an empty page) has said the listing ended there.
            Err(e)
                if matches!(e.status(), Some(400 | 404))
                    && match total {
                        None => last.len < full,
                        Some(t) => last.next > t && last.len < requested,
                    } =>
            {
                tracing::debug!(error = %e, "the page after a short one was refused: the end");
                break;
            }
            // Past the announced total after a short page, the request only checks
            // for a provider announcing its page size as the total: a provider that
            // fails it in some other way (416, 422, a 5xx) has not shown a page
            // more, and must not fail a listing that is whole by its own count.
            // Not once more objects came than it announced: the total is then
            // proven wrong, the pages past it were real ones, and a failure says
            // nothing about where the listing ends.
            Err(e)
                if total.is_some_and(|t| last.next > t && collector.items.len() as u64 <= t)
                    && last.len < requested =>
            {
                tracing::warn!(
                    error = %e,
                    "the check for a page past totalResults failed; the listing is taken as whole"
                );
                break;
            }
            Err(e) => return Err(e),
        };
        let len = page.resources.len() as u64;
        if len > 0 {
            smallest = smallest.min(len);
        }
        let new = collector.add(&endpoint, page.resources, &parse_one)?;
        total = page.total_results.or(total);
        collector.report(progress, what, total);
        if len > 0 && new == 0 && total.is_none() && stride >= requested {
            // Nothing says where the listing ends, and the provider answered a
            // startIndex past what it sent with objects already read: it ignores
            // `startIndex` (every page is the first), and what was read is no proof
            // that nobody else exists. Its first page was as long as asked, so
            // there may be more. (One shorter than asked, sent again, is a provider
            // that sends everything it has whatever it is asked: that was all.)
            return Err(WorkspaceError::malformed(
                &endpoint,
                format!(
                    "the provider answered startIndex={} with {len} {what} already read on \
                     an earlier page, and sends no totalResults: it seems to ignore \
                     startIndex, and the listing cannot tell where it ends ({} {what} read \
                     so far; a provider that sends everything at once is read whole with a \
                     page_size above that)",
                    last.next,
                    collector.items.len()
                ),
            ));
        }
        last = Last {
            len,
            new,
            next: last.next + len,
        };
    }

    Ok(finish(collector, total, what, Paged::ByIndex))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(len: u64, new: u64, next: u64) -> Last {
        Last { len, new, next }
    }

    #[test]
    fn stops_on_empty_or_stale_pages() {
        assert!(!more_pages(last(0, 0, 101), 100, 100, None));
        assert!(!more_pages(last(100, 0, 201), 100, 100, Some(1000)));
    }

    #[test]
    fn trusts_total_results_unless_it_looks_like_the_page_size() {
        assert!(more_pages(last(100, 100, 101), 100, 100, Some(250)));
        assert!(!more_pages(last(100, 100, 201), 100, 200, Some(200)));
        // A first page shorter than asked, as long as the total: one more look.
        assert!(more_pages(last(5, 5, 6), 5, 5, Some(5)));
        // Shorter than the first page and past the total: the end.
        assert!(!more_pages(last(2, 2, 9), 3, 8, Some(2)));
        // totalResults == page size, page full: keep going.
        assert!(more_pages(last(100, 100, 201), 100, 200, Some(100)));
        // already more objects than totalResults and the page was full.
        assert!(more_pages(last(100, 100, 301), 100, 300, Some(150)));
    }

    #[test]
    fn without_total_results_only_an_empty_or_stale_page_ends_the_listing() {
        assert!(more_pages(last(100, 100, 101), 100, 100, None));
        assert!(more_pages(last(40, 40, 141), 100, 140, None));
        // count ignored, the provider sends 10 a page.
        assert!(more_pages(last(10, 10, 21), 100, 20, None));
    }

    #[test]
    fn the_cap_grows_with_what_is_seen_but_not_past_the_absolute_cap() {
        assert_eq!(page_cap(Some(1000), 0, 100), 20);
        assert_eq!(page_cap(Some(100), 5000, 100), 60);
        assert_eq!(page_cap(Some(u64::MAX), 0, 1), ABSOLUTE_PAGE_CAP);
    }
}
